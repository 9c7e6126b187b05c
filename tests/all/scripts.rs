//! JavaScript scripts on the shared runtime: round trips in both module forms, bytes,
//! every failure classified, compile-once accounting, nested calls both ways, batches.

use std::time::Duration;

use burncache::{BurnCache, Config, Error, Limits, Payload, SourceKind};
use serde_json::json;

use crate::{cache_with, guests, json, read, register, value};

const INCREMENT: &str = "module.exports = (d) => ({ n: d.n + 1 });\n";

/// The artifact directory every script test shares, with the JavaScript runtime
/// already prepared in it, so the test run snapshots and compiles the runtime once.
pub(crate) fn js_artifacts() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::tempdir().join("artifacts");
        let prepare = {
            let dir = dir.clone();
            move || {
                let runtime = tokio::runtime::Runtime::new().expect("tokio");
                runtime.block_on(async {
                    let cache = cache_with(Config {
                        artifact_dir: Some(dir),
                        ..Config::default()
                    });
                    cache
                        .register(INCREMENT.as_bytes())
                        .await
                        .expect("the runtime prepares");
                    assert_eq!(cache.stats().runtime_compiles, 1);
                });
            }
        };
        // Its own thread: the caller may be inside another tokio runtime.
        std::thread::spawn(prepare).join().expect("prepare");
        dir
    })
    .clone()
}

/// A cache of its own that loads the prepared runtime.
fn js_cache() -> BurnCache {
    js_cache_with(Config::default())
}

fn js_cache_with(config: Config) -> BurnCache {
    cache_with(Config {
        artifact_dir: Some(js_artifacts()),
        ..config
    })
}

async fn call(cache: &BurnCache, source: &str, input: Payload) -> Result<Payload, Error> {
    call_with(cache, source, input, &Limits::default()).await
}

async fn call_with(
    cache: &BurnCache,
    source: &str,
    input: Payload,
    limits: &Limits,
) -> Result<Payload, Error> {
    let digest = cache.register(source.as_bytes()).await?;
    cache.execute(&digest, input, limits).await
}

#[tokio::test]
async fn a_commonjs_script_round_trips_json() {
    let cache = js_cache();
    let out = call(&cache, INCREMENT, json(json!({ "n": 41 })))
        .await
        .expect("call");
    assert_eq!(value(&out), json!({ "n": 42 }));
    assert_eq!(SourceKind::of(INCREMENT.as_bytes()), SourceKind::Script);
}

#[tokio::test]
async fn an_es_module_default_export_works_and_may_be_async() {
    let cache = js_cache();
    let source = "const greet = (name) => `hello, ${name}`;\n\
                  export default async function (input) {\n\
                    return { greeting: greet(input.name), at: await Promise.resolve(input.n * 2) };\n\
                  }\n";
    let out = call(&cache, source, json(json!({ "name": "ada", "n": 21 })))
        .await
        .expect("call");
    assert_eq!(value(&out), json!({ "greeting": "hello, ada", "at": 42 }));
}

#[tokio::test]
async fn bytes_arrive_as_a_uint8array_and_go_back_as_bytes() {
    let cache = js_cache();
    let source = "module.exports = (b) => {\n\
                    if (!(b instanceof Uint8Array)) throw new TypeError('not bytes');\n\
                    return b.map((x) => x ^ 0xff);\n\
                  };\n";
    let out = call(&cache, source, Payload::Bytes(vec![0, 1, 254]))
        .await
        .expect("call");
    assert_eq!(out, Payload::Bytes(vec![255, 254, 1]));
    // JSON results that are not objects, and `undefined`, come back as JSON.
    let out = call(&cache, "module.exports = () => undefined", json(json!(1)))
        .await
        .expect("call");
    assert_eq!(out, Payload::Json("null".into()));
}

