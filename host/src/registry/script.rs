//! JavaScript scripts: content-addressed source text run on one shared runtime
//! component.
//!
//! A script is registered, stored and called by digest exactly as a component is; what
//! differs is what readying it means. The JavaScript runtime (QuickJS in a
//! component, built from `runtimes/js` and embedded in this crate) is compiled once
//! per node, or loaded from the artifact directory, however many scripts run on it.
//! Registering a script checks it on that runtime once per digest (it parses, and it
//! exports one function); each call then runs it in a fresh instance of the runtime,
//! in the sandbox, under the same ceilings as any component.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use wasmtime::component::{Component, Instance, Lift, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::once::{Made, Once};
use super::{Compiled, Readied, Registry, blocking};
use crate::bindings::columnar::WitSignature;
use crate::bindings::js::{ColumnData, JsRuntime, JsRuntimePre, ScriptExports};
use crate::bindings::{WitError, WitPayload};
use crate::sandbox::{CallState, Grants, Host, Sandbox, Scope};
use crate::stats::Counters;
use crate::{Digest, Error, Limits};

/// The JavaScript runtime component, as built by `host/build.rs`.
pub(crate) static RUNTIME: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/js-runtime.wasm"));

/// The key the compiled, pre-initialized runtime is saved under in the artifact
/// directory: derived from the runtime's bytes, and distinct from their digest (a
/// user registering those bytes as a component gets them compiled as they are).
static RUNTIME_KEY: LazyLock<Digest> = LazyLock::new(|| {
    // The host's version too: the snapshot is made by this version's wizer.
    let mut keyed = format!(
        "burncache js-runtime snapshot 1 {}\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    keyed.extend_from_slice(RUNTIME);
    Digest::of(&keyed)
});

/// A checked script, ready to run.
#[derive(Clone)]
pub(crate) struct Script {
    pub(crate) source: Arc<str>,
    pub(crate) runtime: JsRuntimePre<CallState>,
    /// Whether it exports `batch`: batches go to it whole, and are never split into
    /// rows (which would change what it computes).
    pub(crate) whole_batch: bool,
    /// Whether it exports `columns`: it can be called with columns.
    pub(crate) columns: bool,
}

/// A script's instance of the runtime, with the script it runs.
pub(crate) struct ScriptInstance {
    runtime: JsRuntime,
    source: Arc<str>,
}

impl ScriptInstance {
    pub(crate) async fn instantiate(
        sandbox: &mut Sandbox,
        script: &Script,
    ) -> Result<ScriptInstance, Error> {
        match script.runtime.instantiate_async(&mut sandbox.store).await {
            Ok(runtime) => Ok(ScriptInstance {
                runtime,
                source: script.source.clone(),
            }),
            Err(e) => Err(sandbox.classify(e)),
        }
    }

    /// Checks the script; on success, what it exports.
    pub(crate) async fn check(
        &self,
        sandbox: &mut Sandbox,
    ) -> wasmtime::Result<Result<ScriptExports, Error>> {
        let checked = self
            .runtime
            .burncache_host_script_runtime()
            .call_check(&mut sandbox.store, &self.source)
            .await?;
        Ok(checked.map_err(|e| from_runtime(sandbox, e)))
    }

    /// The columns the script's `columns` export declares.
    pub(crate) async fn describe_columns(
        &self,
        sandbox: &mut Sandbox,
    ) -> wasmtime::Result<Result<WitSignature, Error>> {
        let declared = self
            .runtime
            .burncache_host_script_runtime()
            .call_describe_columns(&mut sandbox.store, &self.source)
            .await?;
        Ok(declared.map_err(|e| from_runtime(sandbox, e)))
    }

    /// Runs the script's `columns.call` on `rows` rows of `columns`.
    pub(crate) async fn call_columns(
        &self,
        sandbox: &mut Sandbox,
        rows: u32,
        columns: &[ColumnData],
    ) -> wasmtime::Result<Result<Vec<ColumnData>, Error>> {
        let returned = self
            .runtime
            .burncache_host_script_runtime()
            .call_call_columns(&mut sandbox.store, &self.source, rows, columns)
            .await?;
        Ok(returned.map_err(|e| from_runtime(sandbox, e)))
    }

    pub(crate) async fn call(
        &self,
        sandbox: &mut Sandbox,
        input: &WitPayload,
    ) -> wasmtime::Result<Result<WitPayload, Error>> {
        let returned = self
            .runtime
            .burncache_host_script_runtime()
            .call_call(&mut sandbox.store, &self.source, input)
            .await?;
        Ok(returned.map_err(|e| from_runtime(sandbox, e)))
    }

    /// Runs the script as a program; returns its exit status.
    pub(crate) async fn run_program(&self, sandbox: &mut Sandbox) -> wasmtime::Result<i32> {
        self.runtime
            .burncache_host_script_runtime()
            .call_run_program(&mut sandbox.store, &self.source)
            .await
    }

    pub(crate) async fn call_batch(
        &self,
        sandbox: &mut Sandbox,
        inputs: &[WitPayload],
    ) -> wasmtime::Result<Vec<Result<WitPayload, Error>>> {
        let rows = self
            .runtime
            .burncache_host_script_runtime()
            .call_call_batch(&mut sandbox.store, &self.source, inputs)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| row.map_err(|e| from_runtime(sandbox, e)))
            .collect())
    }
}

