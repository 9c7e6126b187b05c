//! Columnar calls' vocabulary: the columns a function declares, the Arrow IPC
//! stream format batches travel in, and the checks on both sides of a call.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, PrimitiveArray, RecordBatch, RecordBatchOptions,
    StringArray,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_ipc::MessageHeader;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::Error;
use crate::bindings::columnar::{WitColumn, WitColumnType, WitSignature};
use crate::bindings::js::ColumnData;

/// The media type of an Arrow IPC stream, what columnar calls take and return over
/// HTTP.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The most columns a function may declare on either side.
const MAX_COLUMNS: usize = 4096;

/// What a columnar function takes and returns: its declared input columns, in the
/// order it receives them, and its output columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSignature {
    /// The columns the function takes, by name, type and nullability.
    pub inputs: SchemaRef,
    /// The columns it returns, as many rows as it was given.
    pub outputs: SchemaRef,
}

impl ColumnSignature {
    /// The signature a guest declared, checked: at least one column each way, names
    /// unique within each side.
    pub(crate) fn from_wit(wit: WitSignature) -> Result<ColumnSignature, Error> {
        let side = |columns: Vec<WitColumn>, what: &str| -> Result<SchemaRef, Error> {
            if columns.is_empty() {
                return Err(Error::Guest(format!(
                    "the function declares no {what} columns"
                )));
            }
            if columns.len() > MAX_COLUMNS {
                return Err(Error::Guest(format!(
                    "the function declares {} {what} columns; at most {MAX_COLUMNS} are taken",
                    columns.len()
                )));
            }
            let mut fields: Vec<Field> = Vec::with_capacity(columns.len());
            let mut names = std::collections::HashSet::with_capacity(columns.len());
            for column in columns {
                if !names.insert(column.name.clone()) {
                    return Err(Error::Guest(format!(
                        "the function declares the {what} column `{}` twice",
                        column.name
                    )));
                }
                fields.push(Field::new(
                    column.name,
                    data_type(column.type_),
                    column.nullable,
                ));
            }
            Ok(Arc::new(Schema::new(fields)))
        };
        Ok(ColumnSignature {
            inputs: side(wit.inputs, "input")?,
            outputs: side(wit.outputs, "output")?,
        })
    }

    /// The declared input columns taken from `batch`, by name, in declared order.
    /// Other columns are left out.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the column: missing, of another type, or
    /// holding nulls the function does not take.
    pub(crate) fn take_inputs(&self, batch: &RecordBatch) -> Result<RecordBatch, Error> {
        let mut columns = Vec::with_capacity(self.inputs.fields().len());
        for field in self.inputs.fields() {
            let Some(column) = batch.column_by_name(field.name()) else {
                return Err(Error::InvalidInput(format!(
                    "the input has no column `{}` (the function takes `{}` as {}); it has {}",
                    field.name(),
                    field.name(),
                    type_name(field.data_type()),
                    listed(batch.schema_ref()),
                )));
            };
            if column.data_type() != field.data_type() {
                return Err(Error::InvalidInput(format!(
                    "column `{}` is {}, but the function takes {}",
                    field.name(),
                    type_name(column.data_type()),
                    type_name(field.data_type()),
                )));
            }
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(Error::InvalidInput(format!(
                    "column `{}` holds {} nulls, but the function takes no nulls there",
                    field.name(),
                    column.null_count(),
                )));
            }
            columns.push(column.clone());
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(self.inputs.clone(), columns, &options)
            .map_err(|e| Error::InvalidInput(format!("the input batch does not fit: {e}")))
    }

