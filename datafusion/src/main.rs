//! `burncache-sql` (also run as `burncache sql`): a SQL query over data files, with
//! burncache columnar functions as scalar UDFs.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use arrow_array::RecordBatch;
use burncache::{BurnCache, Config, Digest, Limits, Store};
use burncache_datafusion::BurnCacheUdf;
use clap::{Parser, ValueEnum};
use datafusion::prelude::SessionContext;

/// Run a SQL query over Parquet, CSV, NDJSON and Arrow files, with columnar
/// components as scalar functions.
///
/// Files are tables by their paths, quoted: `FROM 'data.parquet'`. Each --udf names a
/// columnar component (a .wasm or .js file, or the digest of one in the store) with
/// one output column; each record batch the query evaluates is one call to it, in a
/// fresh instance under the call ceilings.
///
/// Examples:
///   burncache sql "SELECT double(x) FROM 'data.parquet'" --udf double=double_columns.wasm
///   burncache sql "SELECT id, score(a, b) FROM 'events.parquet' WHERE id < 10" \
///       --udf score=3f1c...e9 --format csv
#[derive(Parser, Debug)]
#[command(name = "burncache sql", version)]
struct Sql {
    /// The query.
    query: String,
    /// A function: NAME=COMPONENT, a .wasm or .js file or a digest (repeatable).
    #[arg(long = "udf", value_name = "NAME=COMPONENT")]
    udfs: Vec<String>,
    /// How the result is printed.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Where components are found by digest [default: the burncache default store]
    #[arg(long, value_name = "URL", env = "BURNCACHE_STORE")]
    store: Option<String>,
    /// Where compiled components are kept between runs [default: burncache's]
    #[arg(long, value_name = "DIR", env = "BURNCACHE_ARTIFACTS")]
    artifacts: Option<std::path::PathBuf>,
    /// Fuel each call may burn [default: 1000000000]
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Memory ceiling of each call, in bytes [default: 64 MiB]
    #[arg(long, value_name = "BYTES")]
    memory_bytes: Option<u64>,
    /// Wall-clock deadline of each call, in milliseconds [default: 10000]
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Output ceiling of each call, in bytes [default: 16 MiB]
    #[arg(long, value_name = "BYTES")]
    output_bytes: Option<u64>,
}

/// How a result is printed.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum Format {
    /// A table for people.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object a line.
    Ndjson,
}

#[tokio::main]
async fn main() -> ExitCode {
    let sql = Sql::parse();
    match sql.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Sql {
    async fn run(self) -> anyhow::Result<()> {
        let cache = Arc::new(self.cache()?);
        let limits = Limits {
            fuel: self.fuel,
            memory_bytes: self.memory_bytes,
            timeout: self.timeout_ms.map(Duration::from_millis),
            output_bytes: self.output_bytes,
        };
        let ctx = SessionContext::new().enable_url_table();
        for udf in &self.udfs {
            let Some((name, component)) = udf.split_once('=') else {
                bail!("--udf {udf}: expected NAME=COMPONENT");
            };
            let digest = register(&cache, component)
                .await
                .with_context(|| format!("--udf {udf}"))?;
            let function = BurnCacheUdf::new(name, cache.clone(), digest, limits)
                .await
                .with_context(|| format!("--udf {udf}"))?;
            ctx.register_udf(function.into());
        }
        let batches = ctx.sql(&self.query).await?.collect().await?;
        print(&batches, self.format)?;
        cache.settle().await;
        Ok(())
    }

    fn cache(&self) -> anyhow::Result<BurnCache> {
        let url = match &self.store {
            Some(url) => url.clone(),
            None => Store::default_url().context("no default store: give --store URL")?,
        };
        let config = Config {
            store: Some(Store::from_url(&url)?),
            artifact_dir: self
                .artifacts
                .clone()
                .or_else(burncache::default_artifact_dir),
            ..Config::default()
        };
        Ok(BurnCache::with_config(config)?)
    }
}

/// A component file registered, or a digest found in the store.
async fn register(cache: &BurnCache, component: &str) -> anyhow::Result<Digest> {
    if Path::new(component).is_file() {
        let bytes = std::fs::read(component).with_context(|| format!("cannot read {component}"))?;
        return Ok(cache.register(&bytes).await?);
    }
    let digest = Digest::parse(component)
        .with_context(|| format!("{component} is neither a file nor a digest"))?;
    Ok(cache.register_by_hash(&digest).await?)
}

fn print(batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            writeln!(
                out,
                "{}",
                arrow_cast::pretty::pretty_format_batches(batches)?
            )?;
        }
        Format::Csv => {
            let mut writer = arrow_csv::Writer::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Ndjson => {
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}
