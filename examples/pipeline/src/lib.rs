//! Calls two other components by digest and combines what they return:
//! `add-one` on `n`, and `word-count` on `text`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize)]
struct Input {
    /// Digest of an `add-one` component.
    add_one: String,
    /// Digest of a `word-count` component.
    word_count: String,
    n: i64,
    text: String,
}

#[derive(Serialize)]
struct Output {
    n: Value,
    counts: Value,
}

fn pipeline(input: Input) -> Result<Output, String> {
    let n: Value = burncache_guest::execute(&input.add_one, &serde_json::json!({ "n": input.n }))
        .map_err(|e| format!("add-one failed: {e:?}"))?;
    let counts = burncache_guest::execute_payload(
        &input.word_count,
        burncache_guest::Payload::Bytes(input.text.into_bytes()),
        None,
    )
    .map_err(|e| format!("word-count failed: {e:?}"))?;
    let counts = match counts {
        burncache_guest::Payload::Json(text) => {
            serde_json::from_str(&text).map_err(|e| e.to_string())?
        }
        burncache_guest::Payload::Bytes(_) => return Err("word-count returned bytes".into()),
    };
    Ok(Output {
        n: n["n"].clone(),
        counts,
    })
}

burncache_guest::export_json!(pipeline);
