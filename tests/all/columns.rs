//! Columnar calls: Arrow record batches through columnar guests, from the library,
//! from other guests, over HTTP and with `burncache map`.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, RecordBatch, StringArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow_schema::DataType;
use burncache::{ComponentKind, ErrorKind, Limits, Payload};
use serde_json::json;

use crate::cli::{assert_exit, burncache, stderr};
use crate::serve::Served;
use crate::{cache, guests, json, no_limits, read, register, tempdir, value};

/// A batch of every column type the contract carries, nulls in every column, and
/// a `cmd` column: `cmds[i]` for row `i`.
fn every_type(cmds: &[&str]) -> RecordBatch {
    let n = cmds.len();
    RecordBatch::try_from_iter([
        ("b", with_nulls::<_, BooleanArray>(n, |i| i % 2 == 0)),
        (
            "i8",
            with_nulls::<_, Int8Array>(n, |i| i8::MIN.wrapping_add(i as i8)),
        ),
        (
            "i16",
            with_nulls::<_, Int16Array>(n, |i| i16::MAX.wrapping_sub(i as i16)),
        ),
        ("i32", with_nulls::<_, Int32Array>(n, |i| -(i as i32))),
        (
            "i64",
            with_nulls::<_, Int64Array>(n, |i| i64::MIN + i as i64),
        ),
        ("u8", with_nulls::<_, UInt8Array>(n, |i| u8::MAX - i as u8)),
        (
            "u16",
            with_nulls::<_, UInt16Array>(n, |i| (i as u16).wrapping_mul(1000)),
        ),
        (
            "u32",
            with_nulls::<_, UInt32Array>(n, |i| u32::MAX - i as u32),
        ),
        (
            "u64",
            with_nulls::<_, UInt64Array>(n, |i| u64::MAX - i as u64),
        ),
        ("f32", with_nulls::<_, Float32Array>(n, |i| i as f32 / 3.0)),
        (
            "f64",
            with_nulls::<_, Float64Array>(n, |i| if i == 0 { f64::NAN } else { i as f64 * 1.5 }),
        ),
        (
            "s",
            with_nulls::<_, StringArray>(n, |i| format!("row {i}: é ✓")),
        ),
        (
            "bin",
            with_nulls::<_, BinaryArray>(n, |i| vec![i as u8, 0, 255]),
        ),
        (
            "cmd",
            Arc::new(StringArray::from(cmds.to_vec())) as ArrayRef,
        ),
    ])
    .expect("a batch")
}

/// A column of `n` values, every third one null.
fn with_nulls<T, A>(n: usize, value: impl Fn(usize) -> T) -> ArrayRef
where
    A: FromIterator<Option<T>> + arrow_array::Array + 'static,
{
    Arc::new(
        (0..n)
            .map(|i| (i % 3 != 1).then(|| value(i)))
            .collect::<A>(),
    )
}

/// The batch without its `cmd` column: what the echo returns.
fn typed_part(batch: &RecordBatch) -> RecordBatch {
    let index = batch.schema().index_of("cmd").expect("cmd");
    let mut batch = batch.clone();
    batch.remove_column(index);
    batch
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("float64")
        .iter()
        .collect()
}

fn xs(values: Vec<Option<f64>>) -> RecordBatch {
    RecordBatch::try_from_iter([("x", Arc::new(Float64Array::from(values)) as ArrayRef)])
        .expect("batch")
}

#[tokio::test]
async fn every_column_type_and_nulls_round_trip() {
    let cache = cache();
    let digest = register(&cache, guests::COLUMNAR).await;
    let batch = every_type(&["", "", "", "", "", "", ""]);
    let out = cache
        .execute_columns(&digest, &batch, &no_limits())
        .await
        .expect("echo");
    // NaN != NaN: compare the bits.
    assert_eq!(
        arrow_ipc_bytes(&out),
        arrow_ipc_bytes(&typed_part(&batch)),
        "every value, null and type comes back as it went"
    );
    assert_eq!(out.schema().field(11).data_type(), &DataType::Utf8);

    // No rows is a batch too.
    let empty = cache
        .execute_columns(&digest, &every_type(&[]), &no_limits())
        .await
        .expect("no rows");
    assert_eq!(empty.num_rows(), 0);

    let signature = cache
        .describe_columns(&digest, &no_limits())
        .await
        .expect("describe");
    assert_eq!(signature.inputs.fields().len(), 14);
    assert!(
        !signature
            .inputs
            .field_with_name("cmd")
            .expect("cmd")
            .is_nullable()
    );
    let inspected = burncache::inspect(&read(guests::COLUMNAR)).expect("inspect");
    assert_eq!(inspected.kind, ComponentKind::Columnar);
}

