//! Running a call: a fresh Store per call with fuel, a memory ceiling, a deadline, an
//! output ceiling and a sealed WASI context, and the classification of what went wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, PoolConcurrencyLimitError, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::bindings::{Udf, UdfPre, WitPayload};
use crate::cache::{BurnCache, Compiled};
use crate::engine::{FUEL_YIELD_INTERVAL, ticks_for};
use crate::http::SealedHttp;
use crate::limits::{Ceilings, Limits};
use crate::output::Capture;
use crate::payload::check_json;
use crate::script::ScriptInstance;
use crate::{Digest, Error, Payload};

/// How much of a guest's stderr is kept to explain a trap.
const STDERR_CAPTURE: usize = 4096;

/// What one call did: its result, and what it cost.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    /// The call's output, or its classified failure.
    pub result: Result<T, Error>,
    /// Fuel burned by the call, its nested calls included.
    pub fuel_burned: u64,
    /// Wall-clock time from the start of the call to its end.
    pub elapsed: Duration,
}

impl<T> Outcome<T> {
    /// A call that failed before any guest code ran.
    pub(crate) fn failed(e: Error, started: Instant) -> Outcome<T> {
        Outcome {
            result: Err(e),
            fuel_burned: 0,
            elapsed: started.elapsed(),
        }
    }
}

/// Where a call stands: which cache it belongs to, how deep it is nested, and the
/// ceilings it runs under. Nested calls derive theirs from their caller's.
#[derive(Clone)]
pub(crate) struct Scope {
    pub(crate) cache: BurnCache,
    pub(crate) depth: u32,
    pub(crate) deadline: Instant,
    pub(crate) ceilings: Ceilings,
}

impl Scope {
    pub(crate) fn top(cache: &BurnCache, limits: &Limits) -> Scope {
        let config = cache.config();
        let ceilings = config.maxima.resolve(&config.defaults, limits);
        Scope {
            cache: cache.clone(),
            depth: 0,
            deadline: Instant::now() + ceilings.timeout,
            ceilings,
        }
    }

    /// The scope of a call made from inside this one: one level deeper, and capped by
    /// what this call has left (`fuel_left`, its deadline, its memory and output).
    pub(crate) fn child(&self, request: &Limits, fuel_left: u64) -> Result<Scope, Error> {
        let max_depth = self.cache.config().max_depth;
        let depth = self.depth + 1;
        if depth > max_depth {
            return Err(Error::DepthExceeded(max_depth));
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout);
        }
        let left = Ceilings {
            fuel: fuel_left,
            memory_bytes: self.ceilings.memory_bytes,
            timeout: remaining,
            output_bytes: self.ceilings.output_bytes,
        };
        let ceilings = left.resolve(&self.cache.config().defaults, request);
        Ok(Scope {
            cache: self.cache.clone(),
            depth,
            deadline: Instant::now() + ceilings.timeout,
            ceilings,
        })
    }
}

/// What a call's Store holds.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: SealedHttp,
    table: ResourceTable,
    memory: MemoryCeiling,
    stderr: Option<Capture>,
    pub(crate) scope: Scope,
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

/// The memory ceiling of one call, summed over all of its instance's memories. It
/// remembers a refusal, so that the trap a refused guest then hits (a Rust guest
/// aborts on a failed allocation) is reported as `memory-limit`.
struct MemoryCeiling {
    limit: u64,
    used: u64,
    refused: bool,
}

impl ResourceLimiter for MemoryCeiling {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(growth) > self.limit {
            self.refused = true;
            return Ok(false);
        }
        self.used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; the pool's slot size bounds them too.
        Ok(desired <= 100_000)
    }
}

/// The linker every component is linked with: WASI 0.2 (sealed per call),
/// `wasi:http` (incoming requests; outgoing ones are refused) and the `burn-cache`
/// interface.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<CallState>, Error> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
        .and_then(|()| crate::nested::add_to_linker(&mut linker))
        .map_err(|e| Error::Backend(format!("cannot set up the linker: {e:#}")))?;
    Ok(linker)
}

