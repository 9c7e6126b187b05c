//! Columnar functions: Apache Arrow arrays in, Arrow arrays out (the `columns`
//! feature).
//!
//! A columnar guest exports `burncache:host/columns`: it declares the columns it
//! takes and returns, and computes a whole record batch per call. With this module
//! it is a function over arrays and one macro:
//!
//! ```ignore
//! use burncache_guest::columns::arrow_array::Float64Array;
//!
//! fn double(x: &Float64Array) -> Result<Float64Array, String> {
//!     Ok(x.iter().map(|v| v.map(|v| v * 2.0)).collect())
//! }
//!
//! burncache_guest::export_column_fn!(double(x) -> x);
//! ```
//!
//! The function takes one array per named input column and returns one array,
//! the named output column. Its arrays' types make its declaration: any of
//! [`Column`]'s implementations (`BooleanArray`, the integer and float arrays,
//! `StringArray`, `BinaryArray`), nulls allowed on both sides. Up to three inputs.
//!
//! For several outputs, or work across a whole batch, implement
//! [`ColumnarFunction`] and export it with [`export_columns!`](crate::export_columns).
//!
//! Guests call other columnar components with [`execute_columns`].
//!
//! Link a columnar guest with the memory its batches need from the start
//! (`cargo:rustc-link-arg=--initial-memory=...` from its `build.rs`; 8 MiB fits
//! 64 Ki-row f64 batches): memory a call grows is grown again in every fresh
//! instance, at a cost to every core the host runs on.

use std::fmt::Display;
use std::io::Cursor;
use std::sync::Arc;

pub use arrow_array;
pub use arrow_schema;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray, UInt8Array, UInt16Array,
    UInt32Array, UInt64Array,
};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::{Error, Limits};

/// Bindings generated for the `columnar-udf` world.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "burncache:host/columnar-udf",
        pub_export_macro: true,
        export_macro_name: "__export_columnar_udf",
        default_bindings_module: "::burncache_guest::columns::bindings",
        with: {
            "burncache:host/types@0.1.1": crate::bindings::burncache::host::types,
            "burncache:host/burn-cache@0.1.1": crate::client::burncache::host::burn_cache,
        },
    });
}

pub use crate::bindings::burncache::host::types::{
    Column as DeclaredColumn, ColumnType, Signature,
};

/// An Arrow array type a columnar function can take or return.
pub trait Column: Array + Sized + 'static {
    /// The column type it is declared as.
    const TYPE: ColumnType;
}

macro_rules! columns {
    ($($array:ty => $ty:ident),* $(,)?) => {
        $(impl Column for $array {
            const TYPE: ColumnType = ColumnType::$ty;
        })*
    };
}

columns! {
    BooleanArray => Boolean,
    Int8Array => Int8,
    Int16Array => Int16,
    Int32Array => Int32,
    Int64Array => Int64,
    UInt8Array => Uint8,
    UInt16Array => Uint16,
    UInt32Array => Uint32,
    UInt64Array => Uint64,
    Float32Array => Float32,
    Float64Array => Float64,
    StringArray => Utf8,
    BinaryArray => Binary,
}

/// The Arrow type of a declared column type.
pub fn data_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Int8 => DataType::Int8,
        ColumnType::Int16 => DataType::Int16,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Uint8 => DataType::UInt8,
        ColumnType::Uint16 => DataType::UInt16,
        ColumnType::Uint32 => DataType::UInt32,
        ColumnType::Uint64 => DataType::UInt64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Utf8 => DataType::Utf8,
        ColumnType::Binary => DataType::Binary,
    }
}

/// The declared column type of an Arrow type, if the contract has one.
pub fn column_type(ty: &DataType) -> Option<ColumnType> {
    Some(match ty {
        DataType::Boolean => ColumnType::Boolean,
        DataType::Int8 => ColumnType::Int8,
        DataType::Int16 => ColumnType::Int16,
        DataType::Int32 => ColumnType::Int32,
        DataType::Int64 => ColumnType::Int64,
        DataType::UInt8 => ColumnType::Uint8,
        DataType::UInt16 => ColumnType::Uint16,
        DataType::UInt32 => ColumnType::Uint32,
        DataType::UInt64 => ColumnType::Uint64,
        DataType::Float32 => ColumnType::Float32,
        DataType::Float64 => ColumnType::Float64,
        DataType::Utf8 => ColumnType::Utf8,
        DataType::Binary => ColumnType::Binary,
        _ => return None,
    })
}

/// A columnar function with full control: its declared columns as Arrow schemas,
/// and a whole record batch per call.
pub trait ColumnarFunction {
    /// The columns it takes, in order. Their types must be ones the contract has
    /// (see [`column_type`]).
    fn inputs() -> Schema;

