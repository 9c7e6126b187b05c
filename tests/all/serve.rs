//! `burncache serve` as users run it: the real binary on 127.0.0.1:0, a real HTTP
//! client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{guests, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_burncache");

/// The base URL a starting `burncache serve` (its stdout piped) says it listens on.
pub(crate) fn base_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the address line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string()
}

/// A running `burncache serve`; stopped (SIGTERM) when dropped.
pub(crate) struct Served {
    child: Child,
    base: String,
    pub(crate) client: reqwest::Client,
}

impl Served {
    pub(crate) fn start(args: &[&str]) -> Served {
        Served::start_logging(args, "warn", Stdio::inherit())
    }

    /// Starts a server whose log (filtered by `rust_log`) goes to `log`.
    pub(crate) fn start_logging(args: &[&str], rust_log: &str, log: Stdio) -> Served {
        Served::spawn(Command::new(BIN), args, rust_log, log)
    }

    /// Starts a server that may hold at most `files` open file descriptors.
    /// Starts the server under `ulimit {limit}` (`-n 64`: soft and hard; `-S -n 64`:
    /// soft only).
    fn start_with_file_limit(args: &[&str], limit: &str) -> Served {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
            .arg(BIN);
        Served::spawn(shell, args, "warn", Stdio::inherit())
    }

    /// Runs `command` (the binary, or a shell that execs it) as `burncache serve`.
    fn spawn(mut command: Command, args: &[&str], rust_log: &str, log: Stdio) -> Served {
        let node = tempdir();
        let mut child = command
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("BURNCACHE_STORE", burncache::file_url(&node.join("store")))
            .env("BURNCACHE_ARTIFACTS", node.join("artifacts"))
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start burncache serve");
        let base = base_url(&mut child);
        Served {
            child,
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn deploy(&self, path: &str) -> String {
        self.deploy_bytes(std::fs::read(path).expect("read")).await
    }

    /// PUTs bytes to the API, expecting success, and returns their digest.
    async fn deploy_bytes(&self, bytes: impl Into<reqwest::Body>) -> String {
        let response = self.put(bytes).await;
        assert!(response.status().is_success(), "{}", response.status());
        let body: Value = response.json().await.expect("json");
        body["digest"].as_str().expect("digest").to_string()
    }

    /// PUTs bytes to the API without a token.
    async fn put(&self, bytes: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .put(self.url("/v1/components"))
            .body(bytes)
            .send()
            .await
            .expect("PUT")
    }

    /// What `GET /v1/components/{digest}` says.
    async fn describe(&self, digest: &str) -> Value {
        self.client
            .get(self.url(&format!("/v1/components/{digest}")))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json")
    }

    pub(crate) async fn call(
        &self,
        digest: &str,
        input: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url(&format!("/v1/components/{digest}/call")))
            .header("content-type", "application/json")
            .body(input.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn metrics(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET metrics")
            .text()
            .await
            .expect("text")
    }

    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A metric's value from Prometheus text (`name` includes any labels).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn serves_a_wasi_http_component_like_wasmtime_serve() {
    let served = Served::start(&[guests::HTTP_HELLO]);
    let response = served
        .client
        .get(served.url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.expect("body"),
        "Hello from a burncache HTTP guest!\n"
    );

    let response = served
        .client
        .get(served.url("/nope"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);

    let response = served
        .client
        .post(served.url("/echo"))
        .header("x-test", "a value")
        .body("the body\n")
        .send()
        .await
        .expect("POST /echo");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo-x-test"], "a value");
    assert_eq!(response.headers()["x-echo-method"], "POST");
    assert_eq!(response.text().await.expect("body"), "the body\n");

    let response = served
        .client
        .get(served.url("/stream?mib=8"))
        .send()
        .await
        .expect("GET");
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), 8 << 20);
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "intact"
    );

    let health = served
        .client
        .get(served.url("/.well-known/burncache/healthz"))
        .send()
        .await
        .expect("GET");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn the_api_deploys_calls_batches_inspects_and_forgets() {
    let served = Served::start(&[]);
    let digest = served.deploy(guests::ADD_ONE).await;
    let again = served
        .put(std::fs::read(guests::ADD_ONE).expect("read"))
        .await;
    assert_eq!(again.status(), 200, "already present");

    let described = served.describe(&digest).await;
    assert_eq!(described["kind"], "function");
    assert_eq!(described["compiled"], true);
    assert!(
        described["exports"]
            .as_array()
            .expect("exports")
            .contains(&json!("burncache:host/function@0.1.1"))
    );

    let response = served
        .client
        .post(served.url(&format!("/v1/components/{digest}/call")))
        .header("content-type", "application/json")
        .header("burncache-fuel", "10000000")
        .body(r#"{"n": 41}"#)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let fuel: u64 = response.headers()["burncache-fuel-burned"]
        .to_str()
        .expect("text")
        .parse()
        .expect("n");
    assert!(fuel > 0);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"n": 42})
    );

    let echo = served.deploy(guests::ADVERSARY).await;
    let response = served
        .client
        .post(served.url(&format!("/v1/components/{echo}/call")))
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .expect("call");
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(
        response.bytes().await.expect("bytes").to_vec(),
        vec![0u8, 1, 2, 255]
    );

