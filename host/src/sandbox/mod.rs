//! The sandbox: the one place a Store is made and a call is run.
//!
//! Every call kind — function, batch, script check, script call, HTTP guest,
//! command — runs here, so each rule that protects the host is written once:
//! the memory ceiling over memories and tables ([`ceilings`]), the caps on host-side
//! state a guest can cause, one sealed WASI base with explicit grants per call kind
//! ([`state`]), one bounded capture of the guest's output, fuel, the wall-clock
//! deadline, the classification of what went wrong, and the counters. Guests reach
//! back into the node only through the [`Host`] trait.

mod ceilings;
mod host;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTableError};
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, Trap};
use wasmtime_wasi_http::FieldMapError;

use crate::Error;
use crate::engine::{FUEL_YIELD_INTERVAL, ticks_for};
use crate::limits::{Ceilings, Limits};
use crate::stats::Counters;

pub(crate) use host::Host;
pub(crate) use state::{CallState, Grants};

/// What one call did: its result, and what it cost.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    /// The call's output, or its classified failure.
    pub result: Result<T, Error>,
    /// Fuel burned by the call, its nested calls included.
    pub fuel_burned: u64,
    /// Wall-clock time from the start of the call to its end.
    pub elapsed: Duration,
}

impl<T> Outcome<T> {
    /// A call refused before any guest code ran (its component could not be found
    /// or compiled, its input was malformed, ...): counted like any failed call.
    pub(crate) fn refused(counters: &Counters, e: Error, started: Instant) -> Outcome<T> {
        let result = Err(e);
        counters.record_call(&result);
        Outcome {
            result,
            fuel_burned: 0,
            elapsed: started.elapsed(),
        }
    }

    /// This outcome, also charged with `fuel` spent on its behalf before it ran (a
    /// script's check within a nested call's budget).
    pub(crate) fn spent(mut self, fuel: u64) -> Outcome<T> {
        self.fuel_burned = self.fuel_burned.saturating_add(fuel);
        self
    }
}

/// Where a call stands: the node it runs on, how deep it is nested, its call tree,
/// and the ceilings it runs under. Nested calls derive theirs from their caller's.
#[derive(Clone)]
pub(crate) struct Scope {
    pub(crate) host: Arc<dyn Host>,
    pub(crate) depth: u32,
    pub(crate) deadline: Instant,
    pub(crate) ceilings: Ceilings,
    tree: Arc<Tree>,
}

impl Scope {
    /// A top-level call's scope: the caller's `limits`, resolved against the node's
    /// defaults and clamped to its maxima.
    pub(crate) fn top(host: Arc<dyn Host>, limits: &Limits) -> Scope {
        let config = host.config();
        let ceilings = config.maxima.resolve(&config.defaults, limits);
        let tree = Arc::new(Tree {
            live: AtomicU32::new(0),
            max: config.max_depth.saturating_add(1),
            uncharged: AtomicU64::new(0),
        });
        Scope {
            deadline: deadline_after(ceilings.timeout),
            depth: 0,
            ceilings,
            tree,
            host,
        }
    }

    /// The scope of a call made from inside this one: one level deeper, in the same
    /// call tree, and capped by what this call has left of every ceiling: `fuel_left`,
    /// `memory_left` (its memory ceiling less what its memories and tables hold),
    /// its deadline and its output ceiling.
    ///
    /// # Errors
    ///
    /// [`Error::DepthExceeded`] past the node's depth limit; [`Error::Timeout`] when
    /// no time is left.
    pub(crate) fn child(
        &self,
        request: &Limits,
        fuel_left: u64,
        memory_left: u64,
    ) -> Result<Scope, Error> {
        let config = self.host.config();
        let depth = self.depth + 1;
        if depth > config.max_depth {
            return Err(Error::DepthExceeded(config.max_depth));
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout);
        }
        let left = Ceilings {
            fuel: fuel_left,
            memory_bytes: memory_left,
            timeout: remaining,
            output_bytes: self.ceilings.output_bytes,
        };
        let ceilings = left.resolve(&config.defaults, request);
        Ok(Scope {
            host: self.host.clone(),
            depth,
            deadline: deadline_after(ceilings.timeout).min(self.deadline),
            ceilings,
            tree: self.tree.clone(),
        })
    }
}

