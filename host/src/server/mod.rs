//! `burncache serve`: an HTTP server that serves `wasi:http` guests the way
//! `wasmtime serve` does, plus a JSON API to deploy, call and batch components by
//! digest, Prometheus metrics, overload protection and graceful shutdown.

mod api;
mod conn;
mod metrics;
mod request_id;
mod trace_context;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::{BurnCache, Digest, Error, ErrorKind, Limits, Outcome};

use self::conn::{SendDeadline, Share, Shares};
use self::metrics::Metrics;
use self::request_id::RequestIds;

/// How `burncache serve` behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// With a component, every request goes to it (as `wasmtime serve` would send
    /// it), except `/.well-known/burncache/{healthz,metrics}`. Without, the JSON API
    /// is served, and HTTP guests at `/v1/http/{digest}/...`.
    pub component: Option<Digest>,
    /// The bearer token `PUT` and `DELETE` require. Without one, those routes are
    /// only served on a loopback address.
    pub admin_token: Option<String>,
    /// The most requests running guest code at once; beyond it, `503` at once.
    pub max_in_flight: usize,
    /// The most of those one client address may hold; `None`: half of
    /// `max_in_flight` (at least one).
    pub max_in_flight_per_client: Option<usize>,
    /// The largest component upload, in bytes.
    pub max_component_bytes: usize,
    /// The largest call or batch input, in bytes.
    pub max_input_bytes: usize,
    /// The ceilings of HTTP guests' requests, and the defaults of API calls.
    pub limits: Limits,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's head (and how long an idle
    /// keep-alive connection waits for the next one) before it is closed.
    pub header_timeout: Duration,
    /// How long a client may take to send an API request's body.
    pub body_timeout: Duration,
    /// The most connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// The most of those one client address may hold; `None`: half of
    /// `max_connections` (at least one).
    pub max_connections_per_client: Option<usize>,
    /// Components readied (fetched, loaded or compiled) before the server reports
    /// ready, so that it takes traffic warm.
    pub preload: Vec<Digest>,
    /// How long a connection may go without the client taking a byte of an answer
    /// that is ready to send before it is closed.
    pub send_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            component: None,
            admin_token: None,
            max_in_flight: 128,
            max_in_flight_per_client: None,
            max_component_bytes: 64 << 20,
            max_input_bytes: 16 << 20,
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_client: None,
            preload: Vec::new(),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// The response body every route answers with (guests stream; the API does not).
pub(crate) type Body = HyperOutgoingBody;

/// An admitted request's in-flight slot and its place on the in-flight gauge, both
/// given back when it is dropped: however the request ends (an answer, an error, a
/// client that hung up), and for an HTTP guest only once the guest has finished.
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    _share: Share,
    in_flight: Gauge<i64, AtomicI64>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl Admission {
    /// `response`, its body now holding this admission: the slot is given back once
    /// the answer has been sent (or its client is gone), so answers buffered for slow
    /// readers count against the slots like the calls that made them.
    pub(crate) fn hold_until_sent(self, response: Response<Body>) -> Response<Body> {
        response.map(|body| {
            Holding {
                body,
                _admission: self,
            }
            .boxed_unsync()
        })
    }
}

/// An answer's body and the admission it holds while it is sent.
struct Holding {
    body: Body,
    _admission: Admission,
}

