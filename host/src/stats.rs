//! Counters for what a cache has done, and the snapshot callers read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

use crate::{Error, ErrorKind};

/// A snapshot of a cache's counters since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Look-ups that found a finished compile (success or remembered failure).
    pub hits: u64,
    /// Look-ups that had to compile, or wait for a compile already under way.
    pub misses: u64,
    /// Compiles started.
    pub compiles: u64,
    /// Compiles and script checks that failed (the failure is remembered until
    /// `forget`).
    pub compile_failures: u64,
    /// Scripts checked (parsed and their function found) on the JavaScript runtime:
    /// once per new script, however many callers race.
    pub script_checks: u64,
    /// Times the JavaScript runtime was compiled: at most once per node, however many
    /// scripts run on it (none when it was loaded from the artifact directory).
    pub runtime_compiles: u64,
    /// Times the compiled JavaScript runtime was loaded from the artifact directory.
    pub runtime_loads: u64,
    /// Times the compiled JavaScript runtime was loaded from the cluster's shared
    /// artifact.
    pub runtime_fetches: u64,
    /// Components loaded from the artifact directory instead of compiled.
    pub artifact_loads: u64,
    /// Artifact files refused (MAC, owner, type or wasmtime's own check) and
    /// deleted; the component was compiled again.
    pub artifact_rejections: u64,
    /// Artifact files deleted to keep the directory within its size bound.
    pub artifact_evictions: u64,
    /// Components loaded from the compiled artifact the cluster shares through the
    /// store (with a cluster key), instead of compiled.
    pub artifact_fetches: u64,
    /// Shared artifacts refused (the seal did not verify); compiled here instead.
    pub shared_rejections: u64,
    /// Compiled artifacts shared with the cluster through the store.
    pub artifact_shares: u64,
    /// Components dropped from memory to keep within the held bounds; a later call
    /// loads them back (from the artifact, the bytes from the store).
    pub evictions: u64,
    /// Look-ups answered from the short-lived memory of digests the store did not
    /// have (or had damaged), without asking it again.
    pub negative_hits: u64,
    /// Components fetched (and verified) from the store.
    pub fetches: u64,
    /// Outgoing HTTP requests from guests that were sent (and answered, or not).
    pub outbound_sent: u64,
    /// Outgoing HTTP requests from guests the allow-list refused.
    pub outbound_denied: u64,
    /// Outgoing HTTP requests that were allowed but failed (no connection, a TLS
    /// failure, the call's deadline).
    pub outbound_failed: u64,
    /// Components published to the store by `register`.
    pub publishes: u64,
    /// Publishes by `register` that failed (the registration itself succeeded).
    pub publish_failures: u64,
    /// Time spent compiling, summed.
    #[serde(serialize_with = "as_seconds")]
    pub compile_time: Duration,
    /// Calls that returned an output.
    pub calls_ok: u64,
    /// Calls that failed, by error kind (`timeout`, `guest`, ...).
    pub calls_failed: BTreeMap<&'static str, u64>,
    /// Fuel burned by top-level calls (nested calls are charged to their caller).
    pub fuel_burned: u64,
    /// Components this node holds (compiled or failed).
    pub components: u64,
}

impl Stats {
    /// Failed calls of one kind.
    pub fn failed(&self, kind: ErrorKind) -> u64 {
        self.calls_failed.get(kind.as_str()).copied().unwrap_or(0)
    }
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The live counters behind [`Stats`]. Relaxed atomics: each counter is exact, but a
/// snapshot is not a single instant across counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) compiles: AtomicU64,
    pub(crate) compile_failures: AtomicU64,
    pub(crate) script_checks: AtomicU64,
    pub(crate) runtime_compiles: AtomicU64,
    pub(crate) runtime_loads: AtomicU64,
    pub(crate) runtime_fetches: AtomicU64,
    pub(crate) compile_nanos: AtomicU64,
    pub(crate) artifact_loads: AtomicU64,
    pub(crate) artifact_rejections: AtomicU64,
    pub(crate) artifact_evictions: AtomicU64,
    pub(crate) artifact_fetches: AtomicU64,
    pub(crate) shared_rejections: AtomicU64,
    pub(crate) artifact_shares: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) negative_hits: AtomicU64,
    pub(crate) fetches: AtomicU64,
    pub(crate) outbound_sent: AtomicU64,
    pub(crate) outbound_denied: AtomicU64,
    pub(crate) outbound_failed: AtomicU64,
    pub(crate) publishes: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) calls_ok: AtomicU64,
    calls_failed: [AtomicU64; ErrorKind::ALL.len()],
    pub(crate) fuel_burned: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn add_fuel(&self, fuel: u64) {
        self.fuel_burned.fetch_add(fuel, Relaxed);
    }

    pub(crate) fn record_compile(&self, took: Duration, failed: bool) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.compile_nanos.fetch_add(nanos, Relaxed);
        if failed {
            Counters::bump(&self.compile_failures);
        }
    }

    pub(crate) fn record_call<T>(&self, result: &Result<T, Error>) {
        match result {
            Ok(_) => Counters::bump(&self.calls_ok),
            Err(e) => Counters::bump(&self.calls_failed[e.kind().index()]),
        }
    }

    pub(crate) fn snapshot(&self, components: u64) -> Stats {
        let calls_failed = ErrorKind::ALL
            .iter()
            .map(|kind| (kind.as_str(), self.calls_failed[kind.index()].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Stats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            compiles: self.compiles.load(Relaxed),
            compile_failures: self.compile_failures.load(Relaxed),
            script_checks: self.script_checks.load(Relaxed),
            runtime_compiles: self.runtime_compiles.load(Relaxed),
            runtime_loads: self.runtime_loads.load(Relaxed),
            runtime_fetches: self.runtime_fetches.load(Relaxed),
            artifact_loads: self.artifact_loads.load(Relaxed),
            artifact_rejections: self.artifact_rejections.load(Relaxed),
            artifact_evictions: self.artifact_evictions.load(Relaxed),
            artifact_fetches: self.artifact_fetches.load(Relaxed),
            shared_rejections: self.shared_rejections.load(Relaxed),
            artifact_shares: self.artifact_shares.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            negative_hits: self.negative_hits.load(Relaxed),
            fetches: self.fetches.load(Relaxed),
            outbound_sent: self.outbound_sent.load(Relaxed),
            outbound_denied: self.outbound_denied.load(Relaxed),
            outbound_failed: self.outbound_failed.load(Relaxed),
            publishes: self.publishes.load(Relaxed),
            publish_failures: self.publish_failures.load(Relaxed),
            compile_time: Duration::from_nanos(self.compile_nanos.load(Relaxed)),
            calls_ok: self.calls_ok.load(Relaxed),
            calls_failed,
            fuel_burned: self.fuel_burned.load(Relaxed),
            components,
        }
    }
}
