//! The JSON API under `/v1/components`: deploy, inspect, call, batch, columnar calls,
//! forget.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Body, RequestLog, Server, error_json, error_response, full};
use crate::{ARROW_STREAM, Digest, Error, Limits, Payload};

/// Header names for per-request ceilings; never above the server's maxima.
const FUEL: &str = "burncache-fuel";
const TIMEOUT_MS: &str = "burncache-timeout-ms";
const MEMORY_BYTES: &str = "burncache-memory-bytes";
const OUTPUT_BYTES: &str = "burncache-output-bytes";
/// The response header carrying the fuel a call burned.
const FUEL_BURNED: &str = "burncache-fuel-burned";

pub(super) async fn route(
    server: &Arc<Server>,
    request: Request<Incoming>,
    segments: &[&str],
) -> (Response<Body>, RequestLog) {
    let method = request.method().clone();
    let result = match (&method, segments) {
        (&Method::PUT, []) => deploy(server, request).await,
        (&Method::GET, [digest]) => with_digest(digest, |d| describe(server, &request, d)).await,
        (&Method::DELETE, [digest]) => with_digest(digest, |d| forget(server, request, d)).await,
        (&Method::POST, [digest, "call"]) => {
            with_digest(digest, |d| call(server, request, d)).await
        }
        (&Method::POST, [digest, "batch"]) => {
            with_digest(digest, |d| batch(server, request, d)).await
        }
        (&Method::POST, [digest, "columns"]) => {
            with_digest(digest, |d| columns(server, request, d)).await
        }
        _ => Err(Refusal::Status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{method} is not served here"),
        )),
    };
    match result {
        Ok(done) => done,
        Err(Refusal::Error(failed)) => (error_response(&failed.0), failed.1),
        Err(Refusal::Status(status, kind, message)) => {
            server.metrics.reject(kind);
            let mut response = error_json(status, kind, &message);
            if matches!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                // The rest of the body is not read: close rather than resync.
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            (response, RequestLog::default())
        }
        Err(Refusal::Overloaded) => (server.overloaded(), RequestLog::default()),
    }
}

/// Why a request was not served.
enum Refusal {
    /// A classified error, logged with what it was about.
    Error(Box<(Error, RequestLog)>),
    /// Refused before anything ran (auth, size): a status, a kind and a message.
    Status(StatusCode, &'static str, String),
    /// Every in-flight slot is taken.
    Overloaded,
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        let log = RequestLog::failed(&e);
        Refusal::Error(Box::new((e, log)))
    }
}

type Served = Result<(Response<Body>, RequestLog), Refusal>;

async fn with_digest<F, Fut>(text: &str, f: F) -> Served
where
    F: FnOnce(Digest) -> Fut,
    Fut: Future<Output = Served>,
{
    let digest = Digest::parse(text)?;
    f(digest).await
}

fn authorize(server: &Server, request: &Request<Incoming>) -> Result<(), Refusal> {
    let Some(token) = &server.config.admin_token else {
        // No token: the server only listens on loopback (checked at start). A
        // browser tricked into calling it by a rebound DNS name still sends that
        // name, so only loopback names are served.
        if !host_is_loopback(request) {
            return Err(Refusal::Status(
                StatusCode::FORBIDDEN,
                "forbidden",
                "without an admin token, this route answers only requests addressed to \
                 a loopback name (localhost, 127.0.0.1, [::1])"
                    .to_string(),
            ));
        }
        // A reverse proxy on this machine connects from loopback and often names
        // the loopback address it forwards to: what it passes on came from elsewhere.
        if let Some(name) = PROXY_HEADERS
            .iter()
            .find(|name| request.headers().contains_key(**name))
        {
            return Err(Refusal::Status(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "without an admin token, this route does not answer requests passed on \
                     by a proxy (the request carries `{name}`); set an admin token"
                ),
            ));
        }
        return Ok(());
    };
    if bearer(request).is_some_and(|given| same_secret(given, token)) {
        return Ok(());
    }
    Err(Refusal::Status(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this route needs `Authorization: Bearer <admin token>`".to_string(),
    ))
}

