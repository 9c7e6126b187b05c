//! `burncache hash`: print a file's digest.

use std::path::PathBuf;
use std::process::ExitCode;

use burncache::Digest;
use clap::Args;

/// Print the digest of a file: the same hex `sha256sum` prints.
///
/// Example:
///   burncache hash add_one.wasm
#[derive(Args, Debug)]
pub struct HashCommand {
    /// The file to hash.
    file: PathBuf,
}

impl HashCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let bytes = super::read(&self.file)?;
        println!("{}", Digest::of(&bytes));
        Ok(ExitCode::SUCCESS)
    }
}
