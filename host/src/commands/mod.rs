//! The subcommands, one file each, and what they share: limit flags, reading a
//! component by file or digest, and exit codes.

mod batch;
mod cache;
mod call;
mod completion;
mod compose;
mod config;
mod deploy;
mod hash;
mod inspect;
mod ls;
mod map;
mod parquet_footer;
mod run;
mod serve;
mod sql;
mod wasmtime;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use burncache::{BurnCache, Config, Digest, Error, ErrorKind, Limits, Store};
use clap::{Args, Parser, Subcommand};

/// Exit code for failures outside the error classes: I/O, a bad flag value.
pub const EXIT_OTHER: u8 = 1;
/// Exit code of `batch` when the batch ran but some rows failed.
pub const EXIT_SOME_ROWS_FAILED: u8 = 3;
/// Exit code for a configuration that cannot work (an unknown store URL scheme).
pub const EXIT_CONFIG: u8 = 4;

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   other failure (a file cannot be read, a bad flag value)
  2   usage error
  3   batch: the batch ran, but some rows failed
  4   invalid configuration (a malformed store URL, an unknown scheme)
  10  not-found          17  trap
  11  invalid-digest     18  guest (the guest returned an error)
  12  compile-failed     19  invalid-input
  13  fuel-exhausted     20  permission-denied
  14  memory-limit       21  depth-exceeded
  15  timeout            22  backend
  16  output-too-large   23  integrity
`run` exits with the command's own exit code when it runs to completion.";

/// Run WebAssembly components by content address.
#[derive(Parser, Debug)]
#[command(name = "burncache", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object a
    /// line) for log pipelines
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text,
          env = "BURNCACHE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Send traces (a span per request, fetch, compile and guest call) to this
    /// OpenTelemetry collector over OTLP/HTTP, e.g. `http://127.0.0.1:4318`; the
    /// `OTEL_EXPORTER_OTLP_*` variables set the rest. Needs the `otlp` feature
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "BURNCACHE_OTLP_ENDPOINT"
    )]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    Hash(hash::HashCommand),
    Call(call::CallCommand),
    Batch(batch::BatchCommand),
    Map(map::MapCommand),
    Sql(sql::SqlCommand),
    Run(run::RunCommand),
    Inspect(inspect::InspectCommand),
    Deploy(deploy::DeployCommand),
    Ls(ls::LsCommand),
    Cache(cache::CacheCommand),
    Compose(compose::ComposeCommand),
    Serve(Box<serve::ServeCommand>),
    Config(config::ConfigCommand),
    Completion(completion::CompletionCommand),
    Man(completion::ManCommand),
}

impl Cli {
    /// The log level when `RUST_LOG` says nothing: a server logs each request.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Serve(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Hash(c) => c.run(),
            Command::Call(c) => c.run().await,
            Command::Batch(c) => c.run().await,
            Command::Map(c) => c.run().await,
            Command::Sql(c) => c.run(),
            Command::Run(c) => c.run().await,
            Command::Inspect(c) => c.run(),
            Command::Deploy(c) => c.run().await,
            Command::Ls(c) => c.run().await,
            Command::Cache(c) => c.run(),
            Command::Compose(c) => c.run(),
            Command::Serve(c) => c.run(self.log_format).await,
            Command::Config(c) => c.run(),
            Command::Completion(c) => c.run(),
            Command::Man(c) => c.run(),
        }
    }
}

/// Per-call ceilings, shared by every command that runs guest code.
#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Fuel the call may burn (about one unit per instruction) [default: 1000000000]
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Memory ceiling, e.g. `64MiB` [default: 64MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// Wall-clock deadline, e.g. `500ms`, `2s` [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Output ceiling, e.g. `1MiB` [default: 16MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    output_limit: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            memory_bytes: self.memory,
            timeout: self.timeout,
            output_bytes: self.output_limit,
        }
    }
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{e} (try `64MiB`, `512KiB` or a number of bytes)"))
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    /// Longer than any timeout or grace period means anything by; short enough
    /// that adding it to the clock cannot overflow.
    const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);
    let duration =
        humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (try `500ms` or `2s`)"))?;
    if duration > LONGEST {
        return Err("must be at most a year (366d)".to_string());
    }
    Ok(duration)
}

/// Components to register before the call, so that the called guest can reach them
/// by digest through `burn-cache`.
#[derive(Args, Debug, Clone, Default)]
pub struct WithArgs {
    /// Also register this component file first (repeatable): guests can then call it
    /// by digest.
    #[arg(long = "with", value_name = "FILE.wasm")]
    with: Vec<std::path::PathBuf>,
}