/// An error the runtime returned. QuickJS reports a failed allocation as an
/// exception; when the host refused the memory growth behind it, the call hit its
/// memory ceiling, whatever the script made of it.
fn from_runtime(sandbox: &Sandbox, e: WitError) -> Error {
    if sandbox.memory_refused() {
        return Error::MemoryLimit;
    }
    Error::from(e)
}

fn runtime_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("cannot {what} the JavaScript runtime: {e:#}"))
}

/// What the snapshot reads the instrumented instance's state through: the accessor
/// functions the instrumentation exported, each returning one global or memory.
struct InstanceState<'a> {
    store: &'a mut wasmtime::Store<CallState>,
    instance: Instance,
    /// The first accessor that could not be read. The snapshot API has no way to
    /// fail, so a failure is kept here, a placeholder returned, and the snapshot
    /// thrown away afterwards.
    failed: Option<String>,
}

impl InstanceState<'_> {
    async fn read<R: Lift + Send + Sync + 'static>(
        &mut self,
        instance: &str,
        func: &str,
    ) -> Option<R> {
        let read = async {
            let export = self
                .instance
                .get_export_index(&mut *self.store, None, instance)
                .and_then(|i| {
                    self.instance
                        .get_export_index(&mut *self.store, Some(&i), func)
                })
                .ok_or_else(|| "no such export".to_string())?;
            let accessor = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, &export)
                .map_err(|e| format!("{e:#}"))?;
            let (value,) = accessor
                .call_async(&mut *self.store, ())
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok::<R, String>(value)
        };
        match read.await {
            Ok(value) => Some(value),
            Err(e) => {
                self.failed
                    .get_or_insert_with(|| format!("cannot read {instance}#{func}: {e}"));
                None
            }
        }
    }
}

impl ComponentInstanceState for InstanceState<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.read::<WasmList<u8>>(instance, func).await {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.read(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.read(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.read::<f32>(instance, func)
            .await
            .unwrap_or_default()
            .to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.read::<f64>(instance, func)
            .await
            .unwrap_or_default()
            .to_bits()
    }
}

impl Registry {
    /// The JavaScript runtime, pre-initialized and compiled (or loaded from its
    /// artifact) once per node. The preparation runs in a task of its own (see
    /// [`Once`](super::once::Once)), so it finishes and is kept even if every caller
    /// waiting for it has gone. A failure is not kept: nothing about it is a
    /// script's fault, and the next script tries again.
    pub(crate) async fn js_runtime(self: &Arc<Self>) -> Result<JsRuntimePre<CallState>, Error> {
        if let Some(Ok(pre)) = self.js_runtime.get() {
            return Ok(pre.clone());
        }
        let (pre, _) = Once::get_or_make(&self.js_runtime, || {
            let registry = self.clone();
            async move {
                let outcome = registry.prepare_runtime_counted().await;
                Made {
                    keep: outcome.is_ok(),
                    outcome,
                    fuel_burned: 0,
                }
            }
        })
        .await;
        pre
    }