/// A batch's IPC stream with its schema's metadata, for bitwise comparison.
fn arrow_ipc_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut writer =
        arrow_ipc::writer::StreamWriter::try_new(Vec::new(), batch.schema_ref()).expect("writer");
    writer.write(batch).expect("write");
    writer.into_inner().expect("bytes")
}

#[tokio::test]
async fn double_columns_takes_its_column_by_name_and_keeps_nulls() {
    let cache = cache();
    let digest = register(&cache, guests::DOUBLE_COLUMNS).await;
    let batch = RecordBatch::try_from_iter([
        (
            "name",
            Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef,
        ),
        (
            "x",
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                None,
                Some(-4.0),
                Some(f64::MAX),
            ])),
        ),
    ])
    .expect("batch");
    let out = cache
        .execute_columns(&digest, &batch, &no_limits())
        .await
        .expect("double");
    assert_eq!(out.num_columns(), 1);
    assert_eq!(
        floats(&out, "x"),
        vec![Some(3.0), None, Some(-8.0), Some(f64::INFINITY)]
    );
}

#[tokio::test]
async fn a_batch_that_does_not_fit_is_refused_naming_the_column() {
    let cache = cache();
    let double = register(&cache, guests::DOUBLE_COLUMNS).await;
    let echo = register(&cache, guests::COLUMNAR).await;
    // The first call asks the function what it takes.
    cache
        .execute_columns(&double, &xs(vec![Some(1.0)]), &no_limits())
        .await
        .expect("fits");
    let burned = cache.stats().fuel_burned;

    let strings =
        RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["1"])) as ArrayRef)])
            .expect("batch");
    let e = cache
        .execute_columns(&double, &strings, &no_limits())
        .await
        .expect_err("utf8");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string()
            .contains("column `x` is utf8, but the function takes float64"),
        "{e}"
    );

    let other =
        RecordBatch::try_from_iter([("y", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef)])
            .expect("batch");
    let e = cache
        .execute_columns(&double, &other, &no_limits())
        .await
        .expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("no column `x`"), "{e}");
    assert!(e.to_string().contains("`y` (float64)"), "{e}");
    assert_eq!(cache.stats().fuel_burned, burned, "nothing ran");

    // `cmd` is declared non-null.
    let mut columns = every_type(&["", ""]).columns().to_vec();
    columns[13] = Arc::new(StringArray::from(vec![Some(""), None]));
    let nulls = RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(
            every_type(&[])
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        )),
        columns,
    )
    .expect("batch");
    let e = cache
        .execute_columns(&echo, &nulls, &no_limits())
        .await
        .expect_err("nulls");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("column `cmd` holds 1 nulls"), "{e}");

    // A function guest is not columnar, nor a columnar guest a function.
    let add_one = register(&cache, guests::ADD_ONE).await;
    let e = cache
        .execute_columns(&add_one, &xs(vec![Some(1.0)]), &no_limits())
        .await
        .expect_err("not columnar");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("burncache:host/columns"), "{e}");
    let e = cache
        .execute(&double, json(json!({"x": 1})), &no_limits())
        .await
        .expect_err("not a function");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_fault_in_the_middle_of_a_batch_is_classified_like_any_call() {
    let cache = cache();
    let digest = register(&cache, guests::COLUMNAR).await;
    let with = |cmd: &'static str| {
        let mut cmds = vec![""; 1000];
        cmds[500] = cmd;
        every_type(&cmds)
    };
    let cases: [(&str, Limits, ErrorKind, &str); 6] = [
        ("trap", no_limits(), ErrorKind::Trap, "asked to trap"),
        (
            "spin",
            Limits {
                fuel: Some(50_000_000),
                ..Limits::default()
            },
            ErrorKind::FuelExhausted,
            "fuel",
        ),
        (
            "grow",
            Limits {
                memory_bytes: Some(48 << 20),
                ..Limits::default()
            },
            ErrorKind::MemoryLimit,
            "memory",
        ),
        ("error", no_limits(), ErrorKind::Guest, "asked to fail"),
        (
            "short",
            no_limits(),
            ErrorKind::Guest,
            "returned 999 rows for 1000",
        ),
        (
            "retype",
            no_limits(),
            ErrorKind::Guest,
            "returned column `f64` as int64 where it declared `f64` as float64",
        ),
    ];
    for (cmd, limits, kind, text) in cases {
        let e = cache
            .execute_columns(&digest, &with(cmd), &limits)
            .await
            .expect_err(cmd);
        assert_eq!(e.kind(), kind, "{cmd}: {e}");
        assert!(e.to_string().contains(text), "{cmd}: {e}");
        // The node is unharmed: the next call runs.
        let ok = cache
            .execute_columns(&digest, &every_type(&["", ""]), &no_limits())
            .await
            .expect("the next call");
        assert_eq!(ok.num_rows(), 2);
    }

    let e = cache
        .execute_columns(
            &digest,
            &every_type(&[""; 100]),
            &Limits {
                output_bytes: Some(1000),
                ..Limits::default()
            },
        )
        .await
        .expect_err("too large");
    assert_eq!(e.kind(), ErrorKind::OutputTooLarge);
}

