//! `burncache compose`: plug burn-cache over HTTP into a guest, for other hosts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

/// Make a guest that calls components by digest run under any wasi:http host.
///
/// Plugs a client component into the guest's `burncache:host/burn-cache` import: each
/// `execute` (and `execute-batch`, `register`, `register-by-hash`, `forget`) becomes a
/// request to the burncache server at --server, and its errors come back as the
/// `error` case of their kind. The output imports only WASI, so `wasmtime serve -S
/// cli OUT.wasm` runs it. Its outgoing requests go to the server: a host with an
/// allow-list must allow it.
///
/// Example:
///   burncache compose http_caller.wasm --server http://127.0.0.1:8080 -o composed.wasm
///   wasmtime serve -S cli composed.wasm
#[derive(Args, Debug)]
pub struct ComposeCommand {
    /// The guest component, importing `burncache:host/burn-cache`.
    guest: PathBuf,
    /// The burncache server's base URL (http or https).
    #[arg(long, value_name = "URL")]
    server: String,
    /// Where to write the composed component.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

impl ComposeCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let guest = super::read(&self.guest)?;
        let composed = burncache::compose(&guest, &self.server)?;
        // Written beside the output and renamed into place: a reader never sees half
        // a component.
        let name = self
            .output
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let partial = self
            .output
            .with_file_name(format!(".{name}.{}.partial", std::process::id()));
        std::fs::write(&partial, &composed)
            .and_then(|()| std::fs::rename(&partial, &self.output))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&partial);
            })
            .with_context(|| format!("write {}", self.output.display()))?;
        eprintln!(
            "wrote {} ({} bytes): {} calling {}",
            self.output.display(),
            composed.len(),
            self.guest.display(),
            self.server.trim_end_matches('/')
        );
        Ok(ExitCode::SUCCESS)
    }
}
