//! Guests calling guests through `burn-cache`: composition, depth, and budgets.

use burncache::{Config, ErrorKind, Limits};
use serde_json::{Value, json};

use crate::{cache, cache_with, guests, json, no_limits, register, value};

#[tokio::test]
async fn pipeline_combines_two_components() {
    let cache = cache();
    let add_one = register(&cache, guests::ADD_ONE).await;
    let word_count = register(&cache, guests::WORD_COUNT).await;
    let pipeline = register(&cache, guests::PIPELINE).await;
    let input = json!({
        "add_one": add_one.to_string(),
        "word_count": word_count.to_string(),
        "n": 41,
        "text": "the quick brown fox\njumps\n",
    });
    let out = cache
        .execute(&pipeline, json(input), &no_limits())
        .await
        .expect("pipeline");
    assert_eq!(
        value(&out),
        json!({"n": 42, "counts": {"lines": 2, "words": 5, "bytes": 26}})
    );
    assert_eq!(
        cache.stats().calls_ok,
        3,
        "the pipeline and its two children"
    );
}

#[tokio::test]
async fn a_guest_calling_itself_stops_at_the_depth_limit() {
    let cache = cache();
    let me = register(&cache, guests::ADVERSARY).await;
    let out = cache
        .execute(
            &me,
            json(json!({"op": "self", "digest": me.to_string()})),
            &no_limits(),
        )
        .await
        .expect("the guest reports how deep it got");
    let out = value(&out);
    assert_eq!(out["level"], 8, "{out}");
    assert_eq!(out["error"], "Error::DepthExceeded(8)", "{out}");
    assert_eq!(
        cache.stats().failed(ErrorKind::DepthExceeded),
        0,
        "refused before running"
    );
}

#[tokio::test]
async fn the_depth_limit_is_the_operators() {
    let cache = cache_with(Config {
        max_depth: 2,
        ..Config::default()
    });
    let me = register(&cache, guests::ADVERSARY).await;
    let out = cache
        .execute(
            &me,
            json(json!({"op": "self", "digest": me.to_string()})),
            &no_limits(),
        )
        .await
        .expect("report");
    assert_eq!(value(&out)["error"], "Error::DepthExceeded(2)");
}

#[tokio::test]
async fn a_caller_cannot_escape_its_budget_through_children() {
    let cache = cache();
    let me = register(&cache, guests::ADVERSARY).await;
    let delegate = |n: u64| json(json!({"op": "delegate", "digest": me.to_string(), "n": n}));

    // With a small budget, the child is capped at what the parent has left: it runs
    // out, and the parent, charged for it, has nothing left either.
    let small = Limits {
        fuel: Some(2_000_000),
        ..Limits::default()
    };
    let outcome = cache
        .execute_metered(&me, delegate(100_000_000), &small)
        .await;
    assert_eq!(
        outcome.result.expect_err("out of fuel").kind(),
        ErrorKind::FuelExhausted
    );
    assert!(
        outcome.fuel_burned <= 2_000_000,
        "burned {}",
        outcome.fuel_burned
    );
    assert_eq!(
        cache.stats().failed(ErrorKind::FuelExhausted),
        2,
        "child and parent"
    );

    // With room, the child's work shows up on the parent's meter.
    let alone = cache
        .execute_metered(
            &me,
            json(json!({"op": "spin", "n": 1_000_000})),
            &no_limits(),
        )
        .await;
    let spin_cost = alone.fuel_burned;
    alone.result.expect("spin");
    let nested = cache
        .execute_metered(&me, delegate(1_000_000), &no_limits())
        .await;
    let answer: Value = value(&nested.result.expect("delegate"));
    assert_eq!(answer["child"], "Ok(\"done\")");
    assert!(
        nested.fuel_burned > spin_cost,
        "parent {} <= child {spin_cost}",
        nested.fuel_burned
    );
}

#[tokio::test]
async fn a_nested_call_gets_at_most_the_callers_deadline() {
    let cache = cache();
    let me = register(&cache, guests::ADVERSARY).await;
    // The child asks for all the fuel it can get and no deadline of its own; it
    // inherits what the parent has left of its deadline.
    let input =
        json!({"op": "delegate", "digest": me.to_string(), "n": u64::MAX, "child_fuel": u64::MAX});
    let limits = Limits {
        timeout: Some(std::time::Duration::from_millis(300)),
        fuel: Some(u64::MAX),
        ..Limits::default()
    };
    let err = cache
        .execute(&me, json(input), &limits)
        .await
        .expect_err("deadline");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(
        cache.stats().failed(ErrorKind::Timeout),
        2,
        "child and parent"
    );
}

/// What a guest hears back when it tries to register bytes on a cache made with
/// `config`.
async fn guest_register_answer(config: Config) -> String {
    let cache = cache_with(config);
    let me = register(&cache, guests::ADVERSARY).await;
    let out = cache
        .execute(
            &me,
            json(json!({"op": "register", "bytes": "not a component"})),
            &no_limits(),
        )
        .await
        .expect("report");
    value(&out)["register"].as_str().expect("text").to_string()
}

#[tokio::test]
async fn guests_may_not_register_unless_allowed() {
    let denied = guest_register_answer(Config::default()).await;
    assert!(denied.contains("PermissionDenied"), "{denied}");

    let allowed = guest_register_answer(Config {
        allow_guest_register: true,
        ..Config::default()
    })
    .await;
    // Allowed through, then refused for what the bytes are: text, so a script, and
    // not valid JavaScript.
    assert!(allowed.contains("CompileFailed"), "{allowed}");
    assert!(allowed.contains("SyntaxError"), "{allowed}");
}

#[tokio::test]
async fn nested_calls_to_unknown_or_malformed_digests_are_classified() {
    let cache = cache();
    let me = register(&cache, guests::ADVERSARY).await;
    for (digest, kind) in [("abc", "InvalidDigest"), (&"0".repeat(64)[..], "NotFound")] {
        let out = cache
            .execute(
                &me,
                json(json!({"op": "delegate", "digest": digest, "n": 1})),
                &no_limits(),
            )
            .await
            .expect("report");
        let child = value(&out)["child"].as_str().expect("text").to_string();
        assert!(child.contains(kind), "{digest}: {child}");
    }
}
