//! `burncache serve` taking `wasmtime serve`'s command line: the options it maps,
//! the ones it refuses (each with its reason), and component mode on any address.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::config::printed;
use crate::{guests, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_burncache");

/// `burncache serve` with `args` on a fresh node: its output, for commands that stop.
fn serve(args: &[&str]) -> std::process::Output {
    let node = tempdir();
    Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("BURNCACHE_STORE", burncache::file_url(&node.join("store")))
        .env("BURNCACHE_ARTIFACTS", node.join("artifacts"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run burncache serve")
}

/// `-S`, `-W` and `-O` options burncache can honour become its own settings.
#[test]
fn wasmtime_options_map_onto_burncaches_settings() {
    let settings = printed(&serve(&[
        "-S",
        "cli",
        "-S",
        "http,common",
        "-W",
        "fuel=5000000,max-memory-size=33554432",
        "-W",
        "timeout=3s",
        "-O",
        "pooling-allocator=n",
        "-O",
        "pooling-total-component-instances=40,pooling-max-memory-size=67108864",
        "--max-concurrent-requests",
        "9",
        "--max-concurrent-connections",
        "99",
        "--no-logging-prefix",
        "--max-instance-reuse-count",
        "1",
        guests::HTTP_HELLO,
        "--print-config",
    ]));
    assert_eq!(settings["limits"]["fuel"].as_integer(), Some(5_000_000));
    assert_eq!(settings["limits"]["memory"].as_integer(), Some(32 << 20));
    assert_eq!(settings["limits"]["timeout"].as_str(), Some("3s"));
    assert_eq!(settings["maxima"]["memory"].as_integer(), Some(64 << 20));
    assert_eq!(settings["guests"]["pooling"].as_bool(), Some(false));
    assert_eq!(settings["guests"]["max-instances"].as_integer(), Some(40));
    assert_eq!(settings["max-in-flight"].as_integer(), Some(9));
    assert_eq!(settings["max-connections"].as_integer(), Some(99));
}

/// Every other `wasmtime serve` option is refused, naming it and saying why.
#[test]
fn options_burncache_cannot_honour_are_refused_with_the_reason() {
    for (args, says) in [
        (&["-S", "tcp"][..], "no sockets"),
        (&["-S", "inherit-network=y"], "no sockets"),
        (&["-S", "cli=n"], "sealed"),
        (&["-S", "nn"], "not available"),
        (&["-S", "max-resources=10"], "memory ceiling"),
        (
            &["-W", "max-table-elements=10"],
            "fuel, max-memory-size and timeout",
        ),
        (&["-W", "fuel=lots"], "takes a number"),
        (&["-O", "opt-level=0"], "opt-level 2"),
        (
            &["-O", "pooling-total-memories=10"],
            "pooling-total-component-instances",
        ),
        (&["-O", "memory-reservation=1"], "configures the engine"),
        (&["-C", "cache=n"], "code generation"),
        (&["--allow-precompiled"], "authenticate"),
        (&["-H", "x-a: b"], "proxy"),
        (&["--shutdown-addr", "127.0.0.1:9"], "SIGTERM"),
        (&["--max-instance-reuse-count", "8"], "fresh instance"),
        (&["--dir", "/no/such/dir"], "not a directory"),
    ] {
        // With --print-config, an option wrongly accepted ends the command too.
        let mut all = args.to_vec();
        all.extend([guests::HTTP_HELLO, "--print-config"]);
        let output = serve(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
    }
    // Granting environment or directories is for one served component.
    let output = serve(&["--env", "A=b", "--print-config"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("one served component"));
}

/// Serving one component, any address will do without a token (there are no admin
/// routes), and the component gets the environment and directories granted it.
#[tokio::test]
async fn component_mode_binds_any_address_and_grants_env_and_dirs() {
    let data = tempdir();
    std::fs::write(data.join("greeting.txt"), "hello from the host\n").expect("write");
    let node = tempdir();
    let dir = format!("{}::/data", data.display());
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            "0.0.0.0:0",
            "--env",
            "GREETING=hi",
            "--env",
        ])
        .arg("FROM_HOST")
        .args(["--dir", &dir, "-S", "cli", guests::HTTP_HELLO])
        .env("FROM_HOST", "inherited")
        .env("NOT_GRANTED", "secret")
        .env("BURNCACHE_STORE", burncache::file_url(&node.join("store")))
        .env("BURNCACHE_ARTIFACTS", node.join("artifacts"))
        .env_remove("BURNCACHE_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start burncache serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the address line");
    let port = line.trim().rsplit(':').next().expect("a port").to_string();
    // The line `wasmtime serve` prints, on stderr.
    let mut serving = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut serving)
        .expect("the serving line");
    assert!(serving.starts_with("Serving HTTP on http://"), "{serving}");

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let env = client
        .get(format!("{base}/env"))
        .send()
        .await
        .expect("GET /env")
        .text()
        .await
        .expect("text");
    assert!(env.contains("GREETING=hi\n"), "{env}");
    assert!(env.contains("FROM_HOST=inherited\n"), "{env}");
    assert!(!env.contains("NOT_GRANTED"), "{env}");
    let file = client
        .get(format!("{base}/file?path=/data/greeting.txt"))
        .send()
        .await
        .expect("GET /file");
    assert_eq!(file.status(), 200);
    assert_eq!(file.text().await.expect("text"), "hello from the host\n");
    let outside = client
        .get(format!("{base}/file?path=/etc/passwd"))
        .send()
        .await
        .expect("GET /file");
    assert_eq!(outside.status(), 404, "only the granted directory");

    let _ = child.kill();
    let _ = child.wait();
}
