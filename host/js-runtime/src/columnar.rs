//! Columnar scripts: a script that exports `columns` computes whole columns at once.
//!
//! ```js
//! export const columns = {
//!   inputs: { x: "float64" },
//!   outputs: { x: "float64" },
//!   call({ x }) {
//!     return { x: x.map((v) => v * 2) };
//!   },
//! };
//! ```
//!
//! A column without nulls arrives as a typed array (`Float64Array`, `Int32Array`,
//! `BigInt64Array` for 64-bit integers, ...); booleans and strings as arrays, byte
//! strings as an array of `Uint8Array`; a column with nulls as an array holding
//! `null` where a row is null. An output may be a typed array of its type or an
//! array (`null` and `undefined` are null).

use rquickjs::{Array, BigInt, Ctx, Function, Object, TypedArray, Value};

use crate::burncache::host::types::{Column, ColumnType, Error, Signature};
use crate::{ColumnData, call_awaited, internal};

/// The declared columns of a `columns` export.
pub(crate) fn signature(columns: &Object<'_>) -> Result<Signature, Error> {
    let side = |what: &str| -> Result<Vec<Column>, Error> {
        let object: Object = columns.get(what).map_err(|_| {
            declaration(format!(
                "`columns.{what}` must be an object of column name to type"
            ))
        })?;
        let mut declared = Vec::new();
        for entry in object.props::<String, Value>() {
            let (name, ty) = entry.map_err(internal)?;
            let type_name = ty
                .as_string()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_default();
            let Some(ty) = column_type(&type_name) else {
                return Err(declaration(format!(
                    "`columns.{what}.{name}` is {type_name:?}; a column type is one of {}",
                    TYPE_NAMES.join(", ")
                )));
            };
            declared.push(Column {
                name,
                type_: ty,
                nullable: true,
            });
        }
        if declared.is_empty() {
            return Err(declaration(format!("`columns.{what}` declares no column")));
        }
        Ok(declared)
    };
    if columns.get::<_, Function>("call").is_err() {
        return Err(declaration(
            "`columns.call` must be a function from an object of input columns to an \
             object of output columns"
                .to_string(),
        ));
    }
    Ok(Signature {
        inputs: side("inputs")?,
        outputs: side("outputs")?,
    })
}

fn declaration(message: String) -> Error {
    Error::CompileFailed(message)
}

const TYPE_NAMES: [&str; 13] = [
    "boolean", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32",
    "float64", "utf8", "binary",
];

fn column_type(name: &str) -> Option<ColumnType> {
    Some(match name {
        "boolean" => ColumnType::Boolean,
        "int8" => ColumnType::Int8,
        "int16" => ColumnType::Int16,
        "int32" => ColumnType::Int32,
        "int64" => ColumnType::Int64,
        "uint8" => ColumnType::Uint8,
        "uint16" => ColumnType::Uint16,
        "uint32" => ColumnType::Uint32,
        "uint64" => ColumnType::Uint64,
        "float32" => ColumnType::Float32,
        "float64" => ColumnType::Float64,
        "utf8" | "string" => ColumnType::Utf8,
        "binary" => ColumnType::Binary,
        _ => return None,
    })
}

/// Runs `columns.call` on the input columns and lays out what it returns.
pub(crate) fn call<'js>(
    ctx: &Ctx<'js>,
    columns: &Object<'js>,
    rows: usize,
    inputs: Vec<ColumnData>,
) -> Result<Vec<ColumnData>, Error> {
    let declared = signature(columns)?;
    let function: Function = columns.get("call").map_err(internal)?;
    let argument = Object::new(ctx.clone()).map_err(internal)?;
    for column in inputs {
        let name = column.name.clone();
        let value = to_js(ctx, column, rows).map_err(internal)?;
        argument.set(name, value).map_err(internal)?;
    }
    let returned = call_awaited(ctx, &function, argument.into_value())?;
    let Some(returned) = returned.as_object() else {
        return Err(Error::Guest(format!(
            "columns.call must return an object of output columns, not {}",
            returned.type_name()
        )));
    };
    declared
        .outputs
        .iter()
        .map(|column| {
            let value: Value = returned.get(column.name.as_str()).map_err(internal)?;
            if value.is_undefined() {
                return Err(Error::Guest(format!(
                    "columns.call returned no output column `{}`",
                    column.name
                )));
            }
            from_js(&value, column, rows)
                .map_err(|e| Error::Guest(format!("output column `{}`: {e}", column.name)))
        })
        .collect()
}

