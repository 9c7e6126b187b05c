//! `burncache serve`: the HTTP server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use burncache::server::{ServerConfig, serve};
use clap::Args;

use super::{LimitArgs, NodeArgs};

/// Serve HTTP: a wasi:http component as `wasmtime serve` would, or the JSON API to
/// deploy, call and batch components by digest.
///
/// With COMPONENT.wasm, every request goes to that component (a fresh instance per
/// request), except /.well-known/burncache/healthz and .../metrics. Without it:
///   PUT    /v1/components                 deploy (body: component bytes)
///   GET    /v1/components/{digest}        describe
///   POST   /v1/components/{digest}/call   call (JSON or application/octet-stream)
///   POST   /v1/components/{digest}/batch  batch (a JSON array of rows)
///   DELETE /v1/components/{digest}        forget on this node
///   ANY    /v1/http/{digest}/{path...}    an HTTP guest by digest (it sees /{path...})
///   GET    /healthz, /metrics
///
/// Examples:
///   burncache serve hello.wasm
///   burncache serve --addr 0.0.0.0:8080 --admin-token "$TOKEN" --store s3://fns/prod
#[derive(Args, Debug)]
pub struct ServeCommand {
    /// A wasi:http (or burncache:host/http-udf) component to send every request to.
    component: Option<PathBuf>,
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The bearer token PUT and DELETE require. Without one, only a loopback address
    /// may be served.
    #[arg(long, env = "BURNCACHE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The most requests running guest code at once; more get 503 at once.
    #[arg(long, default_value_t = 128)]
    max_in_flight: usize,
    /// The largest component upload.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = super::parse_size)]
    max_component_size: u64,
    /// The largest call or batch body.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = super::parse_size)]
    max_input_size: u64,
    /// How long requests under way may take to finish after SIGINT or SIGTERM.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = super::parse_duration)]
    shutdown_grace: Duration,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    node: NodeArgs,
}

impl ServeCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let cache = self.node.cache()?;
        let component = match &self.component {
            Some(path) => {
                let bytes = super::read(path)?;
                let digest = cache
                    .register(&bytes)
                    .await
                    .with_context(|| format!("cannot load {}", path.display()))?;
                let inspection = burncache::inspect(&bytes)?;
                if inspection.kind != burncache::ComponentKind::Http {
                    anyhow::bail!(burncache::Error::InvalidInput(format!(
                        "{} does not export wasi:http/incoming-handler; it exports {}",
                        path.display(),
                        inspection.exports.join(", ")
                    )));
                }
                Some(digest)
            }
            None => None,
        };
        let config = ServerConfig {
            component,
            admin_token: self.admin_token,
            max_in_flight: self.max_in_flight,
            max_component_bytes: usize::try_from(self.max_component_size).unwrap_or(usize::MAX),
            max_input_bytes: usize::try_from(self.max_input_size).unwrap_or(usize::MAX),
            limits: self.limits.limits(),
            shutdown_grace: self.shutdown_grace,
        };
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("cannot listen on {}", self.addr))?;
        let local = listener
            .local_addr()
            .context("cannot read the listening address")?;
        println!("listening on http://{local}");
        std::io::stdout()
            .flush()
            .context("cannot write to stdout")?;
        serve(cache, listener, config, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
