//! Columnar calls: `x * 2` over 10 million f64 values, side by side in one run:
//!
//! - as columnar calls (`double-columns`, Arrow batches of 1 Mi, 64 Ki and 8 Ki
//!   rows, the last DataFusion's default batch);
//! - as the bytes path (`double`, the column as one bytes payload of little-endian
//!   f64s, 1 Mi values a call);
//! - per row: one `execute` per value (`double` on 8 bytes), and one `execute_batch`
//!   row per value; measured on 10,000 values, as values per second.
//!
//! One core: a current-thread runtime, calls one after another.
//!
//! Run: `cargo bench -p burncache --bench columns`

use std::hint::black_box;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use burncache::{BurnCache, Limits, Payload};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const VALUES: usize = 10_000_000;
const PER_ROW: usize = 10_000;

fn columns(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = Arc::new(BurnCache::new().expect("cache"));
    let register = |path: &str| {
        runtime
            .block_on(cache.register(&std::fs::read(path).expect("built")))
            .expect("register")
    };
    let columnar = register(burncache_test_guests::DOUBLE_COLUMNS);
    let bytes = register(burncache_test_guests::DOUBLE);
    let limits = Limits::default();
    let values: Vec<f64> = (0..VALUES).map(|i| i as f64).collect();

    let batches = |rows: usize| -> Vec<RecordBatch> {
        values
            .chunks(rows)
            .map(|chunk| {
                RecordBatch::try_from_iter([(
                    "x",
                    Arc::new(Float64Array::from(chunk.to_vec())) as ArrayRef,
                )])
                .expect("batch")
            })
            .collect()
    };
    let big = batches(1 << 20);
    let small = batches(1 << 16);
    let datafusion = batches(8192);
    let column: Vec<Vec<u8>> = values
        .chunks(1 << 20)
        .map(|chunk| chunk.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();

    let mut group = c.benchmark_group("x2_10m_f64");
    group.throughput(Throughput::Elements(VALUES as u64));
    group.sample_size(10);
    for (name, batches) in [
        ("columnar_1mi_rows", &big),
        ("columnar_64ki_rows", &small),
        ("columnar_8ki_rows", &datafusion),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                for batch in batches {
                    let out = cache
                        .execute_columns(&columnar, batch, &limits)
                        .await
                        .expect("columnar call");
                    black_box(out);
                }
            })
        });
    }
    // The same 8 Ki-row calls from one task per core, on a runtime with a worker per
    // core: how calls scale across cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threaded = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("runtime");
    let shared = Arc::new((cache.clone(), columnar, datafusion.clone()));
    group.bench_function("columnar_8ki_rows_task_per_core", |b| {
        b.to_async(&threaded).iter(|| async {
            let tasks: Vec<_> = (0..cores)
                .map(|core| {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let (cache, digest, batches) = &*shared;
                        for batch in batches.iter().skip(core).step_by(cores) {
                            let out = cache
                                .execute_columns(digest, batch, &Limits::default())
                                .await
                                .expect("columnar call");
                            black_box(out);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
        })
    });
    group.bench_function("bytes_1mi_values", |b| {
        b.to_async(&runtime).iter(|| async {
            for chunk in &column {
                let out = cache
                    .execute(&bytes, Payload::Bytes(chunk.clone()), &limits)
                    .await
                    .expect("bytes call");
                black_box(out);
            }
        })
    });
    group.finish();

    let rows: Vec<Payload> = values[..PER_ROW]
        .iter()
        .map(|v| Payload::Bytes(v.to_le_bytes().to_vec()))
        .collect();
    let mut group = c.benchmark_group("x2_per_row");
    group.throughput(Throughput::Elements(PER_ROW as u64));
    group.sample_size(10);
    group.bench_function("execute_per_value_10k", |b| {
        b.to_async(&runtime).iter(|| async {
            for row in &rows {
                let out = cache
                    .execute(&bytes, row.clone(), &limits)
                    .await
                    .expect("call");
                black_box(out);
            }
        })
    });
    group.bench_function("execute_batch_row_per_value_10k", |b| {
        b.to_async(&runtime).iter(|| async {
            let out = cache
                .execute_batch(&bytes, rows.clone(), &limits)
                .await
                .expect("batch");
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, columns);
criterion_main!(benches);
