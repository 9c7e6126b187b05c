//! `burncache inspect`: describe a component.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Show a component's digest, size, kind, imports and exports, and its world as WIT.
///
/// Examples:
///   burncache inspect add_one.wasm
///   burncache inspect add_one.wasm --json
#[derive(Args, Debug)]
pub struct InspectCommand {
    /// The component file.
    file: PathBuf,
    /// Print the description as JSON.
    #[arg(long)]
    json: bool,
}

impl InspectCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let bytes = super::read(&self.file)?;
        let inspection = burncache::inspect(&bytes)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&inspection)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!("digest:  {}", inspection.digest);
        println!("size:    {} bytes", inspection.size);
        println!(
            "kind:    {}",
            serde_json::to_value(inspection.kind)?
                .as_str()
                .unwrap_or("other")
        );
        println!("imports:");
        for import in &inspection.imports {
            println!("  {import}");
        }
        println!("exports:");
        for export in &inspection.exports {
            println!("  {export}");
        }
        println!("\n{}", inspection.wit.trim_end());
        Ok(ExitCode::SUCCESS)
    }
}