    let rows: Value = served
        .client
        .post(served.url(&format!("/v1/components/{digest}/batch")))
        .body(json!([{"n": 1}, {"n": i64::MAX}, {"n": 3}]).to_string())
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    assert_eq!(rows[0], json!({"ok": {"n": 2}}));
    assert_eq!(rows[1]["error"]["kind"], "guest");
    assert_eq!(rows[2], json!({"ok": {"n": 4}}));

    let forgotten = served
        .client
        .delete(served.url(&format!("/v1/components/{digest}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(forgotten.status(), 204);
    // The node forgot it; the store still has it, so it is fetched again.
    let (status, out) = served.call(&digest, &json!({"n": 1}), &[]).await;
    assert_eq!((status, out), (200, json!({"n": 2})));

    let unknown = "0".repeat(64);
    let (status, out) = served.call(&unknown, &json!({"n": 1}), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(out["error"]["kind"], "not-found");
}

#[tokio::test]
async fn an_http_guest_calls_a_function_through_burn_cache() {
    let served = Served::start(&[]);
    let add_one = served.deploy(guests::ADD_ONE).await;
    let caller = served.deploy(guests::HTTP_CALLER).await;
    let response = served
        .client
        .get(served.url(&format!("/v1/http/{caller}/{add_one}?n=41")))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"n": 42})
    );

    let hello = served.deploy(guests::HTTP_HELLO).await;
    let response = served
        .client
        .get(served.url(&format!("/v1/http/{hello}/")))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        response.text().await.expect("body"),
        "Hello from a burncache HTTP guest!\n"
    );
}

#[tokio::test]
async fn faults_under_load_are_classified_and_counted() {
    let served = std::sync::Arc::new(Served::start(&[]));
    let good = served.deploy(guests::ADD_ONE).await;
    let bad = served.deploy(guests::ADVERSARY).await;
    const REQUESTS: usize = 2000;
    const CONCURRENCY: usize = 32;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (served, next, good, bad) =
                (served.clone(), next.clone(), good.clone(), bad.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= REQUESTS {
                        return seen;
                    }
                    let (kind, (status, out)) = match i % 16 {
                        0 => (
                            "timeout",
                            served
                                .call(
                                    &bad,
                                    &json!({"op": "loop"}),
                                    &[
                                        ("burncache-timeout-ms", "20"),
                                        ("burncache-fuel", "100000000000"),
                                    ],
                                )
                                .await,
                        ),
                        1 => (
                            "memory-limit",
                            served
                                .call(
                                    &bad,
                                    &json!({"op": "alloc"}),
                                    &[("burncache-memory-bytes", "8388608")],
                                )
                                .await,
                        ),
                        2 => (
                            "trap",
                            served.call(&bad, &json!({"op": "panic"}), &[]).await,
                        ),
                        _ => ("ok", served.call(&good, &json!({"n": i}), &[]).await),
                    };
                    if kind == "ok" {
                        assert_eq!((status, out), (200, json!({"n": i + 1})));
                    } else {
                        assert_eq!(out["error"]["kind"], kind, "{status} {out}");
                        let expected = if kind == "timeout" { 504 } else { 500 };
                        assert_eq!(status, expected, "{out}");
                    }
                    seen.push(kind);
                }
            })
        })
        .collect();
    let mut counts = std::collections::HashMap::new();
    for worker in workers {
        for kind in worker.await.expect("worker") {
            *counts.entry(kind).or_insert(0u64) += 1;
        }
    }
    let text = served.metrics("/metrics").await;
    for (kind, sent) in &counts {
        let counted = metric(
            &text,
            &format!("burncache_requests_total{{outcome=\"{kind}\"}}"),
        );
        assert_eq!(counted as u64, *sent, "{kind}: {text}");
    }
    assert_eq!(
        metric(&text, "burncache_calls_ok_total") as u64,
        counts["ok"]
    );
    assert_eq!(
        metric(&text, "burncache_calls_failed_total{kind=\"trap\"}") as u64,
        counts["trap"]
    );
    assert!(metric(&text, "burncache_fuel_burned_total") > 0.0);
    assert_eq!(metric(&text, "burncache_compiles_total") as u64, 2);
    assert!(
        text.contains("burncache_request_duration_seconds_bucket"),
        "{text}"
    );
    assert_eq!(metric(&text, "burncache_in_flight"), 0.0);
    // Still serving.
    assert_eq!(
        served.call(&good, &json!({"n": 1}), &[]).await,
        (200, json!({"n": 2}))
    );
}

