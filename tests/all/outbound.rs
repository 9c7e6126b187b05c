//! Guests' outgoing HTTP through the real server: denied by default, let through by
//! `--allow-outbound` patterns, bounded by the call's deadline, over reused
//! connections, counted in the metrics.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::serve::Served;
use crate::upstream::Upstream;
use crate::{guests, tempdir};

/// What the `http-caller` guest got fetching `url`: its status and body.
async fn fetch(served: &Served, caller: &str, url: &str) -> (u16, String) {
    let response = served
        .client
        .get(served.url(&format!("/v1/http/{caller}/fetch?url={url}")))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_are_denied_unless_a_pattern_allows_them() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;

    // No pattern: denied, and the upstream never hears of it; the log names the
    // flag that would allow it.
    let log_path = tempdir().join("server.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut served = Served::start_logging(&[], "warn", Stdio::from(log));
    let caller = served.deploy(guests::HTTP_CALLER).await;
    let (status, body) = fetch(&served, &caller, &upstream.url()).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(upstream.requests(), 0);
    served.terminate();
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let flag = format!("--allow-outbound http://127.0.0.1:{}", upstream.port);
    assert!(log.contains(&flag), "the log names {flag}: {log}");

    // An exact pattern: that upstream, not another port on the same host.
    let allowed = format!("http://127.0.0.1:{}", upstream.port);
    let served = Served::start(&["--allow-outbound", &allowed]);
    let caller = served.deploy(guests::HTTP_CALLER).await;
    let (status, body) = fetch(&served, &caller, &upstream.url()).await;
    assert_eq!((status, body.as_str()), (200, "upstream ok"));
    assert_eq!(upstream.requests(), 1);
    let (status, body) = fetch(&served, &caller, &other.url()).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(
        other.requests(),
        0,
        "a denied request never reaches its upstream"
    );

    // Requests to one upstream share its connections.
    for _ in 0..5 {
        let (status, _) = fetch(&served, &caller, &upstream.url()).await;
        assert_eq!(status, 200);
    }
    assert_eq!(upstream.requests(), 6);
    assert!(
        upstream.connections() < upstream.requests(),
        "{} connections for {} requests",
        upstream.connections(),
        upstream.requests()
    );

    let metrics = served.metrics("/metrics").await;
    let count = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(count("burncache_outbound_sent_total"), 6.0);
    assert_eq!(count("burncache_outbound_denied_total"), 1.0);

    // Wildcards: any port on a host named, any scheme; a host named exactly.
    let localhost = format!("http://localhost:{}", other.port);
    for pattern in ["http://127.0.0.1:*", "*://127.0.0.1:*", localhost.as_str()] {
        let served = Served::start(&["--allow-outbound", pattern]);
        let caller = served.deploy(guests::HTTP_CALLER).await;
        let before = other.requests();
        let url = if pattern.contains("localhost") {
            format!("http://localhost:{}/", other.port)
        } else {
            other.url()
        };
        let (status, body) = fetch(&served, &caller, &url).await;
        assert_eq!((status, body.as_str()), (200, "upstream ok"), "{pattern}");
        assert_eq!(other.requests(), before + 1);
    }

    // A host-wide wildcard reaches hosts, not the node's own loopback (nor a cloud's
    // metadata service): those must be named.
    let served = Served::start(&["--allow-outbound", "*://*:*"]);
    let caller = served.deploy(guests::HTTP_CALLER).await;
    let before = other.requests();
    for url in [other.url(), format!("http://localhost:{}/", other.port)] {
        let (status, body) = fetch(&served, &caller, &url).await;
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.contains("DestinationIpProhibited"), "{url}: {body}");
    }
    assert_eq!(other.requests(), before, "never reached");
}

/// Function guests may send requests only when the operator extends the allow-list
/// to them, and their requests end with the call's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_guests_send_only_when_allowed_and_within_their_deadline() {
    let upstream = Upstream::start().await;
    let silent = Upstream::silent().await;
    let authority = format!("127.0.0.1:{}", upstream.port);
    let pattern = "http://127.0.0.1:*";

    let served = Served::start(&["--allow-outbound", pattern]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let (status, body) = served
        .call(
            &adversary,
            &json!({"op": "fetch", "authority": authority}),
            &[],
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("HttpRequestDenied")),
        "{body}"
    );
    assert_eq!(upstream.requests(), 0);
    drop(served);

    let served = Served::start(&[
        "--allow-outbound",
        pattern,
        "--allow-outbound-from-functions",
    ]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let (status, body) = served
        .call(
            &adversary,
            &json!({"op": "fetch", "authority": authority}),
            &[],
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"status": 200})));
    assert_eq!(upstream.requests(), 1);

    // An upstream that never answers: the call ends at its deadline.
    let hanging = format!("127.0.0.1:{}", silent.port);
    let (status, body) = served
        .call(
            &adversary,
            &json!({"op": "fetch", "authority": hanging}),
            &[("burncache-timeout-ms", "500")],
        )
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["kind"], Value::from("timeout"), "{body}");
    assert_eq!(silent.requests(), 1);

    // One call holds at most 16 requests open at once; the next is refused.
    let (status, body) = served
        .call(
            &adversary,
            &json!({"op": "fetch-many", "authority": hanging, "n": 17}),
            &[("burncache-timeout-ms", "2000")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["last"]
            .as_str()
            .is_some_and(|last| last.contains("ConnectionLimitReached")),
        "{body}"
    );
}

/// Patterns are checked as the server starts: a bad one is a usage error naming it.
#[test]
fn a_bad_pattern_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_burncache"))
        .args(["serve", "--allow-outbound", "api.example.com/v1"])
        .output()
        .expect("run burncache");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("api.example.com/v1") && stderr.contains("no scheme"),
        "{stderr}"
    );
}
