//! A function call: one input through a fresh instance of a function component (or
//! of the JavaScript runtime, for a script).

use std::sync::Arc;
use std::time::Instant;

use super::{Instance, Within};
use crate::bindings::WitPayload;
use crate::payload::{check_error, check_input, check_output};
use crate::registry::Registry;
use crate::sandbox::{Grants, Outcome, Sandbox};
use crate::{Digest, Payload};

/// Runs the function `digest` on `input` in a fresh instance.
pub(crate) async fn execute(
    registry: &Arc<Registry>,
    digest: &Digest,
    input: Payload,
    within: Within,
) -> Outcome<Payload> {
    let started = Instant::now();
    let looked = registry.lookup(digest, within.nested()).await;
    let spent = looked.fuel_burned;
    let ready = looked
        .result
        .and_then(|compiled| check_input(&input).map(|()| compiled))
        .and_then(|compiled| {
            let sandbox = Sandbox::new(within.scope(registry, spent), Grants::Sealed)?;
            Ok((compiled, sandbox))
        });
    let (compiled, sandbox) = match ready {
        Ok(ready) => ready,
        Err(e) => return Outcome::refused(&registry.counters, e, started).spent(spent),
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
            check_output(&output, sandbox.output_ceiling())?;
            Ok(Payload::from(output))
        })
        .await
        .spent(spent)
}
