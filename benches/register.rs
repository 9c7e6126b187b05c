//! P6, the register hit path: re-registering bytes this node already holds, for
//! components of 1 MiB and 10 MiB (a real component padded with a custom section),
//! against hashing the same bytes alone, and the look-up of a known digest on its own
//! (what a re-registration adds beyond hashing).
//!
//! Run: `cargo bench -p burncache --bench register`

use std::hint::black_box;

use burncache::{BurnCache, Digest};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// `bytes` with a custom section appended that brings it to `size` bytes; custom
/// sections may appear anywhere in a component, so it stays valid.
fn padded(bytes: &[u8], size: usize) -> Vec<u8> {
    let name = b"padding";
    let payload = size.saturating_sub(bytes.len() + 1 + 5 + 1 + name.len());
    let content = 1 + name.len() + payload;
    let mut out = bytes.to_vec();
    out.push(0);
    // A 5-byte LEB128 length, so the total comes out exact.
    let mut n = content as u32;
    for i in 0..5 {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if i < 4 { byte | 0x80 } else { byte });
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + payload, 0xab);
    out
}

fn register(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = BurnCache::new().expect("cache");
    let component = std::fs::read(burncache_test_guests::ADD_ONE).expect("built");
    let mut group = c.benchmark_group("register_hit");
    for (label, size) in [("1MiB", 1 << 20), ("10MiB", 10 << 20)] {
        let bytes = padded(&component, size);
        assert_eq!(bytes.len(), size);
        runtime
            .block_on(cache.register(&bytes))
            .expect("first registration");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("sha256_only_{label}"), |b| {
            b.iter(|| black_box(Digest::of(black_box(&bytes))))
        });
        group.bench_function(format!("register_known_{label}"), |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(cache.register(black_box(&bytes)).await.expect("hit")) })
        });
    }
    // The look-up on its own: what a re-registration adds beyond hashing.
    let digest = Digest::of(&padded(&component, 1 << 20));
    group.throughput(Throughput::Elements(1));
    group.bench_function("lookup_known_digest", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                cache
                    .register_by_hash(black_box(&digest))
                    .await
                    .expect("hit"),
            )
        })
    });
    group.finish();
    assert_eq!(
        cache.stats().compiles,
        2,
        "only the first registrations compiled"
    );
}

criterion_group!(benches, register);
criterion_main!(benches);
