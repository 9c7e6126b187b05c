//! burncache's integration tests: one binary, a module per area.

mod cli;
mod cluster;
mod columns;
mod compile;
mod compose;
mod config;
mod conformance;
mod deploy;
mod limits;
mod nested;
#[cfg(feature = "otlp")]
mod otlp;
mod outbound;
mod packaging;
mod payloads;
mod programs;
mod s3;
mod sandbox;
mod scripts;
mod serve;
mod store;
mod trust;
mod upstream;
mod wasmtime_cli;

use burncache::{BurnCache, Config, Digest, Limits, Payload};
use burncache_test_guests as guests;

/// A cache with a small instance pool, so that many tests can each have their own.
fn cache() -> BurnCache {
    cache_with(Config::default())
}

fn cache_with(config: Config) -> BurnCache {
    BurnCache::with_config(Config {
        max_instances: 32,
        ..config
    })
    .expect("build a cache")
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

async fn register(cache: &BurnCache, path: &str) -> Digest {
    cache.register(&read(path)).await.expect("register")
}

fn json(value: serde_json::Value) -> Payload {
    Payload::json(&value).expect("serialize")
}

fn value(payload: &Payload) -> serde_json::Value {
    payload.to_value().expect("a JSON output")
}

/// A component in WAT text.
fn component(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid WAT")
}

fn no_limits() -> Limits {
    Limits::default()
}

/// A fresh directory under the system's temporary directory, left in place so that a
/// failed test can be looked into.
fn tempdir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("burncache-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}