/// A column as JavaScript sees it.
fn to_js<'js>(ctx: &Ctx<'js>, column: ColumnData, rows: usize) -> rquickjs::Result<Value<'js>> {
    let nulls = !column.valid.is_empty();
    let valid = |i: usize| !nulls || column.valid.get(i).copied().unwrap_or(false);
    macro_rules! fixed {
        ($t:ty, $width:expr, $to_value:expr) => {{
            let values: Vec<$t> = column
                .values
                .chunks_exact($width)
                .take(rows)
                .map(|b| <$t>::from_le_bytes(b.try_into().unwrap_or([0; $width])))
                .collect();
            if !nulls {
                return Ok(TypedArray::<$t>::new(ctx.clone(), values)?.into_value());
            }
            let array = Array::new(ctx.clone())?;
            for (i, v) in values.into_iter().enumerate() {
                let value: Value = if valid(i) {
                    $to_value(v)?
                } else {
                    Value::new_null(ctx.clone())
                };
                array.set(i, value)?;
            }
            Ok(array.into_value())
        }};
    }
    let number = |v: f64| -> rquickjs::Result<Value<'js>> { Ok(Value::new_number(ctx.clone(), v)) };
    match column.type_ {
        ColumnType::Int8 => fixed!(i8, 1, |v: i8| number(v.into())),
        ColumnType::Int16 => fixed!(i16, 2, |v: i16| number(v.into())),
        ColumnType::Int32 => fixed!(i32, 4, |v: i32| number(v.into())),
        ColumnType::Uint8 => fixed!(u8, 1, |v: u8| number(v.into())),
        ColumnType::Uint16 => fixed!(u16, 2, |v: u16| number(v.into())),
        ColumnType::Uint32 => fixed!(u32, 4, |v: u32| number(v.into())),
        ColumnType::Float32 => fixed!(f32, 4, |v: f32| number(v.into())),
        ColumnType::Float64 => fixed!(f64, 8, number),
        ColumnType::Int64 => fixed!(i64, 8, |v: i64| BigInt::from_i64(ctx.clone(), v)
            .map(|b| b.into_value())),
        ColumnType::Uint64 => fixed!(u64, 8, |v: u64| BigInt::from_u64(ctx.clone(), v)
            .map(|b| b.into_value())),
        ColumnType::Boolean => {
            let array = Array::new(ctx.clone())?;
            for i in 0..rows {
                let value = if valid(i) {
                    Value::new_bool(ctx.clone(), column.values.get(i).is_some_and(|b| *b != 0))
                } else {
                    Value::new_null(ctx.clone())
                };
                array.set(i, value)?;
            }
            Ok(array.into_value())
        }
        ColumnType::Utf8 | ColumnType::Binary => {
            let array = Array::new(ctx.clone())?;
            for i in 0..rows {
                let (start, end) = (
                    column.offsets.get(i).copied().unwrap_or(0) as usize,
                    column.offsets.get(i + 1).copied().unwrap_or(0) as usize,
                );
                let bytes = column.values.get(start..end).unwrap_or_default();
                let value = if !valid(i) {
                    Value::new_null(ctx.clone())
                } else if column.type_ == ColumnType::Utf8 {
                    let text = String::from_utf8_lossy(bytes);
                    rquickjs::String::from_str(ctx.clone(), &text)?.into_value()
                } else {
                    TypedArray::<u8>::new(ctx.clone(), bytes.to_vec())?.into_value()
                };
                array.set(i, value)?;
            }
            Ok(array.into_value())
        }
    }
}

