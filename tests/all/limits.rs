//! Adversarial guests: every ceiling holds, every failure is classified, and the cache
//! keeps working after each.

use std::time::Duration;

use burncache::{BurnCache, Digest, Error, ErrorKind, Limits};
use serde_json::{Value, json};

use crate::{cache, guests, json, no_limits, register, value};

/// Runs `op` under `limits`, checks the failure's kind, then checks that a good call
/// on the same cache still succeeds.
async fn fails_with(op: Value, limits: Limits, kind: ErrorKind) -> Error {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let err = cache
        .execute(&digest, json(op.clone()), &limits)
        .await
        .expect_err("must fail");
    assert_eq!(err.kind(), kind, "{op}: {err}");
    still_works(&cache, &digest).await;
    err
}

async fn still_works(cache: &BurnCache, digest: &Digest) {
    let out = cache
        .execute(digest, json(json!({"op": "counter"})), &no_limits())
        .await
        .expect("a good call after a bad one");
    assert_eq!(value(&out), json!({"calls": 1}));
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    let limits = Limits {
        timeout: Some(Duration::from_millis(200)),
        fuel: Some(u64::MAX),
        ..Limits::default()
    };
    fails_with(json!({"op": "loop"}), limits, ErrorKind::Timeout).await;
}

#[tokio::test]
async fn a_guest_blocked_in_the_host_times_out() {
    // Sleeping is time spent in a host call, where epoch interruption cannot reach.
    let limits = Limits {
        timeout: Some(Duration::from_millis(200)),
        ..Limits::default()
    };
    fails_with(
        json!({"op": "sleep", "ms": 60_000}),
        limits,
        ErrorKind::Timeout,
    )
    .await;
}

#[tokio::test]
async fn a_small_fuel_budget_runs_out() {
    let limits = Limits {
        fuel: Some(100_000),
        ..Limits::default()
    };
    fails_with(
        json!({"op": "spin", "n": 10_000_000}),
        limits,
        ErrorKind::FuelExhausted,
    )
    .await;
}

#[tokio::test]
async fn the_default_fuel_budget_stops_an_infinite_loop() {
    let limits = Limits {
        timeout: Some(Duration::from_secs(300)),
        ..Limits::default()
    };
    fails_with(json!({"op": "loop"}), limits, ErrorKind::FuelExhausted).await;
}

#[tokio::test]
async fn memory_growth_stops_at_the_ceiling() {
    let limits = Limits {
        memory_bytes: Some(16 << 20),
        ..Limits::default()
    };
    fails_with(json!({"op": "alloc"}), limits, ErrorKind::MemoryLimit).await;
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow_trap() {
    let err = fails_with(json!({"op": "recurse"}), no_limits(), ErrorKind::Trap).await;
    assert!(err.to_string().contains("stack overflow"), "{err}");
}

#[tokio::test]
async fn overflowing_the_shadow_stack_is_a_trap() {
    // Rust keeps large frames in linear memory; running off its bottom is an
    // out-of-bounds access, still a classified trap and never a host crash.
    fails_with(json!({"op": "deep-frames"}), no_limits(), ErrorKind::Trap).await;
}

#[tokio::test]
async fn a_huge_output_is_refused() {
    let limits = Limits {
        output_bytes: Some(1000),
        ..Limits::default()
    };
    let err = fails_with(
        json!({"op": "big-output", "len": 5000}),
        limits,
        ErrorKind::OutputTooLarge,
    )
    .await;
    assert_eq!(err, Error::OutputTooLarge(1000));
}

#[tokio::test]
async fn a_guest_error_is_its_own() {
    let err = fails_with(
        json!({"op": "fail", "why": "bad row"}),
        no_limits(),
        ErrorKind::Guest,
    )
    .await;
    assert_eq!(err, Error::Guest("rejected: bad row".into()));
}

#[tokio::test]
async fn a_panic_is_a_trap_with_the_message() {
    let err = fails_with(json!({"op": "panic"}), no_limits(), ErrorKind::Trap).await;
    assert!(
        err.to_string()
            .contains("boom: the guest panicked on purpose"),
        "{err}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test]
async fn requests_above_the_maxima_are_clamped() {
    let cache = crate::cache_with(burncache::Config {
        maxima: burncache::Ceilings {
            fuel: 100_000,
            ..burncache::Ceilings::MAXIMUM
        },
        ..burncache::Config::default()
    });
    let digest = register(&cache, guests::ADVERSARY).await;
    let err = cache
        .execute(
            &digest,
            json(json!({"op": "spin", "n": 10_000_000})),
            &Limits {
                fuel: Some(u64::MAX),
                ..Limits::default()
            },
        )
        .await
        .expect_err("clamped");
    assert_eq!(err.kind(), ErrorKind::FuelExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_guest_does_not_starve_other_calls() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let limits = Limits {
                    timeout: Some(Duration::from_secs(120)),
                    fuel: Some(u64::MAX),
                    ..Limits::default()
                };
                cache
                    .execute(&digest, json(json!({"op": "loop"})), &limits)
                    .await
            })
        })
        .collect();
    // Four guests spin on two worker threads; short calls still get through, because
    // fuel yields hand the threads back to the executor. Were the spinners hogging
    // the threads, these calls could only finish after the spinners had ended.
    for _ in 0..20 {
        let out = cache
            .execute(&digest, json(json!({"op": "counter"})), &no_limits())
            .await
            .expect("served");
        assert_eq!(value(&out), json!({"calls": 1}));
    }
    assert!(
        spinners.iter().all(|s| !s.is_finished()),
        "served while the spinners still ran"
    );
    for spinner in &spinners {
        spinner.abort();
    }
    for spinner in spinners {
        assert!(spinner.await.expect_err("aborted").is_cancelled());
    }
    // Dropping a running call frees its instance: the pool has room again.
    still_works(&cache, &digest).await;
}

#[tokio::test]
async fn outcomes_are_counted_by_kind() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let _ = cache
        .execute(&digest, json(json!({"op": "panic"})), &no_limits())
        .await;
    let _ = cache
        .execute(&digest, json(json!({"op": "fail"})), &no_limits())
        .await;
    let _ = cache
        .execute(&digest, json(json!({"op": "counter"})), &no_limits())
        .await;
    let stats = cache.stats();
    assert_eq!(stats.calls_ok, 1);
    assert_eq!(stats.failed(ErrorKind::Trap), 1);
    assert_eq!(stats.failed(ErrorKind::Guest), 1);
    assert!(stats.fuel_burned > 0);
}
