//! How a guest reaches back into its node: the [`Host`] trait the node implements,
//! and the `burn-cache` interface as guests import it, written against that trait.
//!
//! The interface's functions are registered by hand rather than through generated
//! host traits because each needs the calling Store itself: to cap a nested call by
//! what its caller has left (fuel, memory, time) and to charge the caller for what
//! the nested call burned.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use wasmtime::component::Linker;
use wasmtime::{Engine, StoreContextMut, Trap};

use super::{CallState, Outcome, Scope};
use crate::bindings::{WitError, WitLimits, WitPayload};
use crate::engine::Config;
use crate::stats::Counters;
use crate::{Digest, Error, Limits, Payload};

const INTERFACE: &str = "burncache:host/burn-cache@0.1.1";

/// What the sandbox needs of the node it runs on: its engine, settings and
/// counters, and the calls a guest may make back into it.
pub(crate) trait Host: Send + Sync + 'static {
    fn engine(&self) -> &Engine;
    fn config(&self) -> &Config;
    fn counters(&self) -> &Counters;
    /// The client guests' allowed outgoing requests go through.
    fn outbound(&self) -> &crate::outbound::OutboundClient;

    /// Runs a function within `scope`, a nested call's.
    fn execute(
        self: Arc<Self>,
        digest: Digest,
        input: Payload,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Payload>>;

    /// Runs a batch within `scope`, a nested call's.
    fn execute_batch(
        self: Arc<Self>,
        digest: Digest,
        inputs: Vec<Payload>,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Vec<Result<Payload, Error>>>>;

    /// Runs a columnar function on an Arrow IPC stream within `scope`, a nested
    /// call's.
    fn execute_columns(
        self: Arc<Self>,
        digest: Digest,
        stream: Vec<u8>,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Vec<u8>>>;

    /// Registers bytes; a script's check runs within `scope`.
    fn register(
        self: Arc<Self>,
        bytes: Vec<u8>,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Digest>>;

    /// Readies a digest; a script's check runs within `scope`.
    fn register_by_hash(
        self: Arc<Self>,
        digest: Digest,
        scope: Scope,
    ) -> BoxFuture<'static, Outcome<Digest>>;

    fn forget(&self, digest: &Digest) -> bool;
}

type Returned<T> = wasmtime::Result<(Result<T, WitError>,)>;

pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut api = linker.instance(INTERFACE)?;
    api.func_wrap_async("register", |store, (bytes,): (Vec<u8>,)| {
        Box::new(register(store, bytes))
    })?;
    api.func_wrap_async("register-by-hash", |store, (digest,): (String,)| {
        Box::new(register_by_hash(store, digest))
    })?;
    api.func_wrap_async(
        "execute",
        |store, (digest, input, limits): (String, WitPayload, Option<WitLimits>)| {
            Box::new(execute(store, digest, input, limits))
        },
    )?;
    api.func_wrap_async(
        "execute-batch",
        |store, (digest, inputs, limits): (String, Vec<WitPayload>, Option<WitLimits>)| {
            Box::new(execute_batch(store, digest, inputs, limits))
        },
    )?;
    api.func_wrap_async(
        "execute-columns",
        |store, (digest, batch, limits): (String, Vec<u8>, Option<WitLimits>)| {
            Box::new(execute_columns(store, digest, batch, limits))
        },
    )?;
    api.func_wrap_async("forget", |store, (digest,): (String,)| {
        Box::new(forget(store, digest))
    })?;
    Ok(())
}

fn denied(what: &str) -> Error {
    Error::PermissionDenied(format!(
        "guests may not {what} components on this node (the operator has not allowed it)"
    ))
}

async fn register(mut store: StoreContextMut<'_, CallState>, bytes: Vec<u8>) -> Returned<String> {
    let host = store.data().scope.host.clone();
    if !host.config().allow_guest_register {
        return answer(Err(denied("register")));
    }
    let fuel_left = store.get_fuel()?;
    let child = match child_scope(&store, None, fuel_left) {
        Ok(child) => child,
        Err(e) => return answer(Err(e)),
    };
    let outcome = host.register(bytes, child).await;
    charge(&mut store, fuel_left, outcome.fuel_burned)?;
    answer(outcome.result.map(|d| d.to_string()))
}

async fn register_by_hash(
    mut store: StoreContextMut<'_, CallState>,
    digest: String,
) -> Returned<String> {
    let fuel_left = store.get_fuel()?;
    let found = Digest::parse(&digest)
        .and_then(|digest| Ok((digest, child_scope(&store, None, fuel_left)?)));
    let (digest, child) = match found {
        Ok(found) => found,
        Err(e) => return answer(Err(e)),
    };
    let host = child.host.clone();
    let outcome = host.register_by_hash(digest, child).await;
    charge(&mut store, fuel_left, outcome.fuel_burned)?;
    answer(outcome.result.map(|d| d.to_string()))
}

async fn execute(
    mut store: StoreContextMut<'_, CallState>,
    digest: String,
    input: WitPayload,
    limits: Option<WitLimits>,
) -> Returned<WitPayload> {
    let fuel_left = store.get_fuel()?;
    let (digest, child) = match child_call(&store, &digest, limits, fuel_left) {
        Ok(found) => found,
        Err(e) => return answer(Err(e)),
    };
    let host = child.host.clone();
    let outcome = host.execute(digest, Payload::from(input), child).await;
    charge(&mut store, fuel_left, outcome.fuel_burned)?;
    answer(outcome.result.map(WitPayload::from))
}

async fn execute_batch(
    mut store: StoreContextMut<'_, CallState>,
    digest: String,
    inputs: Vec<WitPayload>,
    limits: Option<WitLimits>,
) -> Returned<Vec<Result<WitPayload, WitError>>> {
    let fuel_left = store.get_fuel()?;
    let (digest, child) = match child_call(&store, &digest, limits, fuel_left) {
        Ok(found) => found,
        Err(e) => return answer(Err(e)),
    };
    let host = child.host.clone();
    let inputs = inputs.into_iter().map(Payload::from).collect();
    let outcome = host.execute_batch(digest, inputs, child).await;
    charge(&mut store, fuel_left, outcome.fuel_burned)?;
    answer(outcome.result.map(|rows| {
        rows.into_iter()
            .map(|row| row.map(WitPayload::from).map_err(WitError::from))
            .collect()
    }))
}

async fn execute_columns(
    mut store: StoreContextMut<'_, CallState>,
    digest: String,
    batch: Vec<u8>,
    limits: Option<WitLimits>,
) -> Returned<Vec<u8>> {
    let fuel_left = store.get_fuel()?;
    let (digest, child) = match child_call(&store, &digest, limits, fuel_left) {
        Ok(found) => found,
        Err(e) => return answer(Err(e)),
    };
    let host = child.host.clone();
    let outcome = host.execute_columns(digest, batch, child).await;
    charge(&mut store, fuel_left, outcome.fuel_burned)?;
    answer(outcome.result)
}

/// The digest a guest named and the scope of its nested call, capped by what the
/// caller has left of every ceiling.
fn child_call(
    store: &StoreContextMut<'_, CallState>,
    digest: &str,
    limits: Option<WitLimits>,
    fuel_left: u64,
) -> Result<(Digest, Scope), Error> {
    let digest = Digest::parse(digest)?;
    let child = child_scope(store, limits, fuel_left)?;
    Ok((digest, child))
}

/// The scope of work a guest sets off in the node: one level deeper, capped by what
/// the caller has left of every ceiling.
fn child_scope(
    store: &StoreContextMut<'_, CallState>,
    limits: Option<WitLimits>,
    fuel_left: u64,
) -> Result<Scope, Error> {
    let limits = limits.map(Limits::from).unwrap_or_default();
    let state = store.data();
    state.scope.child(&limits, fuel_left, state.memory.left())
}

async fn forget(store: StoreContextMut<'_, CallState>, digest: String) -> Returned<()> {
    let host = store.data().scope.host.clone();
    if !host.config().allow_guest_register {
        return answer(Err(denied("forget")));
    }
    answer(Digest::parse(&digest).map(|d| {
        host.forget(&d);
    }))
}

/// Charges the caller for what a nested call burned, and ends the caller too when
/// the nested call used up the caller's time: a caller never outlives its deadline
/// because the time ran out inside a child.
fn charge(
    store: &mut StoreContextMut<'_, CallState>,
    fuel_left: u64,
    burned: u64,
) -> wasmtime::Result<()> {
    store.set_fuel(fuel_left.saturating_sub(burned))?;
    if Instant::now() >= store.data().scope.deadline {
        return Err(wasmtime::Error::new(Trap::Interrupt));
    }
    Ok(())
}

/// Hands a result back to the guest: errors are values for it to handle, not traps.
fn answer<T>(result: Result<T, Error>) -> Returned<T> {
    Ok((result.map_err(WitError::from),))
}