#[tokio::test]
async fn guests_call_columnar_functions_on_their_budget() {
    let cache = cache();
    let double = register(&cache, guests::DOUBLE_COLUMNS).await;
    let echo = register(&cache, guests::COLUMNAR).await;
    let call = format!("call:{double}");
    let outcome = cache
        .execute_columns_metered(&echo, &every_type(&[call.as_str(), ""]), &no_limits())
        .await;
    let out = outcome.result.expect("nested");
    let doubled = floats(&out, "f64");
    assert!(doubled[0].expect("NaN doubled").is_nan());
    assert_eq!(doubled[1], None);

    // The callee burned on the caller's budget: a tight budget ends the caller.
    let tight = Limits {
        fuel: Some(outcome.fuel_burned / 2),
        ..Limits::default()
    };
    let e = cache
        .execute_columns(&echo, &every_type(&[call.as_str(), ""]), &tight)
        .await
        .expect_err("over budget");
    // Either the callee ran out (an error the caller's guest reports as its own)
    // or the caller did after it.
    assert!(
        e.kind() == ErrorKind::FuelExhausted
            || (e.kind() == ErrorKind::Guest && e.to_string().contains("FuelExhausted")),
        "{e}"
    );

    // A callee that is not columnar is the callee's classified error, handed to the
    // caller as a value.
    let add_one = register(&cache, guests::ADD_ONE).await;
    let not = format!("call:{add_one}");
    let e = cache
        .execute_columns(&echo, &every_type(&[not.as_str()]), &no_limits())
        .await
        .expect_err("not columnar");
    assert_eq!(e.kind(), ErrorKind::Guest);
    assert!(e.to_string().contains("InvalidInput"), "{e}");
}

#[tokio::test]
async fn a_guest_built_against_0_1_0_runs_unchanged() {
    let cache = cache();
    let legacy = register(&cache, guests::LEGACY_UDF).await;
    let out = cache
        .execute(&legacy, json(json!({"n": 41})), &no_limits())
        .await
        .expect("call");
    assert_eq!(value(&out), json!({"n": 42}));
    let add_one = register(&cache, guests::ADD_ONE).await;
    let out = cache
        .execute(
            &legacy,
            json(json!({"call": add_one.to_string(), "n": 1})),
            &no_limits(),
        )
        .await
        .expect("nested through the 0.1.0 import");
    assert_eq!(value(&out), json!({"n": 2}));
    let rows = cache
        .execute_batch(
            &legacy,
            vec![json(json!({"n": 1})), Payload::Json("{}".into())],
            &no_limits(),
        )
        .await
        .expect("batch");
    assert_eq!(value(rows[0].as_ref().expect("row 0")), json!({"n": 2}));
    assert_eq!(
        rows[1].as_ref().expect_err("row 1").kind(),
        ErrorKind::Guest
    );
    let inspected = burncache::inspect(&read(guests::LEGACY_UDF)).expect("inspect");
    assert_eq!(inspected.kind, ComponentKind::Function);
    assert!(
        inspected
            .exports
            .contains(&"burncache:host/function@0.1.0".to_string())
    );
}

