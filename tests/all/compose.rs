//! `burncache compose`: a guest that calls components by digest, composed with the
//! burn-cache client, run by a plain wasi:http host (the real `wasmtime serve`) with
//! nothing of burncache's linked, its calls running on a burncache server.

use std::process::Command;

use crate::conformance::Wasmtime;
use crate::serve::Served;
use crate::{guests, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_burncache");

fn compose(guest: &str, server: &str, out: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["compose", guest, "--server", server, "-o"])
        .arg(out)
        .output()
        .expect("run burncache compose")
}

#[tokio::test]
async fn a_composed_guest_under_wasmtime_serve_calls_a_burncache_server() {
    let server = Served::start(&[]);
    let add_one = server.deploy(guests::ADD_ONE).await;
    let out = tempdir().join("composed.wasm");
    let composed = compose(guests::HTTP_CALLER, &server.url(""), &out);
    assert!(composed.status.success(), "{composed:?}");

    // Nothing of burncache's is left to import.
    let inspected = Command::new(BIN)
        .args(["inspect", "--json"])
        .arg(&out)
        .output()
        .expect("run burncache inspect");
    let inspection: serde_json::Value =
        serde_json::from_slice(&inspected.stdout).expect("inspect's JSON");
    let imports: Vec<&str> = inspection["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .map(|i| i.as_str().expect("a name"))
        .collect();
    assert!(
        imports.iter().all(|name| name.starts_with("wasi:")),
        "{imports:?}"
    );

    let host = Wasmtime::serve(&["-S", "cli"], out.to_str().expect("a UTF-8 path"));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("a client");
    let get = |path: String| {
        let client = client.clone();
        let url = format!("http://{}{path}", host.addr);
        async move {
            let response = client.get(url).send().await.expect("GET");
            let status = response.status().as_u16();
            (status, response.text().await.expect("text"))
        }
    };
    // `execute` ran on the server...
    assert_eq!(
        get(format!("/{add_one}?n=41")).await,
        (200, r#"{"n":42}"#.to_string())
    );
    let metrics = server.metrics("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "burncache_calls_ok_total 1"),
        "{metrics}"
    );
    // ...and its errors come back as the `error` case of their kind.
    let unknown = "0".repeat(64);
    let (status, text) = get(format!("/{unknown}?n=1")).await;
    assert_eq!(status, 502);
    assert_eq!(text, format!("Error::NotFound({unknown:?})"));
    let (status, text) = get("/not-a-digest?n=1".to_string()).await;
    assert_eq!(
        (status, text.as_str()),
        (502, r#"Error::InvalidDigest("not-a-digest")"#)
    );

    // The composed guest under wasmtime serve sees what the same guest sees under
    // burncache itself: batches row by row, and a ceiling's number.
    let native = server.deploy(guests::HTTP_CALLER).await;
    for path in [
        format!("/batch/{add_one}?n=1,2,3"),
        format!("/batch/{unknown}?n=1"),
        format!("/tiny/{add_one}"),
    ] {
        let composed = get(path.clone()).await;
        let response = client
            .get(server.url(&format!("/v1/http/{native}{path}")))
            .send()
            .await
            .expect("GET");
        let direct = (
            response.status().as_u16(),
            response.text().await.expect("text"),
        );
        assert_eq!(composed, direct, "{path}");
    }
    assert_eq!(
        get(format!("/batch/{add_one}?n=1,2,3")).await.1,
        "ok {\"n\":2}\nok {\"n\":3}\nok {\"n\":4}\n"
    );
    assert_eq!(
        get(format!("/tiny/{add_one}")).await.1,
        "Err(Error::OutputTooLarge(2))\n"
    );
    // Refused as burncache refuses guests (the reason differs: here it is for the
    // deployer, there for the operator).
    let refused = get("/register".to_string()).await.1;
    assert!(
        refused.starts_with("Err(Error::PermissionDenied("),
        "{refused}"
    );
}

#[test]
fn compose_refuses_what_it_cannot_compose() {
    let out = tempdir().join("composed.wasm");
    // A guest without the import: nothing to compose (invalid-input, exit 19).
    let plain = compose(guests::HTTP_HELLO, "http://127.0.0.1:8080", &out);
    assert_eq!(plain.status.code(), Some(19), "{plain:?}");
    assert!(String::from_utf8_lossy(&plain.stderr).contains("imports nothing"));
    // A server that is not an http(s) base URL.
    let bad = compose(guests::HTTP_CALLER, "ftp://127.0.0.1", &out);
    assert_eq!(bad.status.code(), Some(19), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not http or https"));
    assert!(!out.exists(), "nothing is written on failure");
}