    /// Checks what a function returned for `rows` input rows against what it
    /// declared: the same columns in order, as many rows.
    ///
    /// # Errors
    ///
    /// [`Error::Guest`] naming what does not match: the function broke its own
    /// contract.
    pub(crate) fn check_outputs(
        &self,
        batch: RecordBatch,
        rows: usize,
    ) -> Result<RecordBatch, Error> {
        let declared = self.outputs.fields();
        let returned = batch.schema_ref().fields();
        if declared.len() != returned.len() {
            return Err(Error::Guest(format!(
                "the function returned {} but declared {}",
                listed(batch.schema_ref()),
                listed(&self.outputs),
            )));
        }
        for (field, (got, column)) in declared.iter().zip(returned.iter().zip(batch.columns())) {
            if got.name() != field.name() || got.data_type() != field.data_type() {
                return Err(Error::Guest(format!(
                    "the function returned column `{}` as {} where it declared `{}` as {}",
                    got.name(),
                    type_name(got.data_type()),
                    field.name(),
                    type_name(field.data_type()),
                )));
            }
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(Error::Guest(format!(
                    "the function returned nulls in column `{}`, which it declared non-null",
                    field.name()
                )));
            }
        }
        if batch.num_rows() != rows {
            return Err(Error::Guest(format!(
                "the function returned {} rows for {rows}",
                batch.num_rows()
            )));
        }
        // The returned schema may carry other metadata; the caller sees the declared.
        RecordBatch::try_new(self.outputs.clone(), batch.columns().to_vec())
            .map_err(|e| Error::Guest(format!("the function's output does not fit: {e}")))
    }
}

/// The Arrow type of a declared column type.
pub(crate) fn data_type(wit: WitColumnType) -> DataType {
    match wit {
        WitColumnType::Boolean => DataType::Boolean,
        WitColumnType::Int8 => DataType::Int8,
        WitColumnType::Int16 => DataType::Int16,
        WitColumnType::Int32 => DataType::Int32,
        WitColumnType::Int64 => DataType::Int64,
        WitColumnType::Uint8 => DataType::UInt8,
        WitColumnType::Uint16 => DataType::UInt16,
        WitColumnType::Uint32 => DataType::UInt32,
        WitColumnType::Uint64 => DataType::UInt64,
        WitColumnType::Float32 => DataType::Float32,
        WitColumnType::Float64 => DataType::Float64,
        WitColumnType::Utf8 => DataType::Utf8,
        WitColumnType::Binary => DataType::Binary,
    }
}

/// A column type as the contract spells it (`float64`, `utf8`), or as Arrow does
/// for types outside the contract.
pub fn type_name(ty: &DataType) -> String {
    let name = match ty {
        DataType::Boolean => "boolean",
        DataType::Int8 => "int8",
        DataType::Int16 => "int16",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::UInt8 => "uint8",
        DataType::UInt16 => "uint16",
        DataType::UInt32 => "uint32",
        DataType::UInt64 => "uint64",
        DataType::Float32 => "float32",
        DataType::Float64 => "float64",
        DataType::Utf8 => "utf8",
        DataType::Binary => "binary",
        other => return format!("{other} (not a column type of the contract)"),
    };
    name.to_string()
}

/// A column of strings or byte strings in another of Arrow's forms (large, view,
/// dictionary-encoded: what Parquet readers, DataFusion, Polars and pyarrow hand
/// out) as the contract's `utf8` or `binary`; `None` for any other column, which
/// goes as it is.
///
/// # Errors
///
/// [`Error::InvalidInput`] when the plain form would not fit a column (2 GiB of
/// values): views and dictionary keys can point many rows at one long value, and
/// laid out plainly each row holds its own copy. That is checked before anything is
/// allocated.
pub fn plain_strings(column: &ArrayRef) -> Result<Option<ArrayRef>, Error> {
    fn plain(ty: &DataType) -> Option<DataType> {
        match ty {
            DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
            DataType::LargeBinary | DataType::BinaryView => Some(DataType::Binary),
            DataType::Dictionary(_, values) => match values.as_ref() {
                DataType::Utf8 => Some(DataType::Utf8),
                DataType::Binary => Some(DataType::Binary),
                other => plain(other),
            },
            _ => None,
        }
    }
    let Some(to) = plain(column.data_type()) else {
        return Ok(None);
    };
    let len = plain_len(column.as_ref()).unwrap_or(u64::MAX);
    if len > i32::MAX as u64 {
        return Err(Error::InvalidInput(format!(
            "a column of {} holds {len} bytes once each row has its own copy of its \
             value, more than a column carries (2 GiB); pass fewer rows at a time",
            type_name(column.data_type())
        )));
    }
    // The cast of large strings converts all of a slice's parent's offsets: these
    // are copied value by value.
    let plain: ArrayRef = match column.data_type() {
        DataType::LargeUtf8 => Arc::new(StringArray::from_iter(column.as_string::<i64>())),
        DataType::LargeBinary => Arc::new(BinaryArray::from_iter(column.as_binary::<i64>())),
        _ => arrow_cast::cast(column, &to)
            .map_err(|e| Error::InvalidInput(format!("cannot read a column as {to}: {e}")))?,
    };
    Ok(Some(plain))
}