#[tokio::test]
async fn the_http_route_takes_and_answers_arrow_streams() {
    let served = Served::start(&[]);
    let double = served.deploy(guests::DOUBLE_COLUMNS).await;
    let add_one = served.deploy(guests::ADD_ONE).await;
    let url = served.url(&format!("/v1/components/{double}/columns"));
    // Two batches in one stream: taken as one.
    let first = xs(vec![Some(1.0), None]);
    let mut writer =
        arrow_ipc::writer::StreamWriter::try_new(Vec::new(), first.schema_ref()).expect("w");
    writer.write(&first).expect("write");
    let second = RecordBatch::try_new(first.schema(), xs(vec![Some(2.5)]).columns().to_vec())
        .expect("batch");
    writer.write(&second).expect("write");
    let body = writer.into_inner().expect("bytes");
    let response = served
        .client
        .post(&url)
        .header("content-type", burncache::ARROW_STREAM)
        .body(body.clone())
        .send()
        .await
        .expect("POST");
    let status = response.status();
    if status != 200 {
        panic!("{status}: {}", response.text().await.unwrap_or_default());
    }
    assert_eq!(response.headers()["content-type"], burncache::ARROW_STREAM);
    assert!(response.headers().contains_key("burncache-fuel-burned"));
    let bytes = response.bytes().await.expect("body");
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .expect("a stream");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
    let values: Vec<Option<f64>> = batches.iter().flat_map(|b| floats(b, "x")).collect();
    assert_eq!(values, vec![Some(2.0), None, Some(5.0)]);

    let post = |url: String, content_type: &'static str, body: Vec<u8>| {
        let client = served.client.clone();
        async move {
            let response = client
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("POST");
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .expect("a JSON error"),
            )
        }
    };
    let (status, error) = post(url.clone(), "application/json", body.clone()).await;
    assert_eq!(status, 415, "{error}");
    let (status, error) = post(url.clone(), burncache::ARROW_STREAM, b"not arrow".to_vec()).await;
    assert_eq!(
        (status, error["error"]["kind"].as_str()),
        (400, Some("invalid-input")),
        "{error}"
    );
    let strings =
        RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["1"])) as ArrayRef)])
            .expect("batch");
    let (status, error) = post(
        url.clone(),
        burncache::ARROW_STREAM,
        arrow_ipc_bytes(&strings),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .expect("message")
            .contains("column `x` is utf8"),
        "{error}"
    );
    // Hostile streams: a message declaring a body far beyond the bytes sent (which
    // a reader would allocate up front), and a stream cut short. Refused as bad
    // input; the server answers on.
    let valid = arrow_ipc_bytes(&xs((0..1000).map(|i| Some(f64::from(i))).collect()));
    let mut huge = valid.clone();
    let (from, to) = (8000i64.to_le_bytes(), (1i64 << 44).to_le_bytes());
    let mut patched = 0;
    for at in 0..huge.len() - 8 {
        if huge[at..at + 8] == from {
            huge[at..at + 8].copy_from_slice(&to);
            patched += 1;
        }
    }
    assert!(patched > 0, "the body length is in the stream");
    // Types outside the contract never reach the decoder: a list of 2^20 nulls a row
    // (which a validity check would expand bit by bit) and string views.
    let nulls = arrow_array::NullArray::new(1024 << 20);
    let lists: ArrayRef = Arc::new(
        arrow_array::FixedSizeListArray::try_new(
            Arc::new(arrow_schema::Field::new("item", DataType::Null, true)),
            1 << 20,
            Arc::new(nulls),
            Some(arrow_buffer::NullBuffer::from(
                (0..1024).map(|i| i != 7).collect::<Vec<bool>>(),
            )),
        )
        .expect("lists"),
    );
    let views: ArrayRef = Arc::new(arrow_array::StringViewArray::from(vec!["a", "b"]));
    let nested = arrow_ipc_bytes(&RecordBatch::try_from_iter([("x", lists)]).expect("batch"));
    let viewed = arrow_ipc_bytes(&RecordBatch::try_from_iter([("x", views)]).expect("batch"));
    for hostile in [huge, valid[..valid.len() / 2].to_vec(), nested, viewed] {
        let (status, error) = post(url.clone(), burncache::ARROW_STREAM, hostile).await;
        assert_eq!(
            (status, error["error"]["kind"].as_str()),
            (400, Some("invalid-input")),
            "{error}"
        );
    }
    let response = served
        .client
        .post(&url)
        .header("content-type", burncache::ARROW_STREAM)
        .body(valid)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);

    let not = served.url(&format!("/v1/components/{add_one}/columns"));
    let (status, error) = post(not, burncache::ARROW_STREAM, body).await;
    assert_eq!(
        (status, error["error"]["kind"].as_str()),
        (400, Some("invalid-input")),
        "{error}"
    );
}

/// Writes `batch` as a Parquet file.
fn parquet_file(path: &std::path::Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

fn read_parquet(path: &std::path::Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).expect("open");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches")
}

