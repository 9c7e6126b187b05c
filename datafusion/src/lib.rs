//! burncache columnar functions as [DataFusion](https://datafusion.apache.org) scalar
//! UDFs.
//!
//! A columnar component (one exporting `burncache:host/columns`) or a columnar
//! JavaScript script with one output column becomes a scalar function of SQL: each
//! record batch DataFusion evaluates is one call, in a fresh instance under the
//! call ceilings, on the node's [`BurnCache`].
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use burncache::{BurnCache, Limits};
//! use burncache_datafusion::BurnCacheUdf;
//! use datafusion::prelude::SessionContext;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let cache = Arc::new(BurnCache::new()?);
//! let digest = cache.register(&std::fs::read("double_columns.wasm")?).await?;
//! let ctx = SessionContext::new().enable_url_table();
//! let double = BurnCacheUdf::new("double", cache, digest, Limits::default()).await?;
//! ctx.register_udf(double.into());
//! ctx.sql("SELECT double(x) FROM 'data.parquet'").await?.show().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The SQL arguments are the function's declared input columns, in order: DataFusion
//! casts each argument to its column's declared type, or refuses the query.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use burncache::{BurnCache, ColumnSignature, Digest, Error, Limits};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// A burncache columnar function as a DataFusion scalar UDF.
pub struct BurnCacheUdf {
    name: String,
    cache: Arc<BurnCache>,
    digest: Digest,
    limits: Limits,
    /// The declared inputs, all nullable: SQL values may be null, and the function
    /// refuses nulls it does not take itself.
    inputs: SchemaRef,
    output: DataType,
    signature: Signature,
}

impl BurnCacheUdf {
    /// The columnar function `digest`, registered or found in `cache`'s store, as a
    /// scalar UDF named `name`; every call runs under `limits`.
    ///
    /// # Errors
    ///
    /// What [`BurnCache::describe_columns`] reports (`NotFound`, `InvalidInput` for a
    /// component that is not columnar, ...), and `InvalidInput` when the function
    /// returns other than one column: a scalar function computes one value a row.
    pub async fn new(
        name: impl Into<String>,
        cache: Arc<BurnCache>,
        digest: Digest,
        limits: Limits,
    ) -> Result<BurnCacheUdf, Error> {
        let declared = cache.describe_columns(&digest, &limits).await?;
        BurnCacheUdf::with_signature(name.into(), cache, digest, limits, &declared)
    }

    fn with_signature(
        name: String,
        cache: Arc<BurnCache>,
        digest: Digest,
        limits: Limits,
        declared: &ColumnSignature,
    ) -> Result<BurnCacheUdf, Error> {
        let [output] = declared.outputs.fields().iter().collect::<Vec<_>>()[..] else {
            return Err(Error::InvalidInput(format!(
                "{digest} returns {} columns; a scalar function returns one",
                declared.outputs.fields().len()
            )));
        };
        let inputs: Vec<Field> = declared
            .inputs
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(BurnCacheUdf {
            name,
            cache,
            digest,
            limits,
            inputs: Arc::new(Schema::new(inputs)),
            output: output.data_type().clone(),
            signature: Signature::user_defined(Volatility::Immutable),
        })
    }

    /// The component this function runs.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl std::fmt::Debug for BurnCacheUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnCacheUdf")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BurnCacheUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.digest == other.digest
            && self.limits == other.limits
            && Arc::ptr_eq(&self.cache, &other.cache)
    }
}

impl Eq for BurnCacheUdf {}

impl Hash for BurnCacheUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.digest.hash(state);
    }
}

