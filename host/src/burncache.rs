//! The facade: [`BurnCache`], one impl block of short delegations to the layers that
//! do the work, and the node's side of the [`Host`] trait guests call back through.

use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::future::BoxFuture;
use wasmtime::Engine;

use crate::calls::{self, HttpFinish, HttpResponse, RunOptions, Within};
use crate::columns::ColumnSignature;
use crate::engine::Config;
use crate::registry::Registry;
use crate::sandbox::{Host, Outcome, Scope};
use crate::stats::{Counters, Stats};
use crate::store::{Published, Store};
use crate::{Digest, Error, Limits, Payload};

/// A node's cache of components, keyed by digest, and the entry point for running them.
///
/// Cloning is cheap and every clone shares the same cache. Each unique component is
/// compiled exactly once however many callers race for it, and whatever they do: the
/// first starts the compile in a task of its own, the others wait for the same
/// outcome, and the outcome is kept even if every caller has gone. A compile failure
/// is remembered until [`BurnCache::forget`], or until the component is dropped to
/// keep within [`Config::max_held`](crate::Config::max_held) (only components the
/// store holds are dropped).
///
/// The cache must be used from within a tokio runtime (compiles run on its blocking
/// pool).
#[derive(Clone)]
pub struct BurnCache {
    registry: Arc<Registry>,
}

