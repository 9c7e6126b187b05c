//! `burncache cache`: manage the compiled artifacts kept across runs.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::NodeArgs;

/// Show or clear the compiled code this node keeps across runs.
///
/// Examples:
///   burncache cache stats
///   burncache cache clear --artifacts /var/cache/burncache
#[derive(Args, Debug)]
pub struct CacheCommand {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Print the artifact directory, its file count and size, as JSON.
    ///
    /// Example:
    ///   burncache cache stats
    Stats {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Delete every compiled artifact (components are compiled again on next use).
    ///
    /// Example:
    ///   burncache cache clear
    Clear {
        #[command(flatten)]
        node: NodeArgs,
    },
}

impl CacheCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.action {
            Action::Stats { node } => {
                let stats = burncache::artifact_stats(&node.artifact_dir_or_fail()?)?;
                println!("{}", serde_json::to_string_pretty(&stats)?);
            }
            Action::Clear { node } => {
                let removed = burncache::clear_artifacts(&node.artifact_dir_or_fail()?)?;
                eprintln!(
                    "removed {} compiled artifacts ({}) from {}",
                    removed.files,
                    bytesize::ByteSize::b(removed.bytes),
                    removed.dir.display()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