    /// The columns it returns, in order.
    fn outputs() -> Schema;

    /// Computes the output columns for every row of `batch`, which holds the
    /// declared inputs in order. The result must hold the declared outputs, with as
    /// many rows.
    fn call(batch: RecordBatch) -> Result<RecordBatch, String>;
}

/// A function over arrays, one per input column, returning the output column:
/// implemented for `fn(&A) -> Result<O, E>`, `fn(&A, &B) -> ...` and `fn(&A, &B,
/// &C) -> ...` with `A`, `B`, `C`, `O:` [`Column`] and `E: Display`. Used by
/// [`export_column_fn!`](crate::export_column_fn).
pub trait ColumnFn<Args> {
    /// The input columns' types, in order.
    fn input_types() -> Vec<ColumnType>;
    /// The output column's type.
    fn output_type() -> ColumnType;
    /// Runs the function on the input columns.
    fn apply(&self, columns: &[ArrayRef]) -> Result<ArrayRef, String>;
}

fn downcast<A: Column>(columns: &[ArrayRef], i: usize) -> Result<&A, String> {
    columns
        .get(i)
        .and_then(|c| c.as_any().downcast_ref::<A>())
        .ok_or_else(|| format!("input column {i} is not {:?}", data_type(A::TYPE)))
}

impl<A: Column, O: Column, E: Display> ColumnFn<(A,)> for fn(&A) -> Result<O, E> {
    fn input_types() -> Vec<ColumnType> {
        vec![A::TYPE]
    }
    fn output_type() -> ColumnType {
        O::TYPE
    }
    fn apply(&self, columns: &[ArrayRef]) -> Result<ArrayRef, String> {
        let out = self(downcast(columns, 0)?).map_err(|e| e.to_string())?;
        Ok(Arc::new(out))
    }
}

impl<A: Column, B: Column, O: Column, E: Display> ColumnFn<(A, B)> for fn(&A, &B) -> Result<O, E> {
    fn input_types() -> Vec<ColumnType> {
        vec![A::TYPE, B::TYPE]
    }
    fn output_type() -> ColumnType {
        O::TYPE
    }
    fn apply(&self, columns: &[ArrayRef]) -> Result<ArrayRef, String> {
        let out = self(downcast(columns, 0)?, downcast(columns, 1)?).map_err(|e| e.to_string())?;
        Ok(Arc::new(out))
    }
}

impl<A: Column, B: Column, C: Column, O: Column, E: Display> ColumnFn<(A, B, C)>
    for fn(&A, &B, &C) -> Result<O, E>
{
    fn input_types() -> Vec<ColumnType> {
        vec![A::TYPE, B::TYPE, C::TYPE]
    }
    fn output_type() -> ColumnType {
        O::TYPE
    }
    fn apply(&self, columns: &[ArrayRef]) -> Result<ArrayRef, String> {
        let out = self(
            downcast(columns, 0)?,
            downcast(columns, 1)?,
            downcast(columns, 2)?,
        )
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(out))
    }
}

/// The one batch an Arrow IPC stream holds (no rows, when it holds none; the
/// first, when several).
///
/// # Errors
///
/// When the bytes are not an Arrow IPC stream.
pub fn decode(stream: &[u8]) -> Result<RecordBatch, String> {
    let reader = StreamReader::try_new(Cursor::new(stream), None)
        .map_err(|e| format!("the input is not an Arrow IPC stream: {e}"))?;
    let schema = reader.schema();
    let mut batches = reader;
    match batches.next() {
        Some(batch) => batch.map_err(|e| format!("cannot read the input batch: {e}")),
        None => Ok(RecordBatch::new_empty(schema)),
    }
}

/// `batch` as an Arrow IPC stream.
///
/// # Errors
///
/// When the batch cannot be written (it does not happen for the contract's types).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let write = || -> Result<Vec<u8>, arrow_schema::ArrowError> {
        let mut writer = StreamWriter::try_new(Vec::new(), batch.schema_ref())?;
        writer.write(batch)?;
        writer.into_inner()
    };
    write().map_err(|e| format!("cannot write the output batch: {e}"))
}

/// A declared signature from Arrow schemas.
///
/// # Panics
///
/// When a field's type is not one the contract has: a guest that cannot describe
/// itself traps, and the host reports the trap.
#[doc(hidden)]
pub fn __signature(inputs: &Schema, outputs: &Schema) -> Signature {
    let side = |schema: &Schema| -> Vec<DeclaredColumn> {
        schema
            .fields()
            .iter()
            .map(|f| DeclaredColumn {
                name: f.name().clone(),
                type_: column_type(f.data_type()).unwrap_or_else(|| {
                    panic!(
                        "column `{}` has type {}, which burncache columns do not carry",
                        f.name(),
                        f.data_type()
                    )
                }),
                nullable: f.is_nullable(),
            })
            .collect()
    };
    Signature {
        inputs: side(inputs),
        outputs: side(outputs),
    }
}

