//! The sandbox's promise at its edges: host-side memory a guest causes, nested calls
//! capped by what their caller has left, accounting that does not drift, output held
//! to the contract, and compile-once whatever callers do.

use std::time::Duration;

use burncache::{Config, Digest, Error, ErrorKind, Limits, Payload, RunOptions, Store};
use serde_json::json;

use crate::{cache, cache_with, guests, json, no_limits, read, register, value};

/// A guest that makes the host keep header maps, 30 KB each, under a 16 MiB ceiling:
/// the host-side state counts against the call's ceiling, and the call ends as
/// `memory-limit` long before its fuel runs out (unbounded, the default fuel was
/// enough to make the host keep about 1 GB).
#[tokio::test]
async fn header_maps_a_guest_builds_are_bounded_by_its_memory_ceiling() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let limits = Limits {
        memory_bytes: Some(16 << 20),
        ..Limits::default()
    };
    let err = cache
        .execute(
            &digest,
            json(json!({"op": "headers", "len": 30_000})),
            &limits,
        )
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");

    // A map larger than any real header block is refused outright, as host-side
    // memory past its limit.
    let err = cache
        .execute(
            &digest,
            json(json!({"op": "headers", "len": 200_000})),
            &limits,
        )
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
    let out = cache
        .execute(&digest, json(json!({"op": "counter"})), &no_limits())
        .await
        .expect("the node goes on");
    assert_eq!(value(&out), json!({"calls": 1}));
}

/// Outgoing requests keep what a guest sets on them: an authority far longer than a
/// real one is refused with the setter's own error, and requests kept without end
/// fill the call's table and end it as `memory-limit`.
#[tokio::test]
async fn outgoing_requests_a_guest_keeps_are_bounded() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let limits = Limits {
        memory_bytes: Some(16 << 20),
        ..Limits::default()
    };
    let err = cache
        .execute(
            &digest,
            json(json!({"op": "requests", "len": 1 << 20})),
            &limits,
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::Guest(m) if m.contains("authority refused after 0")),
        "{err}"
    );
    let err = cache
        .execute(
            &digest,
            json(json!({"op": "requests", "len": 4000})),
            &limits,
        )
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
}

/// A guest's own error text is output too: held to the output ceiling, alone and
/// across a batch's rows.
#[tokio::test]
async fn a_guests_error_text_counts_against_the_output_ceiling() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let limits = Limits {
        output_bytes: Some(1 << 20),
        ..Limits::default()
    };
    let long = |len: u64| json(json!({"op": "fail-long", "len": len}));
    let err = cache
        .execute(&digest, long(2 << 20), &limits)
        .await
        .expect_err("too large");
    assert_eq!(err, Error::OutputTooLarge(1 << 20));

    let rows = cache
        .execute_batch(&digest, vec![long(400_000); 4], &limits)
        .await
        .expect("batch");
    let kinds: Vec<_> = rows
        .iter()
        .map(|row| row.as_ref().expect_err("a failed row").kind())
        .collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::Guest,
            ErrorKind::Guest,
            ErrorKind::OutputTooLarge,
            ErrorKind::OutputTooLarge
        ]
    );
}

/// A caller holding 8 MiB of its 16 MiB asks for a gigabyte for its child: the child
/// gets at most the 8 MiB left.
#[tokio::test]
async fn a_nested_call_gets_at_most_the_memory_its_caller_has_left() {
    let cache = cache();
    let me = register(&cache, guests::ADVERSARY).await;
    let limits = Limits {
        memory_bytes: Some(16 << 20),
        ..Limits::default()
    };
    let input = json!({"op": "hold-and-delegate", "hold_mib": 8, "digest": me.to_string()});
    let out = cache
        .execute(&me, json(input), &limits)
        .await
        .expect("the child reports");
    let mib = value(&out)["mib"].as_u64().expect("a count");
    assert!((1..8).contains(&mib), "the child took {mib} MiB");

    // Alone, the same hoard gets (nearly) the whole ceiling.
    let alone = cache
        .execute(&me, json(json!({"op": "hoard"})), &limits)
        .await
        .expect("hoard");
    let alone = value(&alone)["mib"].as_u64().expect("a count");
    assert!(alone > 8, "alone it took {alone} MiB");
}

