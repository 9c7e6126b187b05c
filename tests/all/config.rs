//! `burncache serve --config FILE` and `burncache config check FILE`, through the
//! real binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::{guests, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_burncache");

/// A config file that sets every `serve` setting, none to its default. Sizes are
/// written in bytes and durations as `--print-config` spells them, so that the file
/// and the printed settings compare equal as TOML.
fn every_setting(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"component = "{dir}/app.wasm"
addr = "127.0.0.1:0"
admin-token-file = "{dir}/token"
max-in-flight = 7
max-in-flight-per-client = 3
max-connections = 99
max-connections-per-client = 11
preload = ["{digest}"]
send-timeout = "45s"
header-timeout = "3s"
body-timeout = "4s"
max-component-size = 1048576
max-input-size = 64
shutdown-grace = "5s"

[limits]
fuel = 5000000
memory = 33554432
timeout = "2s"
output = 65536

[maxima]
fuel = 6000000
memory = 67108864
timeout = "20s"
output = 131072

[node]
store = "file://{dir}/store"
artifacts = "{dir}/artifacts"
artifact-key-file = "{dir}/artifact.key"
cluster-key-file = "{dir}/cluster.key"
artifacts-max-size = 1073741824
max-held = 12
max-held-size = 268435456
not-found-ttl = "7s"

[guests]
max-instances = 40
pooling = false
max-depth = 3
allow-register = true

[outbound]
allow = ["http://127.0.0.1:9999", "https://*.example.com"]
functions = true
"#,
        digest = "ab".repeat(32)
    )
}

/// `burncache` with no `BURNCACHE_*` settings from the test's own environment.
fn burncache() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BURNCACHE_") {
            command.env_remove(name);
        }
    }
    command
}

/// The settings `serve --print-config` printed, once it succeeded.
pub(crate) fn printed(output: &Output) -> toml::Table {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .parse()
        .expect("the printed settings are TOML")
}

/// Every setting a file gives is the one the server takes; a flag or an environment
/// variable given as well wins over it.
#[test]
fn every_setting_comes_from_the_file_and_flags_and_environment_win() {
    let dir = tempdir();
    let file = dir.join("serve.toml");
    let text = every_setting(&dir);
    std::fs::write(&file, &text).expect("write the config");
    let written: toml::Table = text.parse().expect("TOML");

    let output = burncache()
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .output()
        .expect("run burncache");
    assert_eq!(printed(&output), written);

    // Flags and environment variables over the file; the rest still the file's.
    let output = burncache()
        .args([
            "serve",
            "--print-config",
            "--max-in-flight",
            "5",
            "--fuel",
            "42",
        ])
        .args(["--max-depth", "0", "--config"])
        .arg(&file)
        .env("BURNCACHE_STORE", "memory://elsewhere")
        .output()
        .expect("run burncache");
    let mut expected = written.clone();
    expected["max-in-flight"] = 5.into();
    expected["limits"]["fuel"] = 42.into();
    expected["guests"]["max-depth"] = 0.into();
    expected["node"]["store"] = "memory://elsewhere".into();
    assert_eq!(printed(&output), expected);

    // The file named by the environment, as `--config` would.
    let output = burncache()
        .args(["serve", "--print-config"])
        .env("BURNCACHE_CONFIG", &file)
        .output()
        .expect("run burncache");
    assert_eq!(printed(&output), written);
}

/// Paths in the file are the file's directory's, wherever the server starts.
#[test]
fn relative_paths_are_the_files_directory() {
    let dir = tempdir();
    let file = dir.join("serve.toml");
    std::fs::write(
        &file,
        "admin-token-file = \"secrets/token\"\n[node]\nartifacts = \"cache\"\n",
    )
    .expect("write the config");
    let output = burncache()
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run burncache");
    let settings = printed(&output);
    assert_eq!(
        settings["admin-token-file"].as_str(),
        dir.join("secrets/token").to_str()
    );
    assert_eq!(
        settings["node"]["artifacts"].as_str(),
        dir.join("cache").to_str()
    );
}

