//! Outgoing HTTP from guests: the operator's allow-list, and the one connection-
//! pooling client allowed requests go out through.
//!
//! Denied is the default. Patterns are the form Spin users know:
//! `https://api.example.com` (port 443 only), `http://127.0.0.1:8080`,
//! `https://*.example.com` (any subdomain, not the bare domain), `*://*:*`
//! (anything).
//!
//! A host named exactly by a pattern is reached wherever it is. A host let through
//! only by a wildcard never reaches an internal address (loopback, link-local such
//! as a cloud's metadata service, unspecified): names resolving there are refused
//! after resolution, and such IP literals before it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::WasiBody;

use crate::Error;

/// Which guests may send requests, and where to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Where requests may go; empty: nowhere.
    pub allow: Vec<AllowedOutbound>,
    /// Whether function guests (and scripts and commands) may send requests too;
    /// HTTP guests always may, to what `allow` lists.
    pub functions: bool,
}

impl OutboundPolicy {
    /// Whether `allow` lets a request to `scheme://host:port` through.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.reach(scheme, host, port).is_some()
    }

    /// How a request to `scheme://host:port` is let through, if it is.
    pub(crate) fn reach(&self, scheme: &str, host: &str, port: u16) -> Option<Reach> {
        let mut reach = None;
        for rule in self.allow.iter().filter(|r| r.matches(scheme, host, port)) {
            if matches!(rule.host, HostPattern::Exact(_)) {
                return Some(Reach::Named);
            }
            reach = Some(Reach::Wildcard);
        }
        reach
    }
}

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// A pattern names its host exactly: the operator chose that host, internal or
    /// not.
    Named,
    /// Only a wildcard matches it: internal addresses are refused.
    Wildcard,
}

/// Whether `ip` is internal to the node or its network's plumbing: loopback,
/// link-local (a cloud's metadata service), unspecified, multicast or broadcast.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
}

/// Where a guest's request goes, checked and normalized: the host in lower case
/// without a trailing dot, the port explicit. Connections are pooled by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) scheme: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    /// The target of `uri`; `None` for one no request can be sent to (no host, a
    /// scheme other than http or https, user information in the authority).
    pub(crate) fn of(uri: &http::Uri) -> Option<Target> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        if host.is_empty() {
            return None;
        }
        let port = authority.port_u16().or_else(|| default_port(&scheme))?;
        Some(Target { scheme, host, port })
    }

    /// The host as an IP address, when it is one.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse().ok()
    }

    /// `uri` with its authority replaced by this target's normal form.
    fn rewrite(&self, uri: &http::Uri) -> Option<http::Uri> {
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(self.scheme.parse().ok()?);
        parts.authority = Some(format!("{}:{}", self.host, self.port).parse().ok()?);
        http::Uri::from_parts(parts).ok()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// One allow-list entry: a scheme (or any), a host (exact, `*.suffix`, or any) and a
/// port (or any; when the pattern names none, the scheme's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOutbound {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: kept as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
    /// No port in the pattern: the request's scheme's default port.
    SchemeDefault,
}

/// The default port of `scheme`, if it has one.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedOutbound {
    /// Parses `scheme://host[:port]`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for anything else: a missing scheme, a path or query,
    /// a wildcard in the middle of a host, a port that is not a number.
    pub fn parse(pattern: &str) -> Result<AllowedOutbound, Error> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "outbound pattern {pattern:?}: {why} (try `https://api.example.com`, \
                 `http://127.0.0.1:8080`, `https://*.example.com` or `*://*:*`)"
            ))
        };
        let (scheme, rest) = pattern.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "*" => None,
            s @ ("http" | "https") => Some(s.to_string()),
            _ => return Err(bad("the scheme is http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("a pattern names a scheme, a host and a port, no path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 address without a port ends in `]`.
            Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
            _ => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        if host.contains(':') && !host.starts_with('[') {
            return Err(bad(
                "write an IPv6 address in brackets, as `http://[::1]:8080`",
            ));
        }
        let host = match host.as_str() {
            "" => return Err(bad("no host")),
            "*" => HostPattern::Any,
            _ if host.starts_with("*.") && !host[2..].contains('*') && host.len() > 2 => {
                HostPattern::Subdomains(host[1..].to_string())
            }
            _ if host.contains('*') => {
                return Err(bad("a host is exact, `*.domain`, or `*`"));
            }
            _ => HostPattern::Exact(host.clone()),
        };
        let port = match port {
            None => PortPattern::SchemeDefault,
            Some("*") => PortPattern::Any,
            Some(port) => PortPattern::Exact(
                port.parse()
                    .map_err(|_| bad("the port is a number or `*`"))?,
            ),
        };
        if scheme.is_none() && port == PortPattern::SchemeDefault {
            return Err(bad("with any scheme, name the port (or `*`)"));
        }
        Ok(AllowedOutbound {
            scheme,
            host,
            port,
            text: pattern.to_string(),
        })
    }

    /// Whether a request to `scheme://host:port` matches.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        self.scheme.as_ref().is_none_or(|s| *s == scheme)
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(exact) => exact == host,
                HostPattern::Subdomains(suffix) => {
                    host.ends_with(suffix.as_str()) && host.len() > suffix.len()
                }
            }
            && match self.port {
                PortPattern::Any => true,
                PortPattern::Exact(p) => p == port,
                PortPattern::SchemeDefault => default_port(&scheme) == Some(port),
            }
    }
}