/// The instant `timeout` from now; a timeout too long for the clock (an embedder's
/// `Duration::MAX`) is a deadline a century away rather than a panic.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// One top-level call and every call nested in it. Nested calls are synchronous, so
/// a tree holds one Store per level; script checks and batch retries could add more,
/// and the count bounds them all: a tree never holds more than `max_depth + 1`
/// instance slots of the node's pool.
struct Tree {
    live: AtomicU32,
    max: u32,
    /// Fuel burned by nested calls that were cut off (their caller's deadline
    /// passed while they ran) before their caller could be charged for it.
    uncharged: AtomicU64,
}

/// A Store's place in its call tree, given back when the Store is dropped.
struct TreeSlot(Arc<Tree>);

impl TreeSlot {
    fn enter(tree: &Arc<Tree>, max_depth: u32) -> Result<TreeSlot, Error> {
        tree.live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live < tree.max).then_some(live + 1)
            })
            .map_err(|_| Error::DepthExceeded(max_depth))?;
        Ok(TreeSlot(tree.clone()))
    }
}

impl Drop for TreeSlot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The linker every component is linked with: WASI 0.2 (sealed per call),
/// `wasi:http` (incoming requests; outgoing ones as the operator's allow-list says)
/// and the `burn-cache` interface.
///
/// # Errors
///
/// [`Error::Backend`] if the host's interfaces cannot be added (a bug).
pub(crate) fn linker(engine: &Engine) -> Result<Linker<CallState>, Error> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
        .and_then(|()| state::limit_outgoing_requests(&mut linker))
        .and_then(|()| host::add_to_linker(&mut linker))
        .map_err(|e| Error::Backend(format!("cannot set up the linker: {e:#}")))?;
    Ok(linker)
}

/// One call's Store, set up with every ceiling of its scope.
pub(crate) struct Sandbox {
    pub(crate) store: Store<CallState>,
    /// The fuel budget of the whole call, across renewals.
    budget: u64,
    /// Fuel the current Store started with.
    fuel: u64,
    /// Fuel burned by the Stores this one replaced (see [`Sandbox::renew`]).
    burned_before: u64,
    started: Instant,
    /// Whether its outcome was handed back (and so its fuel to whoever charges it).
    settled: bool,
    slot: TreeSlot,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A nested call cut off before it could hand back its outcome: its fuel
        // still counts, on its call tree.
        if !self.settled && self.scope().depth > 0 {
            let burned = self.fuel_burned();
            self.slot.0.uncharged.fetch_add(burned, Ordering::Relaxed);
        }
    }
}

impl Sandbox {
    /// A fresh Store for a call in `scope`, with the WASI grants of its kind.
    ///
    /// # Errors
    ///
    /// [`Error::DepthExceeded`] when the call tree holds all the Stores it may.
    pub(crate) fn new(scope: Scope, grants: Grants<'_>) -> Result<Sandbox, Error> {
        let slot = TreeSlot::enter(&scope.tree, scope.host.config().max_depth)?;
        let budget = scope.ceilings.fuel;
        let store = new_store(scope, &grants)?;
        Ok(Sandbox {
            store,
            budget,
            fuel: budget,
            burned_before: 0,
            started: Instant::now(),
            settled: false,
            slot,
        })
    }

    /// Replaces the Store (sealed) with a fresh one on what is left of the same
    /// budget: the fuel not yet burned, the same deadline, the same place in the
    /// call tree. Used after a trap, which leaves an instance unusable; the old
    /// Store (and its instance slot) is freed.
    pub(crate) fn renew(&mut self) -> Result<(), Error> {
        let burned = self.fuel_burned();
        let mut scope = self.store.data().scope.clone();
        let fuel = self.budget.saturating_sub(burned);
        scope.ceilings.fuel = fuel;
        self.store = new_store(scope, &Grants::Sealed)?;
        self.fuel = fuel;
        self.burned_before = burned;
        Ok(())
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.store.data().scope
    }

    pub(crate) fn output_ceiling(&self) -> u64 {
        self.scope().ceilings.output_bytes
    }

    /// Fuel burned so far, nested calls included.
    pub(crate) fn fuel_burned(&self) -> u64 {
        let left = self.store.get_fuel().unwrap_or(0);
        self.burned_before + self.fuel.saturating_sub(left)
    }

    /// Whether the memory ceiling refused a growth during this call.
    pub(crate) fn memory_refused(&self) -> bool {
        self.store.data().memory.refused()
    }