impl hyper::body::Body for Holding {
    type Data = Bytes;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How long to wait after `accept` ran out of resources before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether an `accept` failed for want of descriptors or memory (the process's or
/// the system's), not because of the one connection.
fn out_of_resources(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

pub(crate) struct Server {
    pub(crate) cache: BurnCache,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    pub(crate) slots: Arc<Semaphore>,
    /// Slots held per client address.
    clients: Shares,
    request_ids: RequestIds,
    /// Whether preloading is done.
    preloaded: std::sync::atomic::AtomicBool,
    /// When the store last answered a readiness check, and how: checks within
    /// [`STORE_CHECK_FRESH`] of it share its answer, so probes cannot drive store
    /// traffic.
    store_checked: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

/// How long a readiness check of the store is believed.
const STORE_CHECK_FRESH: Duration = Duration::from_secs(5);

/// Readies the components the server was asked to preload (four at a time), then
/// reports ready. While the store cannot be reached, a preload is tried again, with
/// growing pauses; one the store does not have, or that does not compile, is logged
/// and skipped (it is tried again when called).
async fn preload(server: Arc<Server>) {
    use futures::StreamExt as _;
    futures::stream::iter(server.config.preload.iter())
        .for_each_concurrent(4, |digest| {
            let server = server.clone();
            async move {
                let started = Instant::now();
                let mut pause = Duration::from_millis(500);
                loop {
                    match server.cache.register_by_hash(digest).await {
                        Ok(_) => {
                            tracing::info!(%digest, took = ?started.elapsed(), "preloaded");
                        }
                        Err(Error::Backend(e)) => {
                            tracing::warn!(%digest, "cannot preload yet: {e}; trying again");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(30));
                            continue;
                        }
                        Err(e) => tracing::warn!(%digest, error = %e, "cannot preload"),
                    }
                    break;
                }
            }
        })
        .await;
    server.preloaded.store(true, Ordering::Release);
}

/// The address a request came from, set on every request as it arrives.
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub(crate) IpAddr);

/// The address `request` came from.
pub(crate) fn peer_of<B>(request: &Request<B>) -> IpAddr {
    request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), |peer| peer.0)
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests under way finish (up to `config.shutdown_grace`), and returns.
///
/// # Errors
///
/// [`Error::PermissionDenied`] when the admin routes would be open to the network
/// without a token (a non-loopback address and no `admin_token`).
pub async fn serve(
    cache: BurnCache,
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::Backend(format!("cannot read the listening address: {e}")))?;
    if config
        .admin_token
        .as_deref()
        .is_some_and(|token| token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(Error::PermissionDenied(
            "the admin token is empty or not visible ASCII; give one a client can send".to_string(),
        ));
    }
    // Serving one component there are no admin routes to protect, so any address
    // will do, as for `wasmtime serve`.
    if config.admin_token.is_none() && !local.ip().is_loopback() && config.component.is_none() {
        return Err(Error::PermissionDenied(format!(
            "refusing to serve PUT and DELETE on {local}, which is not a loopback address, \
             without an admin token (--admin-token or BURNCACHE_ADMIN_TOKEN)"
        )));
    }
    let header_timeout = config.header_timeout;
    let server = Arc::new(Server {
        metrics: Metrics::new(cache.clone()),
        slots: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        clients: Shares::new(
            config
                .max_in_flight_per_client
                .unwrap_or(config.max_in_flight / 2),
        ),
        cache,
        config,
        request_ids: RequestIds::new(),
        preloaded: std::sync::atomic::AtomicBool::new(false),
        store_checked: tokio::sync::Mutex::new(None),
    });
    tokio::spawn(preload(server.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(server.config.max_connections.max(1)));
    let connections_per_client = Shares::new(
        server
            .config
            .max_connections_per_client
            .unwrap_or(server.config.max_connections / 2),
    );
    let send_timeout = server.config.send_timeout;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or memory: retrying at once would spin a
                    // core until some are freed. Other failures are one connection's.
                    if out_of_resources(&e) {
                        tracing::warn!("accept failed: {e}; pausing before the next accept");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    } else {
                        tracing::debug!("accept failed: {e}");
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(open) = connections.clone().try_acquire_owned() else {
            server.metrics.reject("connections");
            tracing::debug!(%peer, "too many open connections; closing a new one");
            drop(stream);
            continue;
        };
        let Some(share) = connections_per_client.take(peer.ip()) else {
            server.metrics.reject("client-connections");
            tracing::debug!(%peer, "this client holds its share of connections; closing a new one");
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let server = server.clone();
        let service = hyper::service::service_fn(move |request| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(request, peer).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(
                TokioIo::new(SendDeadline::new(stream, send_timeout)),
                service,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _open = (open, share);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for requests under way");
    let grace = server.config.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {grace:?}; stopping anyway");
    }
    server.cache.settle().await;
    Ok(())
}

impl Server {
    async fn handle(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        use tracing::Instrument as _;
        let mut request = request;
        request.extensions_mut().insert(Peer(peer.ip()));
        let started = Instant::now();
        let id = self.request_ids.for_request(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        // Every line logged while the request is handled (guest output included)
        // carries its id, and so does every error body it is answered with.
        let span = tracing::info_span!("request", request_id = &*id, %method, path);
        trace_context::join_caller(&span, request.headers());
        let (mut response, log) = request_id::scope(id.clone(), self.route(request, &id))
            .instrument(span)
            .await;
        request_id::echo(&mut response, &id);
        let status = response.status().as_u16();
        tracing::info!(
            target: "burncache::request",
            request_id = &*id,
            %peer,
            %method,
            path,
            digest = log.digest.map(|d| d.to_string()).unwrap_or_default(),
            status,
            outcome = log.outcome.unwrap_or(""),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            fuel = log.fuel,
            "request"
        );
        if let Some(outcome) = log.outcome {
            self.metrics.count(outcome);
            self.metrics
                .latency
                .observe(started.elapsed().as_secs_f64());
        }
        response
    }

    async fn route(
        self: &Arc<Self>,
        request: Request<Incoming>,
        id: &str,
    ) -> (Response<Body>, RequestLog) {
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = request.method().clone();
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(digest) = self.config.component {
            return match (&method, segments.as_slice()) {
                (&Method::GET, [".well-known", "burncache", "healthz"]) => {
                    (text(StatusCode::OK, "ok\n"), RequestLog::default())
                }
                (&Method::GET, [".well-known", "burncache", "readyz"]) => {
                    (self.readiness().await, RequestLog::default())
                }
                (&Method::GET, [".well-known", "burncache", "metrics"]) => (
                    self.metrics_response(accept.as_deref()),
                    RequestLog::default(),
                ),
                _ => self.http_guest(digest, request, None, id).await,
            };
        }
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => (text(StatusCode::OK, "ok\n"), RequestLog::default()),
            (&Method::GET, ["readyz"]) => (self.readiness().await, RequestLog::default()),
            (&Method::GET, ["metrics"]) => (
                self.metrics_response(accept.as_deref()),
                RequestLog::default(),
            ),
            (_, ["v1", "http", digest, rest @ ..]) => {
                let rest = format!("/{}", rest.join("/"));
                match Digest::parse(digest) {
                    Ok(digest) => self.http_guest(digest, request, Some(rest), id).await,
                    Err(e) => (error_response(&e), RequestLog::failed(&e)),
                }
            }
            (_, ["v1", "components", ..]) => api::route(self, request, &segments[2..]).await,
            _ => (
                error_json(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    &format!("no route for {method} {path}"),
                ),
                RequestLog::default(),
            ),
        }
    }

    /// `200` once preloading is done and the store answers; `503` until then, or
    /// while the store does not answer.
    async fn readiness(&self) -> Response<Body> {
        if !self.preloaded.load(Ordering::Acquire) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "preloading\n");
        }
        if let Ok(store) = self.cache.store() {
            // One check at a time, its answer shared while fresh.
            let mut checked = self.store_checked.lock().await;
            let answers = match *checked {
                Some((at, answers)) if at.elapsed() < STORE_CHECK_FRESH => answers,
                _ => {
                    let answers = match store.check().await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!("not ready: {e}");
                            false
                        }
                    };
                    *checked = Some((Instant::now(), answers));
                    answers
                }
            };
            if !answers {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store does not answer\n",
                );
            }
        }
        text(StatusCode::OK, "ready\n")
    }

    /// The metrics, in the format the scraper's `Accept` asks for.
    fn metrics_response(&self, accept: Option<&str>) -> Response<Body> {
        let format = metrics::Exposition::for_accept(accept);
        let mut response = Response::new(full(self.metrics.render(format)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(format.content_type()),
        );
        response
    }

    /// Takes an in-flight slot for a request from `client`; `None` (counted as a
    /// rejection) when all are taken, or when the client holds its share.
    pub(crate) fn admit(&self, client: IpAddr) -> Option<Admission> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.metrics.reject("overloaded");
            return None;
        };
        let Some(share) = self.clients.take(client) else {
            self.metrics.reject("client-overloaded");
            return None;
        };
        self.metrics.in_flight.inc();
        Some(Admission {
            _permit: permit,
            _share: share,
            in_flight: self.metrics.in_flight.clone(),
        })
    }

    /// The answer when no slot is free: 503 at once, rather than a queue.
    pub(crate) fn overloaded(&self) -> Response<Body> {
        let mut response = error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!(
                "all {} slots are busy, or this client already holds its {}; try again \
                 shortly",
                self.config.max_in_flight,
                self.clients.cap()
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        response
    }

    async fn http_guest(
        self: &Arc<Self>,
        digest: Digest,
        request: Request<Incoming>,
        rewrite: Option<String>,
        id: &str,
    ) -> (Response<Body>, RequestLog) {
        let Some(admission) = self.admit(peer_of(&request)) else {
            return (self.overloaded(), RequestLog::default());
        };
        let mut request = request;
        if let Some(path) = rewrite {
            let query = request
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = format!("{path}{query}").parse().ok();
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        // The admin token is the node's secret, not the guest's: a client that sends
        // it along does not hand it to guest code.
        if let Some(token) = &self.config.admin_token {
            api::strip_token(request.headers_mut(), token);
        }
        // The guest sees the request's id as the server logs it (the client's, or the
        // one made up for it).
        if let Ok(value) = header::HeaderValue::from_str(id) {
            request.headers_mut().insert(request_id::HEADER, value);
        }
        if request.uri().authority().is_none() && !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, header::HeaderValue::from_static("localhost"));
        }
        // The guest runs in a task of its own that holds the request's slot until
        // the guest has finished, body included: a client that hangs up does not
        // free the slot while its guest runs on (to its end or its deadline).
        let (reply, replied) = oneshot::channel();
        let server = self.clone();
        let id: Arc<str> = Arc::from(id);
        let task = async move {
            let _admission = admission;
            let limits = server.config.limits;
            match server
                .cache
                .handle_http(&digest, request, &limits, &id)
                .await
            {
                Ok((response, finish)) => {
                    let _ = reply.send(Ok(response));
                    match finish.await {
                        Ok(Outcome {
                            result: Ok(()),
                            fuel_burned,
                            ..
                        }) => tracing::debug!(
                            target: "burncache::request",
                            request_id = &*id,
                            fuel = fuel_burned,
                            outcome = "ok",
                            "guest finished"
                        ),
                        // The head went out as `ok`; the log says how the guest ended
                        // (as `wasmtime serve`'s "worker failed" line does).
                        Ok(Outcome {
                            result: Err(e),
                            fuel_burned,
                            ..
                        }) => tracing::warn!(
                            target: "burncache::request",
                            request_id = &*id,
                            fuel = fuel_burned,
                            outcome = e.kind().as_str(),
                            error = %e,
                            "guest failed after its response head was sent"
                        ),
                        Err(e) => tracing::error!(
                            target: "burncache::request",
                            request_id = &*id,
                            error = %e,
                            "the guest's task failed"
                        ),
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        };
        tokio::spawn(tracing::Instrument::in_current_span(task));
        let handled = replied
            .await
            .unwrap_or_else(|_| Err(Error::Backend("the request task failed".to_string())));
        match handled {
            Ok(response) => (
                response,
                RequestLog {
                    digest: Some(digest),
                    outcome: Some("ok"),
                    fuel: 0,
                },
            ),
            Err(e) => (
                error_response(&e),
                RequestLog::failed(&e).with_digest(digest),
            ),
        }
    }
}

/// What the request log line says beyond method, path and status.
#[derive(Default)]
pub(crate) struct RequestLog {
    pub(crate) digest: Option<Digest>,
    /// `ok` or an error kind, for requests that ran (or tried to run) guest code.
    pub(crate) outcome: Option<&'static str>,
    pub(crate) fuel: u64,
}

impl RequestLog {
    pub(crate) fn failed(e: &Error) -> RequestLog {
        RequestLog {
            digest: None,
            outcome: Some(e.kind().as_str()),
            fuel: 0,
        }
    }

    /// For a request that ran guest code: its outcome and the fuel it burned.
    pub(crate) fn ran<T>(digest: Digest, outcome: &crate::Outcome<T>) -> RequestLog {
        RequestLog {
            digest: Some(digest),
            outcome: Some(
                outcome
                    .result
                    .as_ref()
                    .map_or_else(|e| e.kind().as_str(), |_| "ok"),
            ),
            fuel: outcome.fuel_burned,
        }
    }

    pub(crate) fn with_digest(mut self, digest: Digest) -> RequestLog {
        self.digest = Some(digest);
        self
    }
}

pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

/// The status an error class is answered with.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidDigest | ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::CompileFailed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Guest => StatusCode::UNPROCESSABLE_ENTITY,
        // The store behind this node failed, not the caller.
        ErrorKind::Backend | ErrorKind::Integrity => StatusCode::BAD_GATEWAY,
        // What the guest ran into: a trap, or a ceiling (fuel, memory, output, depth).
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as clients see it. What failed in the node's own resources (the store,
/// the instance pool) is named, not where they live: the details go to the log.
pub(crate) fn error_response(e: &Error) -> Response<Body> {
    error_answer(status_of(e.kind()), error_fields(e))
}

/// An error as the API shows it: `{"kind", "message"}`, and `"limit"` for one that
/// carries a number (the output ceiling, the depth limit), which clients read rather
/// than parse from the message.
pub(crate) fn error_fields(e: &Error) -> serde_json::Value {
    let mut error = serde_json::json!({ "kind": e.kind().as_str(), "message": client_message(e) });
    match e {
        Error::OutputTooLarge(bytes) => error["limit"] = (*bytes).into(),
        Error::DepthExceeded(depth) => error["limit"] = (*depth).into(),
        _ => {}
    }
    error
}

/// An error's message as clients may see it.
pub(crate) fn client_message(e: &Error) -> String {
    e.redacted()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// An error answer: `{"error": {"kind", "message", "request_id"}}`, the request id
/// being the one of the request being handled.
pub(crate) fn error_json(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    error_answer(
        status,
        serde_json::json!({ "kind": kind, "message": message }),
    )
}

/// `{"error": ERROR}`, the request id added to `error`.
fn error_answer(status: StatusCode, mut error: serde_json::Value) -> Response<Body> {
    if let Some(id) = request_id::current() {
        error["request_id"] = serde_json::Value::String(id.to_string());
    }
    let body = serde_json::json!({ "error": error });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
