//! `burncache serve --config FILE`: every `serve` setting from a TOML file, and
//! `burncache config check FILE`, which reports what is wrong in one with its line.
//!
//! A setting is taken from, first to last: its flag, its environment variable, the
//! file, the built-in default. Keys are the flags' names (`max-in-flight = 64` for
//! `--max-in-flight 64`); sizes are a number of bytes or a string such as `"64MiB"`,
//! durations a string such as `"500ms"`. Relative paths are taken from the file's
//! directory. Secrets are named by file (`admin-token-file`), never written inline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Check configuration files.
#[derive(Args, Debug)]
pub struct ConfigCommand {
    #[command(subcommand)]
    command: ConfigSubcommand,
}

#[derive(Subcommand, Debug)]
enum ConfigSubcommand {
    /// Read a `serve --config` file and report what is wrong in it, with its line;
    /// exits 0 when it is sound, 4 when it is not.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

impl ConfigCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            ConfigSubcommand::Check { file } => {
                ServeFile::load(&file)?;
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// A `serve --config` file. Every key is optional.
#[derive(Deserialize, Serialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServeFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_client: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<Count>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preload: Vec<DigestText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<Positive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Positive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<Positive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_component_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_input_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<Dur>,
    /// The ceilings a call gets when it asks for none (`--fuel`, `--memory`, ...).
    #[serde(default)]
    pub limits: LimitsFile,
    /// The most a call may ask for (`--max-fuel`, `--max-memory`, ...).
    #[serde(default)]
    pub maxima: LimitsFile,
    /// Where the node keeps component bytes and compiled code.
    #[serde(default)]
    pub node: NodeFile,
    /// What guests get: the instance pool, nesting depth, permissions.
    #[serde(default)]
    pub guests: GuestsFile,
    /// Where guests' outgoing HTTP requests may go.
    #[serde(default)]
    pub outbound: OutboundFile,
}

/// `[outbound]`: the allow-list for guests' outgoing HTTP.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct OutboundFile {
    /// Patterns such as `https://api.example.com` (`--allow-outbound`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Pattern>,
    /// Whether function guests may send requests too
    /// (`--allow-outbound-from-functions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<bool>,
}

impl OutboundFile {
    fn or(self, lower: OutboundFile) -> OutboundFile {
        OutboundFile {
            allow: if self.allow.is_empty() {
                lower.allow
            } else {
                self.allow
            },
            functions: or(self.functions, lower.functions),
        }
    }
}

/// An outbound pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern(pub burncache::AllowedOutbound);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let text = String::deserialize(d)?;
        burncache::AllowedOutbound::parse(text.trim())
            .map(Pattern)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Per-call ceilings: `[limits]` and `[maxima]`.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct LimitsFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Positive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Size>,
}

/// `[node]`: the store and what is kept of compiled code.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct NodeFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts_max_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_held: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_held_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_found_ttl: Option<Dur>,
}

/// `[guests]`: the instance pool, nesting, and what guests may do.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct GuestsFile {
    /// Instances alive at once (the pool's size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<Count>,
    /// Whether instance slots are pre-allocated (the pooling allocator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooling: Option<bool>,
    /// How deep `burn-cache.execute` calls may nest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<Depth>,
    /// Whether guests may register components and forget them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_register: Option<bool>,
}

impl ServeFile {
    /// Reads and checks `path`. Errors name the file, and the line and column of
    /// what is wrong.
    pub(crate) fn load(path: &Path) -> anyhow::Result<ServeFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        })?;
        let mut file: ServeFile = toml::from_str(&text)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), located(&e))))?;
        file.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        if let Some(url) = &file.node.store
            && let Err(e) = burncache::Store::from_url(url)
        {
            return Err(ConfigError(format!("{}: [node] store: {e}", path.display())).into());
        }
        Ok(file)
    }

    /// Relative paths are the file's directory's.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
            {
                *path = dir.join(&*path);
            }
        };
        resolve(&mut self.component);
        resolve(&mut self.admin_token_file);
        resolve(&mut self.node.artifacts);
        resolve(&mut self.node.artifact_key_file);
        resolve(&mut self.node.cluster_key_file);
    }
}

