//! Registering: compile once under contention, bad bytes, remembered failures, forget.

use std::sync::Arc;

use burncache::{Digest, ErrorKind};

use crate::{cache, component, guests, read, register};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registrations_compile_once() {
    let cache = cache();
    let bytes: Arc<[u8]> = read(guests::ADD_ONE).into();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let cache = cache.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move { cache.register(&bytes).await })
        })
        .collect();
    let mut digests = Vec::new();
    for task in tasks {
        digests.push(task.await.expect("join").expect("register"));
    }
    assert!(digests.iter().all(|d| *d == Digest::of(&bytes)));
    let stats = cache.stats();
    assert_eq!(stats.compiles, 1, "{stats:?}");
    assert_eq!(stats.hits + stats.misses, 64, "{stats:?}");
    assert_eq!(stats.components, 1);
}

#[tokio::test]
async fn registering_known_bytes_is_a_hit() {
    let cache = cache();
    let first = register(&cache, guests::ADD_ONE).await;
    let second = register(&cache, guests::ADD_ONE).await;
    assert_eq!(first, second);
    assert_eq!(cache.register_by_hash(&first).await, Ok(first));
    let stats = cache.stats();
    assert_eq!(
        (stats.compiles, stats.hits, stats.misses),
        (1, 2, 1),
        "{stats:?}"
    );
}

/// Registers `bytes` twice, checks the failure kind and that it was remembered, then
/// that `forget` makes the next registration compile again.
async fn fails_and_is_remembered(bytes: &[u8], kind: ErrorKind, says: &str) {
    let cache = cache();
    let err = cache.register(bytes).await.expect_err("must fail");
    assert_eq!(err.kind(), kind, "{err}");
    assert!(err.to_string().contains(says), "{err}");
    assert_eq!(cache.register(bytes).await.expect_err("still fails"), err);
    assert_eq!(cache.stats().compiles, 1, "the failure is remembered");
    assert_eq!(cache.stats().compile_failures, 1);

    let digest = Digest::of(bytes);
    assert_eq!(cache.register_by_hash(&digest).await, Err(err.clone()));
    assert!(cache.forget(&digest));
    assert_eq!(cache.register(bytes).await.expect_err("fails again"), err);
    assert_eq!(
        cache.stats().compiles,
        2,
        "forget dropped the remembered failure"
    );
}

#[tokio::test]
async fn garbage_is_invalid_input() {
    fails_and_is_remembered(
        // An ELF header: not WebAssembly, and not UTF-8 text (so not a script).
        b"\x7fELF\x02\x01\x01\x00\xff\xfe",
        ErrorKind::InvalidInput,
        "neither a WebAssembly component nor a UTF-8 JavaScript script",
    )
    .await;
    fails_and_is_remembered(b"", ErrorKind::InvalidInput, "0 bytes").await;
}

#[tokio::test]
async fn a_core_module_is_invalid_input() {
    let module = wat::parse_str("(module (func (export \"f\")))").expect("wat");
    fails_and_is_remembered(&module, ErrorKind::InvalidInput, "core WebAssembly module").await;
}

#[tokio::test]
async fn an_import_the_host_lacks_fails_to_compile() {
    let bytes = component(
        r#"(component
             (import "example:missing/thing@1.0.0" (instance (export "f" (func))))
           )"#,
    );
    fails_and_is_remembered(&bytes, ErrorKind::CompileFailed, "example:missing/thing").await;
}

#[tokio::test]
async fn a_truncated_component_fails_to_compile() {
    let bytes = read(guests::ADD_ONE);
    fails_and_is_remembered(
        &bytes[..bytes.len() / 2],
        ErrorKind::CompileFailed,
        "compile failed",
    )
    .await;
}

#[tokio::test]
async fn unknown_digests_are_not_found() {
    let cache = cache();
    let digest = Digest::of(b"never registered");
    let err = cache.register_by_hash(&digest).await.expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = cache
        .execute(
            &digest,
            crate::json(serde_json::json!(null)),
            &crate::no_limits(),
        )
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        cache.source(&digest).expect_err("unknown").kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn forget_drops_a_component_and_keeps_the_others() {
    let cache = cache();
    let add_one = register(&cache, guests::ADD_ONE).await;
    let words = register(&cache, guests::WORD_COUNT).await;
    assert_eq!(
        &*cache.source(&add_one).expect("held"),
        &read(guests::ADD_ONE)[..]
    );
    assert!(cache.forget(&add_one));
    assert!(!cache.forget(&add_one), "already gone");
    assert_eq!(
        cache
            .register_by_hash(&add_one)
            .await
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(cache.register_by_hash(&words).await, Ok(words));
    assert_eq!(cache.digests(), vec![words]);
}

#[tokio::test]
async fn a_command_is_not_a_function() {
    let cache = cache();
    let digest = register(&cache, guests::CLI_COMMAND).await;
    let err = cache
        .execute(
            &digest,
            crate::json(serde_json::json!(1)),
            &crate::no_limits(),
        )
        .await
        .expect_err("not a function");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("burncache:host/function"), "{err}");
}
