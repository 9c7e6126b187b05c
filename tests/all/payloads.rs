//! Calls and batches: JSON and bytes in and out, per-row results, isolation.

use burncache::{ComponentKind, ErrorKind, Payload};
use serde_json::json;

use crate::{cache, guests, json, no_limits, read, register, value};

#[tokio::test]
async fn json_round_trip() {
    let cache = cache();
    let digest = register(&cache, guests::ADD_ONE).await;
    let out = cache
        .execute(&digest, json(json!({"n": 41})), &no_limits())
        .await
        .expect("call");
    assert_eq!(value(&out), json!({"n": 42}));
}

#[tokio::test]
async fn bytes_round_trip() {
    let cache = cache();
    let echo = register(&cache, guests::ADVERSARY).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let out = cache
        .execute(&echo, Payload::Bytes(bytes.clone()), &no_limits())
        .await
        .expect("call");
    assert_eq!(out, Payload::Bytes(bytes));

    let words = register(&cache, guests::WORD_COUNT).await;
    let out = cache
        .execute(
            &words,
            Payload::Bytes(b"one two\nthree\n".to_vec()),
            &no_limits(),
        )
        .await
        .expect("call");
    assert_eq!(value(&out), json!({"lines": 2, "words": 3, "bytes": 14}));
}

#[tokio::test]
async fn malformed_json_input_is_refused_before_the_guest_runs() {
    let cache = cache();
    let digest = register(&cache, guests::ADD_ONE).await;
    let err = cache
        .execute(&digest, Payload::Json("{\"n\": ".into()), &no_limits())
        .await
        .expect_err("malformed");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(cache.stats().fuel_burned, 0, "nothing ran");
}

#[tokio::test]
async fn a_guest_error_is_classified() {
    let cache = cache();
    let digest = register(&cache, guests::ADD_ONE).await;
    let err = cache
        .execute(&digest, json(json!({"n": i64::MAX})), &no_limits())
        .await
        .expect_err("overflow");
    assert_eq!(
        err,
        burncache::Error::Guest("n is too large to add one to".into())
    );
    let err = cache
        .execute(&digest, json(json!({"m": 1})), &no_limits())
        .await
        .expect_err("wrong shape");
    assert_eq!(err.kind(), ErrorKind::Guest);
    assert!(err.to_string().contains("missing field `n`"), "{err}");
}

#[tokio::test]
async fn a_failing_row_does_not_sink_the_batch() {
    let cache = cache();
    let digest = register(&cache, guests::ADD_ONE).await;
    let rows = vec![
        json(json!({"n": 1})),
        json(json!({"n": i64::MAX})),
        json(json!({"n": 3})),
    ];
    let out = cache
        .execute_batch(&digest, rows, &no_limits())
        .await
        .expect("batch");
    assert_eq!(out.len(), 3);
    assert_eq!(value(out[0].as_ref().expect("row 0")), json!({"n": 2}));
    assert_eq!(out[1].as_ref().expect_err("row 1").kind(), ErrorKind::Guest);
    assert_eq!(value(out[2].as_ref().expect("row 2")), json!({"n": 4}));
}

#[tokio::test]
async fn a_batch_runs_in_one_instance() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let rows = vec![json(json!({"op": "counter"})); 5];
    let out = cache
        .execute_batch(&digest, rows, &no_limits())
        .await
        .expect("batch");
    let calls: Vec<u64> = out
        .iter()
        .map(|r| value(r.as_ref().expect("ok"))["calls"].as_u64().expect("n"))
        .collect();
    assert_eq!(calls, vec![1, 2, 3, 4, 5], "one instance saw every row");
}

#[tokio::test]
async fn a_trapping_row_is_pinned_on_its_row() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let rows = vec![
        json(json!({"op": "counter"})),
        json(json!({"op": "panic"})),
        json(json!({"op": "counter"})),
        json(json!({"op": "fail", "why": "row 3"})),
    ];
    let out = cache
        .execute_batch(&digest, rows, &no_limits())
        .await
        .expect("batch");
    assert!(out[0].is_ok(), "{:?}", out[0]);
    let trap = out[1].as_ref().expect_err("row 1 panics");
    assert_eq!(trap.kind(), ErrorKind::Trap);
    assert!(trap.to_string().contains("boom"), "{trap}");
    assert!(out[2].is_ok(), "{:?}", out[2]);
    assert_eq!(
        out[3].as_ref().expect_err("row 3"),
        &burncache::Error::Guest("rejected: row 3".into())
    );
}

#[tokio::test]
async fn a_batch_with_a_malformed_row_is_refused_whole() {
    let cache = cache();
    let digest = register(&cache, guests::ADD_ONE).await;
    let rows = vec![json(json!({"n": 1})), Payload::Json("{".into())];
    let err = cache
        .execute_batch(&digest, rows, &no_limits())
        .await
        .expect_err("malformed");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("row 1"), "{err}");
}

#[tokio::test]
async fn every_call_gets_a_fresh_instance() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    for _ in 0..3 {
        let out = cache
            .execute(&digest, json(json!({"op": "counter"})), &no_limits())
            .await
            .expect("call");
        assert_eq!(value(&out), json!({"calls": 1}));
    }
    assert_eq!(cache.stats().calls_ok, 3);
}

#[test]
fn inspect_names_the_world() {
    let add_one = burncache::inspect(&read(guests::ADD_ONE)).expect("inspect");
    assert_eq!(add_one.kind, ComponentKind::Function);
    assert!(
        add_one
            .exports
            .contains(&burncache::FUNCTION_EXPORT.to_string())
    );
    assert!(
        add_one
            .wit
            .contains("export burncache:host/function@0.1.1;"),
        "{}",
        add_one.wit
    );

    let pipeline = burncache::inspect(&read(guests::PIPELINE)).expect("inspect");
    assert!(
        pipeline
            .imports
            .iter()
            .any(|i| i == "burncache:host/burn-cache@0.1.1"),
        "{:?}",
        pipeline.imports
    );

    let command = burncache::inspect(&read(guests::CLI_COMMAND)).expect("inspect");
    assert_eq!(command.kind, ComponentKind::Command);

    // Text is a script (told by content); bytes that are neither are refused.
    let script = burncache::inspect(b"module.exports = (d) => d;").expect("inspect");
    assert_eq!(script.kind, ComponentKind::Script);
    let err = burncache::inspect(b"\xffnope").expect_err("garbage");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_column_of_f64_through_bytes() {
    let cache = cache();
    let digest = register(&cache, guests::DOUBLE).await;
    let column: Vec<u8> = (0..10_000)
        .flat_map(|i| (i as f64 * 0.5).to_le_bytes())
        .collect();
    let out = cache
        .execute(&digest, Payload::Bytes(column), &no_limits())
        .await
        .expect("call");
    let Payload::Bytes(out) = out else {
        panic!("bytes out")
    };
    let values: Vec<f64> = out
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(values.len(), 10_000);
    assert!(
        values.iter().enumerate().all(|(i, v)| *v == i as f64),
        "doubled"
    );
    let err = cache
        .execute(&digest, Payload::Bytes(vec![0; 7]), &no_limits())
        .await
        .expect_err("ragged");
    assert_eq!(err.kind(), ErrorKind::Guest);
}
