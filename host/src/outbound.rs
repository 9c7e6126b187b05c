//! Outgoing HTTP from guests: the operator's allow-list, and the one connection-
//! pooling client allowed requests go out through.
//!
//! Denied is the default. Patterns are the form Spin users know:
//! `https://api.example.com` (port 443 only), `http://127.0.0.1:8080`,
//! `https://*.example.com` (any subdomain, not the bare domain), `*://*:*`
//! (anything).

use std::fmt;
use std::sync::OnceLock;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
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
        self.allow
            .iter()
            .any(|rule| rule.matches(scheme, host, port))
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

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The client allowed requests go out through: one per node, so connections to an
/// upstream are kept and reused across calls. Made on the first allowed request.
#[derive(Default)]
pub(crate) struct OutboundClient {
    client: OnceLock<Client<Connector, WasiBody>>,
}

/// How many idle connections to one upstream are kept.
const IDLE_PER_UPSTREAM: usize = 32;

impl OutboundClient {
    pub(crate) fn get(&self) -> &Client<Connector, WasiBody> {
        self.client.get_or_init(|| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(IDLE_PER_UPSTREAM)
                .build(https)
        })
    }
}

/// An upstream's answer as a guest reads it.
pub(crate) fn to_guest_body(body: hyper::body::Incoming) -> WasiBody {
    body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()
}

/// A failed send, as the guest sees it (`wasi:http`'s error codes).
pub(crate) fn classify(e: &hyper_util::client::legacy::Error) -> wasmtime_wasi_http::Error {
    use std::error::Error as _;
    if e.is_connect() {
        let mut cause = e.source();
        let mut refused = false;
        while let Some(c) = cause {
            if c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                refused = true;
                break;
            }
            cause = c.source();
        }
        return if refused {
            wasmtime_wasi_http::Error::ConnectionRefused
        } else {
            wasmtime_wasi_http::Error::DestinationUnavailable
        };
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
        ] {
            let e = AllowedOutbound::parse(pattern).expect_err(pattern);
            assert!(e.to_string().contains(says), "{pattern}: {e}");
        }
    }
}
