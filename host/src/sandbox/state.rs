//! What a call's Store holds, and the WASI each kind of call is granted: one sealed
//! base (no filesystem, network, environment or inherited stdio), with the grants
//! of each call kind added explicitly.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::{
    HostOutgoingRequest as OutgoingRequestMethods, Method, Scheme,
};
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Scope;
use super::ceilings::{
    BODY_CHUNK, BODY_CHUNKS, FIELD_SIZE_LIMIT, MemoryCeiling, RANDOM_LIMIT, URI_PART_LIMIT,
    resource_capacity,
};
use crate::output::{Capture, GuestLog, OutputBudget, PassThrough};

/// How much of a sealed guest's stderr is kept to explain a trap.
const STDERR_CAPTURE: usize = 4096;

/// What one call may use beyond the sealed base, by call kind.
pub(crate) enum Grants<'a> {
    /// Functions, batches and scripts: stdout is dropped, and the start of stderr is
    /// kept to explain a trap.
    Sealed,
    /// HTTP guests: stdout and stderr go to the log under the request's id, one
    /// bounded budget for the whole call.
    Log { request_id: &'a str },
    /// `wasi:cli` commands: their arguments and the environment the user granted;
    /// stdout and stderr pass through to the host's, within the output ceiling.
    Command {
        program: &'a str,
        args: &'a [String],
        env: &'a [(String, String)],
    },
}

/// Where a call's standard output went, for what the runner checks afterwards.
pub(crate) enum Stdio {
    Captured(Capture),
    Logged,
    Passed(OutputBudget),
}

/// What a call's Store holds.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: GuestHttp,
    table: ResourceTable,
    pub(crate) memory: MemoryCeiling,
    pub(crate) stdio: Stdio,
    pub(crate) scope: Scope,
}

impl CallState {
    pub(crate) fn new(scope: Scope, grants: &Grants<'_>) -> CallState {
        let memory = scope.ceilings.memory_bytes;
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(RANDOM_LIMIT);
        let stdio = grant(&mut wasi, grants, scope.ceilings.output_bytes);
        if let Grants::Log { .. } = grants {
            grant_http_guest(&mut wasi, &scope.host.config().http_guests);
        }
        // HTTP guests may send what the allow-list lets through; other guests only
        // when the operator extends it to them.
        let may_send =
            matches!(grants, Grants::Log { .. }) || scope.host.config().outbound.functions;
        let http_hooks = GuestHttp {
            outbound: may_send.then(|| scope.clone()),
            slots: None,
            warned: false,
        };
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELD_SIZE_LIMIT);
        let mut table = ResourceTable::new();
        table.set_max_capacity(resource_capacity(memory));
        CallState {
            wasi: wasi.build(),
            http,
            http_hooks,
            table,
            memory: MemoryCeiling::new(memory),
            stdio,
            scope,
        }
    }

    /// The start of what the guest wrote to stderr, where it was captured.
    pub(crate) fn stderr(&self) -> String {
        match &self.stdio {
            Stdio::Captured(capture) => capture.text(),
            Stdio::Logged | Stdio::Passed(_) => String::new(),
        }
    }

    /// Whether the guest wrote more than its output ceiling lets through.
    pub(crate) fn output_exceeded(&self) -> bool {
        matches!(&self.stdio, Stdio::Passed(budget) if budget.exceeded())
    }
}

/// Adds a call kind's grants to the sealed base.
fn grant(wasi: &mut WasiCtxBuilder, grants: &Grants<'_>, output_bytes: u64) -> Stdio {
    match grants {
        Grants::Sealed => {
            let capture = Capture::new(STDERR_CAPTURE);
            wasi.stderr(capture.clone());
            Stdio::Captured(capture)
        }
        Grants::Log { request_id } => {
            let (stdout, stderr) = GuestLog::pair(request_id);
            wasi.stdout(stdout).stderr(stderr);
            Stdio::Logged
        }
        Grants::Command { program, args, env } => {
            let budget = OutputBudget::new(output_bytes);
            wasi.arg(program)
                .args(args)
                .envs(env)
                .stdout(PassThrough::new(tokio::io::stdout, budget.clone()))
                .stderr(PassThrough::new(tokio::io::stderr, budget.clone()));
            Stdio::Passed(budget)
        }
    }
}