/// Where this node keeps component bytes and compiled code.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// The object store: file:///path, s3://bucket/prefix or memory://name
    /// [default: file://<data dir>/burncache/store]
    #[arg(long, value_name = "URL", env = "BURNCACHE_STORE")]
    store: Option<String>,
    /// Where compiled code is kept across runs: a directory of this user's that no
    /// one else may write [default: <cache dir>/burncache/artifacts; none without a
    /// home directory]
    #[arg(long, value_name = "DIR", env = "BURNCACHE_ARTIFACTS")]
    artifacts: Option<std::path::PathBuf>,
    /// The key artifacts are authenticated with: a file of 64 hex digits, mode 0600;
    /// nodes given the same key can use each other's artifacts [default: node.key in
    /// the artifact directory, made on first use]
    #[arg(long, value_name = "FILE", env = "BURNCACHE_ARTIFACT_KEY_FILE")]
    artifact_key_file: Option<std::path::PathBuf>,
    /// The cluster key (a file of 64 hex digits, mode 0600): compiled code is shared
    /// through the store, sealed under it, so a cluster compiles each component once.
    /// Without one, nothing compiled is read from the store
    #[arg(long, value_name = "FILE", env = "BURNCACHE_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<std::path::PathBuf>,
    /// The most compiled artifacts kept; the least recently used are deleted past it
    /// [default: 4GiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    artifacts_max_size: Option<u64>,
    /// The most components held in memory; the least recently used are dropped past
    /// it, and loaded again when called [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_held: Option<u32>,
    /// The most memory held components take (their bytes and compiled code)
    /// [default: 2GiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_held_size: Option<u64>,
    /// How long a digest the store did not have is answered `not-found` without
    /// asking the store again (0s: always ask) [default: 2s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    not_found_ttl: Option<std::time::Duration>,
}

impl NodeArgs {
    /// Fills what the flags and environment leave unset from a config file.
    fn overlay(&mut self, file: &config::NodeFile) {
        let file = file.clone();
        self.store = self.store.take().or(file.store);
        self.artifacts = self.artifacts.take().or(file.artifacts);
        self.artifact_key_file = self.artifact_key_file.take().or(file.artifact_key_file);
        self.cluster_key_file = self.cluster_key_file.take().or(file.cluster_key_file);
        self.artifacts_max_size = self
            .artifacts_max_size
            .or(file.artifacts_max_size.map(|s| s.0));
        self.max_held = self.max_held.or(file.max_held.map(|n| n.0));
        self.max_held_size = self.max_held_size.or(file.max_held_size.map(|s| s.0));
        self.not_found_ttl = self.not_found_ttl.or(file.not_found_ttl.map(|d| d.0));
    }

    fn store(&self) -> anyhow::Result<Store> {
        let url = self
            .store
            .clone()
            .or_else(Store::default_url)
            .ok_or_else(|| {
                anyhow::Error::new(ConfigError(
                    "there is no data directory (no home directory) for the default store; \
                     give --store URL"
                        .to_string(),
                ))
            })?;
        Store::from_url(&url).map_err(|e| match e {
            Error::InvalidInput(why) => anyhow::Error::new(ConfigError(why)),
            other => anyhow::Error::new(other),
        })
    }

    /// The artifact directory, if there is one.
    fn artifact_dir(&self) -> Option<std::path::PathBuf> {
        self.artifacts
            .clone()
            .or_else(burncache::default_artifact_dir)
    }

    /// The artifact directory, or a configuration error when there is none.
    pub(crate) fn artifact_dir_or_fail(&self) -> anyhow::Result<std::path::PathBuf> {
        self.artifact_dir().ok_or_else(|| {
            anyhow::Error::new(ConfigError(
                "there is no artifact directory (no home directory); give --artifacts DIR"
                    .to_string(),
            ))
        })
    }

    /// A cache for this invocation, on this node's store and artifacts.
    fn cache(&self) -> anyhow::Result<BurnCache> {
        self.cache_with(|_| {})
    }

