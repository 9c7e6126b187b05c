//! JavaScript scripts on the shared runtime: registering a new script, and the
//! per-call time of `module.exports = (d) => ({ n: d.n + 1 })`.
//!
//! Run: `cargo bench -p burncache --bench scripts`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use burncache::{BurnCache, Limits, Payload};
use criterion::{Criterion, criterion_group, criterion_main};

const INCREMENT: &str = "module.exports = (d) => ({ n: d.n + 1 });\n";

fn scripts(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = BurnCache::new().expect("cache");
    let digest = runtime
        .block_on(cache.register(INCREMENT.as_bytes()))
        .expect("register");
    let limits = Limits::default();
    let input = r#"{"n":41}"#;

    let mut group = c.benchmark_group("script_call");
    group.bench_function("shared_runtime", |b| {
        b.to_async(&runtime).iter(|| async {
            let out = cache
                .execute(&digest, Payload::Json(input.to_string()), &limits)
                .await
                .expect("call");
            black_box(out)
        })
    });
    group.finish();

    // Every iteration registers a script this node has never seen: the check on the
    // (already compiled) runtime is what a new script costs.
    let fresh = AtomicU64::new(0);
    let mut group = c.benchmark_group("script_register");
    group.bench_function("shared_runtime", |b| {
        b.to_async(&runtime).iter(|| async {
            let n = fresh.fetch_add(1, Ordering::Relaxed);
            let source = format!("// script {n}\n{INCREMENT}");
            black_box(cache.register(source.as_bytes()).await.expect("register"))
        })
    });
    group.finish();
}

criterion_group!(benches, scripts);
criterion_main!(benches);
