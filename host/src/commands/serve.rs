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

use super::config::{
    Count, Depth, DigestText, Dur, GuestsFile, LimitsFile, NodeFile, OutboundFile, Pattern,
    Positive, ServeFile, Size,
};
use super::wasmtime::{Mapped, WasmtimeArgs};
use super::{LimitArgs, NodeArgs, UsageError};

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
    /// Read settings from this TOML file (keys are the flags' names; see the README,
    /// "Configuration"); flags and environment variables override it.
    #[arg(long, value_name = "FILE", env = "BURNCACHE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the settings the server would run with (flags, environment, config
    /// file and defaults together) as a config file, and exit.
    #[arg(long)]
    print_config: bool,
    /// The address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The bearer token PUT and DELETE require. Without one, only a loopback address
    /// may be served.
    #[arg(long, env = "BURNCACHE_ADMIN_TOKEN", hide_env_values = true,
          value_parser = non_empty, conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// A file holding the admin token (its first line), so the token is not shown
    /// in the process list.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// The most requests running guest code at once; more get 503 at once
    /// [default: 128]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_in_flight: Option<u32>,
    /// The most of those one client address may hold [default: half of
    /// --max-in-flight]; behind a proxy, raise it to --max-in-flight.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_in_flight_per_client: Option<u32>,
    /// The most connections open at once; more are closed as they arrive
    /// [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: Option<u32>,
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
    /// its connection is closed [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    send_timeout: Option<Duration>,
    /// How long a client may take to send a request's head, and how long an idle
    /// keep-alive connection is kept [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    header_timeout: Option<Duration>,
    /// How long a client may take to send a call, batch or upload body [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    body_timeout: Option<Duration>,
    /// The largest component upload [default: 64MiB]
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    max_component_size: Option<u64>,
    /// The largest call or batch body [default: 16MiB]
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    max_input_size: Option<u64>,
    /// How long requests under way may take to finish after SIGINT or SIGTERM
    /// [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = super::parse_duration)]
    shutdown_grace: Option<Duration>,
    /// How many guest instances may be alive at once (the instance pool's size)
    /// [default: 256]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_instances: Option<u32>,
    /// How deep guests may nest calls to other components (0: not at all)
    /// [default: 8]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    max_depth: Option<u32>,
    /// Let guests register new components and forget them through burn-cache (off:
    /// guests run what the operator deployed, nothing more)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_guest_register: Option<bool>,
    /// Let guests send HTTP requests to what this pattern matches (repeatable):
    /// `https://api.example.com`, `http://127.0.0.1:8080`, `https://*.example.com`,
    /// `*://*:*`. Without any, every outgoing request is denied
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    allow_outbound: Vec<burncache::AllowedOutbound>,
    /// Let function guests (not only HTTP guests) send what --allow-outbound allows
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_outbound_from_functions: Option<bool>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    maxima: MaximaArgs,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    wasmtime: WasmtimeArgs,
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

