//! Traces over OTLP/HTTP (the `otlp` feature): the real binary sends its spans to a
//! small OTLP receiver the test runs, and they carry the caller's trace.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::{guests, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_burncache");

/// The caller's trace and span, as a W3C `traceparent` carries them.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// An OTLP/HTTP receiver on 127.0.0.1: keeps every export request posted to
/// `/v1/traces` (protobuf, as the exporter sends by default).
struct Receiver {
    url: String,
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let exports = Arc::new(Mutex::new(Vec::new()));
        let kept = exports.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let kept = kept.clone();
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let kept = kept.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let body: hyper::body::Incoming = request.into_body();
                        let bytes = body.collect().await.map(|b| b.to_bytes())?;
                        if path == "/v1/traces"
                            && let Ok(export) = ExportTraceServiceRequest::decode(bytes)
                        {
                            kept.lock().expect("the exports").push(export);
                        }
                        let mut answer =
                            http::Response::new(http_body_util::Full::new(Bytes::new()));
                        answer.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, hyper::Error>(answer)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Receiver { url, exports }
    }

    /// The spans of the caller's trace, once those named have arrived (or after 20
    /// seconds, whatever has).
    async fn wait_for(&self, names: &[&str]) -> Vec<(String, Span)> {
        let mut waited = Duration::ZERO;
        loop {
            let ours: Vec<(String, Span)> = self
                .spans()
                .into_iter()
                .filter(|(_, span)| hex::encode(&span.trace_id) == TRACE_ID)
                .collect();
            let arrived = names
                .iter()
                .all(|name| ours.iter().any(|(_, span)| span.name == *name));
            if arrived || waited > Duration::from_secs(20) {
                return ours;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
    }

    /// Every span received so far, with its service's name.
    fn spans(&self) -> Vec<(String, Span)> {
        let exports = self.exports.lock().expect("the exports");
        let mut spans = Vec::new();
        for export in exports.iter() {
            for resource in &export.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        spans.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

/// Starts `burncache serve` on `store`, sending its traces to `receiver`.
fn start(
    receiver: &Receiver,
    store: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> (std::process::Child, String) {
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--store",
            store,
            "--artifacts",
        ])
        .arg(dir.join("server-artifacts"))
        .args(["--otlp-endpoint", &receiver.url])
        .args(args)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start burncache serve");
    let base = crate::serve::base_url(&mut server);
    (server, base)
}

/// Stops the server (SIGTERM), which sends the spans it has not sent yet.
async fn stop(mut server: std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("the waiting task")
        .expect("wait");
    assert!(status.success(), "{status}");
}

/// A call traced by its caller: the server's `request` span is the caller's span's
/// child, and the fetch, compile and guest call it caused are the request's.
// Two workers: the receiver must answer while the test waits for the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_sends_its_spans_under_the_callers_trace() {
    let receiver = Receiver::start().await;
    let dir = tempdir();
    let store = burncache::file_url(&dir.join("store"));
    let deployed = Command::new(BIN)
        .args(["deploy", guests::ADD_ONE, "--store", &store, "--artifacts"])
        .arg(dir.join("deployer-artifacts"))
        .output()
        .expect("run burncache deploy");
    assert!(deployed.status.success(), "{deployed:?}");
    let digest = String::from_utf8_lossy(&deployed.stdout).trim().to_string();

    let (server, base) = start(&receiver, &store, &dir, &[]);
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/components/{digest}/call"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .body(r#"{"n": 41}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("text"), r#"{"n":42}"#);

    stop(server).await;
    let ours = receiver
        .wait_for(&["request", "fetch", "compile", "guest"])
        .await;
    let find = |name: &str| {
        ours.iter()
            .find(|(_, span)| span.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = ours.iter().map(|(_, s)| s.name.as_str()).collect();
                panic!("no {name} span in the caller's trace; it has {names:?}")
            })
    };
    let (service, request) = find("request");
    assert!(service.contains("burncache"), "{service}");
    assert_eq!(hex::encode(&request.parent_span_id), CALLER_SPAN);
    for name in ["fetch", "compile", "guest"] {
        let (_, span) = find(name);
        assert_eq!(
            span.parent_span_id, request.span_id,
            "the {name} span is the request's child"
        );
    }
}

/// A guest's outgoing request carries the call's trace on to the upstream: its
/// `traceparent` names the caller's trace, and as parent the guest's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_outgoing_request_carries_the_trace_on() {
    let receiver = Receiver::start().await;
    let upstream = crate::upstream::Upstream::start().await;
    let dir = tempdir();
    let store = burncache::file_url(&dir.join("store"));
    let allowed = format!("http://127.0.0.1:{}", upstream.port);
    let (server, base) = start(&receiver, &store, &dir, &["--allow-outbound", &allowed]);
    let client = reqwest::Client::new();
    let deployed = client
        .put(format!("{base}/v1/components"))
        .body(std::fs::read(guests::HTTP_CALLER).expect("read the guest"))
        .send()
        .await
        .expect("PUT");
    let digest = deployed.json::<serde_json::Value>().await.expect("JSON")["digest"]
        .as_str()
        .expect("a digest")
        .to_string();
    let fetched = client
        .get(format!(
            "{base}/v1/http/{digest}/fetch?url={}",
            upstream.url()
        ))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .send()
        .await
        .expect("GET");
    assert_eq!(fetched.status(), 200);
    stop(server).await;

    let sent = upstream.headers();
    let traceparent = sent[0]
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no traceparent in {:?}", sent[0]))
        .to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE_ID, "the upstream joins the caller's trace");
    let ours = receiver.wait_for(&["request", "guest"]).await;
    let (_, parent) = ours
        .iter()
        .find(|(_, span)| hex::encode(&span.span_id) == parts[2])
        .unwrap_or_else(|| panic!("no exported span is the upstream's parent {}", parts[2]));
    assert_eq!(parent.name, "guest", "the guest's span sent the request");
}
