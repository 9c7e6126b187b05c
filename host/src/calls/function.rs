//! A function call: one input through a fresh instance of a function component (or
//! of the JavaScript runtime, for a script).

use std::sync::Arc;
use std::time::Instant;

use super::{Instance, Within, prepare};
use crate::bindings::WitPayload;
use crate::payload::{check_error, check_input, check_output, off_worker, payload_len};
use crate::registry::Registry;
use crate::sandbox::Outcome;
use crate::{Digest, Payload};

/// Runs the function `digest` on `input` in a fresh instance.
pub(crate) async fn execute(
    registry: &Arc<Registry>,
    digest: &Digest,
    input: Payload,
    within: Within,
) -> Outcome<Payload> {
    let started = Instant::now();
    let prepared = prepare(registry, digest, within, || check_input(&input)).await;
    let (compiled, sandbox, spent) = match prepared {
        Ok(prepared) => prepared,
        Err((e, spent)) => return Outcome::refused(&registry.counters, e, started).spent(spent),
    };
    let input = WitPayload::from(input);
    sandbox
        .run(async |sandbox| {
            let instance = Instance::new(sandbox, &compiled).await?;
            let output = match instance.call(sandbox, &input).await {
                Ok(Ok(output)) => output,
                Ok(Err(e)) => return Err(check_error(e, sandbox.output_ceiling())),
                Err(e) => return Err(sandbox.classify(e)),
            };
            let ceiling = sandbox.output_ceiling();
            let len = payload_len(&output);
            off_worker(output, len, move |output| {
                check_output(&output, ceiling).map(|()| Payload::from(output))
            })
            .await?
        })
        .await
        .spent(spent)
}
