//! P5, batches: rows per second of `execute_batch` against one `execute` per row, for a
//! trivial JSON UDF (`add-one`), in the same run; and `x * 2` over a column of f64
//! values passed as one bytes payload.
//!
//! Run: `cargo bench -p burncache --bench batch`

use std::hint::black_box;

use burncache::{BurnCache, Limits, Payload};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ROWS: usize = 1000;
const COLUMN: usize = 1_000_000;

fn batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = BurnCache::new().expect("cache");
    let add_one = runtime
        .block_on(cache.register(&std::fs::read(burncache_test_guests::ADD_ONE).expect("built")))
        .expect("register");
    let double = runtime
        .block_on(cache.register(&std::fs::read(burncache_test_guests::DOUBLE).expect("built")))
        .expect("register");
    let limits = Limits::default();
    let rows: Vec<Payload> = (0..ROWS)
        .map(|n| Payload::Json(format!(r#"{{"n":{n}}}"#)))
        .collect();

    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("execute_batch_1000_rows", |b| {
        b.to_async(&runtime).iter(|| async {
            let out = cache
                .execute_batch(&add_one, rows.clone(), &limits)
                .await
                .expect("batch");
            black_box(out)
        })
    });
    group.bench_function("execute_per_row_1000_rows", |b| {
        b.to_async(&runtime).iter(|| async {
            for row in &rows {
                black_box(
                    cache
                        .execute(&add_one, row.clone(), &limits)
                        .await
                        .expect("call"),
                );
            }
        })
    });
    group.finish();

    let column: Vec<u8> = (0..COLUMN).flat_map(|i| (i as f64).to_le_bytes()).collect();
    let mut group = c.benchmark_group("column");
    group.throughput(Throughput::Elements(COLUMN as u64));
    group.sample_size(30);
    group.bench_function("double_1m_f64_as_bytes", |b| {
        b.to_async(&runtime).iter(|| async {
            let out = cache
                .execute(&double, Payload::Bytes(column.clone()), &limits)
                .await
                .expect("call");
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
