//! A columnar call: one Arrow record batch through a fresh instance of a columnar
//! function component, its columns checked against what the function declares on
//! the way in and on the way out.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;

use super::{Within, prepare};
use crate::bindings::columnar::{ColumnarUdf, WitSignature};
use crate::columns::{self, ColumnSignature};
use crate::payload::{check_error, off_worker};
use crate::registry::{Compiled, Registry, ScriptInstance};
use crate::sandbox::{Outcome, Sandbox};
use crate::{Digest, Error};

/// Runs the columnar function `digest` on `batch`: its declared input columns,
/// taken by name, go in as one Arrow IPC stream; the stream that comes back is
/// checked against the declared outputs and the row count.
pub(crate) async fn execute_columns(
    registry: &Arc<Registry>,
    digest: &Digest,
    batch: RecordBatch,
    within: Within,
) -> Outcome<RecordBatch> {
    let started = Instant::now();
    let (compiled, sandbox, spent) = match prepare(registry, digest, within, || Ok(())).await {
        Ok(prepared) => prepared,
        Err((e, spent)) => return Outcome::refused(&registry.counters, e, started).spent(spent),
    };
    // Once the function has declared its columns, a batch that does not fit is
    // refused before anything runs.
    let known = match (columnar(&compiled), compiled.signature.get()) {
        (Err(e), _) => return Outcome::refused(&registry.counters, e, started).spent(spent),
        (Ok(()), Some(signature)) => match signature.take_inputs(&batch) {
            Ok(inputs) => Some((signature.clone(), inputs)),
            Err(e) => return Outcome::refused(&registry.counters, e, started).spent(spent),
        },
        (Ok(()), None) => None,
    };
    sandbox
        .run(async |sandbox| {
            let instance = Columnar::new(sandbox, &compiled).await?;
            let (signature, inputs) = match known {
                Some(known) => known,
                None => {
                    let signature = describe(sandbox, &compiled, &instance).await?;
                    let inputs = signature.take_inputs(&batch)?;
                    (signature, inputs)
                }
            };
            instance.call(sandbox, inputs, signature).await
        })
        .await
        .spent(spent)
}

/// An instance a columnar call runs in.
enum Columnar {
    /// A columnar component's.
    Udf(ColumnarUdf),
    /// The JavaScript runtime's, running a script that exports `columns`.
    Script(ScriptInstance),
}

impl Columnar {
    async fn new(sandbox: &mut Sandbox, compiled: &Compiled) -> Result<Columnar, Error> {
        if let Some(script) = compiled.script.as_ref().filter(|s| s.columns) {
            return ScriptInstance::instantiate(sandbox, script)
                .await
                .map(Columnar::Script);
        }
        let pre = compiled
            .columns
            .as_ref()
            .ok_or_else(|| not_columnar(compiled))?;
        pre.instantiate_async(&mut sandbox.store)
            .await
            .map(Columnar::Udf)
            .map_err(|e| sandbox.classify(e))
    }

    async fn describe(&self, sandbox: &mut Sandbox) -> Result<WitSignature, Error> {
        let declared = match self {
            Columnar::Udf(udf) => udf
                .burncache_host_columns()
                .call_describe(&mut sandbox.store)
                .await
                .map(Ok),
            Columnar::Script(script) => script.describe_columns(sandbox).await,
        };
        declared.unwrap_or_else(|e| Err(sandbox.classify(e)))
    }

    /// Runs the function on `inputs`, the declared input columns, and checks what it
    /// returns against `signature`.
    async fn call(
        &self,
        sandbox: &mut Sandbox,
        inputs: RecordBatch,
        signature: Arc<ColumnSignature>,
    ) -> Result<RecordBatch, Error> {
        let rows = inputs.num_rows();
        let ceiling = sandbox.output_ceiling();
        match self {
            Columnar::Udf(udf) => {
                let size = inputs.get_array_memory_size() as u64;
                let stream = off_worker(inputs, size, |inputs| columns::encode(&inputs)).await??;
                let returned = udf
                    .burncache_host_columns()
                    .call_call_columns(&mut sandbox.store, &stream)
                    .await;
                drop(stream);
                let output = match returned {
                    Ok(Ok(output)) => output,
                    Ok(Err(message)) => return Err(check_error(Error::Guest(message), ceiling)),
                    Err(e) => return Err(sandbox.classify(e)),
                };
                if output.len() as u64 > ceiling {
                    return Err(Error::OutputTooLarge(ceiling));
                }
                let len = output.len() as u64;
                off_worker(output, len, move |output| {
                    let batch = columns::decode(output)
                        .map_err(|e| Error::Guest(format!("the function's output is {e}")))?;
                    signature.check_outputs(batch, rows)
                })
                .await?
            }
            Columnar::Script(script) => {
                let count = u32::try_from(rows).map_err(|_| {
                    Error::InvalidInput(format!("{rows} rows is more than a script takes"))
                })?;
                let size = inputs.get_array_memory_size() as u64;
                let laid_out =
                    off_worker(inputs, size, |inputs| columns::to_column_data(&inputs)).await??;
                let returned = script.call_columns(sandbox, count, &laid_out).await;
                drop(laid_out);
                let output = match returned {
                    Ok(Ok(output)) => output,
                    Ok(Err(e)) => return Err(check_error(e, ceiling)),
                    Err(e) => return Err(sandbox.classify(e)),
                };
                let len = columns::column_data_len(&output);
                if len > ceiling {
                    return Err(Error::OutputTooLarge(ceiling));
                }
                off_worker(output, len, move |output| {
                    let batch = columns::from_column_data(output, rows)
                        .map_err(|e| Error::Guest(format!("the script's output: {e}")))?;
                    signature.check_outputs(batch, rows)
                })
                .await?
            }
        }
    }
}

