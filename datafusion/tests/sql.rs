//! burncache functions in DataFusion queries: the same query with a burncache UDF
//! and with DataFusion's own expression gives the same result, from the library and
//! from `burncache-sql` (and `burncache sql`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use burncache::{BurnCache, ErrorKind, Limits};
use burncache_datafusion::BurnCacheUdf;
use burncache_test_guests as guests;
use datafusion::prelude::SessionContext;

fn tempdir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("burncache-sql-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A Parquet file of `rows` rows: `id`, `x` (every seventh null) and `tag`, written
/// in several row groups.
fn data(dir: &Path, rows: i64) -> PathBuf {
    let path = dir.join("data.parquet");
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..rows)) as ArrayRef,
        ),
        (
            "x",
            Arc::new(
                (0..rows)
                    .map(|i| (i % 7 != 3).then_some(i as f64 * 0.5 - 300.0))
                    .collect::<Float64Array>(),
            ),
        ),
        (
            "tag",
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("t{}", i % 5)),
            )),
        ),
    ])
    .expect("batch");
    let file = std::fs::File::create(&path).expect("create");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(10_000))
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    path
}

async fn run(ctx: &SessionContext, query: &str) -> Vec<RecordBatch> {
    ctx.sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// The batches as one, for comparison whatever the batch boundaries.
fn whole(batches: &[RecordBatch]) -> RecordBatch {
    let schema = batches.first().expect("a batch").schema();
    arrow_select::concat::concat_batches(&schema, batches).expect("concat")
}

/// A columnar script with two inputs, for scalars spread over a batch.
const SCALE: &str = r#"
export const columns = {
  inputs: { x: "float64", by: "float64" },
  outputs: { scaled: "float64" },
  call({ x, by }) {
    return { scaled: Array.from(x, (v, i) => (v === null || by[i] === null ? null : v * by[i])) };
  },
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_a_burncache_udf_equals_the_native_query() {
    let dir = tempdir();
    let path = data(&dir, 100_000);
    let path = path.display();
    let cache = Arc::new(BurnCache::new().expect("cache"));
    let double = cache
        .register(&std::fs::read(guests::DOUBLE_COLUMNS).expect("built"))
        .await
        .expect("register");
    let scale = cache.register(SCALE.as_bytes()).await.expect("register");
    let ctx = SessionContext::new().enable_url_table();
    for (name, digest) in [("double", double), ("scale", scale)] {
        let udf = BurnCacheUdf::new(name, cache.clone(), digest, Limits::default())
            .await
            .expect("udf");
        ctx.register_udf(udf.into());
    }

    let pairs = [
        (
            format!("SELECT id, double(x) AS y FROM '{path}' ORDER BY id"),
            format!("SELECT id, x * 2 AS y FROM '{path}' ORDER BY id"),
        ),
        (
            format!(
                "SELECT tag, sum(double(x)) AS s, count(double(x)) AS n FROM '{path}' WHERE id % 3 = 0 GROUP BY tag ORDER BY tag"
            ),
            format!(
                "SELECT tag, sum(x * 2) AS s, count(x * 2) AS n FROM '{path}' WHERE id % 3 = 0 GROUP BY tag ORDER BY tag"
            ),
        ),
        (
            format!(
                "SELECT id, scale(x, 1.5) AS y FROM '{path}' WHERE double(x) > 0 ORDER BY id LIMIT 1000"
            ),
            format!("SELECT id, x * 1.5 AS y FROM '{path}' WHERE x * 2 > 0 ORDER BY id LIMIT 1000"),
        ),
    ];
    for (with_udf, native) in pairs {
        let got = whole(&run(&ctx, &with_udf).await);
        let want = whole(&run(&ctx, &native).await);
        assert!(got.num_rows() > 0, "{with_udf}");
        assert_eq!(got.columns(), want.columns(), "{with_udf}");
    }
    assert!(
        cache.stats().calls_ok > 10,
        "one call per batch, many batches"
    );

    // Batches large enough that a call checks them on the blocking pool: the call
    // waits there, and its worker is handed over to the runtime's other threads.
    let large = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_batch_size(65_536),
    )
    .enable_url_table();
    let udf = BurnCacheUdf::new("double", cache.clone(), double, Limits::default())
        .await
        .expect("udf");
    large.register_udf(udf.into());
    let query = |e: &str| format!("SELECT id, {e} AS y FROM '{path}' ORDER BY id");
    let got = whole(&run(&large, &query("double(x)")).await);
    let want = whole(&run(&large, &query("x * 2")).await);
    assert_eq!(got.columns(), want.columns());

    // Arguments convert to the declared types when nothing is lost: integers to
    // floats, as SQL promotes them; a string to a float is refused at planning.
    let got = whole(
        &run(
            &ctx,
            &format!("SELECT double(id) AS y FROM '{path}' ORDER BY id"),
        )
        .await,
    );
    let want = whole(
        &run(
            &ctx,
            &format!("SELECT CAST(id AS DOUBLE) * 2 AS y FROM '{path}' ORDER BY id"),
        )
        .await,
    );
    assert_eq!(got.columns(), want.columns());
    let e = ctx
        .sql(&format!("SELECT double(tag) FROM '{path}'"))
        .await
        .expect_err("a string is not a float");
    assert!(e.to_string().contains("does not convert to Float64"), "{e}");

    // A function with several outputs is not a scalar function.
    let echo = cache
        .register(&std::fs::read(guests::COLUMNAR).expect("built"))
        .await
        .expect("register");
    let e = BurnCacheUdf::new("echo", cache.clone(), echo, Limits::default())
        .await
        .expect_err("13 outputs");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("returns 13 columns"), "{e}");

    // A call that fails fails the query, classified.
    let tight = BurnCacheUdf::new(
        "tight",
        cache.clone(),
        double,
        Limits {
            fuel: Some(1000),
            ..Limits::default()
        },
    )
    .await
    .expect("udf");
    ctx.register_udf(tight.into());
    let e = ctx
        .sql(&format!("SELECT tight(x) FROM '{path}'"))
        .await
        .expect("plan")
        .collect()
        .await
        .expect_err("no fuel");
    assert!(e.to_string().contains("fuel"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

const SQL: &str = env!("CARGO_BIN_EXE_burncache-sql");

fn sql(program: &Path, args: &[&str], store: &Path) -> std::process::Output {
    Command::new(program)
        .args(args)
        .env("BURNCACHE_STORE", burncache::file_url(&store.join("store")))
        .env("BURNCACHE_ARTIFACTS", store.join("artifacts"))
        .output()
        .expect("run")
}

#[test]
fn burncache_sql_runs_a_query_over_a_parquet_file() {
    let dir = tempdir();
    let path = data(&dir, 20_000);
    let path = path.display();
    let udf = format!("double={}", guests::DOUBLE_COLUMNS);
    let query = format!("SELECT tag, sum(double(x)) AS s FROM '{path}' GROUP BY tag ORDER BY tag");
    let native = format!("SELECT tag, sum(x * 2) AS s FROM '{path}' GROUP BY tag ORDER BY tag");
    let got = sql(
        Path::new(SQL),
        &[&query, "--udf", &udf, "--format", "csv"],
        &dir,
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let want = sql(Path::new(SQL), &[&native, "--format", "csv"], &dir);
    assert!(
        want.status.success(),
        "{}",
        String::from_utf8_lossy(&want.stderr)
    );
    assert_eq!(got.stdout, want.stdout);
    assert!(String::from_utf8_lossy(&got.stdout).starts_with("tag,s\nt0,"));

    // `burncache sql` runs it, from beside the burncache binary.
    let burncache =
        Path::new(SQL).with_file_name(format!("burncache{}", std::env::consts::EXE_SUFFIX));
    assert!(
        burncache.is_file(),
        "{} is built by `cargo test --workspace` (scripts/test.sh)",
        burncache.display()
    );
    let through = sql(
        &burncache,
        &["sql", &query, "--udf", &udf, "--format", "csv"],
        &dir,
    );
    assert!(
        through.status.success(),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    assert_eq!(through.stdout, want.stdout);

    // Bad input: a failing query and an unknown function exit 1 with the reason.
    let bad = sql(
        Path::new(SQL),
        &["SELECT nope(x) FROM 'missing.parquet'"],
        &dir,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: "));
    let bad = sql(Path::new(SQL), &["SELECT 1", "--udf", "double"], &dir);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAME=COMPONENT"));
    let _ = std::fs::remove_dir_all(&dir);
}