/// What the operator grants HTTP guests: environment variables, and directories
/// (one that cannot be opened now is logged and left out of this call).
fn grant_http_guest(wasi: &mut WasiCtxBuilder, granted: &crate::engine::HttpGuestGrants) {
    use wasmtime_wasi::FsPerms;
    wasi.envs(&granted.env);
    for (host, guest) in &granted.dirs {
        if let Err(e) = wasi.preopened_dir(host, guest, FsPerms::ReadWrite) {
            tracing::warn!(
                "cannot open {} for an HTTP guest (as {guest}): {e:#}",
                host.display()
            );
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Outgoing HTTP from guests: refused, unless the operator's allow-list lets it
/// through for this kind of guest; then sent within the call's deadline.
pub(crate) struct GuestHttp {
    /// The call's scope, when its guest may send requests at all.
    outbound: Option<Scope>,
    /// The call's share of outgoing requests, made on its first request (most calls
    /// send none).
    slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// Whether a denied request was logged already.
    warned: bool,
}

type Sent = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;
type Answered = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Sent), wasmtime_wasi_http::Error>> + Send,
>;

impl WasiHttpHooks for GuestHttp {
    // An outgoing body's buffer is host memory a guest fills without holding it
    // itself: kept small (see `ceilings`).
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        BODY_CHUNKS
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Sent,
    ) -> Answered {
        use crate::outbound::{Reach, Target};
        use crate::stats::Counters;
        let fail = |e: wasmtime_wasi_http::Error| -> Answered { Box::new(async { Err(e) }) };
        let Some(target) = Target::of(request.uri()) else {
            return fail(wasmtime_wasi_http::Error::HttpRequestUriInvalid);
        };
        let Some(scope) = &self.outbound else {
            self.denied(
                &target,
                "this kind of guest may not send requests (HTTP guests \
                may, to what --allow-outbound lists; --allow-outbound-from-functions \
                extends that to the others)",
            );
            return fail(wasmtime_wasi_http::Error::HttpRequestDenied);
        };
        let policy = &scope.host.config().outbound;
        let Some(reach) = policy.reach(&target.scheme, &target.host, target.port) else {
            self.denied(
                &target,
                &format!("to allow it, add --allow-outbound {target}"),
            );
            return fail(wasmtime_wasi_http::Error::HttpRequestDenied);
        };
        if reach == Reach::Wildcard && target.ip().is_some_and(crate::outbound::is_internal) {
            self.denied(
                &target,
                &format!(
                    "a wildcard pattern does not reach internal addresses; to allow it, \
                     name it: --allow-outbound {target}"
                ),
            );
            return fail(wasmtime_wasi_http::Error::DestinationIpProhibited);
        }
        let mut request = request;
        propagate_trace(request.headers_mut());
        let host = scope.host.clone();
        let sent = match host.outbound().send(
            request,
            &target,
            reach,
            self.slots.get_or_insert_with(crate::outbound::call_slots),
        ) {
            Ok(sent) => sent,
            Err(e) => {
                Counters::bump(&host.counters().outbound_failed);
                return fail(e);
            }
        };
        // The call's deadline ends the request with the call (and its Store, which
        // owns this future); this bound, just past it, is a backstop that lets the
        // call's own deadline be what the caller sees. A first-byte timeout the guest
        // asked for ends it sooner.
        let backstop =
            tokio::time::Instant::from_std(scope.deadline) + std::time::Duration::from_millis(100);
        let asked = options
            .and_then(|o| o.first_byte_timeout)
            .map(|t| tokio::time::Instant::now() + t);
        let (deadline, timed_out) = match asked {
            Some(asked) if asked < backstop => {
                (asked, wasmtime_wasi_http::Error::ConnectionReadTimeout)
            }
            _ => (backstop, wasmtime_wasi_http::Error::ConnectionTimeout),
        };
        let answered = async move {
            let counters = host.counters();
            match tokio::time::timeout_at(deadline, sent).await {
                Ok(Ok(response)) => {
                    Counters::bump(&counters.outbound_sent);
                    Ok((response, Box::new(async { Ok(()) }) as Sent))
                }
                Ok(Err(e)) => {
                    Counters::bump(&counters.outbound_failed);
                    tracing::debug!(target: "burncache::outbound", "a guest's request failed: {e}");
                    Err(e)
                }
                Err(_) => {
                    Counters::bump(&counters.outbound_failed);
                    Err(timed_out)
                }
            }
        };
        Box::new(tracing::Instrument::in_current_span(answered))
    }
}

impl GuestHttp {
    /// Counts a denied request, and logs the first of the call's (a guest looping
    /// on denied requests cannot flood the log).
    fn denied(&mut self, target: &crate::outbound::Target, why: &str) {
        if let Some(scope) = &self.outbound {
            crate::stats::Counters::bump(&scope.host.counters().outbound_denied);
        }
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                target: "burncache::outbound",
                "a guest's request to {target} was denied; {why}"
            );
        }
    }
}

/// Puts the current span's trace on an outgoing request (W3C `traceparent`), so
/// the upstream's spans join the call's trace.
#[cfg(feature = "otlp")]
fn propagate_trace(headers: &mut http::HeaderMap) {
    use opentelemetry::propagation::Injector;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    struct Headers<'a>(&'a mut http::HeaderMap);

    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }

    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Headers(headers));
    });
}

/// Without the `otlp` feature there is no trace to pass on.
#[cfg(not(feature = "otlp"))]
fn propagate_trace(_: &mut http::HeaderMap) {}

/// The `wasi:http/types` version the host links (guests asking for any 0.2.x get it).
const HTTP_TYPES: &str = "wasi:http/types@0.2.12";

type SetResult = wasmtime::Result<(Result<(), ()>,)>;

/// Shadows the setters of an outgoing request's authority, path, method and scheme
/// with ones that refuse (with the setter's own error) text longer than
/// [`URI_PART_LIMIT`]: wasi-http keeps whatever text a guest sets, and a guest could
/// otherwise make every request it holds as large as what one host call may copy.
pub(crate) fn limit_outgoing_requests(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(HTTP_TYPES)?;
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store: StoreContextMut<'_, CallState>,
         (request, authority): (Resource<HostOutgoingRequest>, Option<String>)|
         -> SetResult {
            if too_long(authority.as_deref()) {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_authority(request, authority)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-path-with-query",
        |mut store: StoreContextMut<'_, CallState>,
         (request, path): (Resource<HostOutgoingRequest>, Option<String>)|
         -> SetResult {
            if too_long(path.as_deref()) {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_path_with_query(request, path)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store: StoreContextMut<'_, CallState>,
         (request, method): (Resource<HostOutgoingRequest>, Method)|
         -> SetResult {
            if let Method::Other(other) = &method
                && too_long(Some(other))
            {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_method(request, method)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-scheme",
        |mut store: StoreContextMut<'_, CallState>,
         (request, scheme): (Resource<HostOutgoingRequest>, Option<Scheme>)|
         -> SetResult {
            if let Some(Scheme::Other(other)) = &scheme
                && too_long(Some(other))
            {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_scheme(request, scheme)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn too_long(text: Option<&str>) -> bool {
    text.is_some_and(|t| t.len() > URI_PART_LIMIT)
}
