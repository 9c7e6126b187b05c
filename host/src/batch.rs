//! Batches: many inputs through one instance, one Store and one budget, with a
//! result per row.

use crate::bindings::WitPayload;
use crate::cache::Compiled;
use crate::call::{Outcome, Sandbox, Scope, check_input, payload_len, sandboxed};
use crate::{BurnCache, Digest, Error, Limits, Payload};

impl BurnCache {
    /// Runs every input through one fresh instance of `digest`: one Store, one fuel
    /// budget, one result per row.
    ///
    /// A row the guest rejects fails alone. When a row traps, the instance is gone;
    /// the rows are then retried one at a time (a new instance after each trap, still
    /// on the one budget), so the trap is pinned on its row and the others still run.
    ///
    /// # Errors
    ///
    /// The outer error is a failure of the whole batch: the component cannot run, an
    /// input is malformed, or the budget (fuel, deadline) ran out.
    pub async fn execute_batch(
        &self,
        digest: &Digest,
        inputs: Vec<Payload>,
        limits: &Limits,
    ) -> Result<Vec<Result<Payload, Error>>, Error> {
        self.execute_batch_metered(digest, inputs, limits)
            .await
            .result
    }

    /// [`BurnCache::execute_batch`], also reporting the fuel burned and the time taken.
    pub async fn execute_batch_metered(
        &self,
        digest: &Digest,
        inputs: Vec<Payload>,
        limits: &Limits,
    ) -> Outcome<Vec<Result<Payload, Error>>> {
        let outcome = self
            .execute_batch_in(digest, inputs, || Scope::top(self, limits))
            .await;
        self.inner.counters.add_fuel(outcome.fuel_burned);
        outcome
    }

    /// Runs a batch within the scope `scope` makes, once the component is ready (as
    /// [`BurnCache::execute_in`] does).
    pub(crate) async fn execute_batch_in(
        &self,
        digest: &Digest,
        inputs: Vec<Payload>,
        scope: impl FnOnce() -> Scope,
    ) -> Outcome<Vec<Result<Payload, Error>>> {
        let compiled = match self.lookup(digest).await {
            Ok(compiled) => compiled,
            Err(e) => return self.failed_early(e),
        };
        if let Some((row, e)) = inputs
            .iter()
            .enumerate()
            .find_map(|(i, p)| check_input(p).err().map(|e| (i, e)))
        {
            return self.failed_early(Error::InvalidInput(format!("row {row}: {e}")));
        }
        let inputs: Vec<WitPayload> = inputs.into_iter().map(WitPayload::from).collect();
        let outcome = sandboxed(scope(), async |sandbox: &mut Sandbox| {
            let instance = sandbox.instantiate(&compiled).await?;
            match instance.call_batch(sandbox, &inputs).await {
                Ok(rows) if rows.len() == inputs.len() => {
                    let mut budget = OutputBudget::new(sandbox.output_ceiling());
                    Ok(rows
                        .into_iter()
                        .map(|row| row.and_then(|payload| budget.take(payload)))
                        .collect())
                }
                Ok(rows) => Err(Error::Trap(format!(
                    "call-batch returned {} results for {} inputs",
                    rows.len(),
                    inputs.len()
                ))),
                Err(e) => match sandbox.classify(e) {
                    Error::Trap(_) | Error::MemoryLimit => {
                        row_by_row(sandbox, &compiled, &inputs).await
                    }
                    other => Err(other),
                },
            }
        })
        .await;
        self.inner.counters.record_call(&outcome.result);
        outcome
    }
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
    let mut instance = sandbox.instantiate(compiled).await?;
    for (row, input) in inputs.iter().enumerate() {
        let returned = instance.call(sandbox, input).await;
        out.push(match returned {
            Ok(row) => row.and_then(|payload| budget.take(payload)),
            Err(e) => match sandbox.classify(e) {
                // The budget is the batch's: once it is gone, the batch is.
                e @ (Error::FuelExhausted | Error::Timeout) => return Err(e),
                e => {
                    if row + 1 < inputs.len() {
                        sandbox.renew()?;
                        instance = sandbox.instantiate(compiled).await?;
                    }
                    Err(e)
                }
            },
        });
    }
    Ok(out)
}

/// The output ceiling of a batch, shared by its rows in order: a row that would take
/// the total past the ceiling fails with `output-too-large`, alone.
struct OutputBudget {
    ceiling: u64,
    used: u64,
}

impl OutputBudget {
    fn new(ceiling: u64) -> OutputBudget {
        OutputBudget { ceiling, used: 0 }
    }

    fn take(&mut self, payload: WitPayload) -> Result<Payload, Error> {
        let len = payload_len(&payload);
        if self.used.saturating_add(len) > self.ceiling {
            return Err(Error::OutputTooLarge(self.ceiling));
        }
        self.used += len;
        Ok(Payload::from(payload))
    }
}
