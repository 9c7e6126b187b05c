//! Composing a guest with `burn-cache` over HTTP, so that any wasi:http host runs it:
//! [`compose`] plugs the client component (built from `host/client-component` and
//! embedded in the binary) into the guest's `burn-cache` and `types` imports, and a
//! generated component naming the server into the client's `remote` import. What is
//! left for the host to provide is WASI only.
//!
//! The composition is done by `wac-graph`, the Bytecode Alliance's composition
//! library (what `wac plug` runs), not by hand.

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, PackageId};

use crate::Error;

/// The client component: `burn-cache` over the server's JSON API.
static CLIENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/client.wasm"));

/// The interface the client imports for the server's base URL.
const REMOTE: &str = "burncache:host/remote@0.1.1";

/// The longest server URL taken: far beyond any real one.
const MAX_URL: usize = 2048;

/// `guest` with its `burncache:host` imports satisfied by calls to the burncache
/// server at `server` (an `http://` or `https://` base URL), as a component that
/// imports only WASI.
///
/// Fails with `invalid-input` when the guest is not a component, does not import
/// `burn-cache`, or the URL is not a plain http(s) base URL.
pub fn compose(guest: &[u8], server: &str) -> Result<Vec<u8>, Error> {
    let server = check_server(server)?;
    if CLIENT.is_empty() {
        return Err(Error::Backend(
            "this build carries no client component (a documentation build)".to_string(),
        ));
    }
    let client = plug(
        &remote(&server)?,
        CLIENT,
        "burncache:remote",
        "burncache:client",
    )
    .map_err(|e| Error::Backend(format!("composing the client: {e}")))?;
    let mut graph = CompositionGraph::new();
    let socket = register(&mut graph, "burncache:guest", guest)
        .map_err(|e| Error::InvalidInput(format!("the guest is not a component: {e}")))?;
    let imports_burncache = graph.types()[graph[socket].ty()]
        .imports
        .keys()
        .any(|name| name.starts_with("burncache:host/"));
    if !imports_burncache {
        return Err(Error::InvalidInput(
            "the guest imports nothing of burncache:host, so there is nothing to compose: \
             it runs under any wasi:http host as it is"
                .to_string(),
        ));
    }
    let plugged = register(&mut graph, "burncache:client", &client)
        .map_err(|e| Error::Backend(format!("the client component: {e}")))?;
    wac_graph::plug(&mut graph, vec![plugged], socket).map_err(|e| {
        Error::InvalidInput(format!(
            "the guest's burn-cache import does not fit the client: {}",
            chain(&e)
        ))
    })?;
    let composed = graph
        .encode(EncodeOptions::default())
        .map_err(|e| Error::Backend(format!("encoding the composition: {}", chain(&e))))?;
    // What is left to import must be the host's: a burncache import left over would
    // make the promise of "WASI only" false.
    let mut check = CompositionGraph::new();
    let id = register(&mut check, "burncache:composed", &composed)
        .map_err(|e| Error::Backend(format!("the composed component: {e}")))?;
    if let Some(left) = check.types()[check[id].ty()]
        .imports
        .keys()
        .find(|name| name.starts_with("burncache:"))
    {
        return Err(Error::InvalidInput(format!(
            "the composed guest still imports {left}, which no other host provides"
        )));
    }
    Ok(composed)
}

/// `plug`'s exports plugged into `socket`'s imports, as a new component.
fn plug(plug: &[u8], socket: &[u8], plug_name: &str, socket_name: &str) -> anyhow::Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let socket = register(&mut graph, socket_name, socket)?;
    let plug = register(&mut graph, plug_name, plug)?;
    wac_graph::plug(&mut graph, vec![plug], socket)?;
    Ok(graph.encode(EncodeOptions::default())?)
}

fn register(graph: &mut CompositionGraph, name: &str, bytes: &[u8]) -> anyhow::Result<PackageId> {
    let package = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())?;
    Ok(graph.register_package(package)?)
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The server's base URL, checked (`http` or `https`, a host, a valid port if any, no
/// user information, query or fragment) and written the way the client reads it: the
/// scheme in lower case, no trailing slash.
fn check_server(server: &str) -> Result<String, Error> {
    let invalid = |why: &str| {
        Error::InvalidInput(format!(
            "the server URL {server:?} {why} (expected a base URL such as \
             http://127.0.0.1:8080)"
        ))
    };
    if server.len() > MAX_URL {
        return Err(invalid("is too long"));
    }
    let uri: http::Uri = server.parse().map_err(|_| invalid("is not a URL"))?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(invalid("is not http or https")),
    };
    let authority = uri.authority().ok_or_else(|| invalid("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("carries user information"));
    }
    // What follows the host must be a port that fits in 16 bits, if anything.
    let port = authority
        .as_str()
        .strip_prefix(authority.host())
        .unwrap_or_default();
    if !port.is_empty()
        && port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_none()
    {
        return Err(invalid("has an invalid port"));
    }
    if authority.host().is_empty() {
        return Err(invalid("has no host"));
    }
    if uri.query().is_some() || server.contains('#') {
        return Err(invalid("has a query or fragment"));
    }
    Ok(format!(
        "{scheme}://{authority}{}",
        uri.path().trim_end_matches('/')
    ))
}

/// A component exporting `remote` whose `server` returns `server`: a core module
/// with the URL in a data segment, lifted.
fn remote(server: &str) -> Result<Vec<u8>, Error> {
    let escaped: String = server.bytes().map(|b| format!("\\{b:02x}")).collect();
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    (data (i32.const 16) "{escaped}")
    (func (export "server") (result i32)
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const {len}))
      (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $server (result string)
    (canon lift (core func $i "server") (memory (core memory $i "memory"))))
  (instance $remote (export "server" (func $server)))
  (export "{REMOTE}" (instance $remote)))"#,
        len = server.len()
    );
    wat::parse_str(&text).map_err(|e| Error::Backend(format!("the remote component: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            check_server("http://127.0.0.1:8080/").expect("valid"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            check_server("https://cache.example/base").expect("valid"),
            "https://cache.example/base"
        );
        assert_eq!(
            check_server("HTTP://[::1]:8080/base/").expect("valid"),
            "http://[::1]:8080/base"
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://host",
            "http://user:pw@host",
            "http://host/?q=1",
            "http://host/#x",
            "http://host:99999",
            "",
        ] {
            assert!(
                matches!(check_server(bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        assert!(check_server(&format!("http://h/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn a_guest_without_burn_cache_is_refused() {
        let plain = wat::parse_str("(component)").expect("valid WAT");
        let e = compose(&plain, "http://127.0.0.1:1").expect_err("nothing to plug");
        assert!(
            matches!(e, Error::InvalidInput(_)) && e.to_string().contains("imports nothing"),
            "{e}"
        );
        let e = compose(b"not wasm", "http://127.0.0.1:1").expect_err("not a component");
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    }
}
