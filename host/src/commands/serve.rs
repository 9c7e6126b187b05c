//! `burncache serve`: the HTTP server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use burncache::server::{ServerConfig, serve};
use burncache::{Ceilings, Limits};
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
    #[arg(long, env = "BURNCACHE_ADMIN_TOKEN", hide_env_values = true,
          value_parser = non_empty, conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// A file holding the admin token (its first line), so the token is not shown
    /// in the process list.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// The most requests running guest code at once; more get 503 at once.
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_in_flight: u32,
    /// The most of those one client address may hold [default: half of
    /// --max-in-flight]; behind a proxy, raise it to --max-in-flight.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_in_flight_per_client: Option<u32>,
    /// The most connections open at once; more are closed as they arrive.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// The most of those one client address may hold [default: half of
    /// --max-connections]; behind a proxy, raise it to --max-connections.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections_per_client: Option<u32>,
    /// Ready this component (a digest in the store) before reporting ready on
    /// /readyz, so the node takes traffic warm (repeatable)
    #[arg(long, value_name = "DIGEST", value_parser = parse_digest)]
    preload: Vec<burncache::Digest>,
    /// How long a client may leave an answer unread (taking no byte of it) before
    /// its connection is closed.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = positive_duration)]
    send_timeout: Duration,
    /// How long a client may take to send a request's head, and how long an idle
    /// keep-alive connection is kept.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = positive_duration)]
    header_timeout: Duration,
    /// How long a client may take to send a call, batch or upload body.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = positive_duration)]
    body_timeout: Duration,
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
    maxima: MaximaArgs,
    #[command(flatten)]
    node: NodeArgs,
}

/// The most any request may ask for, by header or otherwise.
#[derive(Args, Debug)]
struct MaximaArgs {
    /// The most fuel a request may ask for [default: 100000000000]
    #[arg(long, value_name = "N")]
    max_fuel: Option<u64>,
    /// The highest memory ceiling a request may ask for [default: 1GiB]
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    max_memory: Option<u64>,
    /// The longest deadline a request may ask for [default: 300s]
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    max_timeout: Option<Duration>,
    /// The highest output ceiling a request may ask for [default: 256MiB]
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    max_output: Option<u64>,
}

impl MaximaArgs {
    fn maxima(&self) -> Ceilings {
        let most = Ceilings::MAXIMUM;
        Ceilings {
            fuel: self.max_fuel.unwrap_or(most.fuel),
            memory_bytes: self.max_memory.unwrap_or(most.memory_bytes),
            timeout: self.max_timeout.unwrap_or(most.timeout),
            output_bytes: self.max_output.unwrap_or(most.output_bytes),
        }
    }
}

fn non_empty(text: &str) -> Result<String, String> {
    let token = text.trim();
    if token.is_empty() {
        return Err("the admin token is empty".to_string());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the admin token must be visible ASCII (no spaces or other characters), as a \
             bearer token is"
                .to_string(),
        );
    }
    Ok(token.to_string())
}

fn parse_digest(text: &str) -> Result<burncache::Digest, String> {
    burncache::Digest::parse(text.trim()).map_err(|e| e.to_string())
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match super::parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than zero".to_string()),
        d => Ok(d),
    }
}

/// Descriptors kept for what is not a connection: the store, artifacts, logs.
const FILES_IN_RESERVE: u64 = 64;

/// Raises the soft limit on open files to the hard one: the usual soft limit (1024)
/// is no more than the default connection cap, and a server that runs out of
/// descriptors can no longer open its store or artifacts. Warns when even the hard
/// limit leaves too little beside `max_connections`.
fn raise_file_limit(max_connections: u32) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current != limit.maximum
        && let Err(e) = setrlimit(Resource::Nofile, raised)
    {
        tracing::debug!("cannot raise the open-files limit: {e}");
    }
    let files = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if files < u64::from(max_connections).saturating_add(FILES_IN_RESERVE) {
        tracing::warn!(
            "the open-files limit ({files}) leaves too few descriptors beside \
             --max-connections {max_connections}; lower it or raise the limit (ulimit -n)"
        );
    }
}

impl ServeCommand {
    /// The admin token: given, or read from its file.
    fn admin_token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.admin_token_file else {
            return Ok(self.admin_token.clone());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token from {}", path.display()))?;
        let token = non_empty(text.lines().next().unwrap_or_default()).map_err(|e| {
            super::ConfigError(format!("the admin token file {}: {e}", path.display()))
        })?;
        Ok(Some(token))
    }

    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let admin_token = self.admin_token()?;
        raise_file_limit(self.max_connections);
        let maxima = self.maxima.maxima();
        let cache = self.node.cache_with(|config| {
            // A default above a maximum is lowered to it.
            config.defaults = maxima.resolve(&config.defaults, &Limits::default());
            config.maxima = maxima;
            config.max_component_bytes = self.max_component_size;
            if self.max_in_flight > config.max_instances {
                tracing::warn!(
                    "--max-in-flight {} is above the node's {} instances: calls past them \
                     fail with `backend` rather than 503",
                    self.max_in_flight,
                    config.max_instances
                );
            }
        })?;
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
            admin_token,
            max_in_flight: self.max_in_flight as usize,
            max_in_flight_per_client: self.max_in_flight_per_client.map(|n| n as usize),
            max_connections: self.max_connections as usize,
            max_connections_per_client: self.max_connections_per_client.map(|n| n as usize),
            send_timeout: self.send_timeout,
            preload: self.preload.clone(),
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
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