impl fmt::Display for AllowedOutbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for AllowedOutbound {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        AllowedOutbound::parse(s)
    }
}

type Pooled<R> = Client<hyper_rustls::HttpsConnector<HttpConnector<R>>, WasiBody>;

/// The most outgoing requests (each holding a connection) all guests of a node may
/// have open at once, and one call may.
const NODE_REQUESTS: usize = 256;
const CALL_REQUESTS: usize = 16;

/// How many idle connections to one upstream are kept, and for how long.
const IDLE_PER_UPSTREAM: usize = 8;
const IDLE_FOR: Duration = Duration::from_secs(30);

/// How long a connection (with its TLS handshake) may take to set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The clients allowed requests go out through: one per node, so connections to an
/// upstream are kept and reused across calls; made on the first allowed request.
/// Hosts named exactly by a pattern go through `named`; hosts only a wildcard lets
/// through, through `guarded`, whose resolver drops internal addresses.
pub(crate) struct OutboundClient {
    named: OnceLock<Pooled<GaiResolver>>,
    guarded: OnceLock<Pooled<Guarded>>,
    open: Arc<Semaphore>,
}

impl Default for OutboundClient {
    fn default() -> Self {
        OutboundClient {
            named: OnceLock::new(),
            guarded: OnceLock::new(),
            open: Arc::new(Semaphore::new(NODE_REQUESTS)),
        }
    }
}

/// One call's share of outgoing requests.
pub(crate) fn call_slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(CALL_REQUESTS))
}

impl OutboundClient {
    /// Sends `request` to `target` (already checked against the allow-list), holding
    /// one of the call's slots and one of the node's until the answer's body is
    /// done with. No slot free: `connection-limit-reached`, at once.
    pub(crate) fn send(
        &self,
        mut request: http::Request<WasiBody>,
        target: &Target,
        reach: Reach,
        call: &Arc<Semaphore>,
    ) -> Result<
        impl Future<Output = Result<http::Response<WasiBody>, wasmtime_wasi_http::Error>> + use<>,
        wasmtime_wasi_http::Error,
    > {
        let (Ok(mine), Ok(node)) = (
            call.clone().try_acquire_owned(),
            self.open.clone().try_acquire_owned(),
        ) else {
            return Err(wasmtime_wasi_http::Error::ConnectionLimitReached);
        };
        *request.uri_mut() = target
            .rewrite(request.uri())
            .ok_or(wasmtime_wasi_http::Error::HttpRequestUriInvalid)?;
        let sent = match reach {
            Reach::Named => self
                .named
                .get_or_init(|| pooled(GaiResolver::new()))
                .request(request),
            Reach::Wildcard => self
                .guarded
                .get_or_init(|| pooled(Guarded(GaiResolver::new())))
                .request(request),
        };
        Ok(async move {
            match sent.await {
                Ok(response) => Ok(response.map(|body| {
                    Held {
                        body,
                        _slots: (mine, node),
                    }
                    .boxed_unsync()
                })),
                Err(e) => Err(classify(&e)),
            }
        })
    }
}

fn pooled<R>(resolver: R) -> Pooled<R>
where
    R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R::Future: Send,
{
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // The provider named, not the process's default: a library user whose other
    // dependencies enable another rustls provider gets no panic here.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
        .unwrap_or_else(|_| hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_FOR)
        .pool_max_idle_per_host(IDLE_PER_UPSTREAM)
        .build(https)
}

/// A resolver that drops internal addresses (see [`is_internal`]) from what a name
/// resolves to, and fails when none is left.
#[derive(Clone)]
struct Guarded(GaiResolver);