/// A sealed WASI context: no filesystem, network, environment, arguments or stdin;
/// stdout is discarded and the start of stderr kept to explain traps.
fn sealed_wasi(stderr: &Capture) -> WasiCtx {
    WasiCtx::builder()
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// One call's Store, set up with every ceiling of its scope.
pub(crate) struct Sandbox {
    pub(crate) store: Store<CallState>,
    /// Fuel this Store started with.
    fuel: u64,
    /// Fuel burned by the Stores this one replaced (see [`Sandbox::renew`]).
    burned_before: u64,
}

impl Sandbox {
    pub(crate) fn new(scope: Scope, wasi: Option<WasiCtx>) -> Result<Sandbox, Error> {
        let ceilings = scope.ceilings;
        let (wasi, stderr) = match wasi {
            Some(wasi) => (wasi, None),
            None => {
                let capture = Capture::new(STDERR_CAPTURE);
                (sealed_wasi(&capture), Some(capture))
            }
        };
        let remaining = scope.deadline.saturating_duration_since(Instant::now());
        let engine = scope.cache.engine().clone();
        let mut store = Store::new(
            &engine,
            CallState {
                wasi,
                http: WasiHttpCtx::new(),
                http_hooks: SealedHttp,
                table: ResourceTable::new(),
                memory: MemoryCeiling {
                    limit: ceilings.memory_bytes,
                    used: 0,
                    refused: false,
                },
                stderr,
                scope,
            },
        );
        store.limiter(|state| &mut state.memory);
        let setup = |store: &mut Store<CallState>| -> wasmtime::Result<()> {
            store.set_fuel(ceilings.fuel)?;
            store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))?;
            store.epoch_deadline_trap();
            store.set_epoch_deadline(ticks_for(remaining));
            Ok(())
        };
        setup(&mut store).map_err(|e| Error::Backend(format!("cannot set up the store: {e:#}")))?;
        Ok(Sandbox {
            store,
            fuel: ceilings.fuel,
            burned_before: 0,
        })
    }

    /// Replaces the Store with a fresh one on what is left of the same budget: the
    /// fuel not yet burned, the same deadline. Used after a trap, which leaves an
    /// instance unusable; the old Store (and its instance slot) is freed.
    pub(crate) fn renew(&mut self) -> Result<(), Error> {
        let burned = self.fuel_burned();
        let mut scope = self.store.data().scope.clone();
        scope.ceilings.fuel = scope.ceilings.fuel.saturating_sub(burned);
        let mut next = Sandbox::new(scope, None)?;
        next.burned_before = burned;
        *self = next;
        Ok(())
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.store.data().scope.deadline
    }

    pub(crate) fn output_ceiling(&self) -> u64 {
        self.store.data().scope.ceilings.output_bytes
    }

    /// Fuel burned so far, nested calls included.
    pub(crate) fn fuel_burned(&self) -> u64 {
        let left = self.store.get_fuel().unwrap_or(0);
        self.burned_before + self.fuel.saturating_sub(left)
    }

    /// Names the failure of a call that ran in this Store.
    pub(crate) fn classify(&self, err: wasmtime::Error) -> Error {
        let state = self.store.data();
        let trap = err.downcast_ref::<Trap>().copied();
        match trap {
            Some(Trap::OutOfFuel) => return Error::FuelExhausted,
            Some(Trap::Interrupt) => return Error::Timeout,
            _ => {}
        }
        if state.memory.refused {
            return Error::MemoryLimit;
        }
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Error::Backend(format!("no free instance slot on this node: {err}"));
        }
        let what = match trap {
            Some(Trap::StackOverflow) => "stack overflow (call stack exhausted)".to_string(),
            Some(trap) => trap.to_string(),
            None => format!("{err:#}"),
        };
        let stderr = state.stderr.as_ref().map(Capture::text).unwrap_or_default();
        if stderr.is_empty() {
            Error::Trap(what)
        } else {
            Error::Trap(format!("{what}; guest stderr: {stderr}"))
        }
    }

    /// Whether the memory ceiling refused a growth during this call.
    pub(crate) fn memory_refused(&self) -> bool {
        self.store.data().memory.refused
    }

    /// A fresh instance of what `compiled` runs: the function component itself, or
    /// the JavaScript runtime with the script.
    pub(crate) async fn instantiate(&mut self, compiled: &Compiled) -> Result<Instance, Error> {
        if let Some(script) = &compiled.script {
            return ScriptInstance::instantiate(self, script)
                .await
                .map(Instance::Script);
        }
        let pre = udf_pre(compiled)?;
        match pre.instantiate_async(&mut self.store).await {
            Ok(udf) => Ok(Instance::Udf(udf)),
            Err(e) => Err(self.classify(e)),
        }
    }
}

/// An instance a call runs in.
pub(crate) enum Instance {
    /// A function component's.
    Udf(Udf),
    /// The JavaScript runtime's, running a script.
    Script(ScriptInstance),
}

impl Instance {
    /// Calls the function on one input. The outer error is a trap; the inner one is
    /// the function's own.
    pub(crate) async fn call(
        &self,
        sandbox: &mut Sandbox,
        input: &WitPayload,
    ) -> wasmtime::Result<Result<WitPayload, Error>> {
        match self {
            Instance::Udf(udf) => Ok(udf
                .burncache_host_function()
                .call_call(&mut sandbox.store, input)
                .await?
                .map_err(Error::Guest)),
            Instance::Script(script) => script.call(sandbox, input).await,
        }
    }

    /// Calls the function on every input, in order.
    pub(crate) async fn call_batch(
        &self,
        sandbox: &mut Sandbox,
        inputs: &[WitPayload],
    ) -> wasmtime::Result<Vec<Result<WitPayload, Error>>> {
        match self {
            Instance::Udf(udf) => Ok(udf
                .burncache_host_function()
                .call_call_batch(&mut sandbox.store, inputs)
                .await?
                .into_iter()
                .map(|row| row.map_err(Error::Guest))
                .collect()),
            Instance::Script(script) => script.call_batch(sandbox, inputs).await,
        }
    }
}

