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
    http_hooks: SealedHttp,
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
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELD_SIZE_LIMIT);
        let mut table = ResourceTable::new();
        table.set_max_capacity(resource_capacity(memory));
        CallState {
            wasi: wasi.build(),
            http,
            http_hooks: SealedHttp,
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

/// Outgoing HTTP from guests is refused: a sealed guest has no network.
pub(crate) struct SealedHttp;

type Sent = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for SealedHttp {
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
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Sent,
    ) -> Box<
        dyn Future<Output = Result<(http::Response<WasiBody>, Sent), wasmtime_wasi_http::Error>>
            + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

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