#[tokio::test]
async fn a_syntax_error_is_compile_failed_with_its_position_and_remembered() {
    let cache = js_cache();
    let source = "module.exports = (d) => {\n  return d.n +;\n};\n";
    let err = cache.register(source.as_bytes()).await.expect_err("bad");
    let Error::CompileFailed(message) = &err else {
        panic!("expected compile-failed, got {err:?}");
    };
    assert!(message.contains("SyntaxError"), "{message}");
    assert!(message.contains("line 2, column 15"), "{message}");
    // The same error again, without a second check.
    let again = cache.register(source.as_bytes()).await.expect_err("bad");
    assert_eq!(again, err);
    assert_eq!(cache.stats().script_checks, 1);
    assert_eq!(cache.stats().compile_failures, 1);

    // In an ES module, the position is the module's.
    let module = "export default function (d) {\n  return d.n + 1\n}}\n";
    let err = cache.register(module.as_bytes()).await.expect_err("bad");
    assert!(
        matches!(&err, Error::CompileFailed(m) if m.contains("line 3")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_script_that_exports_no_function_fails_its_check() {
    let cache = js_cache();
    let err = cache
        .register(b"module.exports = 42;\n")
        .await
        .expect_err("no function");
    assert!(
        matches!(&err, Error::CompileFailed(m) if m.contains("export one function")),
        "{err:?}"
    );
    let err = cache
        .register(b"throw new Error('top level');\n")
        .await
        .expect_err("throws");
    assert!(
        matches!(&err, Error::CompileFailed(m) if m.contains("top level")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_thrown_error_is_guest_with_its_message_and_stack() {
    let cache = js_cache();
    let source = "function check(d) {\n  if (d.n < 0) throw new RangeError(`negative: ${d.n}`);\n  return d;\n}\nmodule.exports = (d) => check(d);\n";
    let err = call(&cache, source, json(json!({ "n": -3 })))
        .await
        .expect_err("throws");
    let Error::Guest(message) = &err else {
        panic!("expected guest, got {err:?}");
    };
    assert!(message.contains("RangeError: negative: -3"), "{message}");
    assert!(message.contains("at check (script.js:2"), "{message}");
    // A thrown non-Error value too.
    let err = call(
        &cache,
        "module.exports = () => { throw 'plain'; }",
        json(json!(0)),
    )
    .await
    .expect_err("throws");
    assert!(
        matches!(&err, Error::Guest(m) if m.contains("plain")),
        "{err:?}"
    );
}

#[tokio::test]
async fn runaway_scripts_hit_their_ceilings() {
    let cache = js_cache();
    let forever = "module.exports = () => { for (;;) {} };\n";
    // Fuel to spare: the deadline ends it.
    let err = call_with(
        &cache,
        forever,
        json(json!(0)),
        &Limits {
            fuel: Some(100_000_000_000),
            timeout: Some(Duration::from_millis(300)),
            ..Limits::default()
        },
    )
    .await
    .expect_err("loops");
    assert_eq!(err, Error::Timeout);
    // Time to spare: the fuel ends it.
    let err = call_with(
        &cache,
        forever,
        json(json!(0)),
        &Limits {
            fuel: Some(5_000_000),
            ..Limits::default()
        },
    )
    .await
    .expect_err("loops");
    assert_eq!(err, Error::FuelExhausted);

    let hoard =
        "module.exports = () => { const a = []; for (;;) a.push(new Array(4096).fill(7)); };\n";
    let err = call_with(
        &cache,
        hoard,
        json(json!(0)),
        &Limits {
            memory_bytes: Some(32 << 20),
            ..Limits::default()
        },
    )
    .await
    .expect_err("grows");
    assert_eq!(err, Error::MemoryLimit);

    let deep = "function down(n) { return down(n + 1) + 1; }\nmodule.exports = () => down(0);\n";
    let err = call(&cache, deep, json(json!(0)))
        .await
        .expect_err("recurses");
    assert!(
        matches!(&err, Error::Trap(m) if m.contains("stack overflow")),
        "{err:?}"
    );

    let shout = "module.exports = () => 'x'.repeat(10000);\n";
    let err = call_with(
        &cache,
        shout,
        json(json!(0)),
        &Limits {
            output_bytes: Some(1000),
            ..Limits::default()
        },
    )
    .await
    .expect_err("too much");
    assert_eq!(err, Error::OutputTooLarge(1000));

    // The node is fine afterwards.
    let out = call(&cache, INCREMENT, json(json!({ "n": 1 })))
        .await
        .expect("call");
    assert_eq!(value(&out), json!({ "n": 2 }));
}

#[tokio::test]
async fn each_call_starts_from_a_fresh_instance() {
    let cache = js_cache();
    let source = "let calls = 0;\nmodule.exports = () => { globalThis.seen = (globalThis.seen || 0) + 1; calls += 1; return [calls, globalThis.seen, Math.random()]; };\n";
    let digest = cache.register(source.as_bytes()).await.expect("register");
    let first = value(
        &cache
            .execute(&digest, json(json!(0)), &Limits::default())
            .await
            .expect("call"),
    );
    let second = value(
        &cache
            .execute(&digest, json(json!(0)), &Limits::default())
            .await
            .expect("call"),
    );
    assert_eq!(first[0], json!(1));
    assert_eq!(first[1], json!(1));
    assert_eq!(second[0], json!(1));
    assert_eq!(second[1], json!(1));
    // Math.random is seeded per instance, not frozen in the runtime's snapshot.
    assert_ne!(first[2], second[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registrations_check_a_script_once_and_scripts_share_one_runtime() {
    let cache = js_cache();
    let source = "module.exports = (d) => ({ raced: d });\n";
    let racers: Vec<_> = (0..64)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.register(source.as_bytes()).await })
        })
        .collect();
    for racer in racers {
        racer.await.expect("joined").expect("registered");
    }
    assert_eq!(cache.stats().script_checks, 1);

    for i in 0..10 {
        let source = format!("module.exports = (d) => d + {i};\n");
        let out = call(&cache, &source, json(json!(100))).await.expect("call");
        assert_eq!(value(&out), json!(100 + i));
    }
    let stats = cache.stats();
    assert_eq!(stats.script_checks, 11);
    // One runtime for all eleven scripts, readied once (loaded: the test run's
    // first cache compiled it; `js_artifacts` asserts that compile happened once).
    assert_eq!(stats.runtime_compiles + stats.runtime_loads, 1);
    assert_eq!(stats.compiles, 0);
}

#[tokio::test]
async fn a_script_calls_a_rust_component_through_burncache_execute() {
    let cache = js_cache();
    let add_one = register(&cache, guests::ADD_ONE).await;
    let source = format!(
        "module.exports = (d) => {{\n\
           const once = burncache.execute('{add_one}', d);\n\
           const twice = burncache.execute('{add_one}', once);\n\
           let missing;\n\
           try {{ burncache.execute('{zero}', d); }} catch (e) {{ missing = e.kind; }}\n\
           return {{ n: twice.n, missing }};\n\
         }};\n",
        zero = "0".repeat(64)
    );
    let digest = cache.register(source.as_bytes()).await.expect("register");
    let outcome = cache
        .execute_metered(&digest, json(json!({ "n": 40 })), &Limits::default())
        .await;
    assert_eq!(
        value(&outcome.result.expect("call")),
        json!({ "n": 42, "missing": "not-found" })
    );

    // The children's fuel is the script's: a budget too small for both fails.
    let err = cache
        .execute(
            &digest,
            json(json!({ "n": 40 })),
            &Limits {
                fuel: Some(outcome.fuel_burned / 2),
                ..Limits::default()
            },
        )
        .await
        .expect_err("over budget");
    assert!(
        matches!(err, Error::FuelExhausted)
            || matches!(&err, Error::Guest(m) if m.contains("fuel-exhausted")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_rust_component_calls_a_script() {
    let cache = js_cache();
    let pipeline = register(&cache, guests::PIPELINE).await;
    let script = cache
        .register(INCREMENT.as_bytes())
        .await
        .expect("register");
    let word_count = register(&cache, guests::WORD_COUNT).await;
    // The pipeline guest calls whatever digest it is given as `add_one`: here, the
    // script.
    let out = cache
        .execute(
            &pipeline,
            json(json!({
                "add_one": script.to_string(),
                "word_count": word_count.to_string(),
                "n": 1,
                "text": "a b a",
            })),
            &Limits::default(),
        )
        .await
        .expect("call");
    assert_eq!(value(&out)["n"], json!(2));
    assert_eq!(value(&out)["counts"]["words"], json!(3));
}

/// A script that exports `batch` gets the rows at once, so it can work across them;
/// its function (if it has one) still serves calls, and one with only `batch` serves
/// a call as a batch of one.
#[tokio::test]
async fn a_whole_batch_script_gets_every_row_at_once() {
    let cache = js_cache();
    let source = "module.exports = (d) => ({ single: d.n });\n\
                  module.exports.batch = (rows) => [...rows].sort((a, b) => a.n - b.n);\n";
    let digest = cache.register(source.as_bytes()).await.expect("register");
    let rows = [3, 1, 2].map(|n| json(json!({ "n": n }))).to_vec();
    let out = cache
        .execute_batch(&digest, rows, &Limits::default())
        .await
        .expect("batch");
    let sorted: Vec<_> = out
        .iter()
        .map(|row| value(row.as_ref().expect("a row")))
        .collect();
    assert_eq!(sorted, [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
    let one = cache
        .execute(&digest, json(json!({ "n": 7 })), &Limits::default())
        .await
        .expect("call");
    assert_eq!(
        value(&one),
        json!({ "single": 7 }),
        "a call runs the function"
    );

    // An ES module exporting only `batch`; and dedupe across rows.
    let source = "export async function batch(rows) {\n\
                    const seen = new Set();\n\
                    return rows.map((r) => { const dup = seen.has(r.k); seen.add(r.k); return { dup }; });\n\
                  }\n";
    let digest = cache.register(source.as_bytes()).await.expect("register");
    let rows = ["a", "b", "a"].map(|k| json(json!({ "k": k }))).to_vec();
    let out = cache
        .execute_batch(&digest, rows, &Limits::default())
        .await
        .expect("batch");
    let dups: Vec<_> = out
        .iter()
        .map(|row| value(row.as_ref().expect("a row")))
        .collect();
    assert_eq!(
        dups,
        [
            json!({"dup": false}),
            json!({"dup": false}),
            json!({"dup": true})
        ]
    );
    let one = cache
        .execute(&digest, json(json!({ "k": "z" })), &Limits::default())
        .await
        .expect("a call is a batch of one");
    assert_eq!(value(&one), json!({ "dup": false }));
}

/// What a whole-batch script returns is checked: an array of as many rows, each a
/// value; a wrong whole fails every row, a wrong row only itself, named.
#[tokio::test]
async fn a_whole_batch_result_of_the_wrong_shape_is_refused() {
    let cache = js_cache();
    let rows = || (0..3).map(|n| json(json!({ "n": n }))).collect::<Vec<_>>();
    for (source, says) in [
        (
            "module.exports.batch = (rows) => rows.slice(1);\n",
            "returned 2 rows for 3 inputs",
        ),
        (
            "module.exports.batch = (rows) => ({ rows });\n",
            "must return an array of 3 rows",
        ),
        (
            "module.exports.batch = () => { throw new Error('whole'); };\n",
            "whole",
        ),
    ] {
        let digest = cache.register(source.as_bytes()).await.expect("register");
        let out = cache
            .execute_batch(&digest, rows(), &Limits::default())
            .await
            .expect("the batch runs");
        assert_eq!(out.len(), 3);
        assert!(
            matches!(&out[0], Err(Error::Guest(m)) if m.contains(says)),
            "{source}: {:?}",
            out[0]
        );
        for row in &out[1..] {
            assert!(
                matches!(row, Err(Error::Guest(m)) if m.contains("see the first row")),
                "{source}: {row:?}"
            );
        }
    }
    let source = "module.exports.batch = (rows) => rows.map((r) =>\n\
                    r.n === 1 ? new Error('not this one') : r.n === 2 ? undefined : r.n);\n";
    let digest = cache.register(source.as_bytes()).await.expect("register");
    let out = cache
        .execute_batch(&digest, rows(), &Limits::default())
        .await
        .expect("the batch runs");
    assert_eq!(out[0], Ok(Payload::Json("0".into())));
    assert!(
        matches!(&out[1], Err(Error::Guest(m)) if m.contains("row 1: not this one")),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(&out[2], Err(Error::Guest(m)) if m.contains("row 2") && m.contains("undefined")),
        "{:?}",
        out[2]
    );
}

/// A whole-batch script that meets a ceiling fails as a whole: split into rows, it
/// would compute something else.
#[tokio::test]
async fn a_whole_batch_script_that_runs_out_of_memory_fails_whole() {
    let cache = js_cache();
    let source = "module.exports.batch = (rows) => {\n\
                    const hoard = [];\n\
                    while (true) hoard.push(new Array(100000).fill(rows.length));\n\
                  };\n";
    let digest = cache.register(source.as_bytes()).await.expect("register");
    let rows = (0..3).map(|n| json(json!({ "n": n }))).collect();
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    };
    // The refused growth ends the batch (a trap) or surfaces in the runtime (every
    // row then fails with it); either way no row is retried alone.
    let out = cache.execute_batch(&digest, rows, &limits).await;
    match &out {
        Err(Error::MemoryLimit) => {}
        Ok(rows) => assert!(
            rows.iter()
                .all(|row| matches!(row, Err(Error::MemoryLimit))),
            "{rows:?}"
        ),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn a_batch_runs_every_row_and_pins_failures_on_theirs() {
    let cache = js_cache();
    let source =
        "module.exports = (d) => { if (d.n === 2) throw new Error('two'); return d.n * 10; };\n";
    let digest = cache.register(source.as_bytes()).await.expect("register");
    let rows = (0..4).map(|n| json(json!({ "n": n }))).collect();
    let out = cache
        .execute_batch(&digest, rows, &Limits::default())
        .await
        .expect("batch");
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], Ok(Payload::Json("0".into())));
    assert_eq!(out[1], Ok(Payload::Json("10".into())));
    assert!(
        matches!(&out[2], Err(Error::Guest(m)) if m.contains("two")),
        "{:?}",
        out[2]
    );
    assert_eq!(out[3], Ok(Payload::Json("30".into())));
}

#[tokio::test]
async fn bytes_that_are_neither_wasm_nor_utf8_are_invalid_input() {
    let cache = js_cache();
    let err = cache
        .register(&[0xff, 0xfe, 0x00, 0x80])
        .await
        .expect_err("garbage");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let err = cache.register(b"").await.expect_err("empty");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    // Scripts and components are told apart by content, not by name.
    assert_eq!(
        SourceKind::of(&read(guests::ADD_ONE)),
        SourceKind::Component
    );
}

/// The other way to run JavaScript: a whole `udf` component built from JS with
/// componentize-js (examples/js-udf), for users who want a component of their own.
#[tokio::test]
async fn a_componentize_js_component_is_a_function_like_any_other() {
    let cache = crate::cache();
    let digest = register(&cache, guests::JS_UDF).await;
    assert_eq!(SourceKind::of(&read(guests::JS_UDF)), SourceKind::Component);
    let inspection = burncache::inspect(&read(guests::JS_UDF)).expect("inspect");
    assert_eq!(inspection.kind, burncache::ComponentKind::Function);

    let out = cache
        .execute(&digest, json(json!({ "n": 41 })), &Limits::default())
        .await
        .expect("call");
    assert_eq!(value(&out), json!({ "n": 42 }));
    let out = cache
        .execute(&digest, Payload::Bytes(vec![1, 2, 3]), &Limits::default())
        .await
        .expect("call");
    assert_eq!(out, Payload::Bytes(vec![3, 2, 1]));
    let err = cache
        .execute(&digest, json(json!({ "m": 1 })), &Limits::default())
        .await
        .expect_err("rejected");
    assert!(
        matches!(&err, Error::Guest(m) if m.contains("expected")),
        "{err:?}"
    );

    let rows = vec![json(json!({ "n": 1 })), json(json!("no"))];
    let out = cache
        .execute_batch(&digest, rows, &Limits::default())
        .await
        .expect("batch");
    assert_eq!(out[0], Ok(Payload::Json(r#"{"n":2}"#.into())));
    assert!(matches!(&out[1], Err(Error::Guest(_))), "{:?}", out[1]);
    // One compile of the 12 MB component for the whole test run: this is the only
    // test that registers it.
    assert_eq!(cache.stats().compiles, 1);
}

/// A check that cannot get an instance (every slot busy) fails with `backend` and is
/// not remembered: the script registers once a slot is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_finds_no_free_instance_is_not_remembered() {
    let cache = BurnCache::with_config(Config {
        max_instances: 1,
        artifact_dir: Some(js_artifacts()),
        ..Config::default()
    })
    .expect("cache");
    let sleeper = register(&cache, guests::ADVERSARY).await;
    let busy = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .execute(
                    &sleeper,
                    json(json!({ "op": "sleep", "ms": 1500 })),
                    &Limits::default(),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = cache
        .register(INCREMENT.as_bytes())
        .await
        .expect_err("no free slot");
    assert!(
        matches!(&err, Error::Backend(m) if m.contains("slot")),
        "{err:?}"
    );
    busy.await.expect("joined").expect("slept");

    let digest = cache
        .register(INCREMENT.as_bytes())
        .await
        .expect("registers once a slot is free");
    let out = cache
        .execute(&digest, json(json!({ "n": 1 })), &Limits::default())
        .await
        .expect("call");
    assert_eq!(value(&out), json!({ "n": 2 }));
}
