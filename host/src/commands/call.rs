//! `burncache call`: run a function component once on one input.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use burncache::Payload;
use clap::Args;

use super::{LimitArgs, NodeArgs, WithArgs};

/// Call a function component on one input and print its output.
///
/// The input is JSON unless --bytes is given; it comes from --input, --input-file,
/// or standard input. A JSON output is pretty-printed (--raw prints it as the guest
/// wrote it); a bytes output is written to stdout as is.
///
/// Examples:
///   burncache call add_one.wasm --input '{"n": 41}'
///   echo 'one two three' | burncache call word_count.wasm --bytes
///   burncache call 3f1c...e9 --input-file row.json --fuel 1000000 --timeout 500ms --stats
///   burncache call pipeline.wasm --with add_one.wasm --with word_count.wasm --input-file in.json
#[derive(Args, Debug)]
pub struct CallCommand {
    /// A component file (.wasm), or the digest of a registered component.
    component: String,
    /// The input, as text.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the input from a file.
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    /// Send the input as raw bytes rather than JSON.
    #[arg(long)]
    bytes: bool,
    /// Print a JSON output exactly as the guest returned it, not pretty-printed.
    #[arg(long)]
    raw: bool,
    /// Print the fuel burned and the time taken to stderr.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    with: WithArgs,
    #[command(flatten)]
    node: NodeArgs,
}

impl CallCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let input = self.read_input()?;
        let input = if self.bytes {
            Payload::Bytes(input)
        } else {
            let text = String::from_utf8(input)
                .context("the input is not UTF-8 text (use --bytes for binary input)")?;
            Payload::json_text(text)?
        };
        let cache = super::cache(&self.node, &self.with).await?;
        let digest = super::register(&cache, &self.component).await?;
        let outcome = cache
            .execute_metered(&digest, input, &self.limits.limits())
            .await;
        if self.stats {
            let stats = cache.stats();
            eprintln!(
                "digest: {digest}\nfuel burned: {}\ncall time: {:?}\ncompiles: {}\ncompile time: {:?}\nartifact loads: {}\nfetches: {}",
                outcome.fuel_burned,
                outcome.elapsed,
                stats.compiles,
                stats.compile_time,
                stats.artifact_loads,
                stats.fetches
            );
            if stats.script_checks > 0 {
                eprintln!(
                    "script checks: {}\njs runtime compiles: {}\njs runtime loads: {}",
                    stats.script_checks, stats.runtime_compiles, stats.runtime_loads
                );
            }
        }
        cache.settle().await;
        let output = outcome.result?;
        print_output(output, self.raw)?;
        Ok(ExitCode::SUCCESS)
    }

    fn read_input(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(text) = &self.input {
            return Ok(text.clone().into_bytes());
        }
        if let Some(path) = &self.input_file {
            return super::read(path);
        }
        let mut stdin = std::io::stdin();
        if stdin.is_terminal() {
            anyhow::bail!("no input: pass --input, --input-file, or pipe it to stdin");
        }
        let mut input = Vec::new();
        stdin.read_to_end(&mut input).context("cannot read stdin")?;
        Ok(input)
    }
}

fn print_output(output: Payload, raw: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        Payload::Json(text) if !raw => {
            let pretty = serde_json::from_str::<serde_json::Value>(&text)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(text);
            writeln!(stdout, "{pretty}")
        }
        Payload::Json(text) => writeln!(stdout, "{text}"),
        Payload::Bytes(bytes) => stdout.write_all(&bytes),
    }
    .context("cannot write the output")?;
    stdout.flush().context("cannot write the output")
}