/// The bytes a string or byte-string column takes laid out plainly, every row with
/// its own copy of its value, and for a dictionary its values laid out plainly
/// too (they are cast before the keys pick them): at least what Arrow's cast to the
/// plain form reserves. `None` for other columns.
fn plain_len(column: &dyn Array) -> Option<u64> {
    fn spans<O: arrow_array::OffsetSizeTrait>(offsets: &[O]) -> Vec<u64> {
        offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).as_usize() as u64)
            .collect()
    }
    fn lengths(values: &dyn Array) -> Option<Vec<u64>> {
        let viewed = |views: &[u128]| views.iter().map(|&v| u64::from(v as u32)).collect();
        Some(match values.data_type() {
            DataType::Utf8 => spans(values.as_string::<i32>().value_offsets()),
            DataType::LargeUtf8 => spans(values.as_string::<i64>().value_offsets()),
            DataType::Binary => spans(values.as_binary::<i32>().value_offsets()),
            DataType::LargeBinary => spans(values.as_binary::<i64>().value_offsets()),
            DataType::Utf8View => viewed(values.as_string_view().views()),
            DataType::BinaryView => viewed(values.as_binary_view().views()),
            _ => return None,
        })
    }
    match column.data_type() {
        DataType::Dictionary(..) => {
            let dictionary = column.as_any_dictionary();
            let lengths = lengths(dictionary.values().as_ref())?;
            let nulls = dictionary.keys().logical_nulls();
            let keys = dictionary.normalized_keys();
            let picked: u64 = keys
                .iter()
                .enumerate()
                .filter(|&(row, _)| nulls.as_ref().is_none_or(|n| n.is_valid(row)))
                .map(|(_, &key)| lengths.get(key).copied().unwrap_or(0))
                .sum();
            Some(picked + lengths.iter().sum::<u64>())
        }
        _ => lengths(column).map(|lengths| lengths.iter().sum()),
    }
}

