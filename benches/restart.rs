//! P4, restart: the first call of a component in a fresh cache (a new process, as far
//! as burncache can tell: a new engine, an empty cache), when the compiled artifact is
//! on disk, against the same with a full compile.
//!
//! Run: `cargo bench -p burncache --bench restart`

use std::hint::black_box;
use std::path::Path;

use burncache::{BurnCache, Config, Limits, Payload};
use criterion::{Criterion, criterion_group, criterion_main};

async fn first_call(bytes: &[u8], artifacts: Option<&Path>) -> Payload {
    let cache = BurnCache::with_config(Config {
        artifact_dir: artifacts.map(Path::to_path_buf),
        ..Config::default()
    })
    .expect("cache");
    let digest = cache.register(bytes).await.expect("register");
    let out = cache
        .execute(
            &digest,
            Payload::Json(r#"{"n":41}"#.into()),
            &Limits::default(),
        )
        .await;
    // The pipeline rejects this input: the call ran, which is what is measured.
    out.unwrap_or(Payload::Json(String::new()))
}

fn restart(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bytes = std::fs::read(burncache_test_guests::PIPELINE).expect("pipeline is built");
    let dir = std::env::temp_dir().join(format!("burncache-bench-restart-{}", std::process::id()));
    // Leave the artifact on disk for the warm case.
    runtime.block_on(first_call(&bytes, Some(&dir)));

    let mut group = c.benchmark_group("restart");
    group.sample_size(20);
    group.bench_function("first_call_from_artifact", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(first_call(&bytes, Some(&dir)).await) })
    });
    group.bench_function("first_call_with_compile", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(first_call(&bytes, None).await) })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, restart);
criterion_main!(benches);