/// A TOML error as the parser reports it: its line and column, the line itself, and
/// what is wrong there.
fn located(e: &toml::de::Error) -> String {
    e.to_string().trim_end().to_string()
}

/// A size: a number of bytes, or a string such as `"64MiB"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Bytes(u64),
            Text(String),
        }
        match Given::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: a number of bytes or a string like \"64MiB\"",
            )
        })? {
            Given::Bytes(n) => Ok(Size(n)),
            Given::Text(text) => super::parse_size(&text)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A duration, as a string such as `"500ms"` or `"2s"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

/// A duration longer than zero.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Positive(pub Duration);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Positive, D::Error> {
        match Dur::deserialize(d)?.0 {
            d if d.is_zero() => Err(serde::de::Error::custom("must be longer than zero")),
            d => Ok(Positive(d)),
        }
    }
}

impl Serialize for Positive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Dur(self.0).serialize(s)
    }
}

/// A count from 1 to a million.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        match u64::deserialize(d)? {
            n @ 1..=1_000_000 => Ok(Count(n as u32)),
            n => Err(serde::de::Error::custom(format!(
                "{n} is out of range: from 1 to 1000000"
            ))),
        }
    }
}

impl Serialize for Count {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

/// A nesting depth, from 0 (guests may not call others) to 64.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Depth(pub u32);

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Depth, D::Error> {
        match u64::deserialize(d)? {
            n @ 0..=64 => Ok(Depth(n as u32)),
            n => Err(serde::de::Error::custom(format!(
                "{n} is out of range: from 0 to 64"
            ))),
        }
    }
}

impl Serialize for Depth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

/// A component's digest.
#[derive(Debug, Clone)]
pub(crate) struct DigestText(pub burncache::Digest);

impl<'de> Deserialize<'de> for DigestText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DigestText, D::Error> {
        let text = String::deserialize(d)?;
        burncache::Digest::parse(text.trim())
            .map(DigestText)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for DigestText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// `a`, or where it has nothing, `b`.
fn or<T>(a: Option<T>, b: Option<T>) -> Option<T> {
    a.or(b)
}

impl LimitsFile {
    fn or(self, lower: LimitsFile) -> LimitsFile {
        LimitsFile {
            fuel: or(self.fuel, lower.fuel),
            memory: or(self.memory, lower.memory),
            timeout: or(self.timeout, lower.timeout),
            output: or(self.output, lower.output),
        }
    }
}

impl NodeFile {
    fn or(self, lower: NodeFile) -> NodeFile {
        NodeFile {
            store: or(self.store, lower.store),
            artifacts: or(self.artifacts, lower.artifacts),
            artifact_key_file: or(self.artifact_key_file, lower.artifact_key_file),
            cluster_key_file: or(self.cluster_key_file, lower.cluster_key_file),
            artifacts_max_size: or(self.artifacts_max_size, lower.artifacts_max_size),
            max_held: or(self.max_held, lower.max_held),
            max_held_size: or(self.max_held_size, lower.max_held_size),
            not_found_ttl: or(self.not_found_ttl, lower.not_found_ttl),
        }
    }
}

impl GuestsFile {
    fn or(self, lower: GuestsFile) -> GuestsFile {
        GuestsFile {
            max_instances: or(self.max_instances, lower.max_instances),
            pooling: or(self.pooling, lower.pooling),
            max_depth: or(self.max_depth, lower.max_depth),
            allow_register: or(self.allow_register, lower.allow_register),
        }
    }
}

impl ServeFile {
    /// These settings, with what they leave unset taken from `lower`.
    pub(crate) fn or(self, lower: ServeFile) -> ServeFile {
        ServeFile {
            component: or(self.component, lower.component),
            addr: or(self.addr, lower.addr),
            admin_token_file: or(self.admin_token_file, lower.admin_token_file),
            max_in_flight: or(self.max_in_flight, lower.max_in_flight),
            max_in_flight_per_client: or(
                self.max_in_flight_per_client,
                lower.max_in_flight_per_client,
            ),
            max_connections: or(self.max_connections, lower.max_connections),
            max_connections_per_client: or(
                self.max_connections_per_client,
                lower.max_connections_per_client,
            ),
            preload: if self.preload.is_empty() {
                lower.preload
            } else {
                self.preload
            },
            send_timeout: or(self.send_timeout, lower.send_timeout),
            header_timeout: or(self.header_timeout, lower.header_timeout),
            body_timeout: or(self.body_timeout, lower.body_timeout),
            max_component_size: or(self.max_component_size, lower.max_component_size),
            max_input_size: or(self.max_input_size, lower.max_input_size),
            shutdown_grace: or(self.shutdown_grace, lower.shutdown_grace),
            limits: self.limits.or(lower.limits),
            maxima: self.maxima.or(lower.maxima),
            node: self.node.or(lower.node),
            guests: self.guests.or(lower.guests),
            outbound: self.outbound.or(lower.outbound),
        }
    }

    /// The built-in defaults, as a file would spell them.
    pub(crate) fn defaults() -> ServeFile {
        let server = burncache::server::ServerConfig::default();
        let cache = burncache::Config::default();
        let count = |n: usize| Some(Count(u32::try_from(n).unwrap_or(u32::MAX)));
        let ceilings = |c: burncache::Ceilings| LimitsFile {
            fuel: Some(c.fuel),
            memory: Some(Size(c.memory_bytes)),
            timeout: Some(Positive(c.timeout)),
            output: Some(Size(c.output_bytes)),
        };
        ServeFile {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            max_in_flight: count(server.max_in_flight),
            max_connections: count(server.max_connections),
            send_timeout: Some(Positive(server.send_timeout)),
            header_timeout: Some(Positive(server.header_timeout)),
            body_timeout: Some(Positive(server.body_timeout)),
            max_component_size: Some(Size(server.max_component_bytes as u64)),
            max_input_size: Some(Size(server.max_input_bytes as u64)),
            shutdown_grace: Some(Dur(server.shutdown_grace)),
            limits: ceilings(cache.defaults),
            maxima: ceilings(cache.maxima),
            node: NodeFile {
                store: burncache::Store::default_url(),
                artifacts: burncache::default_artifact_dir(),
                artifact_key_file: None,
                cluster_key_file: None,
                artifacts_max_size: Some(Size(cache.artifact_max_bytes)),
                max_held: count(cache.max_held),
                max_held_size: Some(Size(cache.max_held_bytes)),
                not_found_ttl: Some(Dur(cache.not_found_ttl)),
            },
            guests: GuestsFile {
                max_instances: Some(Count(cache.max_instances)),
                pooling: Some(cache.pooling),
                max_depth: Some(Depth(cache.max_depth)),
                allow_register: Some(cache.allow_guest_register),
            },
            outbound: OutboundFile {
                allow: Vec::new(),
                functions: Some(cache.outbound.functions),
            },
            ..ServeFile::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeFile, String> {
        toml::from_str(text).map_err(|e| located(&e))
    }

    #[test]
    fn errors_carry_their_line() {
        let e =
            parse("max-in-flight = 8\n\n[limits]\nmemory = \"lots\"\n").expect_err("a bad file");
        assert!(e.contains("at line 4, column 10"), "{e}");
        let e = parse("max-in-flite = 8\n").expect_err("a bad file");
        assert!(
            e.contains("at line 1, column 1") && e.contains("max-in-flight"),
            "{e}"
        );
        let e = parse("addr = \"0.0.0.0:8080\"\nmax-connections = 0\n").expect_err("a bad file");
        assert!(
            e.contains("at line 2,") && e.contains("out of range"),
            "{e}"
        );
        let e = parse("[guests]\nmax-depth = 65\n").expect_err("a bad file");
        assert!(e.contains("at line 2,"), "{e}");
    }

    #[test]
    fn sizes_are_bytes_or_text() {
        let file =
            parse("max-input-size = 1024\nmax-component-size = \"2MiB\"\n").expect("a sound file");
        assert_eq!(file.max_input_size.map(|s| s.0), Some(1024));
        assert_eq!(file.max_component_size.map(|s| s.0), Some(2 << 20));
    }
}