impl ScalarUDFImpl for BurnCacheUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.output.clone())
    }

    /// The declared types, for arguments that convert to them without loss: the
    /// other forms of strings and bytes (Parquet strings are read as `Utf8View`),
    /// narrower numbers, and integers as floats, as SQL promotes them (64-bit
    /// integers beyond 2^53 then round to the nearest float, as they do in
    /// DataFusion's own arithmetic). Anything else
    /// (a float to an integer, a string to a number) is refused when the query is
    /// planned, naming the argument. Strings and bytes in other forms stay as they
    /// are until the call, which lays them out plainly only once it has checked the
    /// plain form fits (a view or dictionary can point every row at one long value).
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let declared: Vec<DataType> = self
            .inputs
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        if arg_types.len() != declared.len() {
            return Err(DataFusionError::Plan(format!(
                "{} takes {} arguments ({}), not {}",
                self.name,
                declared.len(),
                self.inputs
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", "),
                arg_types.len()
            )));
        }
        for (i, ((given, wanted), field)) in arg_types
            .iter()
            .zip(&declared)
            .zip(self.inputs.fields())
            .enumerate()
        {
            if !converts(given, wanted) {
                return Err(DataFusionError::Plan(format!(
                    "{}: argument {} (`{}`) is {given}, which does not convert to {wanted} \
                     without loss; cast it",
                    self.name,
                    i + 1,
                    field.name()
                )));
            }
        }
        Ok(arg_types
            .iter()
            .zip(declared)
            .map(|(given, wanted)| {
                if matches!(wanted, DataType::Utf8 | DataType::Binary) && given != &DataType::Null {
                    given.clone()
                } else {
                    wanted
                }
            })
            .collect())
    }

    /// One call per batch: the arguments (scalars spread over the batch's rows)
    /// become the function's input columns.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        // Scalars spread over every row, even when all arguments are scalars.
        let arrays = args
            .args
            .iter()
            .map(|arg| {
                let array = arg.to_array(rows)?;
                let plain = burncache::plain_strings(&array).map_err(|e| {
                    DataFusionError::Execution(format!("{}({}): {e}", self.name, self.digest))
                })?;
                Ok(plain.unwrap_or(array))
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(self.inputs.clone(), arrays, &options)?;
        let call = self
            .cache
            .execute_columns(&self.digest, &batch, &self.limits);
        let output = block_on(call)?.map_err(|e| {
            DataFusionError::External(format!("{}({}): {e}", self.name, self.digest).into())
        })?;
        Ok(ColumnarValue::Array(output.column(0).clone()))
    }
}

/// Waits for a call from DataFusion's synchronous UDF interface, inside the
/// multi-threaded tokio runtime DataFusion runs on.
///
/// A call mostly computes: its future is polled right here for as long as it only
/// yields to wake itself again (its fuel yields), up to 5 ms. Once it waits on
/// something outside (the blocking pool, a store, a timer), or takes longer, the
/// worker is handed over to the runtime's other threads (`block_in_place`) and the
/// call is driven to its end there, so its I/O and timers go on even when every
/// worker is in a call. Its deadline holds throughout (the engine's epoch clock is
/// a thread of its own). Handing
/// over at every call cost DataFusion's 8 Ki-row batches about 60% more time.
/// A current-thread runtime could not run a call's I/O while its one thread waits,
/// so it is refused.
fn block_on<F: Future>(work: F) -> Result<F::Output> {
    /// How long a call may hold the worker before it is handed over: a batch's
    /// call takes well under this, and a worker held no longer holds up the
    /// runtime's I/O and timers (driven by parked workers) for long.
    const INLINE_FOR: std::time::Duration = std::time::Duration::from_millis(5);
    struct Woken(AtomicBool);
    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        DataFusionError::Execution("a burncache UDF runs inside a tokio runtime".to_string())
    })?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(DataFusionError::Execution(
            "a burncache UDF needs a multi-threaded tokio runtime (its calls keep their \
             deadlines and I/O on the runtime's other threads)"
                .to_string(),
        ));
    }
    // Outside tokio's cooperative budget: spent, it would have every resource the
    // call polls wake it at once, and the loop below spin.
    let mut work = std::pin::pin!(tokio::task::unconstrained(work));
    let woken = Arc::new(Woken(AtomicBool::new(false)));
    let waker = std::task::Waker::from(woken.clone());
    let mut context = std::task::Context::from_waker(&waker);
    let until = std::time::Instant::now() + INLINE_FOR;
    while std::time::Instant::now() < until {
        woken.0.store(false, Ordering::Release);
        if let std::task::Poll::Ready(done) = work.as_mut().poll(&mut context) {
            return Ok(done);
        }
        if !woken.0.load(Ordering::Acquire) {
            break;
        }
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(work)))
}

/// Whether a value of type `from` converts to `to` without loss (or as SQL promotes
/// integers to floats).
fn converts(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || from == &Null {
        return true;
    }
    match (from, to) {
        (Dictionary(_, values), _) => converts(values, to),
        (Utf8View | LargeUtf8, Utf8) | (BinaryView | LargeBinary, Binary) => true,
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64)
        | (Int16, Int32 | Int64 | Float32 | Float64)
        | (Int32 | Int64, Int64 | Float64)
        | (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64 | Float32 | Float64)
        | (UInt16, UInt32 | UInt64 | Int32 | Int64 | Float32 | Float64)
        | (UInt32, UInt64 | Int64 | Float64)
        | (UInt64, UInt64 | Float64)
        | (Float32, Float64) => true,
        _ => false,
    }
}