/// `a (float64), b (utf8)`, or `no columns`.
fn listed(schema: &SchemaRef) -> String {
    if schema.fields().is_empty() {
        return "no columns".to_string();
    }
    schema
        .fields()
        .iter()
        .map(|f| format!("`{}` ({})", f.name(), type_name(f.data_type())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A batch as an Arrow IPC stream.
pub(crate) fn encode(batch: &RecordBatch) -> Result<Vec<u8>, Error> {
    let write = || -> Result<Vec<u8>, arrow_schema::ArrowError> {
        let mut writer = StreamWriter::try_new(Vec::new(), batch.schema_ref())?;
        writer.write(batch)?;
        writer.into_inner()
    };
    write().map_err(|e| Error::Backend(format!("cannot encode a batch: {e}")))
}

/// The one batch an Arrow IPC stream holds (its batches joined, when it holds
/// several; no rows, when none).
///
/// The bytes are untrusted (a client's, a guest's), so the stream is checked before
/// Arrow reads any of it ([`check_framing`]): only the contract's flat column types,
/// every buffer within its message's body and as long as its rows need. Decoding
/// then touches each byte at most once, allocates nothing a header alone asks for,
/// and what comes out is no larger than what came in (a boolean row costs a bit),
/// so the output ceiling holds. Buffers are read in place, and every array is
/// validated.
pub(crate) fn decode(bytes: Vec<u8>) -> Result<RecordBatch, String> {
    check_framing(&bytes).map_err(|e| format!("not an Arrow IPC stream we take: {e}"))?;
    let read = || -> Result<RecordBatch, arrow_schema::ArrowError> {
        // In place when the bytes are aligned for every type (as large allocations
        // are); else copied once into an aligned buffer.
        let mut buffer = if (bytes.as_ptr() as usize).is_multiple_of(16) {
            Buffer::from(bytes)
        } else {
            Buffer::from_slice_ref(&bytes)
        };
        let mut decoder = StreamDecoder::new();
        let mut batches = Vec::new();
        while let Some(batch) = decoder.decode(&mut buffer)? {
            batches.push(batch);
        }
        decoder.finish()?;
        let schema = decoder
            .schema()
            .ok_or_else(|| arrow_schema::ArrowError::IpcError("no schema".to_string()))?;
        match batches.len() {
            1 => Ok(batches.pop().expect("one batch")),
            _ => arrow_select::concat::concat_batches(&schema, &batches),
        }
    };
    match catch_unwind(AssertUnwindSafe(read)) {
        Ok(Ok(batch)) => Ok(batch),
        Ok(Err(e)) => Err(format!("not an Arrow IPC stream: {e}")),
        Err(_) => Err("not an Arrow IPC stream: the decoder gave up on it".to_string()),
    }
}

/// The most record batches one stream may hold.
const MAX_BATCHES: usize = 4096;

/// How a column of a contract type lies in a batch's buffers, after its validity
/// bitmap.
#[derive(Clone, Copy)]
enum Layout {
    /// A bitmap of values (booleans).
    Bits,
    /// Fixed-width values of this many bytes.
    Fixed(u64),
    /// 32-bit offsets, then the values' bytes (strings, byte strings).
    Offsets,
}

impl Layout {
    /// The column's buffers, its validity bitmap included.
    fn buffers(self) -> usize {
        match self {
            Layout::Bits | Layout::Fixed(_) => 2,
            Layout::Offsets => 3,
        }
    }
}

/// The layout of a schema field, if it is a flat column of a contract type.
fn layout(field: arrow_ipc::Field<'_>) -> Result<Layout, String> {
    let name = field.name().unwrap_or_default();
    let refuse = |what: String| {
        Err(format!(
            "column `{name}` is {what}, which columns here cannot be"
        ))
    };
    if field.dictionary().is_some() {
        return refuse("dictionary-encoded".to_string());
    }
    if field.children().is_some_and(|c| !c.is_empty()) {
        return refuse("nested".to_string());
    }
    match field.type_type() {
        arrow_ipc::Type::Bool => Ok(Layout::Bits),
        arrow_ipc::Type::Int => match field.type_as_int().map(|i| i.bitWidth()) {
            Some(bits @ (8 | 16 | 32 | 64)) => Ok(Layout::Fixed(bits as u64 / 8)),
            other => refuse(format!("an integer of {other:?} bits")),
        },
        arrow_ipc::Type::FloatingPoint => {
            match field.type_as_floating_point().map(|f| f.precision()) {
                Some(arrow_ipc::Precision::SINGLE) => Ok(Layout::Fixed(4)),
                Some(arrow_ipc::Precision::DOUBLE) => Ok(Layout::Fixed(8)),
                _ => refuse("a half-precision float".to_string()),
            }
        }
        arrow_ipc::Type::Utf8 | arrow_ipc::Type::Binary => Ok(Layout::Offsets),
        other => refuse(format!("of type {other:?}")),
    }
}

/// Walks an IPC stream's messages without decoding them, and checks everything
/// Arrow would otherwise trust; see [`decode`].
fn check_framing(bytes: &[u8]) -> Result<(), String> {
    let word = |at: usize| -> Result<u32, String> {
        bytes
            .get(at..at.saturating_add(4))
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("it ends inside a message's length at byte {at}"))
    };
    let mut at = 0usize;
    let mut layouts: Option<Vec<Layout>> = None;
    let mut batches = 0usize;
    while at < bytes.len() {
        let mut len = word(at)?;
        at += 4;
        if len == u32::MAX {
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            // The end-of-stream marker.
            return Ok(());
        }
        let end = at
            .checked_add(len as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("a message at byte {at} runs past the end"))?;
        let message = arrow_ipc::root_as_message(&bytes[at..end])
            .map_err(|e| format!("a message at byte {at} is malformed: {e}"))?;
        at = end;
        let body = usize::try_from(message.bodyLength())
            .ok()
            .filter(|&body| body <= bytes.len() - at)
            .ok_or_else(|| {
                format!(
                    "a message declares a body of {} bytes, {} remain",
                    message.bodyLength(),
                    bytes.len() - at
                )
            })?;
        match message.header_type() {
            MessageHeader::Schema => {
                if layouts.is_some() {
                    return Err("it has two schemas".to_string());
                }
                let fields = message
                    .header_as_schema()
                    .and_then(|s| s.fields())
                    .ok_or("its schema has no fields")?;
                if fields.len() > MAX_COLUMNS {
                    return Err(format!(
                        "{} columns; at most {MAX_COLUMNS} are taken",
                        fields.len()
                    ));
                }
                layouts = Some(fields.iter().map(layout).collect::<Result<_, _>>()?);
            }
            MessageHeader::RecordBatch => {
                let layouts = layouts
                    .as_deref()
                    .ok_or("a batch comes before the schema")?;
                batches += 1;
                if batches > MAX_BATCHES {
                    return Err(format!("more than {MAX_BATCHES} batches"));
                }
                let batch = message
                    .header_as_record_batch()
                    .ok_or("a batch message has no batch")?;
                check_batch(batch, layouts, body)?;
            }
            MessageHeader::DictionaryBatch => {
                return Err("dictionary-encoded columns are not taken".to_string());
            }
            other => return Err(format!("a {other:?} message")),
        }
        at += body;
    }
    Ok(())
}

/// One batch's header against its schema's layouts: as many rows in every column,
/// every buffer within the body, none overlapping, each as long as its rows need.
fn check_batch(
    batch: arrow_ipc::RecordBatch<'_>,
    layouts: &[Layout],
    body: usize,
) -> Result<(), String> {
    if batch.compression().is_some() {
        return Err("its batches are compressed".to_string());
    }
    if batch.variadicBufferCounts().is_some_and(|c| !c.is_empty()) {
        return Err("a batch has variadic buffers".to_string());
    }
    let rows = u64::try_from(batch.length())
        .ok()
        .filter(|&rows| rows <= i32::MAX as u64)
        .ok_or_else(|| format!("a batch of {} rows", batch.length()))?;
    let nodes: Vec<_> = batch.nodes().iter().flatten().collect();
    let buffers: Vec<_> = batch.buffers().iter().flatten().collect();
    let wanted: usize = layouts.iter().map(|l| l.buffers()).sum();
    if nodes.len() != layouts.len() || buffers.len() != wanted {
        return Err(format!(
            "a batch has {} columns and {} buffers for {} columns and {wanted} buffers",
            nodes.len(),
            buffers.len(),
            layouts.len()
        ));
    }
    let mut total = 0u64;
    let mut lengths = Vec::with_capacity(buffers.len());
    for buffer in &buffers {
        let (offset, len) = (buffer.offset(), buffer.length());
        let fits = u64::try_from(offset)
            .ok()
            .zip(u64::try_from(len).ok())
            .and_then(|(offset, len)| offset.checked_add(len))
            .is_some_and(|end| end <= body as u64);
        if !fits {
            return Err(format!(
                "a buffer of {len} bytes at {offset} lies outside its {body}-byte body"
            ));
        }
        total += len as u64;
        lengths.push(len as u64);
    }
    if total > body as u64 {
        return Err("a batch's buffers overlap".to_string());
    }
    let bitmap = rows.div_ceil(8);
    let mut lengths = lengths.into_iter();
    let mut next = || lengths.next().unwrap_or(0);
    for (node, layout) in nodes.iter().zip(layouts) {
        let nulls = node.null_count();
        if u64::try_from(node.length()) != Ok(rows) || nulls < 0 || nulls as u64 > rows {
            return Err(format!(
                "a column of {} rows with {nulls} nulls in a batch of {rows} rows",
                node.length()
            ));
        }
        let validity = next();
        let short = match *layout {
            Layout::Bits => next() < bitmap,
            Layout::Fixed(width) => next() < rows * width,
            Layout::Offsets => {
                let offsets = next();
                next();
                rows > 0 && offsets < (rows + 1) * 4
            }
        };
        if (nulls > 0 && validity < bitmap) || short {
            return Err(format!(
                "a column's buffers are too short for its {rows} rows"
            ));
        }
    }
    Ok(())
}

/// The contract's type of an Arrow type, if it has one.
fn wit_type(ty: &DataType) -> Option<WitColumnType> {
    Some(match ty {
        DataType::Boolean => WitColumnType::Boolean,
        DataType::Int8 => WitColumnType::Int8,
        DataType::Int16 => WitColumnType::Int16,
        DataType::Int32 => WitColumnType::Int32,
        DataType::Int64 => WitColumnType::Int64,
        DataType::UInt8 => WitColumnType::Uint8,
        DataType::UInt16 => WitColumnType::Uint16,
        DataType::UInt32 => WitColumnType::Uint32,
        DataType::UInt64 => WitColumnType::Uint64,
        DataType::Float32 => WitColumnType::Float32,
        DataType::Float64 => WitColumnType::Float64,
        DataType::Utf8 => WitColumnType::Utf8,
        DataType::Binary => WitColumnType::Binary,
        _ => return None,
    })
}

/// A batch's columns laid out for the JavaScript runtime: values, offsets and
/// validity as Arrow holds them. The batch's types are the contract's (it went
/// through [`ColumnSignature::take_inputs`]).
pub(crate) fn to_column_data(batch: &RecordBatch) -> Result<Vec<ColumnData>, Error> {
    fn primitive<T: ArrowPrimitiveType>(array: &ArrayRef) -> Vec<u8> {
        array
            .as_primitive::<T>()
            .values()
            .inner()
            .as_slice()
            .to_vec()
    }
    fn bytes(offsets: &[i32], values: &[u8]) -> (Vec<u8>, Vec<u32>) {
        let first = offsets.first().copied().unwrap_or(0);
        let last = offsets.last().copied().unwrap_or(0);
        let values = values[first as usize..last as usize].to_vec();
        (values, offsets.iter().map(|o| (o - first) as u32).collect())
    }
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| {
            let ty = wit_type(array.data_type()).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "column `{}` is {}",
                    field.name(),
                    type_name(array.data_type())
                ))
            })?;
            let (values, offsets) = match array.data_type() {
                DataType::Boolean => (
                    array.as_boolean().values().iter().map(u8::from).collect(),
                    Vec::new(),
                ),
                DataType::Int8 => (primitive::<Int8Type>(array), Vec::new()),
                DataType::Int16 => (primitive::<Int16Type>(array), Vec::new()),
                DataType::Int32 => (primitive::<Int32Type>(array), Vec::new()),
                DataType::Int64 => (primitive::<Int64Type>(array), Vec::new()),
                DataType::UInt8 => (primitive::<UInt8Type>(array), Vec::new()),
                DataType::UInt16 => (primitive::<UInt16Type>(array), Vec::new()),
                DataType::UInt32 => (primitive::<UInt32Type>(array), Vec::new()),
                DataType::UInt64 => (primitive::<UInt64Type>(array), Vec::new()),
                DataType::Float32 => (primitive::<Float32Type>(array), Vec::new()),
                DataType::Float64 => (primitive::<Float64Type>(array), Vec::new()),
                DataType::Utf8 => {
                    let strings = array.as_string::<i32>();
                    bytes(strings.offsets(), strings.values())
                }
                _ => {
                    let binary = array.as_binary::<i32>();
                    bytes(binary.offsets(), binary.values())
                }
            };
            let valid = array
                .logical_nulls()
                .map(|nulls| nulls.iter().collect())
                .unwrap_or_default();
            Ok(ColumnData {
                name: field.name().clone(),
                type_: ty,
                values,
                offsets,
                valid,
            })
        })
        .collect()
}

