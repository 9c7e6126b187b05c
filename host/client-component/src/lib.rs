//! `burn-cache` over HTTP: the component `burncache compose` plugs into a guest's
//! `burn-cache` import. Each call becomes a request to a burncache server's JSON API
//! (the server's base URL comes from the `remote` import, which `compose` fills in),
//! and each error the server answers with becomes the `error` case of its kind.
//!
//! | `burn-cache`       | request                                   |
//! |--------------------|-------------------------------------------|
//! | `execute`          | `POST /v1/components/{digest}/call`       |
//! | `execute-batch`    | `POST /v1/components/{digest}/batch`      |
//! | `register-by-hash` | `GET /v1/components/{digest}`             |
//!
//! `register` and `forget` are refused (`permission-denied`), as a node refuses them
//! to guests unless its operator allows it: deploying is the deployer's. Limits
//! travel as the API's `burncache-*` headers; the server caps them as it caps any
//! client's, and a `timeout-ms` also bounds the wait for the server's answer.

wit_bindgen::generate!({
    path: "../../wit",
    world: "burncache:host/remote-client",
    generate_all,
});

use exports::burncache::host::burn_cache::Guest;
use exports::burncache::host::types::{Error, Limits, Payload};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasi::io::streams::StreamError;

struct Client;

export!(Client);

impl Guest for Client {
    /// Deploying is the deployer's: a composed guest gets the `permission-denied` a
    /// guest gets from a node that does not allow guests to register.
    fn register(_component: Vec<u8>) -> Result<String, Error> {
        Err(Error::PermissionDenied(
            "a composed guest may not register components; deploy them with `burncache \
             deploy` or the server's PUT /v1/components"
                .into(),
        ))
    }

    fn register_by_hash(digest: String) -> Result<String, Error> {
        check_digest(&digest)?;
        send(
            Method::Get,
            &format!("/v1/components/{digest}"),
            &[],
            &[],
            None,
        )?
        .ok()
        .map(|_| digest)
    }

    fn execute(digest: String, input: Payload, limits: Option<Limits>) -> Result<Payload, Error> {
        check_digest(&digest)?;
        let (content_type, body) = match &input {
            Payload::Json(text) => ("application/json", text.as_bytes()),
            Payload::Bytes(bytes) => ("application/octet-stream", bytes.as_slice()),
        };
        let answer = post(&digest, "call", content_type, body, limits.as_ref())?;
        let is_bytes = answer
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/octet-stream"));
        let body = answer.ok()?;
        if is_bytes {
            return Ok(Payload::Bytes(body));
        }
        String::from_utf8(body)
            .map(Payload::Json)
            .map_err(|_| Error::Backend("the server answered with JSON that is not UTF-8".into()))
    }

    fn execute_batch(
        digest: String,
        inputs: Vec<Payload>,
        limits: Option<Limits>,
    ) -> Result<Vec<Result<Payload, Error>>, Error> {
        check_digest(&digest)?;
        // The API's batches are JSON arrays of JSON rows.
        let mut rows = Vec::with_capacity(inputs.len());
        for input in &inputs {
            match input {
                Payload::Json(text) => rows.push(
                    serde_json::from_str::<&serde_json::value::RawValue>(text)
                        .map_err(|e| Error::InvalidInput(format!("a row is not JSON: {e}")))?,
                ),
                Payload::Bytes(_) => {
                    return Err(Error::InvalidInput(
                        "a remote batch carries JSON rows only; call `execute` for bytes".into(),
                    ));
                }
            }
        }
        let body = serde_json::to_vec(&rows).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let answer = post(&digest, "batch", "application/json", &body, limits.as_ref())?;
        let body = answer.ok()?;
        let results: Vec<Row<'_>> = serde_json::from_slice(&body).map_err(|e| {
            Error::Backend(format!("the server's batch answer is not understood: {e}"))
        })?;
        if results.len() != inputs.len() {
            return Err(Error::Backend(format!(
                "the server answered {} rows for {} inputs",
                results.len(),
                inputs.len()
            )));
        }
        Ok(results.into_iter().map(|row| row.result(&digest)).collect())
    }

    /// As `register`: the deployer's, not a composed guest's.
    fn execute_columns(
        digest: String,
        batch: Vec<u8>,
        limits: Option<Limits>,
    ) -> Result<Vec<u8>, Error> {
        check_digest(&digest)?;
        let answer = post(
            &digest,
            "columns",
            "application/vnd.apache.arrow.stream",
            &batch,
            limits.as_ref(),
        )?;
        answer.ok()
    }

    fn forget(digest: String) -> Result<(), Error> {
        check_digest(&digest)?;
        Err(Error::PermissionDenied(
            "a composed guest may not make the server forget components".into(),
        ))
    }
}

