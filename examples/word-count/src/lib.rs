//! Text in as raw bytes, counts out as JSON (like `wc`).

use burncache_guest::Json;
use serde::Serialize;

#[derive(Serialize)]
struct Counts {
    lines: usize,
    words: usize,
    bytes: usize,
}

fn word_count(text: Vec<u8>) -> Result<Json<Counts>, String> {
    let text = String::from_utf8(text).map_err(|e| format!("the input is not UTF-8: {e}"))?;
    Ok(Json(Counts {
        lines: text.lines().count(),
        words: text.split_whitespace().count(),
        bytes: text.len(),
    }))
}

burncache_guest::export_fn!(word_count);