    async fn prepare_runtime_counted(self: &Arc<Self>) -> Result<JsRuntimePre<CallState>, Error> {
        let started = Instant::now();
        let outcome = self.prepare_runtime().await;
        let took = started.elapsed();
        let counters = &self.counters;
        match &outcome {
            Ok((_, Readied::Compiled)) => {
                Counters::bump(&counters.runtime_compiles);
                tracing::info!(?took, "compiled the JavaScript runtime");
            }
            Ok((_, Readied::Loaded)) => {
                Counters::bump(&counters.runtime_loads);
                tracing::info!(?took, "loaded the compiled JavaScript runtime");
            }
            Ok((_, Readied::Fetched)) => {
                Counters::bump(&counters.runtime_fetches);
                tracing::info!(?took, "loaded the cluster's shared JavaScript runtime");
            }
            Err(e) => tracing::error!(?took, error = %e, "no JavaScript runtime"),
        }
        outcome.map(|(pre, _)| pre)
    }

    /// Loads the runtime's artifact (this node's, or the cluster's shared one), or
    /// else snapshots the runtime with its engine started, compiles the snapshot,
    /// saves and shares it; then links it.
    async fn prepare_runtime(
        self: &Arc<Self>,
    ) -> Result<(JsRuntimePre<CallState>, Readied), Error> {
        let make = async {
            let snapshot = self.snapshot_runtime().await?;
            let engine = self.engine.clone();
            blocking(move || {
                Component::new(&engine, &snapshot)
                    .map_err(|e| runtime_error("compile the snapshot", e))
            })
            .await
        };
        let (component, readied) = self.ready_code(*RUNTIME_KEY, make).await?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(JsRuntimePre::new)
            .map_err(|e| runtime_error("link", e))?;
        Ok((pre, readied))
    }

    /// Runs the runtime's `wizer-initialize` in an instrumented instance and writes
    /// the instance's state (memory, globals) into a new component, so that each
    /// call's instance starts with QuickJS up instead of spending most of the call
    /// starting it.
    async fn snapshot_runtime(self: &Arc<Self>) -> Result<Vec<u8>, Error> {
        let mut wizer = Wizer::new();
        // The component still exports it (calling it again is harmless: it restarts
        // the engine), so the core function must stay.
        wizer.keep_init_func(true);
        let (context, instrumented) = wizer
            .instrument_component(RUNTIME)
            .map_err(|e| runtime_error("instrument", e))?;
        let engine = self.engine.clone();
        let component = blocking(move || {
            Component::new(&engine, &instrumented).map_err(|e| runtime_error("compile", e))
        })
        .await?;
        let host: Arc<dyn Host> = self.clone();
        let mut sandbox = Sandbox::new(Scope::top(host, &Limits::default()), Grants::Sealed)?;
        let instance = self
            .linker
            .instantiate_async(&mut sandbox.store, &component)
            .await
            .map_err(|e| runtime_error("instantiate", e))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut sandbox.store, "wizer-initialize")
            .map_err(|e| runtime_error("find wizer-initialize in", e))?;
        start
            .call_async(&mut sandbox.store, ())
            .await
            .map_err(|e| runtime_error("start", e))?;
        let mut state = InstanceState {
            store: &mut sandbox.store,
            instance,
            failed: None,
        };
        let snapshot = wizer
            .snapshot_component(&context, &mut state)
            .await
            .map_err(|e| runtime_error("snapshot", e))?;
        match state.failed {
            Some(e) => Err(runtime_error("snapshot", e)),
            None => Ok(snapshot),
        }
    }