fn parse_pattern(text: &str) -> Result<burncache::AllowedOutbound, String> {
    burncache::AllowedOutbound::parse(text.trim()).map_err(|e| e.to_string())
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
    /// The settings the flags (and their environment variables) give, as a config
    /// file would spell them.
    fn flags(&self, mapped: &Mapped) -> ServeFile {
        let limits = &self.limits;
        let maxima = &self.maxima;
        let node = &self.node;
        // Paths given on the command line are the working directory's; made absolute
        // so that printed settings read back the same from any file's directory.
        let absolute = |path: &Option<PathBuf>| {
            path.as_ref().map(|p| {
                std::env::current_dir()
                    .map(|dir| dir.join(p))
                    .unwrap_or_else(|_| p.clone())
            })
        };
        ServeFile {
            component: absolute(&self.component),
            addr: self.addr,
            admin_token_file: absolute(&self.admin_token_file),
            max_in_flight: self.max_in_flight.or(mapped.max_in_flight).map(Count),
            max_in_flight_per_client: self.max_in_flight_per_client.map(Count),
            max_connections: self.max_connections.or(mapped.max_connections).map(Count),
            max_connections_per_client: self.max_connections_per_client.map(Count),
            preload: self.preload.iter().copied().map(DigestText).collect(),
            send_timeout: self.send_timeout.map(Positive),
            header_timeout: self.header_timeout.map(Positive),
            body_timeout: self.body_timeout.map(Positive),
            max_component_size: self.max_component_size.map(Size),
            max_input_size: self.max_input_size.map(Size),
            shutdown_grace: self.shutdown_grace.map(Dur),
            limits: LimitsFile {
                fuel: limits.fuel.or(mapped.fuel),
                memory: limits.memory.or(mapped.memory).map(Size),
                timeout: limits.timeout.or(mapped.timeout).map(Positive),
                output: limits.output_limit.map(Size),
            },
            maxima: LimitsFile {
                fuel: maxima.max_fuel,
                memory: maxima.max_memory.or(mapped.max_memory).map(Size),
                timeout: maxima.max_timeout.map(Positive),
                output: maxima.max_output.map(Size),
            },
            node: NodeFile {
                store: node.store.clone(),
                artifacts: absolute(&node.artifacts),
                artifact_key_file: absolute(&node.artifact_key_file),
                cluster_key_file: absolute(&node.cluster_key_file),
                artifacts_max_size: node.artifacts_max_size.map(Size),
                max_held: node.max_held.map(Count),
                max_held_size: node.max_held_size.map(Size),
                not_found_ttl: node.not_found_ttl.map(Dur),
            },
            guests: GuestsFile {
                max_instances: self.max_instances.or(mapped.max_instances).map(Count),
                pooling: mapped.pooling,
                max_depth: self.max_depth.map(Depth),
                allow_register: self.allow_guest_register,
            },
            outbound: OutboundFile {
                allow: self.allow_outbound.iter().cloned().map(Pattern).collect(),
                functions: self.allow_outbound_from_functions,
            },
        }
    }

    /// The admin token: given by flag or environment, or read from its file.
    fn admin_token(&self, file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
        if self.admin_token.is_some() {
            return Ok(self.admin_token.clone());
        }
        let Some(path) = file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token from {}", path.display()))?;
        let token = non_empty(text.lines().next().unwrap_or_default()).map_err(|e| {
            super::ConfigError(format!("the admin token file {}: {e}", path.display()))
        })?;
        Ok(Some(token))
    }

    pub async fn run(mut self, log_format: super::LogFormat) -> anyhow::Result<ExitCode> {
        let file = match &self.config {
            Some(path) => ServeFile::load(path)?,
            None => ServeFile::default(),
        };
        // `wasmtime serve`'s options, in burncache's terms (refused ones stop here).
        let component_mode = self.component.is_some() || file.component.is_some();
        let mapped = self
            .wasmtime
            .map(component_mode)
            .map_err(|e| anyhow::Error::new(UsageError(e)))?;
        // Flags and environment first, then the file, then the defaults.
        let settings = self.flags(&mapped).or(file).or(ServeFile::defaults());
        if self.print_config {
            print!(
                "{}",
                toml::to_string(&settings).context("cannot write the settings")?
            );
            return Ok(ExitCode::SUCCESS);
        }
        self.node.overlay(&settings.node);
        let admin_token = self.admin_token(settings.admin_token_file.as_ref())?;
        let built_in = ServeFile::defaults();
        let count = |n: Option<Count>, default: Option<Count>| n.or(default).map_or(1, |n| n.0);
        let max_connections = count(settings.max_connections, built_in.max_connections);
        let max_in_flight = count(settings.max_in_flight, built_in.max_in_flight);
        raise_file_limit(max_connections);
        let ceilings = |given: &LimitsFile, most: Ceilings| Ceilings {
            fuel: given.fuel.unwrap_or(most.fuel),
            memory_bytes: given.memory.map_or(most.memory_bytes, |s| s.0),
            timeout: given.timeout.map_or(most.timeout, |d| d.0),
            output_bytes: given.output.map_or(most.output_bytes, |s| s.0),
        };
        let maxima = ceilings(&settings.maxima, Ceilings::MAXIMUM);
        let server_defaults = ServerConfig::default();
        let max_component_size = settings
            .max_component_size
            .map_or(server_defaults.max_component_bytes as u64, |s| s.0);
        let guests = &settings.guests;
        let outbound = &settings.outbound;
        let cache = self.node.cache_with(|config| {
            // A default above a maximum is lowered to it.
            config.defaults = maxima.resolve(&config.defaults, &Limits::default());
            config.maxima = maxima;
            config.max_component_bytes = max_component_size;
            if let Some(n) = guests.max_instances {
                config.max_instances = n.0;
            }
            if let Some(pooling) = guests.pooling {
                config.pooling = pooling;
            }
            if let Some(depth) = guests.max_depth {
                config.max_depth = depth.0;
            }
            config.allow_guest_register = guests.allow_register.unwrap_or(false);
            config.http_guests = burncache::HttpGuestGrants {
                env: mapped.env.clone(),
                dirs: mapped.dirs.clone(),
            };
            config.outbound = burncache::OutboundPolicy {
                allow: outbound.allow.iter().map(|p| p.0.clone()).collect(),
                functions: outbound.functions.unwrap_or(false),
            };
            if max_in_flight > config.max_instances {
                tracing::warn!(
                    "--max-in-flight {max_in_flight} is above the node's {} instances: \
                     calls past them fail with `backend` rather than 503",
                    config.max_instances
                );
            }
        })?;
        let component = match &settings.component {
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
        let limits = &settings.limits;
        let config = ServerConfig {
            component,
            admin_token,
            max_in_flight: max_in_flight as usize,
            max_in_flight_per_client: settings.max_in_flight_per_client.map(|n| n.0 as usize),
            max_connections: max_connections as usize,
            max_connections_per_client: settings.max_connections_per_client.map(|n| n.0 as usize),
            send_timeout: settings
                .send_timeout
                .map_or(server_defaults.send_timeout, |d| d.0),
            preload: settings.preload.iter().map(|d| d.0).collect(),
            header_timeout: settings
                .header_timeout
                .map_or(server_defaults.header_timeout, |d| d.0),
            body_timeout: settings
                .body_timeout
                .map_or(server_defaults.body_timeout, |d| d.0),
            max_component_bytes: usize::try_from(max_component_size).unwrap_or(usize::MAX),
            max_input_bytes: settings
                .max_input_size
                .map_or(server_defaults.max_input_bytes, |s| {
                    usize::try_from(s.0).unwrap_or(usize::MAX)
                }),
            limits: Limits {
                fuel: limits.fuel,
                memory_bytes: limits.memory.map(|s| s.0),
                timeout: limits.timeout.map(|d| d.0),
                output_bytes: limits.output.map(|s| s.0),
            },
            shutdown_grace: settings
                .shutdown_grace
                .map_or(server_defaults.shutdown_grace, |d| d.0),
        };
        let addr = settings
            .addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener
            .local_addr()
            .context("cannot read the listening address")?;
        println!("listening on http://{local}");
        // The line `wasmtime serve` users (and their scripts) wait for: as it prints
        // it, or as a log line where the log is JSON.
        match log_format {
            super::LogFormat::Text => eprintln!("Serving HTTP on http://{local}/"),
            super::LogFormat::Json => tracing::info!("Serving HTTP on http://{local}/"),
        }
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
