//! `burncache run`: run a `wasi:cli` command component once.

use std::path::PathBuf;
use std::process::ExitCode;

use burncache::{BurnCache, RunOptions};
use clap::Args;

use super::LimitArgs;

/// Run a wasi:cli command component once, uncached, under the same ceilings as a
/// call. Its stdout and stderr pass through (together capped by --output-limit), it
/// sees only the --env variables given, no files and no network, and its exit code
/// becomes burncache's.
///
/// Examples:
///   burncache run hello.wasm -- --name world
///   burncache run tool.wasm --env LANG=C --timeout 5s -- input.txt
#[derive(Args, Debug)]
pub struct RunCommand {
    /// The command component.
    component: PathBuf,
    /// An environment variable for the command, `KEY=VALUE`; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    limits: LimitArgs,
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
        let cache = BurnCache::new()?;
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