impl BurnCache {
    /// A cache with the default [`Config`].
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the engine cannot be set up on this machine (for
    /// instance, the instance pool cannot reserve its address space).
    pub fn new() -> Result<BurnCache, Error> {
        BurnCache::with_config(Config::default())
    }

    /// A cache with the operator's `config`.
    ///
    /// # Errors
    ///
    /// As [`BurnCache::new`], and when the artifact directory cannot be opened.
    pub fn with_config(config: Config) -> Result<BurnCache, Error> {
        Ok(BurnCache {
            registry: Arc::new(Registry::new(config)?),
        })
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.registry.engine
    }

    /// The settings this cache was made with.
    pub fn config(&self) -> &Config {
        &self.registry.config
    }

    /// Registers a component (or a JavaScript script) from its bytes, readying it
    /// unless this node already has, and returns its digest.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidInput`] when the bytes are not a component (not WebAssembly at
    ///   all, or a core module).
    /// - [`Error::CompileFailed`] when the component is invalid or imports something
    ///   the host does not provide.
    ///
    /// Both are remembered: registering the same bytes again fails the same way
    /// without compiling again, until [`BurnCache::forget`].
    ///
    /// With a store configured, newly registered bytes are also published to it, in
    /// the background: a failure to publish is logged and counted
    /// (`Stats::publish_failures`) but does not fail the registration. Use
    /// [`BurnCache::deploy`] when publishing must succeed.
    pub async fn register(&self, bytes: &[u8]) -> Result<Digest, Error> {
        Registry::register(&self.registry, bytes, None).await.0
    }

    /// Registers a component and publishes it to the store, waiting for the store.
    /// Publishing bytes the store already holds succeeds and changes nothing.
    ///
    /// # Errors
    ///
    /// As [`BurnCache::register`], and [`Error::Backend`] when no store is
    /// configured or it cannot be written.
    pub async fn deploy(&self, bytes: &[u8]) -> Result<(Digest, Published), Error> {
        self.registry.deploy(bytes).await
    }

    /// Waits for the publishes `register` started in the background. A short-lived
    /// process calls this before it exits, so what it registered reaches the store.
    pub async fn settle(&self) {
        self.registry.settle().await
    }

    /// Makes sure the component `digest` is ready to run on this node, and returns it:
    /// from what this node holds, or else fetched from the store, verified against
    /// the digest, and compiled (or loaded from the artifact directory).
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`] when neither this node nor its store has the component;
    /// - [`Error::Integrity`] when the store's bytes do not hash to the digest
    ///   (nothing is cached but the failure, for
    ///   [`Config::not_found_ttl`](crate::Config::not_found_ttl), as for not-found);
    /// - [`Error::Backend`] when the store cannot be reached (components this node
    ///   holds keep working);
    /// - otherwise the outcome of its compile, as [`BurnCache::register`].
    pub async fn register_by_hash(&self, digest: &Digest) -> Result<Digest, Error> {
        let looked = self.registry.lookup(digest, None).await;
        looked.result.map(|compiled| compiled.digest)
    }

    /// The configured store.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when none is configured.
    pub fn store(&self) -> Result<&Store, Error> {
        self.registry.store()
    }

    /// Drops the component from this node: its bytes, compiled code and any remembered
    /// failure. Calls already running finish. Returns whether it was held.
    pub fn forget(&self, digest: &Digest) -> bool {
        self.registry.forget(digest)
    }

    /// The bytes of a registered component.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no component with this digest is held here.
    pub fn source(&self, digest: &Digest) -> Result<Arc<[u8]>, Error> {
        self.registry.source(digest).ok_or(Error::NotFound(*digest))
    }

    /// Whether this node holds the component (compiled, failed, or not yet compiled).
    pub fn holds(&self, digest: &Digest) -> bool {
        self.registry.holds(digest)
    }

    /// Whether this node holds the component compiled and ready to run.
    pub fn is_compiled(&self, digest: &Digest) -> bool {
        self.registry.is_compiled(digest)
    }

    /// The component's bytes: held here, or fetched from the store (and verified)
    /// without compiling them.
    ///
    /// # Errors
    ///
    /// As [`BurnCache::register_by_hash`], less compile failures.
    pub async fn fetch_source(&self, digest: &Digest) -> Result<Arc<[u8]>, Error> {
        self.registry.fetch_source(digest).await
    }

    /// The digests this node holds, in no particular order.
    pub fn digests(&self) -> Vec<Digest> {
        self.registry.digests()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.registry.counters.snapshot(self.registry.len())
    }

    /// Runs the function component `digest` on `input`, in a fresh instance.
    ///
    /// # Errors
    ///
    /// Every failure is one [`Error`]: `NotFound` for an unknown digest,
    /// `InvalidInput` for malformed JSON or a component that is not a function, the
    /// remembered compile failure, or what the call ran into (`FuelExhausted`,
    /// `MemoryLimit`, `Timeout`, `OutputTooLarge`, `Trap`, `Guest` — a guest's own
    /// error, or JSON output that is not JSON —, ...).
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
        calls::execute(&self.registry, digest, input, Within::Top(*limits)).await
    }

    /// Runs every input through one fresh instance of `digest`: one Store, one fuel
    /// budget, one result per row.
    ///
    /// A row the guest rejects fails alone. When a row traps, the instance is gone;
    /// the rows are then retried one at a time (a new instance after each trap, still
    /// on the one budget), so the trap is pinned on its row and the others still run.
    ///
    /// # Errors
    ///
    /// The outer error is a failure of the whole batch: the component cannot run, an
    /// input is malformed, or the budget (fuel, deadline) ran out.
    pub async fn execute_batch(
        &self,
        digest: &Digest,
        inputs: Vec<Payload>,
        limits: &Limits,
    ) -> Result<Vec<Result<Payload, Error>>, Error> {
        self.execute_batch_metered(digest, inputs, limits)
            .await
            .result
    }

    /// [`BurnCache::execute_batch`], also reporting the fuel burned and the time taken.
    pub async fn execute_batch_metered(
        &self,
        digest: &Digest,
        inputs: Vec<Payload>,
        limits: &Limits,
    ) -> Outcome<Vec<Result<Payload, Error>>> {
        calls::execute_batch(&self.registry, digest, inputs, Within::Top(*limits)).await
    }

    /// Runs the columnar function `digest` (a component exporting
    /// `burncache:host/columns`) on `batch` in a fresh instance, under the ceilings
    /// of `limits`, and returns the columns it computed.
    ///
    /// The function gets the columns it declares, taken from `batch` by name (other
    /// columns are left out), as one Arrow IPC stream; what it returns must be the
    /// columns it declares, with as many rows.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the column when `batch` lacks a declared column, has it
    /// with another type, or holds nulls the function does not take, and when the
    /// component is not columnar; `Guest` for the function's own error, or an output
    /// that breaks its declaration; and what any call can run into (`NotFound`,
    /// `FuelExhausted`, `MemoryLimit`, `Timeout`, `OutputTooLarge` for an encoded
    /// output past the ceiling, `Trap`, ...).
    pub async fn execute_columns(
        &self,
        digest: &Digest,
        batch: &RecordBatch,
        limits: &Limits,
    ) -> Result<RecordBatch, Error> {
        self.execute_columns_metered(digest, batch, limits)
            .await
            .result
    }

    /// [`BurnCache::execute_columns`], also reporting the fuel burned and the time
    /// taken.
    pub async fn execute_columns_metered(
        &self,
        digest: &Digest,
        batch: &RecordBatch,
        limits: &Limits,
    ) -> Outcome<RecordBatch> {
        calls::execute_columns(&self.registry, digest, batch.clone(), Within::Top(*limits)).await
    }

    /// [`BurnCache::execute_columns`] on an Arrow IPC stream (its batches taken as
    /// one), answered as one: what `POST /v1/components/{digest}/columns` runs.
    ///
    /// # Errors
    ///
    /// As [`BurnCache::execute_columns`]; `InvalidInput` too when the bytes are not
    /// an Arrow IPC stream.
    pub async fn execute_columns_stream(
        &self,
        digest: &Digest,
        stream: Vec<u8>,
        limits: &Limits,
    ) -> Outcome<Vec<u8>> {
        calls::execute_columns_stream(&self.registry, digest, stream, Within::Top(*limits)).await
    }

    /// What the columnar function `digest` takes and returns, as it declares it.
    /// The first call asks a fresh instance, under the ceilings of `limits`; the
    /// answer is kept with the compiled component.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the component is not columnar, `Guest` when its
    /// declaration breaks the contract (no columns, a name twice), and what any call
    /// can run into.
    pub async fn describe_columns(
        &self,
        digest: &Digest,
        limits: &Limits,
    ) -> Result<Arc<ColumnSignature>, Error> {
        calls::describe_columns(&self.registry, digest, Within::Top(*limits))
            .await
            .result
    }

    /// Serves one request with the HTTP guest `digest` (a component exporting
    /// `wasi:http/incoming-handler`): a fresh instance, the ceilings of `limits`,
    /// a sealed WASI context whose stdout and stderr go to the log under
    /// `request_id` (at most 32 KiB of them per request), and outgoing requests
    /// only to what [`Config::outbound`] allows.
    ///
    /// Returns the response as soon as the guest sets it, and a handle that resolves
    /// when the guest has finished (its body written), with the fuel it burned.
    ///
    /// # Errors
    ///
    /// `NotFound`, the component's compile failure, `InvalidInput` when it is not
    /// an HTTP guest, or what the guest ran into before it set a response
    /// (`Timeout`, `FuelExhausted`, `MemoryLimit`, `Trap`, ...).
    pub async fn handle_http<B>(
        &self,
        digest: &Digest,
        request: hyper::Request<B>,
        limits: &Limits,
        request_id: &str,
    ) -> Result<(HttpResponse, HttpFinish), Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        calls::handle_http(&self.registry, digest, request, limits, request_id).await
    }

    /// Runs a program once, with its stdout and stderr passed through to the host's
    /// (within the output ceiling), and returns its exit code: a `wasi:cli` command
    /// component, or a JavaScript script (UTF-8 source) run as a program on the
    /// node's JavaScript runtime, which sees `options.args` in `process.argv` and
    /// `options.env` in `process.env`, and exits with `process.exit(code)`
    /// (1 after an uncaught exception, reported on stderr).
    ///
    /// Nothing of the program is kept: a component is compiled for this run only, a
    /// script is neither checked nor registered.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for bytes that are neither a command component nor a script,
    /// `CompileFailed`,
    /// and the classified failures of a call (`FuelExhausted`, `Timeout`,
    /// `MemoryLimit`, `OutputTooLarge`, `Trap`).
    pub async fn run_command(&self, bytes: Vec<u8>, options: RunOptions) -> Outcome<i32> {
        calls::run_command(&self.registry, bytes, options).await
    }
}

impl std::fmt::Debug for BurnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnCache")
            .field("components", &self.registry.len())
            .field("config", &self.registry.config)
            .finish_non_exhaustive()
    }
}

/// The node as guests reach it: nested calls on the caller's budget, and (if the
/// operator allows) registering and forgetting components.
impl Host for Registry {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn outbound(&self) -> &crate::outbound::OutboundClient {
        &self.outbound
    }

    fn execute(
        self: Arc<Self>,
        digest: Digest,
        input: Payload,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Payload>> {
        Box::pin(async move { calls::execute(&self, &digest, input, Within::Nested(scope)).await })
    }

    fn execute_batch(
        self: Arc<Self>,
        digest: Digest,
        inputs: Vec<Payload>,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Vec<Result<Payload, Error>>>> {
        Box::pin(async move {
            calls::execute_batch(&self, &digest, inputs, Within::Nested(scope)).await
        })
    }

    fn execute_columns(
        self: Arc<Self>,
        digest: Digest,
        stream: Vec<u8>,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Vec<u8>>> {
        Box::pin(async move {
            calls::execute_columns_stream(&self, &digest, stream, Within::Nested(scope)).await
        })
    }

    fn register(
        self: Arc<Self>,
        bytes: Vec<u8>,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Digest>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let (result, fuel_burned) = Registry::register(&self, &bytes, Some(&scope)).await;
            Outcome {
                result,
                fuel_burned,
                elapsed: started.elapsed(),
            }
        })
    }

    fn register_by_hash(
        self: Arc<Self>,
        digest: Digest,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Digest>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let looked = self.lookup(&digest, Some(&scope)).await;
            Outcome {
                result: looked.result.map(|compiled| compiled.digest),
                fuel_burned: looked.fuel_burned,
                elapsed: started.elapsed(),
            }
        })
    }

    fn forget(&self, digest: &Digest) -> bool {
        Registry::forget(self, digest)
    }
}