/// Headers a proxy adds to what it passes on.
const PROXY_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
];

/// The token of an `Authorization: Bearer` header (the scheme in any case).
pub(super) fn bearer<B>(request: &Request<B>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim_start())
}

/// Removes the admin token from headers passed on to guest code: every
/// `Authorization` or `Proxy-Authorization` value that carries it (other credentials
/// pass through).
pub(super) fn strip_token(headers: &mut http::HeaderMap, token: &str) {
    for name in [header::AUTHORIZATION, header::PROXY_AUTHORIZATION] {
        let values: Vec<_> = headers.get_all(&name).iter().cloned().collect();
        let carries = |value: &header::HeaderValue| {
            value.to_str().ok().is_some_and(|text| {
                let text = text.trim();
                let secret = text
                    .split_once(' ')
                    .map_or(text, |(_, rest)| rest.trim_start());
                same_secret(secret, token)
            })
        };
        if values.iter().any(carries) {
            headers.remove(&name);
            for value in values.into_iter().filter(|v| !carries(v)) {
                headers.append(&name, value);
            }
        }
    }
}

/// Whether the request's `Host` is a loopback name (or absent, as from a bare
/// HTTP/1.0 client on this machine).
fn host_is_loopback(request: &Request<Incoming>) -> bool {
    let Some(host) = request.headers().get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares two secrets in time that depends on neither: both are hashed first, so
/// neither their contents nor their lengths show in the timing.
pub(super) fn same_secret(given: &str, token: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(token));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// How much of a refused request's body is read and dropped, and for how long, so
/// that a client still sending a small body gets the refusal rather than a reset.
/// Past that the connection is closed: a refused client gets no more of the node.
const DRAIN_BYTES: usize = 64 << 10;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops the start of a refused request's body (see [`DRAIN_BYTES`]); a
/// client waiting for `100 Continue` is not invited to send it at all.
async fn drain(request: Request<Incoming>) {
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return;
    }
    let mut body = Limited::new(request.into_body(), DRAIN_BYTES);
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Reads a request's body, up to `limit` bytes and within the server's body timeout.
async fn read_body(
    server: &Server,
    request: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body is larger than the {limit}-byte limit"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let timeout = server.config.body_timeout;
    let read = tokio::time::timeout(timeout, Limited::new(request.into_body(), limit).collect());
    let Ok(read) = read.await else {
        return Err(Refusal::Status(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!("the body did not arrive within {timeout:?}"),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Error::InvalidInput(format!("cannot read the body: {e}")).into()),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn deploy(server: &Arc<Server>, request: Request<Incoming>) -> Served {
    if let Err(refusal) = authorize(server, &request) {
        drain(request).await;
        return Err(refusal);
    }
    // An upload is hashed, checked and compiled: work, inside a slot.
    let admission = admit(server, &request)?;
    let bytes = read_body(server, request, server.config.max_component_bytes).await?;
    let digest = Digest::of(&bytes);
    let held = server.cache.holds(&digest);
    let deployed = match server.cache.store() {
        Ok(_) => server.cache.deploy(&bytes).await.map(|(d, _)| d),
        Err(_) => server.cache.register(&bytes).await,
    };
    let log = RequestLog::default().with_digest(digest);
    match deployed {
        Ok(digest) => {
            let status = if held {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                admission.hold_until_sent(json_response(
                    status,
                    &json!({ "digest": digest.to_string() }),
                )),
                log,
            ))
        }
        Err(e) => {
            let log = RequestLog::failed(&e).with_digest(digest);
            Err(Refusal::Error(Box::new((e, log))))
        }
    }
}

async fn describe(server: &Arc<Server>, request: &Request<Incoming>, digest: Digest) -> Served {
    // Decoding a component is work: inside a slot, off the async workers.
    let admission = admit(server, request)?;
    let source = server.cache.fetch_source(&digest).await?;
    let inspection = tokio::task::spawn_blocking(move || crate::inspect(&source))
        .await
        .map_err(|e| Error::Backend(format!("the inspecting task failed: {e}")))??;
    let mut value = serde_json::to_value(&inspection).unwrap_or(Value::Null);
    value["compiled"] = json!(server.cache.is_compiled(&digest));
    Ok((
        admission.hold_until_sent(json_response(StatusCode::OK, &value)),
        RequestLog::default().with_digest(digest),
    ))
}

async fn forget(server: &Arc<Server>, request: Request<Incoming>, digest: Digest) -> Served {
    if let Err(refusal) = authorize(server, &request) {
        drain(request).await;
        return Err(refusal);
    }
    if !server.cache.forget(&digest) {
        return Err(Error::NotFound(digest).into());
    }
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok((response, RequestLog::default().with_digest(digest)))
}

/// Per-request ceilings from the headers, on top of the server's defaults.
fn limits(server: &Server, request: &Request<Incoming>) -> Result<Limits, Refusal> {
    let number = |name: &str| -> Result<Option<u64>, Refusal> {
        match request.headers().get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::InvalidInput(format!("header {name} must be a whole number")).into()
                }),
        }
    };
    let defaults = server.config.limits;
    Ok(Limits {
        fuel: number(FUEL)?.or(defaults.fuel),
        memory_bytes: number(MEMORY_BYTES)?.or(defaults.memory_bytes),
        timeout: number(TIMEOUT_MS)?
            .map(std::time::Duration::from_millis)
            .or(defaults.timeout),
        output_bytes: number(OUTPUT_BYTES)?.or(defaults.output_bytes),
    })
}

