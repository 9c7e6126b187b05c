//! The `burncache` binary end to end: every verb, and an exit code per error class.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::{component, guests, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_burncache");

pub(crate) fn burncache(args: &[&str], stdin: &[u8]) -> Output {
    burncache_with_env(args, stdin, &[])
}

/// Runs the binary as a fresh node: its own store and artifact directories (unless
/// `env` says otherwise), nothing inherited from the user's.
pub(crate) fn burncache_with_env(args: &[&str], stdin: &[u8], env: &[(&str, String)]) -> Output {
    let node = node_dir();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("BURNCACHE_STORE", burncache::file_url(&node.join("store")))
        .env("BURNCACHE_ARTIFACTS", node.join("artifacts"));
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start burncache");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("burncache runs")
}

/// The store and artifact directories the CLI tests' nodes share.
fn node_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(crate::tempdir).clone()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
pub(crate) fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

#[test]
fn hash_matches_sha256sum() {
    let ours = burncache(&["hash", guests::ADD_ONE], b"");
    assert_exit(&ours, 0);
    let theirs = Command::new("sha256sum")
        .arg(guests::ADD_ONE)
        .output()
        .expect("sha256sum");
    let theirs = stdout(&theirs);
    assert_eq!(
        stdout(&ours).trim(),
        theirs.split_whitespace().next().expect("a digest")
    );
}

#[test]
fn call_prints_json_pretty_or_raw() {
    let out = burncache(&["call", guests::ADD_ONE, "--input", r#"{"n": 41}"#], b"");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "{\n  \"n\": 42\n}\n");

    let out = burncache(
        &["call", guests::ADD_ONE, "--raw", "--stats"],
        br#"{"n": 1}"#,
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "{\"n\":2}\n");
    assert!(stderr(&out).contains("fuel burned: "), "{}", stderr(&out));
}

#[test]
fn call_takes_bytes_from_a_file_or_stdin() {
    let dir = tempdir();
    let text = dir.join("text.txt");
    std::fs::write(&text, "a b c\nd\n").expect("write");
    let out = burncache(
        &[
            "call",
            guests::WORD_COUNT,
            "--bytes",
            "--raw",
            "--input-file",
            text.to_str().expect("utf-8"),
        ],
        b"",
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "{\"lines\":2,\"words\":4,\"bytes\":8}\n");

    let out = burncache(&["call", guests::ADVERSARY, "--bytes"], &[0, 159, 146, 150]);
    assert_exit(&out, 0);
    assert_eq!(
        out.stdout,
        vec![0, 159, 146, 150],
        "bytes out are written as is"
    );
}

#[test]
fn call_with_other_components_for_nested_calls() {
    let digest = |path: &str| stdout(&burncache(&["hash", path], b"")).trim().to_string();
    let input = serde_json::json!({
        "add_one": digest(guests::ADD_ONE),
        "word_count": digest(guests::WORD_COUNT),
        "n": 1,
        "text": "a b",
    });
    let args = [
        "call",
        guests::PIPELINE,
        "--raw",
        "--with",
        guests::ADD_ONE,
        "--with",
        guests::WORD_COUNT,
    ];
    let out = burncache(&args, input.to_string().as_bytes());
    assert_exit(&out, 0);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        got,
        serde_json::json!({"n": 2, "counts": {"lines": 1, "words": 2, "bytes": 3}})
    );

    // On a node whose store does not have them, the nested calls cannot find them.
    let fresh = tempdir();
    let env = [
        ("BURNCACHE_STORE", burncache::file_url(&fresh.join("store"))),
        (
            "BURNCACHE_ARTIFACTS",
            fresh.join("artifacts").display().to_string(),
        ),
    ];
    let out = burncache_with_env(
        &["call", guests::PIPELINE],
        input.to_string().as_bytes(),
        &env,
    );
    assert_exit(&out, 18);
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
}

#[test]
fn batch_prints_a_line_per_row() {
    let dir = tempdir();
    let rows = dir.join("rows.ndjson");
    std::fs::write(
        &rows,
        format!("{{\"n\": 1}}\n{{\"n\": {}}}\n\n{{\"n\": 3}}\n", i64::MAX),
    )
    .expect("write");
    let out = burncache(
        &["batch", guests::ADD_ONE, rows.to_str().expect("utf-8")],
        b"",
    );
    assert_exit(&out, 3);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], serde_json::json!({"ok": {"n": 2}}));
    assert_eq!(lines[1]["error"]["kind"], "guest");
    assert_eq!(lines[2], serde_json::json!({"ok": {"n": 4}}));

    std::fs::write(&rows, r#"[{"n": 1}, {"n": 2}]"#).expect("write");
    let out = burncache(
        &["batch", guests::ADD_ONE, rows.to_str().expect("utf-8")],
        b"",
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "{\"ok\":{\"n\":2}}\n{\"ok\":{\"n\":3}}\n");
}

#[test]
fn run_passes_args_and_only_the_allowed_environment() {
    let out = Command::new(BIN)
        .args([
            "run",
            guests::CLI_COMMAND,
            "--env",
            "GREETING=hi",
            "--",
            "one",
            "two",
        ])
        .env("SECRET", "must not leak")
        .output()
        .expect("run");
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("args: one two"), "{text}");
    assert!(text.contains("env: GREETING=hi\n"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(text.contains("files: 0"), "no filesystem: {text}");
}

#[test]
fn run_propagates_the_exit_status() {
    // WASI 0.2's `wasi:cli/exit.exit` carries only success or failure, so any
    // non-zero code arrives as 1, as it does under `wasmtime run`.
    let out = burncache(&["run", guests::CLI_COMMAND, "--", "exit", "7"], b"");
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("exiting with 7"),
        "stderr passes through"
    );
    let out = burncache(&["run", guests::CLI_COMMAND, "--", "exit", "0"], b"");
    assert_exit(&out, 0);
}

