//! `burncache run`: run a `wasi:cli` command component, or a script as a program,
//! once.

use std::path::PathBuf;
use std::process::ExitCode;

use burncache::RunOptions;
use clap::Args;

use super::{LimitArgs, NodeArgs};

/// Run a wasi:cli command component, or a JavaScript script as a program, once,
/// uncached, under the same ceilings as a call. Its stdout and stderr pass through
/// (together capped by --output-limit), it sees only the --env variables given, no
/// files and no network, and its exit code becomes burncache's.
///
/// A script runs top to bottom (no exported function needed) with process.argv
/// (`burncache`, the script's name, then ARGS), process.env (only --env) and
/// process.exit(code); console.log writes to stdout, console.error to stderr; an
/// uncaught exception exits 1.
///
/// Examples:
///   burncache run hello.wasm -- --name world
///   burncache run tool.wasm --env LANG=C --timeout 5s -- input.txt
///   burncache run report.js --env TZ=UTC -- 2026-11
#[derive(Args, Debug)]
pub struct RunCommand {
    /// The command component, or a script (`.js`).
    component: PathBuf,
    /// An environment variable for the command, `KEY=VALUE`; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Where the JavaScript runtime's compiled code is kept, and the store a script's
    /// `burncache.execute` calls find components in.
    #[command(flatten)]
    node: NodeArgs,
    /// Arguments for the command.
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

impl RunCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let bytes = super::read(&self.component)?;
        let program = self
            .component
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cache = self.node.cache()?;
        let options = RunOptions {
            args: self.args,
            env: self.env,
            program,
            limits: self.limits.limits(),
        };
        let code = cache.run_command(bytes, options).await.result?;
        // Exit codes outside 0..=255 wrap as they would for a native process.
        Ok(ExitCode::from(code as u8))
    }
}
