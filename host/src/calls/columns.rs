//! A columnar call: one Arrow record batch through a fresh instance of a columnar
//! function component, its columns checked against what the function declares on
//! the way in and on the way out.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;

use super::{Within, prepare};
use crate::bindings::columnar::ColumnarUdf;
use crate::columns::{self, ColumnSignature};
use crate::payload::{check_error, off_worker};
use crate::registry::{Compiled, Registry};
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
            let instance = instantiate(sandbox, &compiled).await?;
            let (signature, inputs) = match known {
                Some(known) => known,
                None => {
                    let signature = describe(sandbox, &compiled, &instance).await?;
                    let inputs = signature.take_inputs(&batch)?;
                    (signature, inputs)
                }
            };
            let rows = inputs.num_rows();
            let size = inputs.get_array_memory_size() as u64;
            let stream = off_worker(inputs, size, |inputs| columns::encode(&inputs)).await??;
            let returned = instance
                .burncache_host_columns()
                .call_call_columns(&mut sandbox.store, &stream)
                .await;
            drop(stream);
            let ceiling = sandbox.output_ceiling();
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
                let batch = columns::decode(&output)
                    .map_err(|e| Error::Guest(format!("the function's output is {e}")))?;
                signature.check_outputs(batch, rows)
            })
            .await?
        })
        .await
        .spent(spent)
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
    let decoded = off_worker(stream, len, |stream| columns::decode(&stream)).await;
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
            let instance = instantiate(sandbox, &compiled).await?;
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
    instance: &ColumnarUdf,
) -> Result<Arc<ColumnSignature>, Error> {
    let declared = instance
        .burncache_host_columns()
        .call_describe(&mut sandbox.store)
        .await
        .map_err(|e| sandbox.classify(e))?;
    let signature = Arc::new(ColumnSignature::from_wit(declared)?);
    Ok(compiled.signature.get_or_init(|| signature).clone())
}

async fn instantiate(sandbox: &mut Sandbox, compiled: &Compiled) -> Result<ColumnarUdf, Error> {
    let pre = compiled
        .columns
        .as_ref()
        .ok_or_else(|| not_columnar(compiled))?;
    pre.instantiate_async(&mut sandbox.store)
        .await
        .map_err(|e| sandbox.classify(e))
}

fn columnar(compiled: &Compiled) -> Result<(), Error> {
    match compiled.columns {
        Some(_) => Ok(()),
        None => Err(not_columnar(compiled)),
    }
}

fn not_columnar(compiled: &Compiled) -> Error {
    Error::InvalidInput(format!(
        "component {} does not export `burncache:host/columns`, so it cannot be called \
         with columns (call a function component with `execute`)",
        compiled.digest
    ))
}
