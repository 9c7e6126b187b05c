//! A wasi:http guest, written with `wstd`: `burncache serve http_hello.wasm` serves it
//! as `wasmtime serve` would.
//!
//! - `/` answers with a greeting;
//! - `/echo` answers with the request's body, and each request header `name` as
//!   `x-echo-name`;
//! - `/stream?mib=N` streams N MiB (default 4) of a repeating byte pattern;
//! - `/log` writes a line to stdout and one to stderr (which the host logs under the
//!   request's id), then answers;
//! - `/env` answers with the environment it sees, a `NAME=VALUE` line each;
//! - `/file?path=P` answers with the file at P (in the directories it was given), or
//!   `404`.

use wstd::http::{Body, Error, HeaderValue, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    match request.uri().path() {
        "/" => Ok(Response::new("Hello from a burncache HTTP guest!\n".into())),
        "/echo" => echo(request).await,
        "/stream" => Ok(stream(request.uri().query().unwrap_or(""))),
        "/env" => {
            let lines: String = std::env::vars()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect();
            Ok(Response::new(lines.into()))
        }
        "/file" => {
            let path = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("path="))
                .unwrap_or_default();
            Ok(match std::fs::read(path) {
                Ok(bytes) => Response::new(bytes.into()),
                Err(e) => Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(format!("{path}: {e}\n").into())?,
            })
        }
        "/log" => {
            println!("hello on stdout");
            eprintln!("hello on stderr");
            Ok(Response::new("logged\n".into()))
        }
        _ => Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body("not found\n".into())?),
    }
}

async fn echo(request: Request<Body>) -> Result<Response<Body>, Error> {
    let (parts, mut body) = request.into_parts();
    let contents = body.bytes_contents().await?;
    let mut response = Response::new(Body::from(contents));
    for (name, value) in &parts.headers {
        let echoed = format!("x-echo-{name}");
        if let Ok(echoed) = wstd::http::HeaderName::try_from(echoed) {
            response.headers_mut().insert(echoed, value.clone());
        }
    }
    response.headers_mut().insert(
        "x-echo-method",
        HeaderValue::from_str(parts.method.as_str())?,
    );
    Ok(response)
}

/// The byte at offset `i` of a streamed body: the test recomputes it.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn stream(query: &str) -> Response<Body> {
    let mib: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("mib="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(4);
    const CHUNK: usize = 64 * 1024;
    let chunks = (0..mib * (1 << 20) / CHUNK).map(|c| {
        (0..CHUNK)
            .map(|i| pattern(c * CHUNK + i))
            .collect::<Vec<u8>>()
    });
    Response::new(Body::from_stream(futures_lite::stream::iter(chunks)))
}
