//! 10,000 rows through a JavaScript script in one batch, side by side in one run:
//!
//! - `per_row`: `module.exports = (d) => ...`, which the runtime calls once per row
//!   (one instance, one Store, every row its own call into the function);
//! - `whole_batch`: `module.exports.batch = (rows) => rows.map(...)`, which gets the
//!   10,000 rows as one array and returns one array.
//!
//! Both double `n` in `{"n": ...}` rows, through `BurnCache::execute_batch`.
//!
//! Run: `cargo bench -p burncache --bench script_batch`.

use std::hint::black_box;
use std::time::Duration;

use burncache::{BurnCache, Limits, Payload};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ROWS: usize = 10_000;
const PER_ROW: &str = "module.exports = (d) => ({ n: d.n * 2 });\n";
const WHOLE_BATCH: &str = "module.exports.batch = (rows) => rows.map((d) => ({ n: d.n * 2 }));\n";

fn script_batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = BurnCache::new().expect("cache");
    let limits = Limits {
        fuel: Some(100_000_000_000),
        timeout: Some(Duration::from_secs(60)),
        ..Limits::default()
    };
    let rows: Vec<Payload> = (0..ROWS)
        .map(|n| Payload::Json(format!("{{\"n\":{n}}}")))
        .collect();

    let mut group = c.benchmark_group("script_batch_10k");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    for (label, source) in [("per_row", PER_ROW), ("whole_batch", WHOLE_BATCH)] {
        let digest = runtime
            .block_on(cache.register(source.as_bytes()))
            .expect("register the script");
        // Both give the same answers.
        let out = runtime
            .block_on(cache.execute_batch(&digest, rows.clone(), &limits))
            .expect("the batch runs");
        assert_eq!(out.len(), ROWS);
        assert_eq!(
            out[7],
            Ok(Payload::Json(r#"{"n":14}"#.to_string())),
            "{label}"
        );
        group.bench_function(label, |b| {
            b.to_async(&runtime).iter(|| async {
                let out = cache
                    .execute_batch(&digest, rows.clone(), &limits)
                    .await
                    .expect("the batch runs");
                black_box(out)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, script_batch);
criterion_main!(benches);
