//! Running a program once, uncached, in the sandbox under the same ceilings as a
//! call, with its arguments, granted environment and stdio: a `wasi:cli` command
//! component, or a JavaScript script run as a program on the shared runtime.

use std::sync::Arc;
use std::time::Instant;

use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::registry::{Registry, Script, ScriptInstance};
use crate::sandbox::{CallState, Grants, Host, Outcome, Sandbox, Scope};
use crate::source::SourceKind;
use crate::{Error, Limits};

/// How to run a command.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment variables the command sees; nothing else of the host's leaks in.
    pub env: Vec<(String, String)>,
    /// The name the command sees as `argv[0]`.
    pub program: String,
    /// Ceilings; `output_bytes` caps what it writes to stdout and stderr together.
    pub limits: Limits,
}

/// Runs a command component (or a script, as a program) once and returns its exit
/// code.
pub(crate) async fn run_command(
    registry: &Arc<Registry>,
    bytes: Vec<u8>,
    options: RunOptions,
) -> Outcome<i32> {
    let started = Instant::now();
    if SourceKind::of(&bytes) == SourceKind::Script {
        return run_script(registry, bytes, options, started).await;
    }
    let pre = match command_pre(registry, bytes).await {
        Ok(pre) => pre,
        Err(e) => return Outcome::refused(&registry.counters, e, started),
    };
    let sandbox = match program_sandbox(registry, &options) {
        Ok(sandbox) => sandbox,
        Err(e) => return Outcome::refused(&registry.counters, e, started),
    };
    sandbox
        .run(async |sandbox| {
            let command = pre
                .instantiate_async(&mut sandbox.store)
                .await
                .map_err(|e| sandbox.classify(e))?;
            match command.wasi_cli_run().call_run(&mut sandbox.store).await {
                Ok(Ok(())) => Ok(0),
                Ok(Err(())) => Ok(1),
                Err(e) => match e.downcast_ref::<I32Exit>() {
                    Some(exit) => Ok(exit.0),
                    None => Err(sandbox.classify(e)),
                },
            }
        })
        .await
}

/// Runs a script as a program on the node's JavaScript runtime (the one thing kept:
/// it is every script's), in a fresh sandbox; the script itself is neither checked
/// nor registered, so nothing of it is kept, a failure included.
async fn run_script(
    registry: &Arc<Registry>,
    bytes: Vec<u8>,
    options: RunOptions,
    started: Instant,
) -> Outcome<i32> {
    let source = match String::from_utf8(bytes) {
        Ok(source) => Arc::<str>::from(source),
        Err(e) => {
            let e = Error::InvalidInput(format!("a script is UTF-8 text: {e}"));
            return Outcome::refused(&registry.counters, e, started);
        }
    };
    let runtime = match registry.js_runtime().await {
        Ok(runtime) => runtime,
        Err(e) => return Outcome::refused(&registry.counters, e, started),
    };
    let script = Script {
        source,
        runtime,
        whole_batch: false,
        columns: false,
    };
    let sandbox = match program_sandbox(registry, &options) {
        Ok(sandbox) => sandbox,
        Err(e) => return Outcome::refused(&registry.counters, e, started),
    };
    sandbox
        .run(async |sandbox| {
            let instance = ScriptInstance::instantiate(sandbox, &script).await?;
            let status = instance
                .run_program(sandbox)
                .await
                .map_err(|e| sandbox.classify(e))?;
            // QuickJS reports a refused allocation as an exception the program may
            // catch or die of; either way the program met its memory ceiling.
            if sandbox.memory_refused() {
                return Err(Error::MemoryLimit);
            }
            Ok(status)
        })
        .await
}

/// A fresh sandbox for a program: the usual ceilings, its arguments, granted
/// environment and passed-through stdio.
fn program_sandbox(registry: &Arc<Registry>, options: &RunOptions) -> Result<Sandbox, Error> {
    let host: Arc<dyn Host> = registry.clone();
    let grants = Grants::Command {
        program: &options.program,
        args: &options.args,
        env: &options.env,
    };
    Sandbox::new(Scope::top(host, &options.limits), grants)
}

async fn command_pre(
    registry: &Arc<Registry>,
    bytes: Vec<u8>,
) -> Result<CommandPre<CallState>, Error> {
    let component = registry.compile_once_off(bytes).await?;
    let pre = registry
        .linker
        .instantiate_pre(&component)
        .map_err(|e| Error::CompileFailed(format!("cannot link: {e:#}")))?;
    CommandPre::new(pre).map_err(|e| {
        Error::InvalidInput(format!(
            "not a wasi:cli command (it does not export `wasi:cli/run`): {e:#}"
        ))
    })
}