/// Three rows trap in a batch whose budget covers every row with room to spare: the
/// batch still ends with a result per row, because after each trap the next Store
/// gets what is left of the budget, counted once.
#[tokio::test]
async fn a_batch_with_trapping_rows_and_fuel_to_spare_completes() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let spin = json!({"op": "spin", "n": 5_000_000});
    let one = cache
        .execute_metered(&digest, json(spin.clone()), &no_limits())
        .await;
    one.result.expect("spin");
    let panic = json!({"op": "panic"});
    let rows = vec![
        json(spin.clone()),
        json(panic.clone()),
        json(panic.clone()),
        json(panic),
        json(spin),
    ];
    // What the rows cost: the spin before the first trap twice (once in the batch
    // call, once on its own), the last spin, and three panics. Five spins' worth is
    // comfortably more.
    let limits = Limits {
        fuel: Some(one.fuel_burned * 5),
        ..Limits::default()
    };
    let outcome = cache.execute_batch_metered(&digest, rows, &limits).await;
    let rows = outcome.result.expect("the batch completes");
    let kinds: Vec<_> = rows
        .iter()
        .map(|row| row.as_ref().map_err(Error::kind).map(drop))
        .collect();
    assert_eq!(
        kinds,
        [
            Ok(()),
            Err(ErrorKind::Trap),
            Err(ErrorKind::Trap),
            Err(ErrorKind::Trap),
            Ok(())
        ]
    );
    assert!(
        outcome.fuel_burned <= one.fuel_burned * 5,
        "burned {}",
        outcome.fuel_burned
    );
    assert_eq!(
        cache.stats().fuel_burned,
        one.fuel_burned + outcome.fuel_burned
    );
}

/// `json` output must be JSON: a guest that breaks the contract fails, classified,
/// and in a batch only its row fails.
#[tokio::test]
async fn malformed_json_output_is_a_classified_failure() {
    let cache = cache();
    let digest = register(&cache, guests::ADVERSARY).await;
    let bad = Payload::Json(r#""bad-json""#.to_string());
    let err = cache
        .execute(&digest, bad.clone(), &no_limits())
        .await
        .expect_err("malformed");
    assert_eq!(err.kind(), ErrorKind::Guest, "{err}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");

    let rows = cache
        .execute_batch(
            &digest,
            vec![json(json!({"op": "counter"})), bad],
            &no_limits(),
        )
        .await
        .expect("batch");
    assert!(rows[0].is_ok());
    assert_eq!(
        rows[1].as_ref().expect_err("row").kind(),
        ErrorKind::Guest,
        "{:?}",
        rows[1]
    );
    assert_eq!(cache.stats().failed(ErrorKind::Guest), 1);
}

/// A component that takes a while to compile (about a second here): many functions,
/// each a little work.
fn slow_to_compile() -> Vec<u8> {
    let mut wat = String::from("(component (core module\n");
    for i in 0..5_000 {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param i32) (result i32) local.get 0 i32.const {i} \
             i32.add i32.const 7 i32.mul local.get 0 i32.xor i32.const 3 i32.rotl)\n"
        ));
    }
    wat.push_str("))");
    crate::component(&wat)
}

