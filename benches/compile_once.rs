//! P3, compile-once under contention: 64 concurrent registrations of one new
//! component in a fresh cache, against one registration in a fresh cache. Each
//! iteration checks that exactly one compile happened.
//!
//! Run: `cargo bench -p burncache --bench compile_once`

use std::sync::Arc;

use burncache::{BurnCache, Config};
use criterion::{Criterion, criterion_group, criterion_main};

fn fresh() -> BurnCache {
    BurnCache::with_config(Config {
        max_instances: 16,
        ..Config::default()
    })
    .expect("cache")
}

async fn register_concurrently(bytes: Arc<[u8]>, callers: usize) {
    let cache = fresh();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, bytes) = (cache.clone(), bytes.clone());
            tokio::spawn(async move { cache.register(&bytes).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("register");
    }
    assert_eq!(cache.stats().compiles, 1, "exactly one compile");
}

fn compile_once(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bytes: Arc<[u8]> = std::fs::read(burncache_test_guests::PIPELINE)
        .expect("pipeline is built")
        .into();
    let mut group = c.benchmark_group("compile_once");
    group.sample_size(20);
    group.bench_function("1_registration", |b| {
        b.to_async(&runtime)
            .iter(|| register_concurrently(bytes.clone(), 1))
    });
    group.bench_function("64_concurrent_registrations", |b| {
        b.to_async(&runtime)
            .iter(|| register_concurrently(bytes.clone(), 64))
    });
    group.finish();
}

criterion_group!(benches, compile_once);
criterion_main!(benches);