#[test]
fn run_caps_output() {
    let out = burncache(
        &[
            "run",
            guests::CLI_COMMAND,
            "--output-limit",
            "64KiB",
            "--",
            "flood",
        ],
        b"",
    );
    assert_exit(&out, 16);
    assert!(out.stdout.len() <= 64 * 1024, "{} bytes", out.stdout.len());
}

#[test]
fn inspect_shows_the_world() {
    let out = burncache(&["inspect", guests::PIPELINE], b"");
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("kind:    function"), "{text}");
    assert!(
        text.contains("import burncache:host/burn-cache@0.1.1;"),
        "{text}"
    );

    let out = burncache(&["inspect", guests::CLI_COMMAND, "--json"], b"");
    assert_exit(&out, 0);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "command");
}

#[test]
fn help_has_examples_on_every_verb() {
    let verbs = [
        "hash", "call", "batch", "map", "run", "inspect", "deploy", "ls", "serve", "cache",
    ];
    for verb in verbs {
        let out = burncache(&[verb, "--help"], b"");
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("Example"), "{verb}: {}", stdout(&out));
    }
    let out = burncache(&["--help"], b"");
    assert!(stdout(&out).contains("Exit codes:"));
}

/// `burncache sql` runs `burncache-sql`, and says how to get it when it is missing.
#[test]
fn sql_says_where_its_engine_comes_from() {
    let out = burncache_with_env(
        &["sql", "SELECT 1"],
        b"",
        &[("BURNCACHE_SQL", "/nonexistent/burncache-sql".to_string())],
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("cargo install burncache-datafusion"),
        "{}",
        stderr(&out)
    );
}

/// Each error class exits with its own documented code.
#[test]
fn exit_codes_tell_the_error_class() {
    let dir = tempdir();
    let missing_import = dir.join("missing-import.wasm");
    std::fs::write(
        &missing_import,
        component(
            r#"(component (import "example:missing/thing@1.0.0" (instance (export "f" (func)))))"#,
        ),
    )
    .expect("write");
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"\xffnot wasm, not text").expect("write");
    let missing_import = missing_import.to_str().expect("utf-8");
    let garbage = garbage.to_str().expect("utf-8");
    let unknown = "0".repeat(64);

    let cases: &[(&[&str], &str, i32)] = &[
        (&["call", &unknown, "--input", "1"], "no component", 10),
        (
            &["call", "not-a-digest", "--input", "1"],
            "invalid digest",
            11,
        ),
        (
            &["call", missing_import, "--input", "1"],
            "compile failed",
            12,
        ),
        (
            &[
                "call",
                guests::ADVERSARY,
                "--fuel",
                "10000",
                "--input",
                r#"{"op": "spin", "n": 100000000}"#,
            ],
            "fuel",
            13,
        ),
        (
            &[
                "call",
                guests::ADVERSARY,
                "--memory",
                "8MiB",
                "--input",
                r#"{"op": "alloc"}"#,
            ],
            "memory",
            14,
        ),
        (
            &[
                "call",
                guests::ADVERSARY,
                "--timeout",
                "100ms",
                "--fuel",
                "100000000000",
                "--input",
                r#"{"op": "loop"}"#,
            ],
            "deadline",
            15,
        ),
        (
            &[
                "call",
                guests::ADVERSARY,
                "--output-limit",
                "1KiB",
                "--input",
                r#"{"op": "big-output", "len": 4096}"#,
            ],
            "1024-byte",
            16,
        ),
        (
            &["call", guests::ADVERSARY, "--input", r#"{"op": "panic"}"#],
            "boom",
            17,
        ),
        (
            &[
                "call",
                guests::ADVERSARY,
                "--input",
                r#"{"op": "fail", "why": "no"}"#,
            ],
            "rejected: no",
            18,
        ),
        (
            &["call", guests::ADD_ONE, "--input", "{oops"],
            "not valid JSON",
            19,
        ),
        (
            &["call", garbage, "--input", "1"],
            "neither a WebAssembly component nor a UTF-8 JavaScript script",
            19,
        ),
        (
            &["call", "/no/such/file.wasm", "--input", "1"],
            "no such file",
            1,
        ),
        (
            &["call", guests::ADD_ONE, "--memory", "lots", "--input", "1"],
            "invalid value",
            2,
        ),
    ];
    for (args, says, code) in cases {
        let out = burncache(args, b"");
        assert_exit(&out, *code);
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// Completions generate for the usual shells, and the man page from the same
/// definitions.
#[test]
fn completions_and_the_man_page_generate() {
    for shell in ["bash", "zsh", "fish"] {
        let out = burncache(&["completion", shell], b"");
        assert_exit(&out, 0);
        let script = stdout(&out);
        assert!(script.contains("burncache"), "{shell}: {script}");
        assert!(
            script.contains("serve"),
            "{shell}: subcommands are completed"
        );
    }
    let out = burncache(&["man"], b"");
    assert_exit(&out, 0);
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH burncache"),
        "{page}"
    );
    let out = burncache(&["completion", "tcsh"], b"");
    assert_exit(&out, 2);
}