/// Twenty callers of a component not compiled yet hang up while it compiles; one
/// more caller then finds it compiled: one compile in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_hang_up_during_a_compile_do_not_restart_it() {
    let cache = cache();
    let bytes = std::sync::Arc::new(slow_to_compile());
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move { cache.register(&bytes).await })
        })
        .collect();
    // Every caller has looked (a late one may find the work done: a hit).
    wait_for(|| cache.stats().misses + cache.stats().hits == 20).await;
    for caller in &callers {
        caller.abort();
    }
    for caller in callers {
        let _ = caller.await;
    }
    cache.register(&bytes).await.expect("compiles");
    let stats = cache.stats();
    assert_eq!(stats.compiles, 1, "{stats:?}");
    assert_eq!(stats.compile_failures, 0, "{stats:?}");
}

/// The same for the JavaScript runtime's preparation and a script's check: callers
/// that hang up do not make the next caller start them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_hang_up_during_the_runtime_preparation_do_not_restart_it() {
    let cache = cache();
    let source = b"module.exports = (d) => d;\n";
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.register(source).await })
        })
        .collect();
    // Every caller has looked (a late one may find the work done: a hit).
    wait_for(|| cache.stats().misses + cache.stats().hits == 20).await;
    for caller in &callers {
        caller.abort();
    }
    for caller in callers {
        let _ = caller.await;
    }
    cache.register(source).await.expect("checks");
    let stats = cache.stats();
    assert_eq!(stats.script_checks, 1, "{stats:?}");
    assert_eq!(stats.runtime_compiles + stats.runtime_loads, 1, "{stats:?}");
}

async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the condition never came true");
}

/// A nested call to a script this node has not checked yet runs the check on the
/// caller's budget: with little fuel the check runs out, as the call does, and
/// nothing is remembered; with the node's defaults the script then checks fine.
#[tokio::test]
async fn a_scripts_check_in_a_nested_call_runs_on_the_callers_budget() {
    let store = Store::from_url("memory://nested-script-check").expect("memory");
    let source =
        "let t = 0;\nfor (let i = 0; i < 200000; i++) t += i;\nmodule.exports = (d) => d;\n";
    let script = Digest::of(source.as_bytes());
    store
        .publish(&script, source.as_bytes())
        .await
        .expect("publish");
    let cache = cache_with(Config {
        store: Some(store),
        artifact_dir: Some(crate::scripts::js_artifacts()),
        ..Config::default()
    });
    let me = register(&cache, guests::ADVERSARY).await;
    let input =
        json!({"op": "delegate", "digest": script.to_string(), "n": 1, "child_fuel": 50_000});
    let outcome = cache.execute_metered(&me, json(input), &no_limits()).await;
    let child = value(&outcome.result.expect("the caller reports"))["child"]
        .as_str()
        .expect("text")
        .to_string();
    assert!(child.contains("FuelExhausted"), "{child}");
    assert_eq!(cache.stats().script_checks, 1);
    assert_eq!(cache.stats().compile_failures, 0, "not the script's fault");

    cache
        .register_by_hash(&script)
        .await
        .expect("checks under the defaults");
    assert_eq!(
        cache.stats().script_checks,
        2,
        "checked again: nothing remembered"
    );
}

/// `run` counts its fuel, and every kind of call counts a failure that happens
/// before its guest starts.
#[tokio::test]
async fn every_call_kind_is_counted_the_same_way() {
    let cache = cache();
    let outcome = cache
        .run_command(read(guests::CLI_COMMAND), RunOptions::default())
        .await;
    assert!(outcome.fuel_burned > 0);
    assert_eq!(cache.stats().fuel_burned, outcome.fuel_burned);
    assert_eq!(cache.stats().calls_ok, 1);

    let refused = cache
        .run_command(b"\0asm not really".to_vec(), RunOptions::default())
        .await;
    let kind = refused.result.expect_err("not a component").kind();
    assert_eq!(cache.stats().failed(kind), 1, "{kind}");

    let unknown = Digest::of(b"nothing here");
    let request = hyper::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    let err = cache
        .handle_http(&unknown, request, &no_limits(), "req-1")
        .await
        .map(drop)
        .expect_err("not found");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(cache.stats().failed(ErrorKind::NotFound), 1);
}