#[test]
fn map_runs_a_columnar_function_over_a_parquet_file() {
    let dir = tempdir();
    let input = dir.join("data.parquet");
    let output = dir.join("doubled.parquet");
    let rows = 250_000;
    let values: Vec<Option<f64>> = (0..rows)
        .map(|i| (i % 7 != 3).then_some(i as f64 * 0.25 - 1000.0))
        .collect();
    let ids: Vec<i64> = (0..rows as i64).collect();
    parquet_file(
        &input,
        &RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
            ("x", Arc::new(Float64Array::from(values.clone()))),
        ])
        .expect("batch"),
    );
    let out = burncache(
        &[
            "map",
            guests::DOUBLE_COLUMNS,
            input.to_str().expect("utf-8"),
            "-o",
            output.to_str().expect("utf-8"),
            "--keep",
            "id",
            "--batch-rows",
            "10000",
        ],
        b"",
    );
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("250000 rows"), "{}", stderr(&out));
    let batches = read_parquet(&output);
    let got_ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .expect("id")
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(got_ids, ids, "every row, in order");
    let doubled: Vec<Option<f64>> = batches.iter().flat_map(|b| floats(b, "x")).collect();
    assert_eq!(doubled.len(), rows);
    for (i, (got, was)) in doubled.iter().zip(&values).enumerate() {
        assert_eq!(*got, was.map(|v| v * 2.0), "row {i}");
    }
}

#[test]
fn map_reads_csv_as_the_declared_types_and_writes_ndjson() {
    let dir = tempdir();
    let input = dir.join("data.csv");
    std::fs::write(&input, "name,x\na,1\nb,\nc,2.5\n").expect("write");
    let output = dir.join("out.ndjson");
    let out = burncache(
        &[
            "map",
            guests::DOUBLE_COLUMNS,
            input.to_str().expect("utf-8"),
            "-o",
            output.to_str().expect("utf-8"),
            "--keep",
            "name",
        ],
        b"",
    );
    assert_exit(&out, 0);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"name": "a", "x": 2.0}),
            json!({"name": "b"}),
            json!({"name": "c", "x": 5.0}),
        ]
    );

    // A column that cannot be read as what the function takes: the error names it,
    // and no output is left behind.
    std::fs::write(&input, "x\n1\nmany\n").expect("write");
    let failed = dir.join("failed.arrow");
    let out = burncache(
        &[
            "map",
            guests::DOUBLE_COLUMNS,
            input.to_str().expect("utf-8"),
            "-o",
            failed.to_str().expect("utf-8"),
        ],
        b"",
    );
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("many"), "{}", stderr(&out));
    assert!(!failed.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Strings as other writers store them (large, dictionary-encoded) are read as
    // the contract's strings, here for a columnar script.
    let script = dir.join("len.js");
    std::fs::write(
        &script,
        "export const columns = { inputs: { s: 'utf8' }, outputs: { n: 'uint32' },\n\
         call: ({ s }) => ({ n: Uint32Array.from(s, (v) => v.length) }) };\n",
    )
    .expect("write");
    let strings = dir.join("strings.parquet");
    let large: ArrayRef = Arc::new(arrow_array::LargeStringArray::from(vec!["a", "bcd", ""]));
    parquet_file(
        &strings,
        &RecordBatch::try_from_iter([("s", large)]).expect("batch"),
    );
    let lengths = dir.join("lengths.csv");
    let out = burncache(
        &[
            "map",
            script.to_str().expect("utf-8"),
            strings.to_str().expect("utf-8"),
            "-o",
            lengths.to_str().expect("utf-8"),
        ],
        b"",
    );
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(&lengths).expect("read"),
        "n\n1\n3\n0\n"
    );

    // A Parquet column of another type is the call's invalid-input (exit 19).
    let typed = dir.join("typed.parquet");
    parquet_file(
        &typed,
        &RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef)])
            .expect("batch"),
    );
    let out = burncache(
        &[
            "map",
            guests::DOUBLE_COLUMNS,
            typed.to_str().expect("utf-8"),
            "-o",
            dir.join("typed-out.parquet").to_str().expect("utf-8"),
        ],
        b"",
    );
    assert_exit(&out, 19);
    assert!(
        stderr(&out).contains("column `x` is int32"),
        "{}",
        stderr(&out)
    );
}