    /// A cache as [`NodeArgs::cache`] makes it, with settings of the caller's.
    fn cache_with(&self, adjust: impl FnOnce(&mut Config)) -> anyhow::Result<BurnCache> {
        let artifact_dir = self.artifact_dir();
        if artifact_dir.is_none() {
            tracing::warn!(
                "no cache directory (no home?) and no --artifacts: compiling in every run"
            );
        }
        let defaults = Config::default();
        let mut config = Config {
            store: Some(self.store()?),
            artifact_dir,
            artifact_key_file: self.artifact_key_file.clone(),
            cluster_key_file: self.cluster_key_file.clone(),
            artifact_max_bytes: self
                .artifacts_max_size
                .unwrap_or(defaults.artifact_max_bytes),
            max_held: self.max_held.map_or(defaults.max_held, |n| n as usize),
            max_held_bytes: self.max_held_size.unwrap_or(defaults.max_held_bytes),
            not_found_ttl: self.not_found_ttl.unwrap_or(defaults.not_found_ttl),
            ..defaults
        };
        adjust(&mut config);
        Ok(BurnCache::with_config(config)?)
    }
}

/// A command line burncache does not take, with the reason: exit code 2, as clap's
/// own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Exit code for a command line burncache does not take.
pub const EXIT_USAGE: u8 = 2;

/// A setting that cannot work (an unknown store URL scheme, say): exit code 4.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// A cache for one CLI invocation, holding the `--with` components.
async fn cache(node: &NodeArgs, with: &WithArgs) -> anyhow::Result<BurnCache> {
    let cache = node.cache()?;
    for path in &with.with {
        cache
            .register(&read(path)?)
            .await
            .with_context(|| format!("cannot register {}", path.display()))?;
    }
    Ok(cache)
}

/// Registers the component named on the command line: a file of component bytes, or
/// the digest of a component this node can find.
async fn register(cache: &BurnCache, component: &str) -> anyhow::Result<Digest> {
    let path = Path::new(component);
    if path.is_file() {
        let bytes = read(path)?;
        return Ok(cache.register(&bytes).await?);
    }
    let looks_like_a_path = component.contains(['/', '\\'])
        || component.ends_with(".wasm")
        || component.ends_with(".js");
    if looks_like_a_path {
        anyhow::bail!("no such file: {component}");
    }
    let digest = Digest::parse(component)?;
    Ok(cache.register_by_hash(&digest).await?)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The library error somewhere in the chain, if any.
fn library_error(err: &anyhow::Error) -> Option<&Error> {
    err.chain().find_map(|e| e.downcast_ref::<Error>())
}

/// The exit code for an error: one per error class, 4 for configuration, 1 for
/// anything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<ConfigError>()) {
        return EXIT_CONFIG;
    }
    if err.chain().any(|e| e.is::<UsageError>()) {
        return EXIT_USAGE;
    }
    library_error(err).map_or(EXIT_OTHER, |e| kind_exit_code(e.kind()))
}

/// The exit code of an error class.
pub fn kind_exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => 10,
        ErrorKind::InvalidDigest => 11,
        ErrorKind::CompileFailed => 12,
        ErrorKind::FuelExhausted => 13,
        ErrorKind::MemoryLimit => 14,
        ErrorKind::Timeout => 15,
        ErrorKind::OutputTooLarge => 16,
        ErrorKind::Trap => 17,
        ErrorKind::Guest => 18,
        ErrorKind::InvalidInput => 19,
        ErrorKind::PermissionDenied => 20,
        ErrorKind::DepthExceeded => 21,
        ErrorKind::Backend => 22,
        ErrorKind::Integrity => 23,
        _ => EXIT_OTHER,
    }
}

/// What to try next, for the error classes where there is something to try.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    Some(match library_error(err)?.kind() {
        ErrorKind::NotFound => {
            "deploy the component (`burncache deploy FILE --store URL`), or pass its .wasm file instead of the digest"
        }
        ErrorKind::Backend => {
            "check that the store is reachable, the bucket exists, and the AWS_* settings for s3://"
        }
        ErrorKind::Integrity => {
            "the stored object is not what its name says: remove it from the store and deploy the component again"
        }
        ErrorKind::InvalidDigest => {
            "a digest is 64 lower-case hex characters; `burncache hash FILE` prints one"
        }
        ErrorKind::FuelExhausted => "raise the budget with --fuel",
        ErrorKind::MemoryLimit => "raise the ceiling with --memory",
        ErrorKind::Timeout => "raise the deadline with --timeout",
        ErrorKind::OutputTooLarge => "raise the ceiling with --output-limit",
        ErrorKind::InvalidInput => {
            "check the input and the component: `burncache inspect` shows what a component is"
        }
        _ => return None,
    })
}