#[tokio::test]
async fn overload_is_refused_at_once_and_recovers() {
    let served = std::sync::Arc::new(Served::start(&[
        "--max-in-flight",
        "2",
        // One client fills every slot here: its own share is all of them.
        "--max-in-flight-per-client",
        "2",
    ]));
    let slow = served.deploy(guests::ADVERSARY).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (served, slow) = (served.clone(), slow.clone());
            tokio::spawn(async move {
                let response = served
                    .client
                    .post(served.url(&format!("/v1/components/{slow}/call")))
                    .body(json!({"op": "sleep", "ms": 1500}).to_string())
                    .send()
                    .await
                    .expect("POST");
                let retry_after = response.headers().get("retry-after").cloned();
                (
                    response.status().as_u16(),
                    retry_after,
                    std::time::Instant::now(),
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.expect("join"));
    }
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    let served_ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    assert_eq!(refused.len() + served_ok.len(), 10, "{results:?}");
    assert!(served_ok.len() >= 2 && refused.len() >= 6, "{results:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.1.as_ref().is_some_and(|v| v == "1")),
        "Retry-After"
    );
    // Refusals came back before the slow calls finished: they did not queue.
    let last_refusal = refused.iter().map(|r| r.2).max().expect("some");
    let first_success = served_ok.iter().map(|r| r.2).min().expect("some");
    assert!(
        last_refusal < first_success,
        "refused at once, not after waiting"
    );
    let text = served.metrics("/metrics").await;
    assert_eq!(
        metric(&text, "burncache_rejected_total{reason=\"overloaded\"}") as usize,
        refused.len()
    );
    let (status, _) = served.call(&slow, &json!({"op": "counter"}), &[]).await;
    assert_eq!(status, 200, "serves normally after the load");
}

#[tokio::test]
async fn admin_routes_need_the_token() {
    let served = Served::start(&["--admin-token", "s3cret"]);
    let put = |token: Option<&str>| {
        let mut request = served
            .client
            .put(served.url("/v1/components"))
            .body(std::fs::read(guests::ADD_ONE).expect("read"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    assert_eq!(put(None).await.expect("PUT").status(), 401);
    assert_eq!(put(Some("wrong")).await.expect("PUT").status(), 401);
    let response = put(Some("s3cret")).await.expect("PUT");
    assert_eq!(response.status(), 201);
    let digest = response.json::<Value>().await.expect("json")["digest"]
        .as_str()
        .expect("d")
        .to_string();
    let delete = served
        .client
        .delete(served.url(&format!("/v1/components/{digest}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(delete.status(), 401);
    // Calls need no token.
    assert_eq!(served.call(&digest, &json!({"n": 1}), &[]).await.0, 200);
}

#[test]
fn admin_routes_are_not_opened_to_the_network_without_a_token() {
    let out = Command::new(BIN)
        .args(["serve", "--addr", "0.0.0.0:0"])
        .env(
            "BURNCACHE_STORE",
            burncache::file_url(&tempdir().join("store")),
        )
        .env_remove("BURNCACHE_ADMIN_TOKEN")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin token"));
}

#[tokio::test]
async fn bad_input_gets_the_documented_status_and_kind() {
    let served = Served::start(&["--max-input-size", "1KiB"]);
    let digest = served.deploy(guests::ADD_ONE).await;
    let post =
        |path: String, body: Vec<u8>| served.client.post(served.url(&path)).body(body).send();
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            format!("/v1/components/{digest}/call"),
            b"{\"n\": ".to_vec(),
            400,
            "invalid-input",
        ),
        (
            "/v1/components/xyz/call".to_string(),
            b"{}".to_vec(),
            400,
            "invalid-digest",
        ),
        (
            format!("/v1/components/{digest}/call"),
            vec![b' '; 2048],
            413,
            "too-large",
        ),
        (
            format!("/v1/components/{digest}/batch"),
            b"{\"not\": \"an array\"}".to_vec(),
            400,
            "invalid-input",
        ),
    ];
    for (path, body, status, kind) in cases {
        let response = post(path.clone(), body).await.expect("POST");
        assert_eq!(response.status().as_u16(), status, "{path}");
        let out: Value = response.json().await.expect("json");
        assert_eq!(out["error"]["kind"], kind, "{path}: {out}");
    }
    let form = served
        .client
        .post(served.url(&format!("/v1/components/{digest}/call")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("n=1")
        .send()
        .await
        .expect("POST");
    assert_eq!(form.status(), 415);
    let out: Value = form.json().await.expect("json");
    assert_eq!(out["error"]["kind"], "unsupported-media-type");
    let response = served
        .put(b"\xffneither a component nor text".to_vec())
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["kind"],
        "invalid-input"
    );
}

#[tokio::test]
async fn sigterm_lets_the_call_under_way_finish() {
    let mut served = Served::start(&[]);
    let slow = served.deploy(guests::ADVERSARY).await;
    let client = served.client.clone();
    let url = served.url(&format!("/v1/components/{slow}/call"));
    let call = tokio::spawn(async move {
        let response = client
            .post(url)
            .body(json!({"op": "sleep", "ms": 1500}).to_string())
            .send()
            .await
            .expect("POST");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    });
    // Wait until the call is running, then ask the server to stop.
    loop {
        let text = served.metrics("/metrics").await;
        if metric(&text, "burncache_in_flight") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || served.terminate())
        .await
        .expect("join");
    assert_eq!(
        call.await.expect("join"),
        (200, "{\"slept\":true}".to_string())
    );
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_api_takes_scripts_as_it_takes_components() {
    let artifacts = crate::scripts::js_artifacts();
    let served = Served::start(&["--artifacts", artifacts.to_str().expect("utf-8")]);
    let script = "export default (rows) => rows.map((r) => r.n * 2);\n";
    let digest = served.deploy_bytes(script).await;
    assert_eq!(digest, burncache::Digest::of(script.as_bytes()).to_string());

    let described = served.describe(&digest).await;
    assert_eq!(described["kind"], "script");

    let (status, out) = served
        .call(&digest, &json!([{ "n": 1 }, { "n": 20 }]), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(out, json!([2, 40]));

    let batch: Value = served
        .client
        .post(served.url(&format!("/v1/components/{digest}/batch")))
        .header("content-type", "application/json")
        .body(json!([[{ "n": 1 }], "not rows"]).to_string())
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    assert_eq!(batch[0]["ok"], json!([2]));
    assert_eq!(batch[1]["error"]["kind"], "guest");

    // A script that does not parse is refused at deploy, with its position.
    let response = served.put("module.exports = (d) => d +;\n").await;
    assert_eq!(response.status(), 422);
    let refused: Value = response.json().await.expect("json");
    assert_eq!(refused["error"]["kind"], "compile-failed");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("line 1, column 28"), "{message}");
}

/// An HTTP guest that writes a thousand lines to stderr, asking for the stream anew
/// each time, gets at most its request's log budget (32 KiB) into the server log.
#[tokio::test]
async fn an_http_guest_cannot_flood_the_log() {
    let log_path = tempdir().join("server.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut served = Served::start_logging(&[], "info", Stdio::from(log));
    let caller = served.deploy(guests::HTTP_CALLER).await;
    let response = served
        .client
        .get(served.url(&format!("/v1/http/{caller}/flood?lines=1000")))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "wrote 1000 lines\n");
    served.terminate();
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let logged = log.lines().filter(|l| l.contains("flood-line")).count();
    // A line costs its 111 bytes and 128 more: 32 KiB holds 137 of them.
    assert!((1..=300).contains(&logged), "{logged} guest lines logged");
    assert!(log.contains("the rest is dropped"), "the cut is logged");
}

/// The in-flight gauge of a server, once it settles at `value` (at most 20 s).
async fn in_flight_settles_at(served: &Served, value: f64) -> f64 {
    let mut seen = f64::NAN;
    for _ in 0..200 {
        seen = metric(&served.metrics("/metrics").await, "burncache_in_flight");
        if seen == value {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Clients that hang up during function calls give their slots back: the gauge
/// returns to 0 and the node serves as before.
#[tokio::test]
async fn clients_that_hang_up_during_calls_leave_no_slot_taken() {
    let served = Served::start(&["--max-in-flight", "4"]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    for _ in 0..6 {
        let hung_up = impatient
            .post(served.url(&format!("/v1/components/{adversary}/call")))
            .header("content-type", "application/json")
            .body(json!({"op": "sleep", "ms": 3000}).to_string())
            .send()
            .await;
        assert!(hung_up.is_err(), "the client gave up first");
    }
    assert_eq!(in_flight_settles_at(&served, 0.0).await, 0.0);
    let (status, body) = served
        .call(&adversary, &json!({"op": "counter"}), &[])
        .await;
    assert_eq!((status, body), (200, json!({"calls": 1})));
}

/// An HTTP guest whose client hangs up keeps its slot until it has finished: with
/// one slot, the next request is refused while the guest runs on, and served once
/// it is done; the gauge returns to 0.
#[tokio::test]
async fn an_http_guest_keeps_its_slot_until_it_finishes() {
    let served = Served::start(&["--max-in-flight", "1"]);
    let caller = served.deploy(guests::HTTP_CALLER).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let hung_up = impatient
        .get(served.url(&format!("/v1/http/{caller}/sleep?ms=4000")))
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up first");
    let quick = served.url(&format!("/v1/http/{caller}/sleep?ms=0"));
    let refused = served.client.get(&quick).send().await.expect("GET");
    assert_eq!(
        refused.status(),
        503,
        "the sleeping guest still holds the slot"
    );
    assert_eq!(in_flight_settles_at(&served, 0.0).await, 0.0);
    let served_now = served.client.get(&quick).send().await.expect("GET");
    assert_eq!(served_now.status(), 200);
    assert_eq!(served_now.text().await.expect("body"), "slept 0 ms\n");
}

/// The `host:port` a server listens on.
fn address(served: &Served) -> String {
    served
        .base
        .strip_prefix("http://")
        .expect("an http URL")
        .to_string()
}

/// Whether the server closes `stream` (end of stream or a reset) before `wait`.
fn closed_by_server(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or other answer before the close is fine: keep reading.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A client that sends half a request line and stalls is closed once the header
/// timeout passes, and the server serves others meanwhile.
#[tokio::test]
async fn a_stalled_half_request_is_closed_after_the_header_timeout() {
    use std::io::Write as _;
    let served = Served::start(&["--header-timeout", "1s"]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let mut stalled: Vec<_> = (0..300)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address(&served)).expect("connect");
            stream
                .write_all(b"GET /healthz HT")
                .expect("half a request line");
            stream
        })
        .collect();
    // A connection of its own: the deploy's pooled one has been idle past the
    // header timeout, and the server closes idle connections too.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let response = fresh
        .post(served.url(&format!("/v1/components/{adversary}/call")))
        .header("content-type", "application/json")
        .body(json!({"op": "counter"}).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200, "served meanwhile");
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"calls": 1})
    );
    for stream in &mut stalled {
        assert!(
            closed_by_server(stream, Duration::from_secs(30)),
            "a stalled connection stayed open"
        );
    }
}

/// Connections beyond `--max-connections` are closed as they arrive; once the open
/// ones go, the server takes new ones again.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let served = Served::start(&[
        "--max-connections",
        "2",
        "--max-connections-per-client",
        "2",
        "--header-timeout",
        "60s",
    ]);
    let open: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(address(&served)).expect("connect"))
        .collect();
    // Accepted in order: by the time a third is accepted, the two hold the cap.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(address(&served)).expect("connect");
    assert!(closed_by_server(&mut third, Duration::from_secs(30)));
    drop(open);
    assert!(
        answers_again(&served).await,
        "the server takes connections again"
    );
}

/// A connection to `served` from `local` (any 127.0.0.0/8 address), with a small
/// receive buffer, in blocking mode.
async fn connect_from(served: &Served, local: [u8; 4]) -> std::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .bind((std::net::Ipv4Addr::from(local), 0).into())
        .expect("bind");
    let stream = socket
        .connect(address(served).parse().expect("an address"))
        .await
        .expect("connect")
        .into_std()
        .expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// Whether a plain `GET /healthz` on `stream` is answered `200`.
fn healthz_on(stream: &mut std::net::TcpStream) -> bool {
    use std::io::{Read as _, Write as _};
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// One address holds at most `--max-connections-per-client` connections; its
/// next is closed at once while another address is still served.
#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let served = Served::start(&[
        "--max-connections",
        "8",
        "--max-connections-per-client",
        "2",
        "--header-timeout",
        "60s",
    ]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(&served, [127, 0, 0, 3]).await;
        assert!(healthz_on(&mut stream), "within the share");
        held.push(stream);
    }
    let mut third = connect_from(&served, [127, 0, 0, 3]).await;
    assert!(
        closed_by_server(&mut third, Duration::from_secs(30)),
        "a third connection from the same address"
    );
    let mut other = connect_from(&served, [127, 0, 0, 4]).await;
    assert!(healthz_on(&mut other), "another address is served");
    drop(held);
    let mut again = None;
    for _ in 0..100 {
        let mut stream = connect_from(&served, [127, 0, 0, 3]).await;
        if healthz_on(&mut stream) {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        again.is_some(),
        "the share comes back when its connections close"
    );
}

/// A client that asks for a large answer and never reads it holds a slot while the
/// answer waits, and loses its connection after `--send-timeout`, the answer cut
/// short.
#[tokio::test]
async fn a_client_that_does_not_read_its_answer_is_closed_after_the_send_timeout() {
    use std::io::{Read as _, Write as _};
    // A send timeout long enough that a loaded machine still sees the slot held.
    let served = Served::start(&["--send-timeout", "4s", "--max-connections-per-client", "1"]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let len: usize = 16 << 20;
    let body = json!({"op": "big-output", "len": len}).to_string();
    let mut hog = connect_from(&served, [127, 0, 0, 5]).await;
    hog.write_all(
        format!(
            "POST /v1/components/{adversary}/call HTTP/1.1\r\nhost: localhost\r\n\
             content-type: application/json\r\nburncache-output-bytes: {}\r\n\
             burncache-memory-bytes: {}\r\ncontent-length: {}\r\n\r\n{body}",
            64 << 20,
            256 << 20,
            body.len()
        )
        .as_bytes(),
    )
    .expect("request");
    // The unread answer holds its slot as the call did.
    assert_eq!(in_flight_settles_at(&served, 1.0).await, 1.0);
    // The address's one connection is the hog's until the server gives up on it.
    let mut freed = false;
    for _ in 0..300 {
        let mut probe = connect_from(&served, [127, 0, 0, 5]).await;
        if healthz_on(&mut probe) {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the unread connection was not closed");
    hog.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut received = Vec::new();
    let ended = hog.read_to_end(&mut received);
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "the call succeeded: {}",
        String::from_utf8_lossy(&received[..received.len().min(300)])
    );
    assert!(
        ended.is_err() || received.len() < len,
        "the whole answer was still sent ({} bytes)",
        received.len()
    );
    assert_eq!(in_flight_settles_at(&served, 0.0).await, 0.0);
    assert!(answers_again(&served).await);
}

/// A request asking by header for more than the operator's maximum gets the
/// maximum.
#[tokio::test]
async fn a_header_asking_past_the_operators_maximum_is_clamped() {
    let served = Served::start(&["--max-fuel", "5000000"]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let response = served
        .client
        .post(served.url(&format!("/v1/components/{adversary}/call")))
        .header("content-type", "application/json")
        .header("burncache-fuel", "100000000000")
        .body(json!({"op": "spin", "n": 1_000_000_000u64}).to_string())
        .send()
        .await
        .expect("POST");
    let burned: u64 = response
        .headers()
        .get("burncache-fuel-burned")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("the fuel header");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["kind"], "fuel-exhausted", "{body}");
    assert!(burned <= 5_000_000, "burned {burned}");
}

/// Numeric flags out of range are usage errors, not panics.
#[test]
fn numeric_flags_out_of_range_are_usage_errors() {
    for args in [
        ["--max-in-flight", "18446744073709551615"],
        ["--max-in-flight", "0"],
        ["--max-connections", "-1"],
        ["--header-timeout", "0s"],
        ["--header-timeout", "300000000000y"],
        ["--max-timeout", "300000000000y"],
        ["--max-connections-per-client", "0"],
    ] {
        let out = Command::new(BIN)
            .arg("serve")
            .args(args)
            .env(
                "BURNCACHE_STORE",
                burncache::file_url(&tempdir().join("store")),
            )
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The admin token from a file, its edge cases, and the token kept from guests.
#[tokio::test]
async fn the_admin_token_is_handled_as_a_secret() {
    let file = tempdir().join("token");
    std::fs::write(&file, "s3cret-token\n").expect("write the token");
    let served = Served::start(&["--admin-token-file", file.to_str().expect("utf-8")]);
    let put = |authorization: Option<&'static str>| {
        let mut request = served
            .client
            .put(served.url("/v1/components"))
            .body(std::fs::read(guests::HTTP_HELLO).expect("read"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    for refused in [
        None,
        Some("Bearer s3cret"),
        Some("Bearer s3cret-token-and-more"),
        Some("Basic s3cret-token"),
    ] {
        assert_eq!(
            put(refused).await.expect("PUT").status(),
            401,
            "{refused:?}"
        );
    }
    let response = put(Some("bearer   s3cret-token")).await.expect("PUT");
    assert_eq!(response.status(), 201, "the scheme in any case");
    let hello = response.json::<Value>().await.expect("json")["digest"]
        .as_str()
        .expect("digest")
        .to_string();

    // A guest never sees the admin token; other credentials pass through.
    let echo = |authorization: &'static str| {
        served
            .client
            .get(served.url(&format!("/v1/http/{hello}/echo")))
            .header("authorization", authorization)
            .send()
    };
    let response = echo("Bearer s3cret-token").await.expect("GET");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-echo-authorization").is_none());
    let response = served
        .client
        .get(served.url(&format!("/v1/http/{hello}/echo")))
        .header("authorization", "Bearer the-guests-own")
        .header("proxy-authorization", "Bearer s3cret-token")
        .send()
        .await
        .expect("GET");
    assert!(
        response
            .headers()
            .get("x-echo-proxy-authorization")
            .is_none()
    );
    let response = echo("Bearer the-guests-own").await.expect("GET");
    assert_eq!(
        response
            .headers()
            .get("x-echo-authorization")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer the-guests-own"[..])
    );
}

/// An empty admin token, or one a client could not send, is refused at start; without a token, admin routes answer
/// only requests addressed to a loopback name, and none a proxy passed on.
#[tokio::test]
async fn admin_routes_without_a_token_answer_only_loopback_names() {
    for token in ["", "  ", "t\u{f6}ken", "two words"] {
        let out = Command::new(BIN)
            .args(["serve", "--admin-token", token])
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{token:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let served = Served::start(&[]);
    let put = |host: &'static str| {
        served
            .client
            .put(served.url("/v1/components"))
            .header("host", host)
            .body(std::fs::read(guests::ADD_ONE).expect("read"))
            .send()
    };
    assert_eq!(put("attacker.example").await.expect("PUT").status(), 403);
    // A request a proxy on this machine passed on is not this machine's own, even
    // when the proxy names the loopback address it forwards to.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
        ("via", "1.1 proxy"),
    ] {
        let response = served
            .client
            .put(served.url("/v1/components"))
            .header("host", "127.0.0.1:8080")
            .header(name, value)
            .body(std::fs::read(guests::ADD_ONE).expect("read"))
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 403, "{name}");
    }
    assert_eq!(put("localhost:8080").await.expect("PUT").status(), 201);
    assert_eq!(put("127.0.0.1").await.expect("PUT").status(), 200);
}

/// One client address holding its share of the slots does not stop another: with
/// four slots and two a client, a third call from 127.0.0.1 is refused while one
/// from 127.0.0.2 is served.
#[tokio::test]
async fn one_client_cannot_take_every_slot() {
    let served = Served::start(&["--max-in-flight", "4", "--max-in-flight-per-client", "2"]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let url = served.url(&format!("/v1/components/{adversary}/call"));
            let client = served.client.clone();
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(json!({"op": "sleep", "ms": 3000}).to_string())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    assert_eq!(in_flight_settles_at(&served, 2.0).await, 2.0);
    let (status, _) = served
        .call(&adversary, &json!({"op": "counter"}), &[])
        .await;
    assert_eq!(status, 503, "the first client holds its share");
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let response = other
        .post(served.url(&format!("/v1/components/{adversary}/call")))
        .header("content-type", "application/json")
        .body(json!({"op": "counter"}).to_string())
        .send()
        .await
        .expect("POST from another address");
    assert_eq!(response.status(), 200, "another client is served");
    for sleeper in sleepers {
        assert_eq!(sleeper.await.expect("joined").expect("POST"), 200);
    }
}

/// A batch body for a digest the node cannot find is refused before its rows are
/// parsed.
#[tokio::test]
async fn a_batch_for_an_unknown_digest_is_refused_before_parsing() {
    let served = Served::start(&[]);
    let unknown = "0".repeat(64);
    let rows = format!("[{}]", vec!["{\"n\": 1}"; 100_000].join(","));
    let response = served
        .client
        .post(served.url(&format!("/v1/components/{unknown}/batch")))
        .header("content-type", "application/json")
        .body(rows)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["kind"], "not-found");
}

/// The most resident memory a process has had, from `/proc`.
fn peak_resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a size in kB");
    kib << 10
}

/// A 16 MiB batch body of tiny rows costs the server about the body, not a tree of
/// values many times its size: for an unknown digest, and for a known one (where
/// past the row cap it is refused).
#[tokio::test]
async fn a_large_batch_body_costs_about_its_size() {
    let served = Served::start(&[]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    let body = format!("[{}1]", "1,".repeat((16 << 20) / 2 - 2));
    assert!(body.len() <= 16 << 20);
    let before = peak_resident(served.child.id());
    for (digest, status) in [("0".repeat(64), 404), (adversary, 400)] {
        let response = served
            .client
            .post(served.url(&format!("/v1/components/{digest}/batch")))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), status);
        let answer: Value = response.json().await.expect("json");
        if status == 400 {
            let message = answer["error"]["message"].as_str().expect("a message");
            assert!(message.contains("rows"), "{message}");
        }
    }
    let grown = peak_resident(served.child.id()).saturating_sub(before);
    assert!(
        grown < 4 * body.len() as u64,
        "the peak grew by {} MiB for a {} MiB body",
        grown >> 20,
        body.len() >> 20
    );
}

/// Load with faults: four good clients make 1,000 calls between them while a hostile
/// client keeps guests looping, allocating, panicking, sleeping and flooding, and
/// fifty connections stall half-way through a request. Every good call gets the
/// right answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_calls_succeed_beside_hostile_ones() {
    use std::io::Write as _;
    let served = std::sync::Arc::new(Served::start(&[
        "--max-in-flight",
        "32",
        "--max-in-flight-per-client",
        "8",
        "--timeout",
        "2s",
    ]));
    let add_one = served.deploy(guests::ADD_ONE).await;
    let adversary = served.deploy(guests::ADVERSARY).await;
    let stalled: Vec<_> = (0..50)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address(&served)).expect("connect");
            stream
                .write_all(b"POST /v1/components/")
                .expect("half a request");
            stream
        })
        .collect();
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile: Vec<_> = (0..12)
        .map(|i| {
            let (served, adversary, done) = (served.clone(), adversary.clone(), done.clone());
            let client = from(3);
            tokio::spawn(async move {
                let ops = [
                    json!({"op": "loop"}),
                    json!({"op": "alloc"}),
                    json!({"op": "panic"}),
                    json!({"op": "sleep", "ms": 500}),
                    json!({"op": "big-output", "len": 100_000_000}),
                ];
                let mut n = i;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = client
                        .post(served.url(&format!("/v1/components/{adversary}/call")))
                        .header("content-type", "application/json")
                        .body(ops[n % ops.len()].to_string())
                        .send()
                        .await;
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    let good: Vec<_> = (0..16)
        .map(|worker| {
            let (served, add_one) = (served.clone(), add_one.clone());
            let client = from(4 + (worker % 4) as u8);
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for i in 0..1_000 / 16 + usize::from(worker < 1_000 % 16) {
                    let n = worker * 1_000 + i;
                    let response = client
                        .post(served.url(&format!("/v1/components/{add_one}/call")))
                        .header("content-type", "application/json")
                        .body(json!({"n": n}).to_string())
                        .send()
                        .await;
                    let answer = match response {
                        Ok(r) => (r.status().as_u16(), r.json::<Value>().await.ok()),
                        Err(e) => (0, Some(json!(e.to_string()))),
                    };
                    if answer != (200, Some(json!({"n": n + 1}))) {
                        wrong.push(answer);
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for worker in good {
        wrong.extend(worker.await.expect("joined"));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in hostile {
        task.await.expect("joined");
    }
    drop(stalled);
    assert!(
        wrong.is_empty(),
        "{} good calls went wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let text = served.metrics("/metrics").await;
    assert!(
        metric(&text, "burncache_calls_ok_total") >= 1_000.0,
        "{text}"
    );
}

/// Whether `/healthz` answers on a new connection within ten seconds.
async fn answers_again(served: &Served) -> bool {
    for _ in 0..100 {
        let response = reqwest::get(served.url("/healthz")).await;
        if response.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// CPU time (user and system) a process has used, from `/proc`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in USER_HZ, 100 per second on every platform it runs on.
    Duration::from_millis(ticks * 10)
}

/// Out of file descriptors, the server neither spins nor stops: while clients hold
/// every descriptor it may open, it uses little CPU, and once they let go it serves.
#[tokio::test]
async fn out_of_file_descriptors_the_server_waits_and_recovers() {
    let served = Served::start_with_file_limit(&["--max-connections", "1000"], "-n 64");
    let pid = served.child.id();
    let hogs: Vec<_> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(address(&served)).ok())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time(pid) - before;
    assert!(
        used < Duration::from_secs(1),
        "spun: {used:?} of CPU in 2 s"
    );
    drop(hogs);
    assert!(answers_again(&served).await, "the server serves again");
}

/// A low soft limit on open files is raised to the hard one as the server starts.
#[tokio::test]
async fn the_soft_file_limit_is_raised_to_the_hard_one() {
    let served = Served::start_with_file_limit(&[], "-S -n 64");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", served.child.id()))
        .expect("/proc limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("the open-files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "64", "{line}");
    assert_eq!(soft, hard, "{line}");
}

/// `--preload` readies a component before `/readyz` answers `200`, so the node's
/// first call of it compiles nothing.
#[tokio::test]
async fn a_preloaded_node_reports_ready_and_serves_warm() {
    let store_dir = tempdir().join("store");
    let store = burncache::Store::from_url(&burncache::file_url(&store_dir)).expect("store");
    let bytes = std::fs::read(guests::ADD_ONE).expect("read");
    let digest = burncache::Digest::of(&bytes);
    store.publish(&digest, &bytes).await.expect("publish");
    let served = Served::start(&[
        "--store",
        &burncache::file_url(&store_dir),
        "--preload",
        &digest.to_string(),
    ]);
    let mut ready = false;
    for _ in 0..300 {
        let response = served.client.get(served.url("/readyz")).send().await;
        if response.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz never answered 200");
    assert_eq!(
        metric(
            &served.metrics("/metrics").await,
            "burncache_compiles_total"
        ),
        1.0,
        "compiled while preloading"
    );
    let (status, answer) = served
        .call(&digest.to_string(), &json!({"n": 1}), &[])
        .await;
    assert_eq!((status, answer), (200, json!({"n": 2})));
    assert_eq!(
        metric(
            &served.metrics("/metrics").await,
            "burncache_compiles_total"
        ),
        1.0,
        "no compile on the first call"
    );
}

/// `/metrics` is served in the format the scraper asks for, labelled as what it
/// is: Prometheus' text format by default (read here by a Prometheus text parser,
/// its types intact), OpenMetrics to a scraper that asks for it.
#[tokio::test]
async fn metrics_are_served_in_the_format_asked_for() {
    let served = Served::start(&[]);
    let adversary = served.deploy(guests::ADVERSARY).await;
    served
        .call(&adversary, &json!({"op": "counter"}), &[])
        .await;

    let plain = served
        .client
        .get(served.url("/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = plain.text().await.expect("text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let kind = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(_) => "counter",
                prometheus_parse::Value::Gauge(_) => "gauge",
                prometheus_parse::Value::Histogram(_) => "histogram",
                prometheus_parse::Value::Summary(_) => "summary",
                prometheus_parse::Value::Untyped(_) => "untyped",
            })
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(kind("burncache_requests_total"), "counter");
    assert_eq!(kind("burncache_compiles_total"), "counter");
    assert_eq!(kind("burncache_in_flight"), "gauge");
    assert_eq!(kind("burncache_request_duration_seconds"), "histogram");
    assert!(!text.contains("# EOF"));

    let open = served
        .client
        .get(served.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(
        open.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = open.text().await.expect("text");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE burncache_requests counter"));
}

/// `--log-format json` writes one JSON object a line; the request line carries its
/// fields.
#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let log_path = tempdir().join("server.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut served = Served::start_logging(&["--log-format", "json"], "info", Stdio::from(log));
    let response = served
        .client
        .get(served.url("/healthz"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    served.terminate();
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let request = lines
        .iter()
        .find(|line| line["message"] == "request")
        .unwrap_or_else(|| panic!("a request line in {log}"));
    assert_eq!(request["path"], "/healthz");
    assert_eq!(request["status"], 200);
    assert!(request["request_id"].is_string(), "{request}");
}

/// A request's id (the client's `x-request-id`, or one the server makes up) comes
/// back on the answer and in error bodies, and every log line of the request carries
/// it, the guest's own output included.
#[tokio::test]
async fn a_request_id_follows_the_request_through_answer_errors_and_logs() {
    let log_path = tempdir().join("server.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut served = Served::start_logging(
        &["--log-format", "json", guests::HTTP_HELLO],
        "info",
        Stdio::from(log),
    );
    let logged = served
        .client
        .get(served.url("/log"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("GET /log");
    assert_eq!(logged.status(), 200);
    assert_eq!(logged.headers()["x-request-id"], "trace-me-42");

    // One the server makes up, when the client sends none or one unsafe to log.
    let mut made = Vec::new();
    for sent in
        [None, Some("has spaces"), Some("x".repeat(129).as_str())].map(|s| s.map(str::to_string))
    {
        let mut request = served.client.get(served.url("/"));
        if let Some(sent) = &sent {
            request = request.header("x-request-id", sent.as_str());
        }
        let response = request.send().await.expect("GET /");
        let id = response.headers()["x-request-id"]
            .to_str()
            .expect("ASCII")
            .to_string();
        assert!(!id.is_empty() && Some(&id) != sent.as_ref(), "{id}");
        made.push(id);
    }
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 3, "made-up ids differ: {made:?}");
    served.terminate();

    // Error bodies carry it too: an API node, a call to a digest it does not have.
    let served = Served::start(&[]);
    let missing = served
        .client
        .post(served.url(&format!("/v1/components/{}/call", "ab".repeat(32))))
        .header("x-request-id", "missing-1")
        .json(&serde_json::json!({"input": 1}))
        .send()
        .await
        .expect("POST");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-request-id"], "missing-1");
    let body: Value = missing.json().await.expect("JSON");
    assert_eq!(body["error"]["kind"], "not-found", "{body}");
    assert_eq!(body["error"]["request_id"], "missing-1", "{body}");

    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["request_id"] == "trace-me-42" || line["span"]["request_id"] == "trace-me-42"
        })
        .collect();
    for (stream, text) in [("stdout", "hello on stdout"), ("stderr", "hello on stderr")] {
        let guest = ours
            .iter()
            .find(|line| line["stream"] == stream)
            .unwrap_or_else(|| panic!("the guest's {stream} under the request's id in {log}"));
        assert_eq!(guest["message"], text, "{guest}");
        assert_eq!(guest["request_id"], "trace-me-42", "{guest}");
    }
    let request = ours
        .iter()
        .find(|line| line["message"] == "request")
        .unwrap_or_else(|| panic!("the request line in {log}"));
    assert_eq!(request["path"], "/log");
}