type Resolved = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for Guarded {
    type Response = Resolved;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolving = self.0.call(name.clone());
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = resolving
                .await?
                .filter(|address| !is_internal(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{name} resolves only to internal addresses, which a wildcard \
                         pattern does not reach"
                    ),
                ));
            }
            Ok(addresses.into_iter())
        })
    }
}

/// An upstream's answer's body, holding the request's slots until it is done with.
struct Held {
    body: hyper::body::Incoming,
    _slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(wasmtime_wasi_http::Error::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A failed send, as the guest sees it (`wasi:http`'s error codes).
fn classify(e: &hyper_util::client::legacy::Error) -> wasmtime_wasi_http::Error {
    use std::error::Error as _;
    if e.is_connect() {
        let mut cause = e.source();
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        return wasmtime_wasi_http::Error::ConnectionRefused;
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        return wasmtime_wasi_http::Error::DestinationIpProhibited;
                    }
                    std::io::ErrorKind::TimedOut => {
                        return wasmtime_wasi_http::Error::ConnectionTimeout;
                    }
                    _ => {}
                }
            }
            cause = c.source();
        }
        return wasmtime_wasi_http::Error::DestinationUnavailable;
    }
    wasmtime_wasi_http::Error::InternalError(Some(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> AllowedOutbound {
        AllowedOutbound::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    #[test]
    fn patterns_match_as_spin_users_expect() {
        let exact = rule("https://api.example.com");
        assert!(exact.matches("https", "api.example.com", 443));
        assert!(exact.matches("https", "API.example.com.", 443));
        assert!(!exact.matches("https", "api.example.com", 8443));
        assert!(!exact.matches("http", "api.example.com", 80));
        assert!(!exact.matches("https", "evil-api.example.com", 443));

        let port = rule("http://127.0.0.1:8080");
        assert!(port.matches("http", "127.0.0.1", 8080));
        assert!(!port.matches("http", "127.0.0.1", 8081));

        let subdomains = rule("https://*.example.com");
        assert!(subdomains.matches("https", "a.example.com", 443));
        assert!(subdomains.matches("https", "a.b.example.com", 443));
        assert!(!subdomains.matches("https", "example.com", 443));
        assert!(!subdomains.matches("https", "badexample.com", 443));

        let any = rule("*://*:*");
        assert!(any.matches("http", "anything", 1));
        assert!(any.matches("https", "10.0.0.1", 65535));

        let ipv6 = rule("http://[::1]:9000");
        assert!(ipv6.matches("http", "[::1]", 9000));

        let dotted = rule("https://api.example.com.");
        assert!(dotted.matches("https", "api.example.com", 443));
    }

    #[test]
    fn wildcards_do_not_reach_internal_addresses_named_hosts_do() {
        let policy = OutboundPolicy {
            allow: vec![rule("*://*:*"), rule("http://localhost:8080")],
            functions: false,
        };
        assert_eq!(policy.reach("http", "localhost", 8080), Some(Reach::Named));
        assert_eq!(
            policy.reach("http", "localhost", 8081),
            Some(Reach::Wildcard)
        );
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().expect("an address")), "{ip}");
        }
        for ip in ["10.0.0.1", "93.184.216.34", "2001:db8::1"] {
            assert!(!is_internal(ip.parse().expect("an address")), "{ip}");
        }
    }

    #[test]
    fn targets_are_normalized_and_user_information_refused() {
        let target = |uri: &str| Target::of(&uri.parse().expect("a URI"));
        assert_eq!(
            target("HTTPS://API.Example.COM./v1"),
            Some(Target {
                scheme: "https".into(),
                host: "api.example.com".into(),
                port: 443
            })
        );
        assert_eq!(target("http://user@api.example.com/"), None);
        assert_eq!(
            target("http://[::1]:9/").and_then(|t| t.ip()),
            Some("::1".parse().expect("an address"))
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (pattern, says) in [
            ("api.example.com", "no scheme"),
            ("ftp://x.example.com", "scheme"),
            ("https://x.example.com/path", "no path"),
            ("https://a.*.example.com", "exact"),
            ("https://x.example.com:http", "number"),
            ("*://x.example.com", "name the port"),
            ("https://", "no host"),
            ("http://::1:8080", "brackets"),
        ] {
            let e = AllowedOutbound::parse(pattern).expect_err(pattern);
            assert!(e.to_string().contains(says), "{pattern}: {e}");
        }
    }
}
