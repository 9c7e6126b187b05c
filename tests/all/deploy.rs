//! Deploying and calling by digest across processes, through the real binary and a
//! real S3 server.

use std::path::Path;

use crate::cli::{assert_exit, burncache_with_env, stderr, stdout};
use crate::s3::S3Server;
use crate::{guests, tempdir};

/// The environment of a fresh node on the shared S3 server, under `prefix`.
fn s3_node(prefix: &str) -> Vec<(&'static str, String)> {
    s3_node_with_artifacts(prefix, &tempdir().join("artifacts"))
}

/// A node on the shared S3 server, under `prefix`, keeping compiled code in
/// `artifacts`.
fn s3_node_with_artifacts(prefix: &str, artifacts: &Path) -> Vec<(&'static str, String)> {
    let server = S3Server::shared();
    let mut env = server.env();
    env.push(("BURNCACHE_STORE", server.url(prefix)));
    env.push(("BURNCACHE_ARTIFACTS", artifacts.display().to_string()));
    env
}

#[test]
fn deploy_in_one_process_call_in_another() {
    let out = burncache_with_env(&["deploy", guests::ADD_ONE], b"", &s3_node("two-processes"));
    assert_exit(&out, 0);
    let digest = stdout(&out).trim().to_string();
    assert_eq!(digest.len(), 64);
    assert!(stderr(&out).contains("deployed"), "{}", stderr(&out));

    // Another process, with empty caches of its own, on the same store.
    let out = burncache_with_env(
        &[
            "call",
            &digest,
            "--input",
            r#"{"n": 41}"#,
            "--raw",
            "--stats",
        ],
        b"",
        &s3_node("two-processes"),
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "{\"n\":42}\n");
    assert!(stderr(&out).contains("fetches: 1"), "{}", stderr(&out));

    let out = burncache_with_env(&["deploy", guests::ADD_ONE], b"", &s3_node("two-processes"));
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out).trim(),
        digest,
        "deploying again prints the same digest"
    );
    assert!(
        stderr(&out).contains("already deployed"),
        "{}",
        stderr(&out)
    );

    let out = burncache_with_env(&["ls"], b"", &s3_node("two-processes"));
    assert_exit(&out, 0);
    let size = std::fs::metadata(guests::ADD_ONE).expect("size").len();
    assert_eq!(stdout(&out), format!("{digest}  {size}\n"));
}

