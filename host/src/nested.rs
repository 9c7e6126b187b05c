//! The `burn-cache` interface as guests import it: nested calls that run in their own
//! Store but draw on their caller's budget.
//!
//! These functions are registered by hand rather than through generated host traits
//! because each needs the calling Store itself: to read the caller's fuel before a
//! nested call and to charge what the nested call burned after it.

use std::time::Instant;
use wasmtime::component::Linker;

use wasmtime::{StoreContextMut, Trap};

use crate::bindings::{WitError, WitLimits, WitPayload};
use crate::call::{CallState, Scope};
use crate::limits::Limits;
use crate::{Digest, Error, Payload};

const INTERFACE: &str = "burncache:host/burn-cache@0.1.0";

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
    api.func_wrap_async("forget", |store, (digest,): (String,)| {
        Box::new(forget(store, digest))
    })?;
    Ok(())
}

async fn register(store: StoreContextMut<'_, CallState>, bytes: Vec<u8>) -> Returned<String> {
    let scope = &store.data().scope;
    if !scope.cache.config().allow_guest_register {
        return answer(Err(Error::PermissionDenied(
            "guests may not register components on this node (the operator has not \
             allowed it)"
                .to_string(),
        )));
    }
    let cache = scope.cache.clone();
    answer(cache.register(&bytes).await.map(|d| d.to_string()))
}

async fn register_by_hash(
    store: StoreContextMut<'_, CallState>,
    digest: String,
) -> Returned<String> {
    let cache = store.data().scope.cache.clone();
    let result = match Digest::parse(&digest) {
        Ok(digest) => cache.register_by_hash(&digest).await.map(|d| d.to_string()),
        Err(e) => Err(e),
    };
    answer(result)
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
    let cache = child.cache.clone();
    let outcome = cache
        .execute_in(&digest, Payload::from(input), || child)
        .await;
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
    let cache = child.cache.clone();
    let inputs = inputs.into_iter().map(Payload::from).collect();
    let outcome = cache.execute_batch_in(&digest, inputs, || child).await;
    charge(&mut store, fuel_left, outcome.fuel_burned)?;
    answer(outcome.result.map(|rows| {
        rows.into_iter()
            .map(|row| row.map(WitPayload::from).map_err(WitError::from))
            .collect()
    }))
}

/// The digest a guest named and the scope of its nested call, capped by what the
/// caller has left.
fn child_call(
    store: &StoreContextMut<'_, CallState>,
    digest: &str,
    limits: Option<WitLimits>,
    fuel_left: u64,
) -> Result<(Digest, Scope), Error> {
    let digest = Digest::parse(digest)?;
    let limits = limits.map(Limits::from).unwrap_or_default();
    let child = store.data().scope.child(&limits, fuel_left)?;
    Ok((digest, child))
}

async fn forget(store: StoreContextMut<'_, CallState>, digest: String) -> Returned<()> {
    let scope = &store.data().scope;
    if !scope.cache.config().allow_guest_register {
        return answer(Err(Error::PermissionDenied(
            "guests may not forget components on this node (the operator has not \
             allowed it)"
                .to_string(),
        )));
    }
    answer(Digest::parse(&digest).map(|d| {
        scope.cache.forget(&d);
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

impl From<WitLimits> for Limits {
    fn from(l: WitLimits) -> Limits {
        Limits {
            fuel: l.fuel,
            memory_bytes: l.memory_bytes,
            timeout: l.timeout_ms.map(std::time::Duration::from_millis),
            output_bytes: l.output_bytes,
        }
    }
}

impl From<Error> for WitError {
    fn from(e: Error) -> WitError {
        match e {
            Error::NotFound(d) => WitError::NotFound(d.to_string()),
            Error::InvalidDigest(s) => WitError::InvalidDigest(s),
            Error::CompileFailed(s) => WitError::CompileFailed(s),
            Error::FuelExhausted => WitError::FuelExhausted,
            Error::MemoryLimit => WitError::MemoryLimit,
            Error::Timeout => WitError::Timeout,
            Error::OutputTooLarge(n) => WitError::OutputTooLarge(n),
            Error::Trap(s) => WitError::Trap(s),
            Error::Guest(s) => WitError::Guest(s),
            Error::InvalidInput(s) => WitError::InvalidInput(s),
            Error::PermissionDenied(s) => WitError::PermissionDenied(s),
            Error::DepthExceeded(n) => WitError::DepthExceeded(n),
            Error::Backend(s) => WitError::Backend(s),
            Error::Integrity(s) => WitError::Integrity(s),
        }
    }
}

impl From<WitError> for Error {
    fn from(e: WitError) -> Error {
        match e {
            WitError::NotFound(d) => match Digest::parse(&d) {
                Ok(digest) => Error::NotFound(digest),
                Err(_) => Error::InvalidDigest(d),
            },
            WitError::InvalidDigest(s) => Error::InvalidDigest(s),
            WitError::CompileFailed(s) => Error::CompileFailed(s),
            WitError::FuelExhausted => Error::FuelExhausted,
            WitError::MemoryLimit => Error::MemoryLimit,
            WitError::Timeout => Error::Timeout,
            WitError::OutputTooLarge(n) => Error::OutputTooLarge(n),
            WitError::Trap(s) => Error::Trap(s),
            WitError::Guest(s) => Error::Guest(s),
            WitError::InvalidInput(s) => Error::InvalidInput(s),
            WitError::PermissionDenied(s) => Error::PermissionDenied(s),
            WitError::DepthExceeded(n) => Error::DepthExceeded(n),
            WitError::Backend(s) => Error::Backend(s),
            WitError::Integrity(s) => Error::Integrity(s),
        }
    }
}
