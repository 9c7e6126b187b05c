//! `burncache batch`: run a function component over many rows in one instance.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use burncache::{Error, Payload};
use clap::Args;
use serde_json::{Value, json};

use super::{EXIT_SOME_ROWS_FAILED, LimitArgs, NodeArgs, WithArgs};

/// Run a function component over many JSON rows in one instance, one fuel budget.
///
/// ROWS is a file holding a JSON array or newline-delimited JSON (one row a line).
/// One line is printed per row, in order: `{"ok": OUTPUT}` or
/// `{"error": {"kind": KIND, "message": TEXT}}`. A failing row does not stop the
/// others; the exit code is 3 when any row failed.
///
/// Examples:
///   burncache batch add_one.wasm rows.json
///   burncache batch 3f1c...e9 rows.ndjson --fuel 50000000
#[derive(Args, Debug)]
pub struct BatchCommand {
    /// A component file (.wasm), or the digest of a registered component.
    component: String,
    /// The rows: a JSON array, or NDJSON.
    rows: PathBuf,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    with: WithArgs,
    #[command(flatten)]
    node: NodeArgs,
}

impl BatchCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let text = String::from_utf8(super::read(&self.rows)?)
            .with_context(|| format!("{} is not UTF-8 text", self.rows.display()))?;
        let rows = parse_rows(&text)
            .with_context(|| format!("cannot read rows from {}", self.rows.display()))?;
        let cache = super::cache(&self.node, &self.with).await?;
        let digest = super::register(&cache, &self.component).await?;
        let results = cache
            .execute_batch(&digest, rows, &self.limits.limits())
            .await?;
        let mut failed = false;
        for result in results {
            failed |= result.is_err();
            println!("{}", row_line(result));
        }
        Ok(if failed {
            ExitCode::from(EXIT_SOME_ROWS_FAILED)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// A JSON array of rows, or one JSON document per non-empty line.
fn parse_rows(text: &str) -> Result<Vec<Payload>, Error> {
    if text.trim_start().starts_with('[') {
        let rows: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("not a JSON array of rows: {e}")))?;
        return Ok(rows
            .into_iter()
            .map(|v| Payload::Json(v.to_string()))
            .collect());
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            Payload::json_text(line)
                .map_err(|e| Error::InvalidInput(format!("line {}: {e}", i + 1)))
        })
        .collect()
}

fn row_line(result: Result<Payload, Error>) -> Value {
    match result {
        Ok(Payload::Json(text)) => {
            let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            json!({ "ok": value })
        }
        Ok(Payload::Bytes(bytes)) => json!({ "ok_bytes_hex": hex_string(&bytes) }),
        Err(e) => json!({ "error": { "kind": e.kind().as_str(), "message": e.to_string() } }),
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_as_an_array_or_ndjson() {
        let array = parse_rows(r#"[{"n": 1}, {"n": 2}]"#).expect("array");
        assert_eq!(array.len(), 2);
        let lines = parse_rows("{\"n\":1}\n\n{\"n\":2}\n").expect("ndjson");
        assert_eq!(lines, array);
        let err = parse_rows("{\"n\": 1}\n{oops\n").expect_err("bad line");
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