/// A file's settings govern a running server: its address, store, admin token (by
/// file), input ceiling and call limits.
#[tokio::test]
async fn a_served_config_file_takes_effect() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
    std::fs::write(dir.join("secrets/token"), "s3cret-token\n").expect("write the token");
    let file = dir.join("serve.toml");
    std::fs::write(
        &file,
        format!(
            "addr = \"127.0.0.1:0\"\nadmin-token-file = \"secrets/token\"\n\
             max-input-size = 256\n[limits]\nfuel = 2000000\n[node]\n\
             store = \"file://{}/store\"\nartifacts = \"artifacts\"\n",
            dir.display()
        ),
    )
    .expect("write the config");
    let mut child = burncache()
        .args(["serve", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start burncache serve");
    let base = crate::serve::base_url(&mut child);
    let client = reqwest::Client::new();
    let bytes = std::fs::read(guests::ADVERSARY).expect("read the guest");

    let refused = client
        .put(format!("{base}/v1/components"))
        .body(bytes.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(refused.status(), 401, "the token file's token is required");
    let deployed = client
        .put(format!("{base}/v1/components"))
        .bearer_auth("s3cret-token")
        .body(bytes)
        .send()
        .await
        .expect("PUT");
    assert!(deployed.status().is_success(), "{}", deployed.status());
    let digest = deployed.json::<Value>().await.expect("JSON")["digest"]
        .as_str()
        .expect("a digest")
        .to_string();
    assert!(
        dir.join("store").read_dir().is_ok(),
        "the store is the file's"
    );

    let call = |input: Value| {
        client
            .post(format!("{base}/v1/components/{digest}/call"))
            .header("content-type", "application/json")
            .body(input.to_string())
            .send()
    };
    let spun = call(json!({"op": "spin", "n": 1_000_000_000u64}))
        .await
        .expect("POST");
    let body: Value = spun.json().await.expect("JSON");
    assert_eq!(body["error"]["kind"], "fuel-exhausted", "{body}");
    let big = call(json!({"op": "echo", "pad": "x".repeat(300)}))
        .await
        .expect("POST");
    assert_eq!(big.status(), 413, "the file's max-input-size");

    let _ = child.kill();
    let _ = child.wait();
}

/// A bad file is reported with its line, by `config check` and by `serve` alike,
/// with the configuration exit code; a sound one checks clean.
#[test]
fn a_bad_config_file_is_reported_with_its_line() {
    let dir = tempdir();
    let cases = [
        (
            "max-in-flight = 8\n\n[limits]\nmemroy = \"1MiB\"\n",
            "line 4",
            "memroy",
        ),
        ("max-in-flight = 0\n", "line 1", "out of range"),
        (
            "[node]\nnot-found-ttl = \"soon\"\n",
            "line 2",
            "not-found-ttl",
        ),
        ("addr = \"not an address\"\n", "line 1", "addr"),
        ("admin-token = \"inline\"\n", "line 1", "admin-token-file"),
        ("preload = [\"abc\"]\n", "line 1", "digest"),
        ("[guests]\nmax-depth = 100\n", "line 2", "out of range"),
        (
            "max-in-flight = 8\nmax-in-flight = 9\n",
            "line 2",
            "duplicate",
        ),
    ];
    for (n, (text, line, says)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("bad-{n}.toml"));
        std::fs::write(&file, text).expect("write the config");
        for args in [
            &["config", "check"][..],
            &["serve", "--print-config", "--config"],
        ] {
            let output = burncache()
                .args(args)
                .arg(&file)
                .output()
                .expect("run burncache");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(4), "{args:?} {text}: {stderr}");
            assert!(
                stderr.contains(&file.display().to_string())
                    && stderr.contains(line)
                    && stderr.contains(says),
                "{args:?} {text:?} should say {line} and {says:?}: {stderr}"
            );
        }
    }

    let sound = dir.join("sound.toml");
    std::fs::write(&sound, every_setting(&dir)).expect("write the config");
    let output = burncache()
        .args(["config", "check"])
        .arg(&sound)
        .output()
        .expect("run burncache");
    assert!(output.status.success(), "{output:?}");

    let output = burncache()
        .args(["config", "check"])
        .arg(dir.join("missing.toml"))
        .output()
        .expect("run burncache");
    assert_eq!(output.status.code(), Some(4), "{output:?}");
}
