//! `burncache deploy`: check a component and publish it to the store by digest.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use burncache::Published;
use clap::Args;

use super::NodeArgs;

/// Check that a file is a component burncache can run, publish it to the store under
/// its digest, and print the digest.
///
/// Deploying the same bytes again changes nothing and prints the same digest. Any
/// node that can reach the store can then run the component by digest.
///
/// Examples:
///   burncache deploy add_one.wasm
///   burncache deploy add_one.wasm --store s3://my-bucket/functions
#[derive(Args, Debug)]
pub struct DeployCommand {
    /// The component file.
    file: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

impl DeployCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let bytes = super::read(&self.file)?;
        let cache = self.node.cache()?;
        let store = cache.store()?.url().to_string();
        let started = Instant::now();
        let deploy = cache.deploy(&bytes);
        tokio::pin!(deploy);
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let (digest, published) = loop {
            tokio::select! {
                done = &mut deploy => break done?,
                _ = ticks.tick() => eprintln!(
                    "deploy: checking and uploading {} to {store}: {}s",
                    bytesize::ByteSize::b(bytes.len() as u64),
                    started.elapsed().as_secs()
                ),
            }
        };
        let key = cache
            .store()?
            .key(&digest, burncache::SourceKind::of(&bytes));
        match published {
            Published::Created => eprintln!("deployed {key} to {store}"),
            Published::AlreadyExisted => eprintln!("already deployed: {key} in {store}"),
        }
        println!("{digest}");
        Ok(ExitCode::SUCCESS)
    }
}