/// A batch row's answer: `{"ok": VALUE}`, `{"ok_bytes_hex": HEX}` or
/// `{"error": {"kind", "message"}}`. The value is kept as the text the server sent
/// (the guest's own), never parsed into numbers and re-printed.
#[derive(serde::Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    ok: Option<&'a serde_json::value::RawValue>,
    ok_bytes_hex: Option<String>,
    error: Option<serde_json::Value>,
}

impl Row<'_> {
    fn result(self, digest: &str) -> Result<Payload, Error> {
        if let Some(value) = self.ok {
            return Ok(Payload::Json(value.get().to_string()));
        }
        if let Some(hex) = self.ok_bytes_hex {
            return from_hex(&hex)
                .map(Payload::Bytes)
                .ok_or_else(|| Error::Backend("a row's bytes are not hex".into()));
        }
        match self.error {
            Some(error) => Err(error_of(digest, &error)),
            None => Err(Error::Backend(
                "a batch row the client does not understand".into(),
            )),
        }
    }
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `POST /v1/components/{digest}/{route}` with `body`, and `limits` as the API's
/// headers.
fn post(
    digest: &str,
    route: &str,
    content_type: &str,
    body: &[u8],
    limits: Option<&Limits>,
) -> Result<Answer, Error> {
    let ceilings = limits.map_or([None; 4], |l| {
        [l.fuel, l.memory_bytes, l.timeout_ms, l.output_bytes]
    });
    let values: Vec<(&str, String)> = [
        "burncache-fuel",
        "burncache-memory-bytes",
        "burncache-timeout-ms",
        "burncache-output-bytes",
    ]
    .into_iter()
    .zip(ceilings)
    .filter_map(|(name, value)| Some((name, value?.to_string())))
    .collect();
    let headers: Vec<(&str, &str)> = values
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .chain([("content-type", content_type)])
        .collect();
    send(
        Method::Post,
        &format!("/v1/components/{digest}/{route}"),
        &headers,
        body,
        limits.and_then(|l| l.timeout_ms),
    )
}

/// Refused here, as the host refuses it, rather than sent as a malformed path.
fn check_digest(digest: &str) -> Result<(), Error> {
    let valid = digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidDigest(digest.to_string()))
    }
}

/// What the server answered.
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    /// The digest the request was about, for `not-found`.
    digest: String,
}

impl Answer {
    /// The body of a success, or the error the server answered with.
    fn ok(self) -> Result<Vec<u8>, Error> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let error = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|mut v| v.get_mut("error").map(serde_json::Value::take));
        Err(match error {
            Some(error) => error_of(&self.digest, &error),
            None => unexpected(&self),
        })
    }
}

fn unexpected(answer: &Answer) -> Error {
    let text = String::from_utf8_lossy(&answer.body);
    let text: String = text.chars().take(200).collect();
    Error::Backend(format!(
        "the burncache server answered {}: {text}",
        answer.status
    ))
}

