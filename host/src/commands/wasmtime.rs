//! `wasmtime serve`'s command line, as `burncache serve` takes it: the options that
//! mean something here are mapped onto burncache's settings, and every other one is
//! refused with the reason, never silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// `wasmtime serve` options (see `wasmtime serve --help`).
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "wasmtime serve options")]
pub struct WasmtimeArgs {
    /// WASI options, as `wasmtime serve -S`: `cli`, `http`, `common`, `inherit-env`
    #[arg(short = 'S', long = "wasi", value_name = "KEY[=VAL[,..]]")]
    wasi: Vec<String>,
    /// Wasm options, as `wasmtime serve -W`: `fuel=N`, `max-memory-size=N`,
    /// `timeout=DUR`
    #[arg(short = 'W', long = "wasm", value_name = "KEY[=VAL[,..]]")]
    wasm: Vec<String>,
    /// Tuning options, as `wasmtime serve -O`: `pooling-allocator[=y|n]`,
    /// `pooling-total-component-instances=N`, `pooling-max-memory-size=N`,
    /// `opt-level=2`, `memory-init-cow=y`
    #[arg(short = 'O', long = "optimize", value_name = "KEY[=VAL[,..]]")]
    optimize: Vec<String>,
    /// An environment variable for the component, `NAME=VAL`, or `NAME` to pass the
    /// server's own (component mode only)
    #[arg(long = "env", value_name = "NAME[=VAL]")]
    env: Vec<String>,
    /// Give the component a host directory, read and write, as `HOST_DIR` or
    /// `HOST_DIR::GUEST_DIR` (component mode only)
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]")]
    dir: Vec<String>,
    /// As `wasmtime serve`: the same as --max-in-flight
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_concurrent_requests: Option<u32>,
    /// As `wasmtime serve`: the same as --max-connections
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_concurrent_connections: Option<u32>,
    /// As `wasmtime serve`: burncache never prefixes guest output (it is logged with
    /// the request's id as a field), so this changes nothing
    #[arg(long)]
    no_logging_prefix: bool,
    /// As `wasmtime serve`: only 1, the fresh instance per request burncache always
    /// gives
    #[arg(long, value_name = "N")]
    max_instance_reuse_count: Option<u64>,

    // `wasmtime serve` options burncache refuses, each with its reason.
    #[arg(short = 'C', long = "codegen", hide = true)]
    codegen: Vec<String>,
    #[arg(short = 'D', long = "debug", hide = true)]
    debug: Vec<String>,
    #[arg(short = 'R', long = "record", hide = true)]
    record: Vec<String>,
    #[arg(short = 'H', long = "header", hide = true)]
    header: Vec<String>,
    #[arg(short = 'g', long = "gdbstub", hide = true)]
    gdbstub: Option<String>,
    #[arg(long, hide = true)]
    target: Option<String>,
    #[arg(long, hide = true)]
    allow_precompiled: bool,
    #[arg(long, hide = true)]
    profile: Option<String>,
    #[arg(long, hide = true)]
    shutdown_addr: Option<String>,
    #[arg(long, hide = true)]
    max_instance_concurrent_reuse_count: Option<String>,
    #[arg(long, hide = true)]
    idle_instance_timeout: Option<String>,
}

/// What the `wasmtime serve` options given set, in burncache's terms.
#[derive(Debug, Default)]
pub(crate) struct Mapped {
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub timeout: Option<Duration>,
    pub max_memory: Option<u64>,
    pub pooling: Option<bool>,
    pub max_instances: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub max_connections: Option<u32>,
    /// The component's environment and directories.
    pub env: Vec<(String, String)>,
    pub dirs: Vec<(PathBuf, String)>,
}

impl Mapped {
    /// Whether anything given grants the component something (component mode only).
    pub fn grants(&self) -> bool {
        !self.env.is_empty() || !self.dirs.is_empty()
    }
}

/// Why an option is refused.
fn refused(option: &str, why: &str) -> String {
    format!("burncache serve does not take `{option}`: {why}")
}

/// `KEY[=VAL][,KEY[=VAL]]...` as (key, value) pairs.
fn pairs(given: &[String]) -> impl Iterator<Item = (&str, Option<&str>)> {
    given
        .iter()
        .flat_map(|g| g.split(','))
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (kv.trim(), None),
        })
}

/// A `[=y|n]` value: none, `y`, `yes`, `true` are on; `n`, `no`, `false` off.
fn flag(option: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("y" | "yes" | "true") => Ok(true),
        Some("n" | "no" | "false") => Ok(false),
        Some(other) => Err(format!("`{option}={other}`: expected y or n")),
    }
}

fn number<T: std::str::FromStr>(option: &str, value: Option<&str>) -> Result<T, String> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("`{option}` takes a number (`{option}=N`)"))
}