/// A returned column laid out as its declared type.
fn from_js(value: &Value<'_>, column: &Column, rows: usize) -> Result<ColumnData, String> {
    let mut data = ColumnData {
        name: column.name.clone(),
        type_: column.type_,
        values: Vec::new(),
        offsets: Vec::new(),
        valid: Vec::new(),
    };
    macro_rules! fixed {
        ($t:ty, $from_value:expr) => {{
            if let Some(typed) = value
                .as_object()
                .and_then(|o| TypedArray::<$t>::from_object(o.clone()).ok())
            {
                // SAFETY: the bytes are copied out before any JavaScript runs again.
                let bytes = unsafe { typed.as_bytes() }.ok_or("its buffer is detached")?;
                data.values = bytes.to_vec();
                return check_len(data.values.len() / size_of::<$t>(), rows).map(|()| data);
            }
            let array = array_of(value)?;
            check_len(array.len(), rows)?;
            let mut nulls = false;
            for i in 0..rows {
                let item: Value = array.get(i).map_err(|e| e.to_string())?;
                let v: $t = if item.is_null() || item.is_undefined() {
                    nulls = true;
                    data.valid.resize(i, true);
                    data.valid.push(false);
                    <$t>::default()
                } else {
                    if nulls {
                        data.valid.push(true);
                    }
                    $from_value(&item).ok_or_else(|| {
                        format!(
                            "row {i} is {}, not a {}",
                            describe(&item),
                            TYPE_NAMES[column.type_ as usize]
                        )
                    })?
                };
                data.values.extend_from_slice(&v.to_le_bytes());
            }
            Ok(data)
        }};
    }
    /// A whole Number or a BigInt, if it fits `T` exactly (a BigInt is read as its
    /// decimal text: QuickJS's own conversion wraps modulo 2^64).
    fn int<T: TryFrom<i128>>(item: &Value<'_>) -> Option<T> {
        let n: i128 = if item.as_big_int().is_some() {
            let text: rquickjs::convert::Coerced<String> = item.get().ok()?;
            text.0.parse().ok()?
        } else {
            let f = item.as_number()?;
            if f.fract() != 0.0 || !f.is_finite() {
                return None;
            }
            // Saturates only far beyond every integer column's range.
            f as i128
        };
        T::try_from(n).ok()
    }
    match column.type_ {
        ColumnType::Int8 => fixed!(i8, int::<i8>),
        ColumnType::Int16 => fixed!(i16, int::<i16>),
        ColumnType::Int32 => fixed!(i32, int::<i32>),
        ColumnType::Int64 => fixed!(i64, int::<i64>),
        ColumnType::Uint8 => fixed!(u8, int::<u8>),
        ColumnType::Uint16 => fixed!(u16, int::<u16>),
        ColumnType::Uint32 => fixed!(u32, int::<u32>),
        ColumnType::Uint64 => fixed!(u64, int::<u64>),
        ColumnType::Float32 => fixed!(f32, |v: &Value<'_>| v.as_number().map(|n| n as f32)),
        ColumnType::Float64 => fixed!(f64, |v: &Value<'_>| v.as_number()),
        ColumnType::Boolean | ColumnType::Utf8 | ColumnType::Binary => {
            let array = array_of(value)?;
            check_len(array.len(), rows)?;
            let mut nulls = false;
            if column.type_ != ColumnType::Boolean {
                data.offsets.push(0);
            }
            for i in 0..rows {
                let item: Value = array.get(i).map_err(|e| e.to_string())?;
                if item.is_null() || item.is_undefined() {
                    nulls = true;
                    data.valid.resize(i, true);
                    data.valid.push(false);
                    if column.type_ == ColumnType::Boolean {
                        data.values.push(0);
                    }
                } else {
                    if nulls {
                        data.valid.push(true);
                    }
                    let wrong = || {
                        format!(
                            "row {i} is {}, not a {}",
                            describe(&item),
                            TYPE_NAMES[column.type_ as usize]
                        )
                    };
                    match column.type_ {
                        ColumnType::Boolean => {
                            data.values
                                .push(u8::from(item.as_bool().ok_or_else(wrong)?));
                        }
                        ColumnType::Utf8 => {
                            let text = item
                                .as_string()
                                .and_then(|s| s.to_string().ok())
                                .ok_or_else(wrong)?;
                            data.values.extend_from_slice(text.as_bytes());
                        }
                        _ => {
                            let bytes = item
                                .as_object()
                                .and_then(|o| TypedArray::<u8>::from_object(o.clone()).ok())
                                .ok_or_else(wrong)?;
                            // SAFETY: copied out before any JavaScript runs again.
                            let raw = unsafe { bytes.as_bytes() }.ok_or_else(wrong)?;
                            data.values.extend_from_slice(raw);
                        }
                    }
                }
                if column.type_ != ColumnType::Boolean {
                    let end = u32::try_from(data.values.len())
                        .map_err(|_| "the column holds more than 4 GiB".to_string())?;
                    data.offsets.push(end);
                }
            }
            Ok(data)
        }
    }
}

fn array_of<'a, 'js>(value: &'a Value<'js>) -> Result<&'a Array<'js>, String> {
    value.as_array().ok_or_else(|| {
        format!(
            "it is {}, not an array or a typed array of its type",
            describe(value)
        )
    })
}

fn check_len(len: usize, rows: usize) -> Result<(), String> {
    if len == rows {
        Ok(())
    } else {
        Err(format!("it has {len} values for {rows} rows"))
    }
}

fn describe(value: &Value<'_>) -> &'static str {
    value.type_name()
}