/// Runs a [`ColumnarFunction`] on an IPC stream. Used by [`export_columns!`](crate::export_columns).
#[doc(hidden)]
pub fn __call_columns<F: ColumnarFunction>(stream: Vec<u8>) -> Result<Vec<u8>, String> {
    let batch = decode(&stream)?;
    drop(stream);
    encode(&F::call(batch)?)
}

/// The schemas of a [`ColumnFn`] with these names.
#[doc(hidden)]
pub fn __fn_schemas<F: ColumnFn<Args>, Args>(
    _: &F,
    inputs: &[&str],
    output: &str,
) -> (Schema, Schema) {
    let fields = inputs
        .iter()
        .zip(F::input_types())
        .map(|(name, ty)| Field::new(*name, data_type(ty), true))
        .collect::<Vec<_>>();
    (
        Schema::new(fields),
        Schema::new(vec![Field::new(output, data_type(F::output_type()), true)]),
    )
}

/// Runs a [`ColumnFn`] on an IPC stream. Used by [`export_column_fn!`](crate::export_column_fn).
#[doc(hidden)]
pub fn __call_fn<F: ColumnFn<Args>, Args>(
    f: &F,
    output: &str,
    stream: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let batch = decode(&stream)?;
    drop(stream);
    let rows = batch.num_rows();
    let column = f.apply(batch.columns())?;
    if column.len() != rows {
        return Err(format!(
            "the function returned {} values for {rows} rows",
            column.len()
        ));
    }
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
        output,
        column.data_type().clone(),
        true,
    )]));
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    let out = RecordBatch::try_new_with_options(schema, vec![column], &options)
        .map_err(|e| format!("cannot make the output batch: {e}"))?;
    encode(&out)
}

/// Exports a type implementing [`ColumnarFunction`] as this component's columnar
/// function.
#[macro_export]
macro_rules! export_columns {
    ($ty:ty) => {
        const _: () = {
            struct __BurncacheColumns;
            impl $crate::columns::bindings::exports::burncache::host::columns::Guest
                for __BurncacheColumns
            {
                fn describe() -> $crate::columns::Signature {
                    $crate::columns::__signature(
                        &<$ty as $crate::columns::ColumnarFunction>::inputs(),
                        &<$ty as $crate::columns::ColumnarFunction>::outputs(),
                    )
                }
                fn call_columns(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::columns::__call_columns::<$ty>(batch)
                }
            }
            $crate::columns::bindings::__export_columnar_udf!(
                __BurncacheColumns with_types_in $crate::columns::bindings
            );
        };
    };
}

/// Exports a function over arrays as this component's columnar function:
/// `export_column_fn!(f(a, b) -> out)` declares input columns `a` and `b` and the
/// output column `out`, typed by `f`'s arrays (see [`ColumnFn`]).
#[macro_export]
macro_rules! export_column_fn {
    ($f:ident($($input:ident),+ $(,)?) -> $output:ident) => {
        const _: () = {
            struct __BurncacheColumnFn;
            impl $crate::columns::bindings::exports::burncache::host::columns::Guest
                for __BurncacheColumnFn
            {
                fn describe() -> $crate::columns::Signature {
                    let f = $f as fn($(&$crate::__infer!($input)),+) -> _;
                    let (inputs, outputs) = $crate::columns::__fn_schemas(
                        &f,
                        &[$(stringify!($input)),+],
                        stringify!($output),
                    );
                    $crate::columns::__signature(&inputs, &outputs)
                }
                fn call_columns(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    let f = $f as fn($(&$crate::__infer!($input)),+) -> _;
                    $crate::columns::__call_fn(&f, stringify!($output), batch)
                }
            }
            $crate::columns::bindings::__export_columnar_udf!(
                __BurncacheColumnFn with_types_in $crate::columns::bindings
            );
        };
    };
}

/// Calls the columnar component `digest` on `batch` (its declared input columns are
/// taken by name), with optional ceilings capped by what this call has left.
///
/// # Errors
///
/// The callee's classified [`Error`]: `invalid-input` naming the column when
/// `batch` does not fit what it declares.
pub fn execute_columns(
    digest: &str,
    batch: &RecordBatch,
    limits: Option<Limits>,
) -> Result<RecordBatch, Error> {
    let stream = encode(batch).map_err(Error::InvalidInput)?;
    let output =
        crate::client::burncache::host::burn_cache::execute_columns(digest, &stream, limits)?;
    decode(&output).map_err(|e| Error::Guest(format!("the output of {digest}: {e}")))
}