fn size(option: &str, value: Option<&str>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("`{option}` takes a size (`{option}=N`)"))?;
    super::parse_size(value).map_err(|e| format!("`{option}={value}`: {e}"))
}

/// A `wasmtime` duration: seconds as a bare number, or with a unit (`100ms`, `2s`).
fn duration(option: &str, value: Option<&str>) -> Result<Duration, String> {
    let value = value.ok_or_else(|| format!("`{option}` takes a duration (`{option}=2s`)"))?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    super::parse_duration(value).map_err(|e| format!("`{option}={value}`: {e}"))
}

impl WasmtimeArgs {
    /// The options given, in burncache's terms; the first refused one is an error
    /// saying why.
    pub(crate) fn map(&self, component_mode: bool) -> Result<Mapped, String> {
        let mut mapped = Mapped::default();
        self.refuse_unsupported()?;
        for (key, value) in pairs(&self.wasi) {
            let option = format!("-S {key}");
            match key {
                "cli" | "common" | "http" => {
                    if !flag(&option, value)? {
                        return Err(refused(
                            &format!("{option}=n"),
                            "burncache links wasi:cli (sealed: no files, sockets or \
                             environment beyond what --env and --dir grant) and wasi:http \
                             for every component it serves",
                        ));
                    }
                }
                "inherit-env" => {
                    if flag(&option, value)? {
                        mapped.env.extend(std::env::vars());
                    }
                }
                "inherit-stdout" | "inherit-stderr" => {
                    if !flag(&option, value)? {
                        return Err(refused(
                            &format!("{option}=n"),
                            "a guest's output always goes to the server's log, tagged with \
                             the request's id and capped at 32 KiB a request",
                        ));
                    }
                }
                "inherit-stdin" => {
                    if flag(&option, value)? {
                        return Err(refused(&option, "guests have no stdin"));
                    }
                }
                "tcp" | "udp" | "inherit-network" | "allow-ip-name-lookup" => {
                    return Err(refused(
                        &option,
                        "guests get no sockets; let them send HTTP requests with \
                         --allow-outbound PATTERN",
                    ));
                }
                "max-resources"
                | "hostcall-fuel"
                | "max-random-size"
                | "max-component-handles"
                | "max-http-fields-size"
                | "http-outgoing-body-buffer-chunks"
                | "http-outgoing-body-chunk-size" => {
                    return Err(refused(
                        &option,
                        "burncache derives these bounds from each request's memory ceiling \
                         (--memory, or -W max-memory-size)",
                    ));
                }
                _ => {
                    return Err(refused(
                        &option,
                        "burncache provides WASI 0.2 cli and http (and burn-cache); other \
                         WASI proposals and settings are not available",
                    ));
                }
            }
        }
        for (key, value) in pairs(&self.wasm) {
            let option = format!("-W {key}");
            match key {
                "fuel" => mapped.fuel = Some(number(&option, value)?),
                "max-memory-size" => mapped.memory = Some(size(&option, value)?),
                "timeout" => mapped.timeout = Some(duration(&option, value)?),
                _ => {
                    return Err(refused(
                        &option,
                        "burncache sets the engine's wasm features and limits itself; per \
                         request it takes fuel, max-memory-size and timeout",
                    ));
                }
            }
        }
        for (key, value) in pairs(&self.optimize) {
            let option = format!("-O {key}");
            match key {
                "pooling-allocator" => mapped.pooling = Some(flag(&option, value)?),
                "pooling-total-component-instances" => {
                    mapped.max_instances = Some(number(&option, value)?);
                }
                "pooling-max-memory-size" => mapped.max_memory = Some(size(&option, value)?),
                "opt-level" if value == Some("2") => {}
                "memory-init-cow" if flag(&option, value)? => {}
                "opt-level" | "memory-init-cow" => {
                    return Err(refused(
                        &format!("{option}={}", value.unwrap_or_default()),
                        "burncache compiles every component the same way (opt-level 2, \
                         copy-on-write memory images), so that compiled code can be \
                         shared and reused",
                    ));
                }
                _ if key.starts_with("pooling-") => {
                    return Err(refused(
                        &option,
                        "burncache sizes the instance pool from its instance count: \
                         -O pooling-total-component-instances=N (or --max-instances N)",
                    ));
                }
                _ => {
                    return Err(refused(
                        &option,
                        "burncache configures the engine's memory and code generation itself",
                    ));
                }
            }
        }
        if let Some(count) = self.max_instance_reuse_count
            && count != 1
        {
            return Err(refused(
                &format!("--max-instance-reuse-count {count}"),
                "every request gets a fresh instance (a count of 1)",
            ));
        }
        mapped.max_in_flight = self.max_concurrent_requests;
        mapped.max_connections = self.max_concurrent_connections;
        for given in &self.env {
            mapped.env.push(match given.split_once('=') {
                Some((name, value)) if !name.is_empty() => (name.to_string(), value.to_string()),
                Some(_) => return Err(format!("--env {given}: expected NAME or NAME=VAL")),
                None => match std::env::var(given) {
                    Ok(value) => (given.clone(), value),
                    // As `wasmtime serve`: a variable the server does not have is left
                    // out.
                    Err(_) => continue,
                },
            });
        }
        for given in &self.dir {
            let (host, guest) = match given.split_once("::") {
                Some((host, guest)) => (host, guest),
                None => (given.as_str(), given.as_str()),
            };
            let host = PathBuf::from(host);
            if !host.is_dir() {
                return Err(format!(
                    "--dir {given}: {} is not a directory",
                    host.display()
                ));
            }
            mapped.dirs.push((host, guest.to_string()));
        }
        if mapped.grants() && !component_mode {
            return Err(
                "--env, --dir and -S inherit-env grant one served component; without a \
                 COMPONENT, guests are deployed by clients, and get none"
                    .to_string(),
            );
        }
        Ok(mapped)
    }

