//! Running a `wasi:cli` command component once, uncached, under the same ceilings as a
//! call.

use std::time::Instant;

use wasmtime::component::Component;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx};

use crate::cache::check_is_component;
use crate::call::{Outcome, Sandbox, Scope};
use crate::limits::Limits;
use crate::output::{OutputBudget, PassThrough};
use crate::{BurnCache, Error};

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

impl BurnCache {
    /// Runs a `wasi:cli` command component once, with its stdout and stderr passed
    /// through to the host's, and returns its exit code.
    ///
    /// The component is compiled for this run only and is not added to the cache.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for bytes that are not a command component, `CompileFailed`,
    /// and the classified failures of a call (`FuelExhausted`, `Timeout`,
    /// `MemoryLimit`, `OutputTooLarge`, `Trap`).
    pub async fn run_command(&self, bytes: Vec<u8>, options: RunOptions) -> Outcome<i32> {
        let started = Instant::now();
        let pre = match self.compile_command(bytes).await {
            Ok(pre) => pre,
            Err(e) => return Outcome::failed(e, started),
        };
        let scope = Scope::top(self, &options.limits);
        let budget = OutputBudget::new(scope.ceilings.output_bytes);
        let wasi = command_wasi(&options, &budget);
        let mut sandbox = match Sandbox::new(scope, Some(wasi)) {
            Ok(sandbox) => sandbox,
            Err(e) => return Outcome::failed(e, started),
        };
        let deadline = tokio::time::Instant::from_std(sandbox.deadline());
        let run = async {
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
        };
        let mut result = tokio::time::timeout_at(deadline, run)
            .await
            .unwrap_or(Err(Error::Timeout));
        if budget.exceeded() && !matches!(result, Err(Error::FuelExhausted | Error::Timeout)) {
            result = Err(Error::OutputTooLarge(sandbox.output_ceiling()));
        }
        self.inner.counters.record_call(&result);
        Outcome {
            result,
            fuel_burned: sandbox.fuel_burned(),
            elapsed: started.elapsed(),
        }
    }

    async fn compile_command(
        &self,
        bytes: Vec<u8>,
    ) -> Result<CommandPre<crate::call::CallState>, Error> {
        if crate::SourceKind::of(&bytes) == crate::SourceKind::Script {
            return Err(Error::InvalidInput(
                "this is a JavaScript script, not a wasi:cli command: call it with \
                 `burncache call`"
                    .to_string(),
            ));
        }
        check_is_component(&bytes)?;
        let inner = self.inner.clone();
        crate::cache::blocking(move || {
            let component = Component::new(&inner.engine, &bytes)
                .map_err(|e| Error::CompileFailed(format!("{e:#}")))?;
            let pre = inner
                .linker
                .instantiate_pre(&component)
                .map_err(|e| Error::CompileFailed(format!("cannot link: {e:#}")))?;
            CommandPre::new(pre).map_err(|e| {
                Error::InvalidInput(format!(
                    "not a wasi:cli command (it does not export `wasi:cli/run`): {e:#}"
                ))
            })
        })
        .await
    }
}

/// A command's WASI context: its arguments and allowed environment, stdio passed
/// through under the output budget, and still no filesystem or network.
fn command_wasi(options: &RunOptions, budget: &OutputBudget) -> WasiCtx {
    let mut wasi = WasiCtx::builder();
    wasi.arg(&options.program)
        .args(&options.args)
        .envs(&options.env)
        .stdout(PassThrough::new(tokio::io::stdout, budget.clone()))
        .stderr(PassThrough::new(tokio::io::stderr, budget.clone()))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    wasi.build()
}
