//! The DataFusion UDF: `SELECT double(x) FROM t` with the burncache `double-columns`
//! function against `SELECT x * 2 FROM t`, DataFusion's own expression, over 10
//! million f64 values held in memory, in the same run: one partition per core, in
//! DataFusion's default batches of 8,192 rows and in batches of 64 Ki rows.
//!
//! Run: `cargo bench -p burncache-datafusion --bench datafusion_udf`

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use burncache::{BurnCache, Limits};
use burncache_datafusion::BurnCacheUdf;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

const VALUES: usize = 10_000_000;

/// The table `t` of [`VALUES`] f64s `x`, one partition per core, in batches of
/// `batch_rows`, in a session whose batches are that size, with the UDF `double`.
fn session(runtime: &tokio::runtime::Runtime, batch_rows: usize) -> SessionContext {
    let partitions = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_partition = VALUES / partitions;
    let partitions: Vec<Vec<RecordBatch>> = (0..partitions)
        .map(|p| {
            let start = p * per_partition;
            (start..start + per_partition)
                .step_by(batch_rows)
                .map(|from| {
                    let to = (from + batch_rows).min(start + per_partition);
                    let x: Float64Array = (from..to).map(|i| i as f64).collect();
                    RecordBatch::try_from_iter([("x", Arc::new(x) as ArrayRef)]).expect("batch")
                })
                .collect()
        })
        .collect();
    let schema = partitions[0][0].schema();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(batch_rows));
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, partitions).expect("table")),
    )
    .expect("register");
    let cache = Arc::new(BurnCache::new().expect("cache"));
    runtime.block_on(async {
        let bytes = std::fs::read(burncache_test_guests::DOUBLE_COLUMNS).expect("built");
        let digest = cache.register(&bytes).await.expect("register");
        let udf = BurnCacheUdf::new("double", cache.clone(), digest, Limits::default())
            .await
            .expect("udf");
        ctx.register_udf(udf.into());
    });
    ctx
}

fn datafusion_udf(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("datafusion_x2_10m_f64");
    group.throughput(Throughput::Elements(VALUES as u64));
    group.sample_size(10);
    // DataFusion's default batches, and batches of 64 Ki rows
    // (`datafusion.execution.batch_size`).
    for (batch_rows, suffix) in [(8192, "8ki_batches"), (65_536, "64ki_batches")] {
        let ctx = session(&runtime, batch_rows);
        for (name, query) in [
            ("native_x_times_2", "SELECT x * 2 AS y FROM t"),
            ("burncache_udf_double", "SELECT double(x) AS y FROM t"),
        ] {
            group.bench_function(format!("{name}/{suffix}"), |b| {
                b.to_async(&runtime).iter(|| async {
                    let batches = ctx
                        .sql(query)
                        .await
                        .expect("plan")
                        .collect()
                        .await
                        .expect("run");
                    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                    assert_eq!(rows, VALUES);
                    batches
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, datafusion_udf);
criterion_main!(benches);
