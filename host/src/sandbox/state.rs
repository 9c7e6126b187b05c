//! What a call's Store holds, and the WASI each kind of call is granted: one sealed
//! base (no filesystem, network, environment or inherited stdio), with the grants
//! of each call kind added explicitly.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Scope;
use super::ceilings::{FIELD_SIZE_LIMIT, MemoryCeiling, RANDOM_LIMIT, resource_capacity};
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
    Log { request_id: u64 },
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
            let (stdout, stderr) = GuestLog::pair(*request_id);
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
