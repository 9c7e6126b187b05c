//! `burncache ls`: list the components in the store.

use std::process::ExitCode;

use clap::Args;

use super::NodeArgs;

/// List the components deployed to the store: one line each, digest and size.
///
/// Examples:
///   burncache ls
///   burncache ls --store s3://my-bucket/functions
#[derive(Args, Debug)]
pub struct LsCommand {
    #[command(flatten)]
    node: NodeArgs,
}

impl LsCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let store = self.node.store()?;
        for (digest, size) in store.list().await? {
            println!("{digest}  {size}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