/// `burncache map` of `double-columns` from `input` to `output`.
fn map_double(input: &std::path::Path, output: &std::path::Path) -> std::process::Output {
    burncache(
        &[
            "map",
            guests::DOUBLE_COLUMNS,
            input.to_str().expect("utf-8"),
            "-o",
            output.to_str().expect("utf-8"),
        ],
        b"",
    )
}

/// `map` over Arrow IPC files and streams: read as they are, and a crafted one
/// whose headers declare more than the file holds (which Arrow's readers would
/// allocate up front) is refused as unreadable before anything is read or written.
#[test]
fn map_reads_arrow_files_and_refuses_ones_that_declare_more_than_they_hold() {
    let dir = tempdir();
    let batch = xs((0..1000).map(|i| Some(f64::from(i))).collect());
    let stream = arrow_ipc_bytes(&batch);
    let mut writer =
        arrow_ipc::writer::FileWriter::try_new(Vec::new(), batch.schema_ref()).expect("w");
    writer.write(&batch).expect("write");
    let file = writer.into_inner().expect("bytes");
    // The body's length (1,000 f64 values) stands in the batch's header, and in the
    // file's footer too; declared as 2^62 bytes.
    let patch = |bytes: &[u8]| {
        let (from, to) = (8000i64.to_le_bytes(), (1i64 << 62).to_le_bytes());
        let mut bytes = bytes.to_vec();
        let mut patched = 0;
        for at in 0..bytes.len() - 8 {
            if bytes[at..at + 8] == from {
                bytes[at..at + 8].copy_from_slice(&to);
                patched += 1;
            }
        }
        assert!(patched > 0, "the body length is in the bytes");
        bytes
    };
    for (name, good, what) in [
        ("data.arrows", stream, "Arrow IPC stream"),
        ("data.arrow", file, "Arrow IPC"),
    ] {
        let input = dir.join(name);
        let output = dir.join(format!("{name}.ndjson"));
        let map = |input: &std::path::Path| map_double(input, &output);
        std::fs::write(&input, &good).expect("write");
        let out = map(&input);
        assert_exit(&out, 0);
        let doubled: Vec<f64> = std::fs::read_to_string(&output)
            .expect("read")
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["x"]
                    .as_f64()
                    .expect("x")
            })
            .collect();
        assert_eq!(
            doubled,
            (0..1000).map(|i| f64::from(i) * 2.0).collect::<Vec<_>>()
        );
        std::fs::remove_file(&output).expect("remove");

        let crafted = dir.join(format!("crafted-{name}"));
        std::fs::write(&crafted, patch(&good)).expect("write");
        let out = map(&crafted);
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains(&format!("is not a readable {what} file")),
            "{}",
            stderr(&out)
        );
        assert!(!output.exists());
    }
}

/// `map` reads only the columns it needs, and refuses inputs crafted to make a
/// reader allocate far more than the file holds: clearly, leaving no output.
#[test]
fn map_reads_only_what_it_needs_and_refuses_crafted_inputs() {
    let dir = tempdir();
    let map = map_double;

    // 20,000 other keys on the first line and 65,536 rows: read in full, they
    // would take 20,000 columns of 65,536 rows.
    let wide = dir.join("wide.ndjson");
    let mut text = String::from("{\"x\": 1");
    for i in 0..20_000 {
        text.push_str(&format!(", \"k{i}\": {i}"));
    }
    text.push_str("}\n");
    text.push_str(&"{\"x\": 2}\n".repeat(65_535));
    std::fs::write(&wide, text).expect("write");
    let output = dir.join("wide-out.csv");
    let out = map(&wide, &output);
    assert_exit(&out, 0);
    let written = std::fs::read_to_string(&output).expect("read");
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("x"));
    assert_eq!(lines.next(), Some("2.0"));
    assert_eq!(lines.clone().count(), 65_535);
    assert!(lines.all(|l| l == "4.0"));

    // A column the function takes, missing: named with what the file has.
    let other = dir.join("other.parquet");
    parquet_file(
        &other,
        &RecordBatch::try_from_iter([("y", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef)])
            .expect("batch"),
    );
    let out = map(&other, &dir.join("other-out.csv"));
    assert_exit(&out, 19);
    assert!(
        stderr(&out).contains("has no column `x` (the function takes `x` as float64); it has `y`"),
        "{}",
        stderr(&out)
    );

    // A 30-byte Parquet file whose footer declares 2^31 - 1 row groups.
    let footer = [
        0x15u8, 0x02, 0x19, 0x1c, 0x48, 0x01, b'r', 0x00, 0x16, 0x00, 0x19, 0xfc, 0xff, 0xff, 0xff,
        0xff, 0x07, 0x00,
    ];
    let mut crafted = b"PAR1".to_vec();
    crafted.extend_from_slice(&footer);
    crafted.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    crafted.extend_from_slice(b"PAR1");
    let row_groups = dir.join("row-groups.parquet");
    std::fs::write(&row_groups, crafted).expect("write");
    let output = dir.join("row-groups-out.csv");
    let out = map(&row_groups, &output);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("is not a readable Parquet file"),
        "{}",
        stderr(&out)
    );
    assert!(!output.exists());

    // String views: 65,536 rows that each point at one 64 KiB value, 4 GiB once
    // every row has its own copy, in a 1 MiB file.
    let value = arrow_buffer::Buffer::from(vec![b'a'; 64 << 10]);
    // A view: its length, its first four bytes, its buffer (0) and offset (0).
    let view = (64u128 << 10) | (u128::from(u32::from_le_bytes(*b"aaaa")) << 32);
    let views = arrow_array::StringViewArray::try_new(
        arrow_buffer::ScalarBuffer::from(vec![view; 65_536]),
        vec![value],
        None,
    )
    .expect("views");
    let batch = RecordBatch::try_from_iter([("x", Arc::new(views) as ArrayRef)]).expect("batch");
    let viewed = dir.join("views.arrows");
    std::fs::write(&viewed, arrow_ipc_bytes(&batch)).expect("write");
    let output = dir.join("views-out.csv");
    let out = map(&viewed, &output);
    assert_exit(&out, 19);
    assert!(
        stderr(&out).contains("more than a column carries (2 GiB)"),
        "{}",
        stderr(&out)
    );
    assert!(!output.exists());
}