    fn refuse_unsupported(&self) -> Result<(), String> {
        let first = |given: &[String], option: &str| given.first().map(|v| format!("{option} {v}"));
        let given = [
            (
                first(&self.codegen, "-C"),
                "burncache chooses its own code generation",
            ),
            (
                first(&self.debug, "-D"),
                "debugging guests is not offered by a server",
            ),
            (
                first(&self.record, "-R"),
                "execution recording is not offered",
            ),
            (
                first(&self.header, "-H"),
                "rewriting requests is a proxy's job; put one in front",
            ),
            (
                self.gdbstub.as_ref().map(|g| format!("--gdbstub {g}")),
                "debugging guests is not offered by a server",
            ),
            (
                self.target.as_ref().map(|t| format!("--target {t}")),
                "burncache compiles for the machine it runs on",
            ),
            (
                self.allow_precompiled
                    .then(|| "--allow-precompiled".to_string()),
                "burncache compiles components itself and keeps only code it can \
                 authenticate (see the trust model)",
            ),
            (
                self.profile.as_ref().map(|p| format!("--profile {p}")),
                "profiling is not offered by a server",
            ),
            (
                self.shutdown_addr
                    .as_ref()
                    .map(|a| format!("--shutdown-addr {a}")),
                "the server stops gracefully on SIGINT or SIGTERM (--shutdown-grace)",
            ),
            (
                self.max_instance_concurrent_reuse_count
                    .as_ref()
                    .map(|n| format!("--max-instance-concurrent-reuse-count {n}")),
                "every request gets a fresh instance of its own",
            ),
            (
                self.idle_instance_timeout
                    .as_ref()
                    .map(|t| format!("--idle-instance-timeout {t}")),
                "instances are not kept between requests",
            ),
        ];
        match given
            .into_iter()
            .find_map(|(option, why)| option.map(|o| (o, why)))
        {
            Some((option, why)) => Err(refused(&option, why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_map_and_pairs_split_on_commas() {
        let args = WasmtimeArgs {
            wasi: vec!["cli,http=y".into(), "common".into()],
            wasm: vec![
                "fuel=5000,max-memory-size=1048576".into(),
                "timeout=2".into(),
            ],
            optimize: vec!["pooling-allocator=n".into(), "opt-level=2".into()],
            ..WasmtimeArgs::default()
        };
        let mapped = args.map(true).expect("accepted");
        assert_eq!(mapped.fuel, Some(5000));
        assert_eq!(mapped.memory, Some(1 << 20));
        assert_eq!(mapped.timeout, Some(Duration::from_secs(2)));
        assert_eq!(mapped.pooling, Some(false));
    }

    #[test]
    fn other_options_are_refused_with_a_reason() {
        for (args, says) in [
            (
                WasmtimeArgs {
                    wasi: vec!["tcp".into()],
                    ..Default::default()
                },
                "no sockets",
            ),
            (
                WasmtimeArgs {
                    wasi: vec!["cli=n".into()],
                    ..Default::default()
                },
                "sealed",
            ),
            (
                WasmtimeArgs {
                    wasm: vec!["max-tables=2".into()],
                    ..Default::default()
                },
                "fuel",
            ),
            (
                WasmtimeArgs {
                    optimize: vec!["opt-level=0".into()],
                    ..Default::default()
                },
                "opt-level 2",
            ),
            (
                WasmtimeArgs {
                    allow_precompiled: true,
                    ..Default::default()
                },
                "authenticate",
            ),
            (
                WasmtimeArgs {
                    env: vec!["A=b".into()],
                    ..Default::default()
                },
                "one served component",
            ),
        ] {
            let component_mode = args.env.is_empty();
            let e = args.map(component_mode).expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
    }
}
