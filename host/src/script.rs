//! JavaScript scripts: content-addressed source text run on one shared runtime
//! component.
//!
//! A script is registered, stored and called by digest exactly as a component is; what
//! differs is what "compiling" it means. The JavaScript runtime (QuickJS in a
//! component, built from `runtimes/js` and embedded in this crate) is compiled once
//! per node, or loaded from the artifact directory, however many scripts run on it.
//! Registering a script checks it on that runtime once per digest (it parses, and it
//! exports one function); each call then runs it in a fresh instance of the runtime,
//! under the same ceilings as any component.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use crate::bindings::js::{JsRuntime, JsRuntimePre};
use crate::bindings::{WitError, WitPayload};
use crate::cache::{BurnCache, Compiled, Readied, compile_or_load};
use crate::call::{CallState, Sandbox, Scope, sandboxed};
use crate::stats::Counters;
use crate::{Digest, Error, Limits};

/// The JavaScript runtime component, as built by `host/build.rs`.
pub(crate) static RUNTIME: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/js-runtime.wasm"));

/// The runtime's digest: its key in the artifact directory.
static RUNTIME_DIGEST: LazyLock<Digest> = LazyLock::new(|| Digest::of(RUNTIME));

/// What registered bytes are, told by their content (never by a file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// WebAssembly (a component, or something the compile step will refuse).
    Component,
    /// UTF-8 text: a JavaScript script.
    Script,
}

impl SourceKind {
    /// Tells a script from a component: WebAssembly starts with `\0asm`; anything
    /// else that is non-empty, valid UTF-8 is a script. Other bytes are handed to the
    /// component checks, which say what is wrong with them.
    pub fn of(bytes: &[u8]) -> SourceKind {
        if !bytes.is_empty() && !bytes.starts_with(b"\0asm") && std::str::from_utf8(bytes).is_ok() {
            SourceKind::Script
        } else {
            SourceKind::Component
        }
    }

    /// The file extension objects of this kind get in a store.
    pub fn extension(self) -> &'static str {
        match self {
            SourceKind::Component => "wasm",
            SourceKind::Script => "js",
        }
    }

    /// The media type the HTTP API serves these bytes as.
    pub fn media_type(self) -> &'static str {
        match self {
            SourceKind::Component => "application/wasm",
            SourceKind::Script => "text/javascript",
        }
    }
}

/// A checked script, ready to run.
#[derive(Clone)]
pub(crate) struct Script {
    pub(crate) source: Arc<str>,
    pub(crate) runtime: JsRuntimePre<CallState>,
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

impl BurnCache {
    /// The JavaScript runtime, compiled (or loaded from its artifact) once per node.
    pub(crate) async fn js_runtime(&self) -> Result<JsRuntimePre<CallState>, Error> {
        self.inner
            .js_runtime
            .get_or_init(|| async {
                let inner = self.inner.clone();
                let started = Instant::now();
                let outcome = tokio::task::spawn_blocking(move || {
                    let (component, readied) = compile_or_load(&inner, &RUNTIME_DIGEST, RUNTIME)?;
                    let pre = inner
                        .linker
                        .instantiate_pre(&component)
                        .and_then(JsRuntimePre::new);
                    let pre = pre.map_err(|e| {
                        Error::Backend(format!("cannot link the JavaScript runtime: {e:#}"))
                    })?;
                    Ok::<_, Error>((pre, readied))
                })
                .await
                .unwrap_or_else(|e| Err(Error::Backend(format!("the compile task failed: {e}"))));
                let took = started.elapsed();
                let counters = &self.inner.counters;
                match &outcome {
                    Ok((_, Readied::Compiled)) => {
                        Counters::bump(&counters.runtime_compiles);
                        tracing::info!(?took, "compiled the JavaScript runtime");
                    }
                    Ok((_, Readied::Loaded)) => {
                        Counters::bump(&counters.runtime_loads);
                        tracing::info!(?took, "loaded the compiled JavaScript runtime");
                    }
                    Err(e) => tracing::error!(?took, error = %e, "no JavaScript runtime"),
                }
                outcome.map(|(pre, _)| pre)
            })
            .await
            .clone()
    }

    /// Checks a script on the runtime: it parses, and its top level runs and exports
    /// one function. Runs under the node's default ceilings.
    pub(crate) async fn check_script(
        &self,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<Compiled, Error> {
        let source: Arc<str> = match std::str::from_utf8(bytes) {
            Ok(text) => Arc::from(text),
            Err(e) => return Err(Error::InvalidInput(format!("a script must be UTF-8: {e}"))),
        };
        let counters = &self.inner.counters;
        Counters::bump(&counters.script_checks);
        let started = Instant::now();
        let runtime = self.js_runtime().await?;
        let script = Script {
            source,
            runtime: runtime.clone(),
        };
        let outcome = sandboxed(Scope::top(self, &Limits::default()), async |sandbox| {
            let instance = ScriptInstance::instantiate(sandbox, &script).await?;
            let checked = instance
                .runtime
                .burncache_host_script_runtime()
                .call_check(&mut sandbox.store, &instance.source)
                .await;
            match checked {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(from_runtime(sandbox, e)),
                Err(e) => Err(sandbox.classify(e)),
            }
        })
        .await;
        let took = started.elapsed();
        let result = outcome.result.map_err(|e| match e {
            e @ (Error::CompileFailed(_) | Error::Backend(_)) => e,
            other => Error::CompileFailed(format!("the script's top level failed: {other}")),
        });
        match &result {
            Ok(()) => tracing::info!(%digest, ?took, "checked the script"),
            Err(e) => {
                Counters::bump(&counters.compile_failures);
                tracing::warn!(%digest, ?took, error = %e, "script check failed");
            }
        }
        result.map(|()| Compiled {
            digest,
            udf: None,
            proxy: None,
            script: Some(script),
        })
    }
}