#[test]
fn concurrent_deploys_make_one_object() {
    let node = s3_node("concurrent-deploys");
    let deploys: Vec<_> = (0..8)
        .map(|_| {
            let node = node.clone();
            std::thread::spawn(move || {
                burncache_with_env(&["deploy", guests::WORD_COUNT], b"", &node)
            })
        })
        .collect();
    let mut digests = Vec::new();
    for deploy in deploys {
        let out = deploy.join().expect("join");
        assert_exit(&out, 0);
        digests.push(stdout(&out).trim().to_string());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    let out = burncache_with_env(&["ls"], b"", &node);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
}

#[test]
fn a_tampered_object_fails_with_integrity() {
    let node = s3_node("tampered-cli");
    let out = burncache_with_env(&["deploy", guests::ADD_ONE], b"", &node);
    assert_exit(&out, 0);
    let digest = stdout(&out).trim().to_string();
    // Overwrite the object with other bytes, through the store itself.
    let server = S3Server::shared();
    let options = server.options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = node
        .iter()
        .find(|(k, _)| *k == "BURNCACHE_STORE")
        .map(|(_, v)| v.clone())
        .expect("url");
    let prefix = url.trim_start_matches(&format!("s3://{}/", crate::s3::BUCKET));
    let raw = raw_put(
        &options,
        &format!("{prefix}/sha256/{digest}.wasm"),
        std::fs::read(guests::WORD_COUNT).expect("read"),
    );
    raw.expect("overwrite");

    // A fresh node (empty artifact directory) on the same store.
    let node = s3_node("tampered-cli");
    let out = burncache_with_env(&["call", &digest, "--input", "{}"], b"", &node);
    assert_exit(&out, 23);
    assert!(
        stderr(&out).contains(&format!("sha256/{digest}.wasm")),
        "{}",
        stderr(&out)
    );
    let artifacts = node
        .iter()
        .find(|(k, _)| *k == "BURNCACHE_ARTIFACTS")
        .map(|(_, v)| v.clone())
        .expect("dir");
    let stats = burncache::artifact_stats(std::path::Path::new(&artifacts)).expect("stats");
    assert_eq!(stats.files, 0, "nothing compiled, nothing cached");
}

fn raw_put(options: &[(&str, &str)], key: &str, bytes: Vec<u8>) -> Result<(), object_store::Error> {
    use object_store::ObjectStoreExt;
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(crate::s3::BUCKET);
    for (k, v) in options {
        builder = builder.with_config(k.parse()?, *v);
    }
    let store = builder.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(store.put(&object_store::path::Path::from(key), bytes.into()))
        .map(drop)
}

#[test]
fn a_second_process_loads_the_compiled_artifact() {
    let dir = tempdir();
    let env = vec![
        (
            "BURNCACHE_ARTIFACTS",
            dir.join("artifacts").display().to_string(),
        ),
        ("BURNCACHE_STORE", burncache::file_url(&dir.join("store"))),
    ];
    let call = || {
        burncache_with_env(
            &["call", guests::PIPELINE, "--stats", "--input", "{}"],
            b"",
            &env,
        )
    };
    // The pipeline's input is incomplete, so the guest rejects it (18): the compile
    // and the artifact are what this test is about.
    let first = call();
    assert_exit(&first, 18);
    assert!(stderr(&first).contains("compiles: 1"), "{}", stderr(&first));
    let second = call();
    assert_exit(&second, 18);
    assert!(
        stderr(&second).contains("compiles: 0"),
        "{}",
        stderr(&second)
    );
    assert!(
        stderr(&second).contains("artifact loads: 1"),
        "{}",
        stderr(&second)
    );

    let stats = burncache_with_env(&["cache", "stats"], b"", &env);
    assert_exit(&stats, 0);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    assert_eq!(stats["files"], 1);
    let cleared = burncache_with_env(&["cache", "clear"], b"", &env);
    assert_exit(&cleared, 0);
    assert!(
        stderr(&cleared).contains("removed 1 compiled artifacts"),
        "{}",
        stderr(&cleared)
    );
    let third = call();
    assert!(stderr(&third).contains("compiles: 1"), "{}", stderr(&third));
}

#[test]
fn store_errors_have_their_own_exit_codes() {
    let dir = tempdir();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0").expect("write");
    let garbage = garbage.to_str().expect("utf-8");
    let server = S3Server::shared();
    let mut missing_bucket = server.env();
    missing_bucket.push(("BURNCACHE_STORE", "s3://no-such-bucket/x".to_string()));

    let unknown = "1".repeat(64);
    // (arguments, environment, what stderr says, exit code)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, String)>, &'a str, i32);
    let cases: Vec<Case> = vec![
        (
            vec!["call", "abc", "--input", "1"],
            vec![],
            "invalid digest",
            11,
        ),
        (
            vec!["deploy", garbage],
            vec![],
            "core WebAssembly module",
            19,
        ),
        (
            vec!["ls", "--store", "ftp://example/x"],
            vec![],
            "unknown scheme",
            4,
        ),
        (
            vec!["deploy", guests::ADD_ONE, "--store", "relative/dir"],
            vec![],
            "invalid configuration",
            4,
        ),
        (
            vec!["deploy", guests::ADD_ONE],
            missing_bucket.clone(),
            "no-such-bucket",
            22,
        ),
        (
            vec!["call", &unknown, "--input", "1"],
            missing_bucket,
            "no-such-bucket",
            22,
        ),
    ];
    for (args, env, says, code) in cases {
        let out = burncache_with_env(&args, b"", &env);
        assert_exit(&out, code);
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_script_deployed_from_one_process_is_called_by_digest_from_another() {
    let dir = tempdir();
    let script = dir.join("increment.js");
    std::fs::write(&script, "module.exports = (d) => ({ n: d.n + 1 });\n").expect("write");
    let script = script.to_str().expect("utf-8");
    // Both nodes load the JavaScript runtime the test run compiled once.
    let node = |prefix: &str| s3_node_with_artifacts(prefix, &crate::scripts::js_artifacts());
    let out = burncache_with_env(&["deploy", script], b"", &node("scripts"));
    assert_exit(&out, 0);
    let digest = stdout(&out).trim().to_string();
    assert!(
        stderr(&out).contains(&format!("sha256/{digest}.js")),
        "scripts are stored as .js: {}",
        stderr(&out)
    );

    let out = burncache_with_env(
        &[
            "call",
            &digest,
            "--input",
            r#"{"n": 41}"#,
            "--raw",
            "--stats",
        ],
        b"",
        &node("scripts"),
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "{\"n\":42}\n");
    let stats = stderr(&out);
    assert!(stats.contains("fetches: 1"), "{stats}");
    assert!(stats.contains("script checks: 1"), "{stats}");
    assert!(stats.contains("js runtime compiles: 0"), "{stats}");
    assert!(stats.contains("js runtime loads: 1"), "{stats}");

    let out = burncache_with_env(&["ls"], b"", &node("scripts"));
    assert_exit(&out, 0);
    assert!(stdout(&out).contains(&digest), "{}", stdout(&out));

    let rows = dir.join("rows.ndjson");
    std::fs::write(&rows, "{\"n\": 1}\n{\"n\": 2}\n").expect("write");
    let out = burncache_with_env(
        &["batch", &digest, rows.to_str().expect("utf-8")],
        b"",
        &node("scripts"),
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "{\"ok\":{\"n\":2}}\n{\"ok\":{\"n\":3}}\n");
}