/// A replaced output keeps its permission bits; an output that is a link is
/// written through it and stays a link.
#[cfg(unix)]
#[test]
fn map_keeps_an_outputs_mode_and_writes_through_links() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let input = dir.join("in.csv");
    std::fs::write(&input, "x\n1\n").expect("write");
    let map = |output: &std::path::Path| map_double(&input, output);
    let private = dir.join("private.csv");
    std::fs::write(&private, "old\n").expect("write");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_exit(&map(&private), 0);
    assert_eq!(std::fs::read_to_string(&private).expect("read"), "x\n2.0\n");
    let mode = std::fs::metadata(&private)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let real = dir.join("real.csv");
    std::fs::write(&real, "old\n").expect("write");
    let link = dir.join("link.csv");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    assert_exit(&map(&link), 0);
    let link_type = std::fs::symlink_metadata(&link).expect("link").file_type();
    assert!(link_type.is_symlink());
    assert_eq!(std::fs::read_to_string(&real).expect("read"), "x\n2.0\n");
}

/// A columnar script: columns arrive as typed arrays (arrays when they hold nulls)
/// and go back from either.
const JS_COLUMNS: &str = r#"
export const columns = {
  inputs: { x: "float64", n: "int32", big: "int64", name: "utf8", flag: "boolean" },
  outputs: { doubled: "float64", seen: "utf8", next: "int64", len: "uint32", not: "boolean", raw: "binary" },
  call({ x, n, big, name, flag }) {
    if (name[0] === "throw") throw new Error("asked to throw");
    if (name[0] === "spin") for (;;) {}
    if (name[0] === "short") return { doubled: [], seen: [], next: [], len: [], not: [], raw: [] };
    const kinds = [x, n, big, name, flag].map((c) => c.constructor.name).join(" ");
    return {
      doubled: x instanceof Float64Array ? x.map((v) => v * 2) : x.map((v) => (v === null ? null : v * 2)),
      seen: Array.from(name, () => kinds),
      next: BigInt64Array.from(big, (v) => v + 1n),
      len: Uint32Array.from(name, (s) => s.length),
      not: Array.from(flag, (f) => !f),
      raw: Array.from(name, (s) => (s === "none" ? null : new Uint8Array([s.length, 255]))),
    };
  },
};
"#;

fn js_input(x: Vec<Option<f64>>, names: Vec<&str>) -> RecordBatch {
    let rows = names.len();
    RecordBatch::try_from_iter([
        ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
        ("n", Arc::new(Int32Array::from_iter_values(0..rows as i32))),
        (
            "big",
            Arc::new(Int64Array::from_iter_values(
                (0..rows as i64).map(|i| i64::MAX - 1 - i),
            )),
        ),
        ("name", Arc::new(StringArray::from(names))),
        (
            "flag",
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 2 == 0)))),
        ),
    ])
    .expect("batch")
}

