//! JavaScript run as programs (`burncache run SCRIPT.js`, `BurnCache::run_command`):
//! arguments, granted environment, stdout and stderr, exit statuses, ceilings, and
//! nothing kept between runs.

use std::process::{Command, Output};

use burncache::{Config, Error, Limits, RunOptions};

use crate::scripts::js_artifacts;
use crate::{cache_with, guests, register, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_burncache");

/// `burncache run` on `source` (written to a file named `name`), on a fresh store
/// and the artifact directory where the test run keeps the JavaScript runtime.
fn run(name: &str, source: &str, args: &[&str]) -> Output {
    let dir = tempdir();
    let script = dir.join(name);
    std::fs::write(&script, source).expect("write the script");
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .arg(&script)
        .args(args)
        .env("BURNCACHE_STORE", burncache::file_url(&dir.join("store")))
        .env("BURNCACHE_ARTIFACTS", js_artifacts())
        .env("RUST_LOG", "off")
        .env("SECRET", "must not leak");
    command.output().expect("run burncache")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_program_sees_its_arguments_and_only_the_granted_environment() {
    let out = run(
        "args.js",
        "console.log(JSON.stringify(process.argv));\n\
         console.log(JSON.stringify(process.env));\n\
         console.error('to stderr');\n\
         process.stdout.write('no newline');\n",
        &["--env", "GREETING=hi", "--", "one", "two"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "[\"burncache\",\"args.js\",\"one\",\"two\"]\n{\"GREETING\":\"hi\"}\nno newline"
    );
    assert_eq!(stderr, "to stderr\n");
    assert!(!stdout.contains("SECRET"));
}

#[test]
fn exit_statuses_are_the_programs() {
    // process.exit cannot be caught, and nothing after it runs.
    let out = run(
        "exit.js",
        "try { process.exit(3); } catch (e) { console.log('caught'); }\n\
         console.log('after');\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "");

    let out = run(
        "throws.js",
        "console.log('before');\nthrow new TypeError('bad thing');\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "before\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Uncaught TypeError: bad thing"), "{stderr}");
    assert!(stderr.contains("script.js:2"), "with its stack: {stderr}");

    let out = run(
        "rejects.js",
        "async function main() { await null; throw new Error('async boom'); }\nmain();\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("async boom"));

    // An ES module with top-level await, setting exitCode.
    let out = run(
        "module.js",
        "const x = await Promise.resolve(5);\nconsole.log('x', x);\n\
         process.exitCode = 4;\nexport {};\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout), "x 5\n");

    let out = run("syntax.js", "let = ;\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("SyntaxError"));

    // process.exit from a queued job, or inside a promise's executor (which QuickJS
    // would turn into a rejection), still ends the program there.
    let out = run(
        "job.js",
        "export {};\nconst p = Promise.resolve();\np.then(() => process.exit(3));\n\
         p.then(() => console.log('after'));\nawait new Promise(() => {});\n",
        &[],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(3), "")
    );
    let out = run(
        "executor.js",
        "new Promise(() => process.exit(2));\nconsole.log('still here');\n",
        &[],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(2), "")
    );
    let out = run(
        "code.js",
        "process.exitCode = 5;\nprocess.exit(undefined);\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(5));

    // Top-level await in a classic script; one that never settles fails.
    let out = run(
        "tla.js",
        "const x = await Promise.resolve(5);\nconsole.log(x);\n",
        &[],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "5\n")
    );
    let out = run("stuck.js", "await new Promise(() => {});\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("never settled"));

    // An unhandled rejection is not forgotten when another promise is handled.
    let out = run(
        "two.js",
        "const a = Promise.reject(new Error('A'));\nconst b = Promise.reject(2);\n\
         b.catch(() => {});\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Uncaught (in promise) A"));
}

#[test]
fn a_runaway_program_is_stopped_by_fuel_by_deadline_and_by_its_output_ceiling() {
    let out = run("spin.js", "while (true) {}\n", &["--fuel", "10000000"]);
    assert_eq!(out.status.code(), Some(13), "fuel-exhausted");
    let out = run(
        "spin.js",
        "while (true) {}\n",
        &["--fuel", "100000000000", "--timeout", "300ms"],
    );
    assert_eq!(out.status.code(), Some(15), "timeout");
    let out = run(
        "loud.js",
        "for (let i = 0; i < 20000; i++) console.log('a line of output', i);\n",
        &["--output-limit", "10KiB"],
    );
    assert_eq!(out.status.code(), Some(16), "output-too-large");
    assert!(out.stdout.len() <= 10 * 1024, "{} bytes", out.stdout.len());
    // QuickJS's out-of-memory is an exception a program could catch; the program
    // still met its memory ceiling.
    let out = run(
        "hungry.js",
        "const a = [];\ntry { while (true) a.push(new Array(100000).fill(1)); } catch (e) {}\n",
        &["--memory", "32MiB"],
    );
    assert_eq!(out.status.code(), Some(14), "memory-limit");
}

/// Through the Rust API: the program runs on the shared runtime every time (its call
/// to add-one happens on every run), and nothing of it is kept, not even a failure.
#[tokio::test]
async fn run_command_runs_a_script_every_time_and_keeps_nothing() {
    let cache = cache_with(Config {
        artifact_dir: Some(js_artifacts()),
        ..Config::default()
    });
    let add_one = register(&cache, guests::ADD_ONE).await;
    let source = format!(
        "const out = burncache.execute('{add_one}', {{ n: Number(process.argv[2]) }});\n\
         process.exit(out.n);\n"
    );
    let options = RunOptions {
        args: vec!["41".to_string()],
        program: "add.js".to_string(),
        ..RunOptions::default()
    };
    let lookups = |cache: &burncache::BurnCache| {
        let stats = cache.stats();
        stats.hits + stats.misses
    };
    let before = lookups(&cache);
    for run in 1..=2 {
        let outcome = cache
            .run_command(source.clone().into_bytes(), options.clone())
            .await;
        assert_eq!(outcome.result.expect("the program runs"), 42);
        assert_eq!(lookups(&cache), before + run, "run {run} called add-one");
    }

    let failing = b"throw new Error('no');\n".to_vec();
    let outcome = cache.run_command(failing, RunOptions::default()).await;
    assert_eq!(outcome.result.expect("the program ran"), 1);

    let spin = b"while (true) {}\n".to_vec();
    let limits = Limits {
        fuel: Some(5_000_000),
        ..Limits::default()
    };
    let outcome = cache
        .run_command(
            spin,
            RunOptions {
                limits,
                ..RunOptions::default()
            },
        )
        .await;
    assert!(
        matches!(outcome.result, Err(Error::FuelExhausted)),
        "{:?}",
        outcome.result
    );

    let stats = cache.stats();
    assert_eq!(
        stats.script_checks, 0,
        "a program is not checked as a function"
    );
    assert_eq!(stats.components, 1, "only add-one is held");
    assert_eq!(stats.compile_failures, 0);
}
