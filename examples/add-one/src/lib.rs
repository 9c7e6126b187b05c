//! `{"n": 41}` in, `{"n": 42}` out: the smallest useful function guest.

use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
struct Number {
    n: i64,
}

fn add_one(input: Number) -> Result<Number, String> {
    let n = input
        .n
        .checked_add(1)
        .ok_or("n is too large to add one to")?;
    Ok(Number { n })
}

burncache_guest::export_json!(add_one);