/// Whether a call's body is JSON (no content type, or `application/json`) or bytes
/// (`application/octet-stream`). Anything else is refused rather than guessed at: a
/// form-encoded body (what `curl --data` sends) is most likely a mistake.
fn is_json(request: &Request<Incoming>) -> Result<bool, Refusal> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(true);
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(true),
        "application/octet-stream" => Ok(false),
        other => Err(Refusal::Status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("a call body is application/json or application/octet-stream, not {other:?}"),
        )),
    }
}

async fn call(server: &Arc<Server>, request: Request<Incoming>, digest: Digest) -> Served {
    let limits = limits(server, &request)?;
    let json_in = is_json(&request)?;
    // The slot first: the body is read, and the input checked, inside it; it is
    // held until the answer has been sent.
    let admission = admit(server, &request)?;
    let body = read_body(server, request, server.config.max_input_bytes).await?;
    let input = if json_in {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| Error::InvalidInput("the JSON body is not UTF-8".to_string()))?;
        Payload::json_text(text)?
    } else {
        Payload::Bytes(body.to_vec())
    };
    let outcome = server.cache.execute_metered(&digest, input, &limits).await;
    let log = RequestLog::ran(digest, &outcome);
    let response = match outcome.result {
        Ok(Payload::Json(text)) => typed(full(text), "application/json"),
        Ok(Payload::Bytes(bytes)) => typed(full(bytes), "application/octet-stream"),
        Err(e) => error_response(&e),
    };
    let response = admission.hold_until_sent(response);
    Ok((with_fuel(response, outcome.fuel_burned), log))
}

/// An in-flight slot for `request`, or a refusal at once when none is free (or its
/// client holds its share). Held for as long as the request runs: a client that
/// hangs up cancels its call, and the slot is given back with it.
fn admit<B>(server: &Server, request: &Request<B>) -> Result<super::Admission, Refusal> {
    server
        .admit(super::peer_of(request))
        .ok_or(Refusal::Overloaded)
}

/// The most rows one batch request may carry: each row costs a few dozen bytes of
/// bookkeeping beyond its text, so a body of tiny rows is bounded by count as well as
/// by size.
pub(crate) const MAX_BATCH_ROWS: usize = 100_000;

/// A batch body's rows: a JSON array, each element kept as its own text (no tree of
/// values is built, so parsing costs about the body's size again), at most
/// [`MAX_BATCH_ROWS`] of them.
fn rows_of(body: &[u8]) -> Result<Vec<Payload>, Error> {
    use serde::Deserializer as _;

    struct Rows;
    impl<'de> serde::de::Visitor<'de> for Rows {
        type Value = Vec<Payload>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of rows")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH_ROWS));
            while let Some(row) = seq.next_element::<&'de serde_json::value::RawValue>()? {
                if rows.len() == MAX_BATCH_ROWS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_BATCH_ROWS} rows; split the batch"
                    )));
                }
                rows.push(Payload::Json(row.get().to_string()));
            }
            Ok(rows)
        }
    }

    let invalid = |e: serde_json::Error| {
        Error::InvalidInput(format!("the body must be a JSON array of rows: {e}"))
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    let rows = (&mut json).deserialize_seq(Rows).map_err(invalid)?;
    json.end().map_err(invalid)?;
    Ok(rows)
}

