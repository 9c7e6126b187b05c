//! A columnar function: doubles the float column `x`, returning it as `x`; nulls
//! stay null.
//!
//! Build: `cargo build -p double-columns --target wasm32-wasip2 --release`, then
//! `burncache map target/wasm32-wasip2/release/double_columns.wasm data.parquet -o
//! doubled.parquet`.

use burncache_guest::columns::arrow_array::Float64Array;

fn double(x: &Float64Array) -> Result<Float64Array, String> {
    Ok(x.unary(|v| v * 2.0))
}

burncache_guest::export_column_fn!(double(x) -> x);