    /// Names the failure of a call that ran in this Store.
    pub(crate) fn classify(&mut self, err: wasmtime::Error) -> Error {
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => return Error::FuelExhausted,
            Some(Trap::Interrupt) => return Error::Timeout,
            _ => {}
        }
        if host_state_full(&err) {
            self.store.data_mut().memory.refuse();
        }
        let state = self.store.data();
        if state.memory.refused() {
            return Error::MemoryLimit;
        }
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Error::Backend(format!("no free instance slot on this node: {err}"));
        }
        let what = match err.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => "stack overflow (call stack exhausted)".to_string(),
            Some(trap) => trap.to_string(),
            None => format!("{err:#}"),
        };
        let stderr = state.stderr();
        if stderr.is_empty() {
            Error::Trap(what)
        } else {
            Error::Trap(format!("{what}; guest stderr: {stderr}"))
        }
    }

    /// Runs `work` in this Store to its end: within the deadline (also enforced
    /// around time spent in host calls, where epoch interruption cannot reach), with
    /// the output ceiling checked, and counted. Returns what it did and cost.
    pub(crate) async fn run<T>(
        self,
        work: impl AsyncFnOnce(&mut Sandbox) -> Result<T, Error>,
    ) -> Outcome<T> {
        self.run_to_end(work, true).await
    }

    /// Runs `work` as [`Sandbox::run`] does, for work that is not a call (a
    /// script's check): its fuel is counted, its outcome is not a call's.
    pub(crate) async fn run_uncounted<T>(
        self,
        work: impl AsyncFnOnce(&mut Sandbox) -> Result<T, Error>,
    ) -> Outcome<T> {
        self.run_to_end(work, false).await
    }

    async fn run_to_end<T>(
        mut self,
        work: impl AsyncFnOnce(&mut Sandbox) -> Result<T, Error>,
        is_call: bool,
    ) -> Outcome<T> {
        let deadline = tokio::time::Instant::from_std(self.scope().deadline);
        let span = tracing::info_span!("guest", call = is_call);
        let mut result = tracing::Instrument::instrument(
            tokio::time::timeout_at(deadline, work(&mut self)),
            span,
        )
        .await
        .unwrap_or(Err(Error::Timeout));
        if self.store.data().output_exceeded()
            && !matches!(result, Err(Error::FuelExhausted | Error::Timeout))
        {
            result = Err(Error::OutputTooLarge(self.output_ceiling()));
        }
        let outcome = Outcome {
            result,
            fuel_burned: self.settle(),
            elapsed: self.started.elapsed(),
        };
        let scope = self.scope();
        let counters = scope.host.counters();
        if is_call {
            counters.record_call(&outcome.result);
        }
        // Nested calls' fuel is charged to their caller, which counts it.
        if scope.depth == 0 {
            counters.add_fuel(outcome.fuel_burned);
        }
        outcome
    }

    /// The fuel this call burned, to hand back with its outcome: a top-level call's
    /// includes what nested calls cut off by its deadline burned.
    fn settle(&mut self) -> u64 {
        self.settled = true;
        let burned = self.fuel_burned();
        if self.scope().depth == 0 {
            burned.saturating_add(self.slot.0.uncharged.swap(0, Ordering::Relaxed))
        } else {
            burned
        }
    }
}

/// Whether a failure is the host refusing to keep more state for the guest: its
/// resource table is full, a header map would grow past its limit, or a host call
/// would copy more than the call may.
fn host_state_full(err: &wasmtime::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        ) || matches!(
            cause.downcast_ref::<FieldMapError>(),
            Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields)
        ) || {
            let text = cause.to_string();
            text.contains("fuel allocated for hostcalls") || text.contains("handle limit exceeded")
        }
    })
}

/// A Store with every limit of `scope` applied.
fn new_store(scope: Scope, grants: &Grants<'_>) -> Result<Store<CallState>, Error> {
    let ceilings = scope.ceilings;
    let remaining = scope.deadline.saturating_duration_since(Instant::now());
    let engine = scope.host.engine().clone();
    let mut store = Store::new(&engine, CallState::new(scope, grants));
    store.limiter(|state| &mut state.memory);
    store.set_hostcall_fuel(ceilings::hostcall_bytes(ceilings.memory_bytes));
    store.set_max_component_handles(ceilings::COMPONENT_HANDLES);
    let setup = |store: &mut Store<CallState>| -> wasmtime::Result<()> {
        store.set_fuel(ceilings.fuel)?;
        store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))?;
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks_for(remaining));
        Ok(())
    };
    setup(&mut store).map_err(|e| Error::Backend(format!("cannot set up the store: {e:#}")))?;
    Ok(store)
}
