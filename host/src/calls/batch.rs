//! Batches: many inputs through one instance, one Store and one budget, with a
//! result per row.

use std::sync::Arc;
use std::time::Instant;

use super::{Instance, Within, prepare};
use crate::bindings::WitPayload;
use crate::payload::{check_contract, check_input, off_worker, payload_len};
use crate::registry::{Compiled, Registry};
use crate::sandbox::{Outcome, Sandbox};
use crate::{Digest, Error, Payload};

/// Runs every input through one fresh instance of `digest`: one Store, one fuel
/// budget, one result per row. When a row traps, the rows are retried one at a time
/// (a new instance after each trap, on what is left of the one budget), so the trap
/// is pinned on its row and the others still run.
pub(crate) async fn execute_batch(
    registry: &Arc<Registry>,
    digest: &Digest,
    inputs: Vec<Payload>,
    within: Within,
) -> Outcome<Vec<Result<Payload, Error>>> {
    let started = Instant::now();
    let check = || match inputs
        .iter()
        .enumerate()
        .find_map(|(i, p)| check_input(p).err().map(|e| (i, e)))
    {
        Some((row, e)) => Err(Error::InvalidInput(format!("row {row}: {e}"))),
        None => Ok(()),
    };
    let (compiled, sandbox, spent) = match prepare(registry, digest, within, check).await {
        Ok(prepared) => prepared,
        Err((e, spent)) => return Outcome::refused(&registry.counters, e, started).spent(spent),
    };
    let inputs: Vec<WitPayload> = inputs.into_iter().map(WitPayload::from).collect();
    sandbox
        .run(async |sandbox| {
            let instance = Instance::new(sandbox, &compiled).await?;
            match instance.call_batch(sandbox, &inputs).await {
                Ok(rows) if rows.len() == inputs.len() => {
                    let mut budget = OutputBudget::new(sandbox.output_ceiling());
                    let len = rows
                        .iter()
                        .map(|row| row.as_ref().map_or(0, payload_len))
                        .sum();
                    off_worker(rows, len, move |rows| {
                        rows.into_iter().map(|row| budget.row(row)).collect()
                    })
                    .await
                }
                Ok(rows) => Err(Error::Trap(format!(
                    "call-batch returned {} results for {} inputs",
                    rows.len(),
                    inputs.len()
                ))),
                Err(e) => match sandbox.classify(e) {
                    // A whole-batch script computes across rows: split into rows, it
                    // would compute something else. It fails as a whole.
                    e @ (Error::Trap(_) | Error::MemoryLimit)
                        if compiled.script.as_ref().is_some_and(|s| s.whole_batch) =>
                    {
                        Err(e)
                    }
                    Error::Trap(_) | Error::MemoryLimit => {
                        row_by_row(sandbox, &compiled, &inputs).await
                    }
                    other => Err(other),
                },
            }
        })
        .await
        .spent(spent)
}

/// After a batch trapped: every row on its own, on what is left of the same budget,
/// with a fresh Store after each row that traps.
async fn row_by_row(
    sandbox: &mut Sandbox,
    compiled: &Compiled,
    inputs: &[WitPayload],
) -> Result<Vec<Result<Payload, Error>>, Error> {
    let mut budget = OutputBudget::new(sandbox.output_ceiling());
    let mut out = Vec::with_capacity(inputs.len());
    sandbox.renew()?;
    let mut instance = Instance::new(sandbox, compiled).await?;
    for (row, input) in inputs.iter().enumerate() {
        let returned = instance.call(sandbox, input).await;
        out.push(match returned {
            Ok(row) => {
                let len = row.as_ref().map_or(0, payload_len);
                let checked = off_worker((budget, row), len, |(mut budget, row)| {
                    let row = budget.row(row);
                    (budget, row)
                })
                .await?;
                budget = checked.0;
                checked.1
            }
            Err(e) => match sandbox.classify(e) {
                // The budget is the batch's: once it is gone, the batch is.
                e @ (Error::FuelExhausted | Error::Timeout) => return Err(e),
                e => {
                    if row + 1 < inputs.len() {
                        sandbox.renew()?;
                        instance = Instance::new(sandbox, compiled).await?;
                    }
                    budget.row(Err(e))
                }
            },
        });
    }
    Ok(out)
}

/// The output ceiling of a batch, shared by its rows in order, outputs and the text of
/// the guest's errors and traps (a trap's carries the start of its stderr) alike: a row that would take the total past the ceiling
/// fails with `output-too-large`, alone. A row whose JSON is malformed fails alone
/// too.
struct OutputBudget {
    ceiling: u64,
    used: u64,
}

impl OutputBudget {
    fn new(ceiling: u64) -> OutputBudget {
        OutputBudget { ceiling, used: 0 }
    }

    fn row(&mut self, row: Result<WitPayload, Error>) -> Result<Payload, Error> {
        match row {
            Ok(payload) => {
                self.take(payload_len(&payload))?;
                check_contract(&payload)?;
                Ok(Payload::from(payload))
            }
            Err(e @ (Error::Guest(_) | Error::Trap(_))) => {
                let (Error::Guest(text) | Error::Trap(text)) = &e else {
                    return Err(e);
                };
                self.take(text.len() as u64)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn take(&mut self, len: u64) -> Result<(), Error> {
        if self.used.saturating_add(len) > self.ceiling {
            return Err(Error::OutputTooLarge(self.ceiling));
        }
        self.used += len;
        Ok(())
    }
}