/// The bytes a laid-out column holds, for the output ceiling.
pub(crate) fn column_data_len(columns: &[ColumnData]) -> u64 {
    columns
        .iter()
        .map(|c| (c.values.len() + c.offsets.len() * 4 + c.valid.len() + c.name.len()) as u64)
        .sum()
}

/// A batch from columns the JavaScript runtime laid out: every length, offset and
/// string checked, as from any guest.
pub(crate) fn from_column_data(
    columns: Vec<ColumnData>,
    rows: usize,
) -> Result<RecordBatch, String> {
    fn primitive<T: ArrowPrimitiveType>(
        values: &[u8],
        rows: usize,
        nulls: Option<NullBuffer>,
    ) -> Result<ArrayRef, String> {
        let width = size_of::<T::Native>();
        if values.len() != rows * width {
            return Err(format!(
                "{} bytes of values for {rows} rows of {width} bytes",
                values.len()
            ));
        }
        // Copied into a buffer aligned for the type.
        let buffer = ScalarBuffer::<T::Native>::new(Buffer::from_slice_ref(values), 0, rows);
        PrimitiveArray::<T>::try_new(buffer, nulls)
            .map(|a| Arc::new(a) as ArrayRef)
            .map_err(|e| e.to_string())
    }
    fn offsets(offsets: &[u32], rows: usize, values: usize) -> Result<OffsetBuffer<i32>, String> {
        let ordered = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.last().is_some_and(|&last| last as usize == values)
            && values <= i32::MAX as usize;
        if offsets.len() != rows + 1 || !ordered {
            return Err(format!(
                "its {} offsets do not describe {rows} values in {values} bytes",
                offsets.len()
            ));
        }
        Ok(OffsetBuffer::new(ScalarBuffer::from(
            offsets.iter().map(|&o| o as i32).collect::<Vec<_>>(),
        )))
    }
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays = Vec::with_capacity(columns.len());
    for column in columns {
        let name = column.name;
        let fail = |e: String| format!("column `{name}`: {e}");
        let nulls = match column.valid.len() {
            0 => None,
            n if n == rows => Some(NullBuffer::from(column.valid)),
            n => return Err(fail(format!("{n} validity flags for {rows} rows"))),
        };
        let values = column.values;
        let array = match column.type_ {
            WitColumnType::Boolean => {
                if values.len() != rows {
                    return Err(fail(format!("{} booleans for {rows} rows", values.len())));
                }
                Ok(Arc::new(BooleanArray::new(
                    values.iter().map(|b| *b != 0).collect(),
                    nulls,
                )) as ArrayRef)
            }
            WitColumnType::Int8 => primitive::<Int8Type>(&values, rows, nulls),
            WitColumnType::Int16 => primitive::<Int16Type>(&values, rows, nulls),
            WitColumnType::Int32 => primitive::<Int32Type>(&values, rows, nulls),
            WitColumnType::Int64 => primitive::<Int64Type>(&values, rows, nulls),
            WitColumnType::Uint8 => primitive::<UInt8Type>(&values, rows, nulls),
            WitColumnType::Uint16 => primitive::<UInt16Type>(&values, rows, nulls),
            WitColumnType::Uint32 => primitive::<UInt32Type>(&values, rows, nulls),
            WitColumnType::Uint64 => primitive::<UInt64Type>(&values, rows, nulls),
            WitColumnType::Float32 => primitive::<Float32Type>(&values, rows, nulls),
            WitColumnType::Float64 => primitive::<Float64Type>(&values, rows, nulls),
            WitColumnType::Utf8 => offsets(&column.offsets, rows, values.len()).and_then(|o| {
                StringArray::try_new(o, Buffer::from_vec(values), nulls)
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|e| e.to_string())
            }),
            WitColumnType::Binary => offsets(&column.offsets, rows, values.len()).and_then(|o| {
                BinaryArray::try_new(o, Buffer::from_vec(values), nulls)
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|e| e.to_string())
            }),
        }
        .map_err(fail)?;
        fields.push(Field::new(name, data_type(column.type_), true));
        arrays.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, StringArray};

    fn signature() -> ColumnSignature {
        ColumnSignature {
            inputs: Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)])),
            outputs: Arc::new(Schema::new(vec![Field::new("y", DataType::Float64, true)])),
        }
    }

    #[test]
    fn inputs_are_taken_by_name_and_checked() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float64Array::from(vec![1.0, 2.0])),
            ],
        )
        .expect("batch");
        let taken = signature().take_inputs(&batch).expect("fits");
        assert_eq!(taken.num_columns(), 1);
        assert_eq!(taken.schema().field(0).name(), "x");

        let nulls = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Float64Array::from(vec![Some(1.0), None])) as _,
        )])
        .expect("batch");
        let e = signature().take_inputs(&nulls).expect_err("nulls");
        assert!(e.to_string().contains("column `x` holds 1 nulls"), "{e}");

        let strings =
            RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["1"])) as _)])
                .expect("batch");
        let e = signature().take_inputs(&strings).expect_err("type");
        assert!(
            e.to_string()
                .contains("column `x` is utf8, but the function takes float64"),
            "{e}"
        );
    }

    #[test]
    fn streams_round_trip_and_garbage_is_refused() {
        let batch =
            RecordBatch::try_from_iter([("y", Arc::new(Float64Array::from(vec![2.0])) as _)])
                .expect("batch");
        let back = decode(encode(&batch).expect("encode")).expect("decode");
        assert_eq!(back, batch);
        signature().check_outputs(back, 1).expect("declared");
        assert!(decode(b"not arrow".to_vec()).is_err());
        let e = signature().check_outputs(batch, 3).expect_err("row count");
        assert!(e.to_string().contains("returned 1 rows for 3"), "{e}");
    }
}
