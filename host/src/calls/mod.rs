//! The call kinds: a function call, a batch, an HTTP guest's request, a command. Each
//! looks up what it runs in the registry and runs it in the sandbox; none makes a
//! Store of its own.

mod batch;
mod columns;
mod command;
mod function;
mod http;

use std::sync::Arc;

use crate::bindings::{Udf, UdfPre, WitPayload};
use crate::registry::{Compiled, Registry, ScriptInstance};
use crate::sandbox::{CallState, Grants, Host, Sandbox, Scope};
use crate::{Digest, Error, Limits};

pub(crate) use batch::execute_batch;
pub(crate) use columns::{describe_columns, execute_columns, execute_columns_stream};
pub use command::RunOptions;
pub(crate) use command::run_command;
pub(crate) use function::execute;
pub(crate) use http::handle_http;
pub use http::{HttpFinish, HttpResponse};

/// Where a call's ceilings come from.
pub(crate) enum Within {
    /// A top-level call, with what its caller asked for. Its deadline starts once
    /// its component is ready.
    Top(Limits),
    /// A call nested in another, already capped by what its caller has left.
    Nested(Scope),
}

impl Within {
    /// The nested call's scope, if this is one.
    fn nested(&self) -> Option<&Scope> {
        match self {
            Within::Top(_) => None,
            Within::Nested(scope) => Some(scope),
        }
    }

    /// The call's scope, less the fuel `spent` readying its component.
    fn scope(self, registry: &Arc<Registry>, spent: u64) -> Scope {
        match self {
            Within::Top(limits) => {
                let host: Arc<dyn Host> = registry.clone();
                Scope::top(host, &limits)
            }
            Within::Nested(mut scope) => {
                scope.ceilings.fuel = scope.ceilings.fuel.saturating_sub(spent);
                scope
            }
        }
    }
}

/// Everything up to a function call's start: its component looked up (a script's
/// check on a nested call's budget), its inputs checked by `check`, and its sandbox
/// made. Returns the fuel readying the component burned, also with a failure.
async fn prepare(
    registry: &Arc<Registry>,
    digest: &Digest,
    within: Within,
    check: impl FnOnce() -> Result<(), Error>,
) -> Result<(Arc<Compiled>, Sandbox, u64), (Error, u64)> {
    let looked = registry.lookup(digest, within.nested()).await;
    let spent = looked.fuel_burned;
    let ready = looked
        .result
        .and_then(|compiled| check().map(|()| compiled))
        .and_then(|compiled| {
            let sandbox = Sandbox::new(within.scope(registry, spent), Grants::Sealed)?;
            Ok((compiled, sandbox, spent))
        });
    ready.map_err(|e| (e, spent))
}

/// An instance a function call runs in.
pub(crate) enum Instance {
    /// A function component's.
    Udf(Udf),
    /// The JavaScript runtime's, running a script.
    Script(ScriptInstance),
}

impl Instance {
    /// A fresh instance of what `compiled` runs: the function component itself, or
    /// the JavaScript runtime with the script.
    pub(crate) async fn new(sandbox: &mut Sandbox, compiled: &Compiled) -> Result<Instance, Error> {
        if let Some(script) = &compiled.script {
            return ScriptInstance::instantiate(sandbox, script)
                .await
                .map(Instance::Script);
        }
        let pre = udf_pre(compiled)?;
        match pre.instantiate_async(&mut sandbox.store).await {
            Ok(udf) => Ok(Instance::Udf(udf)),
            Err(e) => Err(sandbox.classify(e)),
        }
    }

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

fn udf_pre(compiled: &Compiled) -> Result<&UdfPre<CallState>, Error> {
    compiled.udf.as_ref().ok_or_else(|| {
        Error::InvalidInput(format!(
            "component {} does not export `burncache:host/function@0.1.1`, so it cannot \
             be called as a function (is it a wasi:cli command? try `burncache run`)",
            compiled.digest
        ))
    })
}