    /// Checks a script on the runtime: it parses, and its top level runs and exports
    /// one function. Runs under the node's default ceilings, or within `within` (a
    /// nested call's scope, capped by its caller's budget, which is charged the fuel
    /// the check burns). Only a check under the node's defaults decides for good: a
    /// failure there is a `compile-failed`, kept (unless it timed out). A check
    /// within a nested call keeps only success; its failures are the caller's to see
    /// (a budget that ran out keeps its kind), and the next caller checks again.
    pub(crate) async fn check_script(
        self: &Arc<Self>,
        digest: Digest,
        bytes: &[u8],
        within: Option<Scope>,
    ) -> Made<Arc<Compiled>> {
        let source: Arc<str> = match std::str::from_utf8(bytes) {
            Ok(text) => Arc::from(text),
            Err(e) => {
                return Made {
                    outcome: Err(Error::InvalidInput(format!("a script must be UTF-8: {e}"))),
                    keep: true,
                    fuel_burned: 0,
                };
            }
        };
        let counters = &self.counters;
        Counters::bump(&counters.script_checks);
        let started = Instant::now();
        let nested = within.is_some();
        let unkept = |e| Made {
            outcome: Err(e),
            keep: false,
            fuel_burned: 0,
        };
        let runtime = match self.js_runtime().await {
            Ok(runtime) => runtime,
            Err(e) => return unkept(e),
        };
        let mut script = Script {
            source,
            runtime,
            whole_batch: false,
            columns: false,
        };
        let scope = match within {
            Some(scope) => scope,
            None => {
                let host: Arc<dyn Host> = self.clone();
                Scope::top(host, &Limits::default())
            }
        };
        let sandbox = match Sandbox::new(scope, Grants::Sealed) {
            Ok(sandbox) => sandbox,
            Err(e) => return unkept(e),
        };
        let outcome = sandbox
            .run_uncounted(async |sandbox| {
                let instance = ScriptInstance::instantiate(sandbox, &script).await?;
                match instance.check(sandbox).await {
                    Ok(checked) => checked,
                    Err(e) => Err(sandbox.classify(e)),
                }
            })
            .await;
        let took = started.elapsed();
        // What the script decides is kept: a check that timed out may only have met
        // a busy node, and a check on a nested call's budget met that budget.
        let keep = match &outcome.result {
            Ok(_) => true,
            Err(Error::Backend(_) | Error::Timeout) => false,
            Err(_) => !nested,
        };
        let result = outcome.result.map_err(|e| match e {
            e @ (Error::CompileFailed(_) | Error::Backend(_)) => e,
            e @ (Error::FuelExhausted
            | Error::Timeout
            | Error::MemoryLimit
            | Error::DepthExceeded(_))
                if nested =>
            {
                e
            }
            other => Error::CompileFailed(format!("the script's top level failed: {other}")),
        });
        match &result {
            Ok(_) => tracing::info!(%digest, ?took, "checked the script"),
            Err(e) => {
                if matches!(e, Error::CompileFailed(_)) {
                    Counters::bump(&counters.compile_failures);
                }
                tracing::warn!(%digest, ?took, error = %e, "script check failed");
            }
        }

        let outcome_fuel = outcome.fuel_burned;
        Made {
            outcome: result.map(|exports| {
                script.whole_batch = exports.batch;
                script.columns = exports.columns;
                Arc::new(Compiled {
                    digest,
                    udf: None,
                    columns: None,
                    signature: std::sync::OnceLock::new(),
                    proxy: None,
                    script: Some(script),
                    size: 0,
                })
            }),
            keep,
            // A check under the node's defaults is counted by the node, not charged
            // to whichever caller happened to start it.
            fuel_burned: if nested { outcome_fuel } else { 0 },
        }
    }
}