fn typed(body: Body, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn with_fuel(mut response: Response<Body>, fuel: u64) -> Response<Body> {
    response
        .headers_mut()
        .insert(FUEL_BURNED, header::HeaderValue::from(fuel));
    response
}

async fn batch(server: &Arc<Server>, request: Request<Incoming>, digest: Digest) -> Served {
    let limits = limits(server, &request)?;
    // The slot first; then the body, bounded; the rows are parsed only for a
    // component this node can run, and off the async workers, as is the answer.
    let admission = admit(server, &request)?;
    let body = read_body(server, request, server.config.max_input_bytes).await?;
    server.cache.register_by_hash(&digest).await?;
    let rows = tokio::task::spawn_blocking(move || rows_of(&body))
        .await
        .map_err(|e| Error::Backend(format!("the parsing task failed: {e}")))??;
    let outcome = server
        .cache
        .execute_batch_metered(&digest, rows, &limits)
        .await;
    let log = RequestLog::ran(digest, &outcome);
    let response = match outcome.result {
        Ok(results) => {
            let answer = tokio::task::spawn_blocking(move || batch_answer(results))
                .await
                .map_err(|e| Error::Backend(format!("the answering task failed: {e}")))?;
            typed(full(answer), "application/json")
        }
        Err(e) => error_response(&e),
    };
    let response = admission.hold_until_sent(response);
    Ok((with_fuel(response, outcome.fuel_burned), log))
}

/// A columnar call: an Arrow IPC stream in, one out (`application/vnd.apache.arrow.stream`
/// both ways). Errors are JSON, as on every route.
async fn columns(server: &Arc<Server>, request: Request<Incoming>, digest: Digest) -> Served {
    let limits = limits(server, &request)?;
    let essence = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if essence.as_deref() != Some(ARROW_STREAM) {
        return Err(Refusal::Status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "a columnar call's body is an Arrow IPC stream, sent as {ARROW_STREAM}, not {:?}",
                essence.unwrap_or_default()
            ),
        ));
    }
    let admission = admit(server, &request)?;
    let body = read_body(server, request, server.config.max_input_bytes).await?;
    let outcome = server
        .cache
        .execute_columns_stream(&digest, body.to_vec(), &limits)
        .await;
    let log = RequestLog::ran(digest, &outcome);
    let response = match outcome.result {
        Ok(stream) => typed(full(stream), ARROW_STREAM),
        Err(e) => error_response(&e),
    };
    let response = admission.hold_until_sent(response);
    Ok((with_fuel(response, outcome.fuel_burned), log))
}

/// A batch's answer, written out row by row: a JSON output goes in as the text the
/// guest returned (already checked to be JSON), never as a tree of values.
fn batch_answer(results: Vec<Result<Payload, Error>>) -> String {
    use std::fmt::Write as _;
    let mut answer = String::from("[");
    for (i, row) in results.into_iter().enumerate() {
        if i > 0 {
            answer.push(',');
        }
        match row {
            Ok(Payload::Json(text)) => {
                answer.push_str("{\"ok\":");
                answer.push_str(&text);
                answer.push('}');
            }
            Ok(Payload::Bytes(bytes)) => {
                answer.reserve(bytes.len() * 2 + 20);
                answer.push_str("{\"ok_bytes_hex\":\"");
                for byte in bytes {
                    let _ = write!(answer, "{byte:02x}");
                }
                answer.push_str("\"}");
            }
            Err(e) => {
                let error = json!({ "error": super::error_fields(&e) });
                answer.push_str(&error.to_string());
            }
        }
    }
    answer.push(']');
    answer
}