/// [`execute_columns`] on a batch given as an Arrow IPC stream, answered as one: a
/// nested call's, or an HTTP request's.
pub(crate) async fn execute_columns_stream(
    registry: &Arc<Registry>,
    digest: &Digest,
    stream: Vec<u8>,
    within: Within,
) -> Outcome<Vec<u8>> {
    let started = Instant::now();
    let len = stream.len() as u64;
    let decoded = off_worker(stream, len, columns::decode).await;
    let batch = match decoded {
        Ok(Ok(batch)) => batch,
        Ok(Err(e)) => {
            let e = Error::InvalidInput(format!("the input is {e}"));
            return Outcome::refused(&registry.counters, e, started);
        }
        Err(e) => return Outcome::refused(&registry.counters, e, started),
    };
    let outcome = execute_columns(registry, digest, batch, within).await;
    let result = match outcome.result {
        Ok(batch) => {
            let size = batch.get_array_memory_size() as u64;
            off_worker(batch, size, |batch| columns::encode(&batch))
                .await
                .and_then(|encoded| encoded)
        }
        Err(e) => Err(e),
    };
    Outcome {
        result,
        fuel_burned: outcome.fuel_burned,
        elapsed: started.elapsed(),
    }
}

/// What the columnar function `digest` declares: asked of a fresh instance the
/// first time, remembered with its compiled code after.
pub(crate) async fn describe_columns(
    registry: &Arc<Registry>,
    digest: &Digest,
    within: Within,
) -> Outcome<Arc<ColumnSignature>> {
    let started = Instant::now();
    let (compiled, sandbox, spent) = match prepare(registry, digest, within, || Ok(())).await {
        Ok(prepared) => prepared,
        Err((e, spent)) => return Outcome::refused(&registry.counters, e, started).spent(spent),
    };
    if let Err(e) = columnar(&compiled) {
        return Outcome::refused(&registry.counters, e, started).spent(spent);
    }
    if let Some(signature) = compiled.signature.get() {
        return Outcome {
            result: Ok(signature.clone()),
            fuel_burned: spent,
            elapsed: started.elapsed(),
        };
    }
    sandbox
        .run_uncounted(async |sandbox| {
            let instance = Columnar::new(sandbox, &compiled).await?;
            describe(sandbox, &compiled, &instance).await
        })
        .await
        .spent(spent)
}

/// Asks the function for its columns and remembers the answer; a declaration that
/// breaks the contract is the guest's error, asked again next time.
async fn describe(
    sandbox: &mut Sandbox,
    compiled: &Compiled,
    instance: &Columnar,
) -> Result<Arc<ColumnSignature>, Error> {
    let declared = instance.describe(sandbox).await?;
    let signature = Arc::new(ColumnSignature::from_wit(declared)?);
    Ok(compiled.signature.get_or_init(|| signature).clone())
}

fn columnar(compiled: &Compiled) -> Result<(), Error> {
    let script = compiled.script.as_ref().is_some_and(|s| s.columns);
    match compiled.columns {
        Some(_) => Ok(()),
        None if script => Ok(()),
        None => Err(not_columnar(compiled)),
    }
}

fn not_columnar(compiled: &Compiled) -> Error {
    let what = if compiled.script.is_some() {
        "the script exports no `columns` (`export const columns = { inputs, outputs, call }`)"
    } else {
        "it does not export `burncache:host/columns`"
    };
    Error::InvalidInput(format!(
        "component {}: {what}, so it cannot be called with columns (call a function with \
         `execute`)",
        compiled.digest
    ))
}