/// The server's `{"kind", "message", "limit"}` as the `error` case of that kind.
fn error_of(digest: &str, error: &serde_json::Value) -> Error {
    let message = error["message"].as_str().unwrap_or_default().to_string();
    let limit = error["limit"].as_u64();
    match error["kind"].as_str().unwrap_or_default() {
        // The server's own 404 for a route it does not have (a wrong --server path)
        // is not a missing component.
        "not-found" if !digest.is_empty() && message.contains(digest) => {
            Error::NotFound(digest.to_string())
        }
        "invalid-digest" => Error::InvalidDigest(digest.to_string()),
        "compile-failed" => Error::CompileFailed(message),
        "fuel-exhausted" => Error::FuelExhausted,
        "memory-limit" => Error::MemoryLimit,
        "timeout" => Error::Timeout,
        "output-too-large" => Error::OutputTooLarge(limit.unwrap_or(0)),
        "trap" => Error::Trap(message),
        "guest" => Error::Guest(message),
        "invalid-input" | "too-large" => Error::InvalidInput(message),
        "permission-denied" | "unauthorized" | "forbidden" => Error::PermissionDenied(message),
        "depth-exceeded" => {
            Error::DepthExceeded(limit.and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
        }
        "integrity" => Error::Integrity(message),
        "backend" => Error::Backend(message),
        other => Error::Backend(format!("the burncache server: {other}: {message}")),
    }
}

/// How much longer than the call's own deadline the client waits for the server's
/// answer: the request's way there and back.
const SLACK_MS: u64 = 5_000;

/// Sends one request to the server and reads its whole answer; with `timeout_ms`,
/// the wait for the answer's head and for each part of its body is bounded.
fn send(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: Option<u64>,
) -> Result<Answer, Error> {
    let server = burncache::host::remote::server();
    let (scheme, rest) = match server.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("http", rest)) => (Scheme::Http, rest),
        _ => {
            return Err(Error::Backend(format!(
                "the server URL {server:?} is not http(s)"
            )));
        }
    };
    let (authority, base) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let digest = path
        .strip_prefix("/v1/components/")
        .map(|rest| rest.split('/').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let transport =
        |what: &str| Error::Backend(format!("calling the burncache server at {server}: {what}"));

    let fields = Fields::new();
    // A declared length lets the server refuse a body it will not take before it
    // is sent.
    let length = body.len().to_string();
    let declared = (!body.is_empty()).then_some(("content-length", length.as_str()));
    for (name, value) in headers.iter().chain(declared.iter()) {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| transport(&format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&method)
        .map_err(|()| transport("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| transport("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| transport("authority"))?;
    request
        .set_path_with_query(Some(&format!("{}{path}", base.trim_end_matches('/'))))
        .map_err(|()| transport("path"))?;
    let outgoing = request.body().map_err(|()| transport("the request body"))?;
    let options = timeout_ms.map(|ms| {
        let options = RequestOptions::new();
        let wait = ms.saturating_add(SLACK_MS).saturating_mul(1_000_000);
        // Hosts that do not support a timeout keep their own.
        let _ = options.set_first_byte_timeout(Some(wait));
        let _ = options.set_between_bytes_timeout(Some(wait));
        options
    });
    let pending =
        outgoing_handler::handle(request, options).map_err(|e| transport(&format!("{e:?}")))?;
    // A server that refuses the request early stops reading its body: then its
    // answer says why, better than the failed write.
    let sent = {
        let stream = outgoing
            .write()
            .map_err(|()| transport("the request body"))?;
        body.chunks(4096)
            .try_for_each(|chunk| stream.blocking_write_and_flush(chunk))
            .map_err(|e| transport(&format!("sending the body: {e:?}")))
    };
    let sent = sent.and_then(|()| {
        OutgoingBody::finish(outgoing, None).map_err(|e| transport(&format!("{e:?}")))
    });
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| transport("no response"))?
        .map_err(|()| transport("the response, twice"))?
        .map_err(|e| {
            sent.clone()
                .err()
                .unwrap_or_else(|| transport(&format!("{e:?}")))
        })?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let incoming = response
        .consume()
        .map_err(|()| transport("the response body"))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| transport("the response body"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend(chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(transport(&e.to_debug_string()));
                }
            }
        }
    }
    Ok(Answer {
        status,
        content_type,
        body: bytes,
        digest,
    })
}