#[tokio::test]
async fn a_javascript_script_is_columnar_over_typed_arrays() {
    let cache = cache();
    let script = cache
        .register(JS_COLUMNS.as_bytes())
        .await
        .expect("register");
    let out = cache
        .execute_columns(
            &script,
            &js_input(vec![Some(1.5), Some(-2.0)], vec!["héllo", "none"]),
            &no_limits(),
        )
        .await
        .expect("columns");
    assert_eq!(floats(&out, "doubled"), vec![Some(3.0), Some(-4.0)]);
    let seen = out
        .column_by_name("seen")
        .expect("seen")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    assert_eq!(
        seen.value(0),
        "Float64Array Int32Array BigInt64Array Array Array"
    );
    let next = out
        .column_by_name("next")
        .expect("next")
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("int64");
    assert_eq!(next.values().to_vec(), vec![i64::MAX, i64::MAX - 1]);
    let len = out
        .column_by_name("len")
        .expect("len")
        .as_any()
        .downcast_ref::<UInt32Array>()
        .expect("uint32");
    assert_eq!(len.values().to_vec(), vec![5, 4]);
    let not = out
        .column_by_name("not")
        .expect("not")
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool");
    assert_eq!(
        not.iter().collect::<Vec<_>>(),
        vec![Some(false), Some(true)]
    );
    let raw = out
        .column_by_name("raw")
        .expect("raw")
        .as_any()
        .downcast_ref::<BinaryArray>()
        .expect("binary");
    assert_eq!(
        raw.iter().collect::<Vec<_>>(),
        vec![Some(&[5u8, 255][..]), None]
    );

    // A column with nulls arrives as an array, nulls in place.
    let out = cache
        .execute_columns(
            &script,
            &js_input(vec![Some(1.0), None, Some(4.0)], vec!["a", "b", "c"]),
            &no_limits(),
        )
        .await
        .expect("columns");
    assert_eq!(floats(&out, "doubled"), vec![Some(2.0), None, Some(8.0)]);
    let seen = out
        .column_by_name("seen")
        .expect("seen")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    assert!(
        seen.value(0).starts_with("Array Int32Array"),
        "{}",
        seen.value(0)
    );

    // Its faults are classified like any call's, and its schema is checked.
    let fault = |name: &'static str, limits: Limits| {
        let cache = &cache;
        async move {
            cache
                .execute_columns(&script, &js_input(vec![Some(1.0)], vec![name]), &limits)
                .await
                .expect_err(name)
        }
    };
    let e = fault("throw", no_limits()).await;
    assert_eq!(e.kind(), ErrorKind::Guest);
    assert!(e.to_string().contains("asked to throw"), "{e}");
    let e = fault("short", no_limits()).await;
    assert_eq!(e.kind(), ErrorKind::Guest);
    assert!(e.to_string().contains("0 values for 1 rows"), "{e}");
    let e = fault(
        "spin",
        Limits {
            fuel: Some(50_000_000),
            ..Limits::default()
        },
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::FuelExhausted);
    let e = cache
        .execute_columns(&script, &xs(vec![Some(1.0)]), &no_limits())
        .await
        .expect_err("missing columns");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("no column `n`"), "{e}");

    // A declaration that breaks the contract fails the script's check.
    let e = cache
        .register(b"export const columns = { inputs: { x: \"decimal\" }, outputs: {}, call() {} };")
        .await
        .expect_err("bad type");
    assert_eq!(e.kind(), ErrorKind::CompileFailed);
    assert!(e.to_string().contains("\"decimal\""), "{e}");
    let e = cache
        .register(b"export const columns = { inputs: { x: \"float64\" }, outputs: {}, call() {} };")
        .await
        .expect_err("no outputs");
    assert_eq!(e.kind(), ErrorKind::CompileFailed);
    assert!(e.to_string().contains("declares no column"), "{e}");
    // A columnar script is not a function, nor a function script columnar.
    let e = cache
        .execute(&script, json(json!({"x": 1})), &no_limits())
        .await
        .expect_err("only columns");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("exports only `columns`"), "{e}");
    let plain = cache
        .register(b"module.exports = (x) => x;")
        .await
        .expect("register");
    let e = cache
        .execute_columns(&plain, &xs(vec![Some(1.0)]), &no_limits())
        .await
        .expect_err("not columnar");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("exports no `columns`"), "{e}");
}