/// Checks an output against the call's output ceiling.
fn check_output(payload: &WitPayload, ceiling: u64) -> Result<(), Error> {
    if payload_len(payload) > ceiling {
        return Err(Error::OutputTooLarge(ceiling));
    }
    Ok(())
}

pub(crate) fn check_input(input: &Payload) -> Result<(), Error> {
    match input {
        Payload::Json(text) => check_json(text),
        Payload::Bytes(_) => Ok(()),
    }
}

pub(crate) fn udf_pre(compiled: &Compiled) -> Result<&UdfPre<CallState>, Error> {
    compiled.udf.as_ref().ok_or_else(|| {
        Error::InvalidInput(format!(
            "component {} does not export `burncache:host/function@0.1.0`, so it cannot \
             be called as a function (is it a wasi:cli command? try `burncache run`)",
            compiled.digest
        ))
    })
}

/// Runs `work` against a Store for `scope`, with the deadline also enforced around
/// time spent in host calls (where epoch interruption cannot reach).
pub(crate) async fn sandboxed<T, F>(scope: Scope, work: F) -> Outcome<T>
where
    F: AsyncFnOnce(&mut Sandbox) -> Result<T, Error>,
{
    let started = Instant::now();
    let mut sandbox = match Sandbox::new(scope, None) {
        Ok(sandbox) => sandbox,
        Err(e) => return Outcome::failed(e, started),
    };
    let deadline = tokio::time::Instant::from_std(sandbox.deadline());
    let result = tokio::time::timeout_at(deadline, work(&mut sandbox))
        .await
        .unwrap_or(Err(Error::Timeout));
    Outcome {
        result,
        fuel_burned: sandbox.fuel_burned(),
        elapsed: started.elapsed(),
    }
}

impl BurnCache {
    /// Runs the function component `digest` on `input`, in a fresh instance.
    ///
    /// # Errors
    ///
    /// Every failure is one [`Error`]: `NotFound` for an unknown digest,
    /// `InvalidInput` for malformed JSON or a component that is not a function, the
    /// remembered compile failure, or what the call ran into (`FuelExhausted`,
    /// `MemoryLimit`, `Timeout`, `OutputTooLarge`, `Trap`, `Guest`, ...).
    pub async fn execute(
        &self,
        digest: &Digest,
        input: Payload,
        limits: &Limits,
    ) -> Result<Payload, Error> {
        self.execute_metered(digest, input, limits).await.result
    }

    /// [`BurnCache::execute`], also reporting the fuel burned and the time taken.
    pub async fn execute_metered(
        &self,
        digest: &Digest,
        input: Payload,
        limits: &Limits,
    ) -> Outcome<Payload> {
        let outcome = self
            .execute_in(digest, input, || Scope::top(self, limits))
            .await;
        self.inner.counters.add_fuel(outcome.fuel_burned);
        outcome
    }

    /// Runs `execute` within the scope `scope` makes (a top-level call, or a nested
    /// one). The scope is made once the component is ready, so that a top-level
    /// call's deadline does not start while its component is fetched and compiled.
    pub(crate) async fn execute_in(
        &self,
        digest: &Digest,
        input: Payload,
        scope: impl FnOnce() -> Scope,
    ) -> Outcome<Payload> {
        let compiled = match self.prepare(digest, &input).await {
            Ok(compiled) => compiled,
            Err(e) => return self.failed_early(e),
        };
        let scope = scope();
        let input = WitPayload::from(input);
        let outcome = sandboxed(scope, async |sandbox: &mut Sandbox| {
            let instance = sandbox.instantiate(&compiled).await?;
            let output = match instance.call(sandbox, &input).await {
                Ok(Ok(output)) => output,
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(sandbox.classify(e)),
            };
            check_output(&output, sandbox.output_ceiling())?;
            Ok(Payload::from(output))
        })
        .await;
        self.inner.counters.record_call(&outcome.result);
        outcome
    }

    /// Looks up a component for a call and checks the input.
    async fn prepare(&self, digest: &Digest, input: &Payload) -> Result<Arc<Compiled>, Error> {
        let compiled = self.lookup(digest).await?;
        check_input(input)?;
        Ok(compiled)
    }

    pub(crate) fn failed_early<T>(&self, e: Error) -> Outcome<T> {
        let result = Err(e);
        self.inner.counters.record_call(&result);
        Outcome {
            result,
            fuel_burned: 0,
            elapsed: Duration::ZERO,
        }
    }
}

pub(crate) fn payload_len(p: &WitPayload) -> u64 {
    match p {
        WitPayload::Json(text) => text.len() as u64,
        WitPayload::Bytes(bytes) => bytes.len() as u64,
    }
}

impl From<Payload> for WitPayload {
    fn from(p: Payload) -> Self {
        match p {
            Payload::Json(text) => WitPayload::Json(text),
            Payload::Bytes(bytes) => WitPayload::Bytes(bytes),
        }
    }
}

impl From<WitPayload> for Payload {
    fn from(p: WitPayload) -> Self {
        match p {
            WitPayload::Json(text) => Payload::Json(text),
            WitPayload::Bytes(bytes) => Payload::Bytes(bytes),
        }
    }
}
