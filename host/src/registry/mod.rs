//! The registry: from digest to a compiled, pre-linked component, each compiled
//! exactly once per node whatever its callers do; fetched from the store and
//! verified when this node does not hold it; published when registered here.

mod once;
mod script;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::OnceCell;

use self::once::{Made, Once};
use tokio::task::JoinHandle;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::artifacts::{Artifacts, Seal, Unloaded};
use crate::bindings::UdfPre;
use crate::bindings::columnar::ColumnarUdfPre;
use crate::bindings::js::JsRuntimePre;
use crate::columns::ColumnSignature;
use crate::engine::{self, Config};
use crate::sandbox::{self, CallState, Scope};
use crate::source::{SourceKind, check_is_component};
use crate::stats::Counters;
use crate::store::{Published, Store};
use crate::{Digest, Error};

pub(crate) use script::{Script, ScriptInstance};

/// Everything a node holds: its engine and linker, its settings, the compile-once
/// cells of the components it knows, the JavaScript runtime, and its counters.
pub(crate) struct Registry {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    artifacts: Option<Artifacts>,
    /// The cluster's seal, when the operator gave a cluster key: compiled code is
    /// shared through the store under it. Without one, nothing compiled is ever
    /// read from the store.
    shared: Option<Seal>,
    slots: Mutex<HashMap<Digest, Arc<Slot>>>,
    /// The clock of the slots' last use, for dropping the least recently used.
    uses: AtomicU64,
    /// Digests the store did not have (or had damaged), and until when that is
    /// believed without asking again.
    missing: Mutex<HashMap<Digest, (Instant, Error)>>,
    /// Bumped whenever bytes arrive here by `register` or `deploy`: a fetch that
    /// failed across a bump does not remember its failure, which may be stale.
    arrivals: AtomicU64,
    /// Fetches from the store under way, so racing callers share one.
    fetches: Mutex<HashMap<Digest, Arc<Fetch>>>,
    /// Publishes started by `register`, for [`Registry::settle`].
    publishing: Mutex<Vec<JoinHandle<()>>>,
    /// The JavaScript runtime, compiled (or loaded) once, on the first script.
    js_runtime: Arc<Once<JsRuntimePre<CallState>>>,
    /// Compiles running at once: at most one per core. A compile goes on after its
    /// callers have gone (the next caller wants it), so it is bounded here rather
    /// than by the callers' slots.
    compiling: tokio::sync::Semaphore,
    /// The client guests' allowed outgoing requests share.
    pub(crate) outbound: crate::outbound::OutboundClient,
}

type Fetch = OnceCell<Result<Arc<[u8]>, Error>>;

/// One digest's place in the registry: its bytes, and the outcome of compiling them
/// once.
struct Slot {
    source: Arc<[u8]>,
    compiled: Arc<Once<Arc<Compiled>>>,
    /// Whether the bytes still need publishing: true for bytes a caller handed in,
    /// false for bytes that came from the store.
    unpublished: AtomicBool,
    /// Whether the store holds the bytes (they came from it, or were published to
    /// it): only then may the slot be dropped, since only then can it come back.
    durable: AtomicBool,
    /// When it was last looked up, on the registry's clock.
    used: AtomicU64,
}

/// How a component came to be ready.
pub(crate) enum Readied {
    Compiled,
    /// From this node's own artifact.
    Loaded,
    /// From the artifact the cluster shares through the store.
    Fetched,
}

/// The largest shared artifact fetched from the store, whatever the components'
/// maximum size.
const LARGEST_SHARED_ARTIFACT: u64 = 1 << 30;

/// What the cluster's store had for a key.
enum Shared {
    /// A sealed artifact that verified.
    Loaded(Component),
    /// One that did not verify.
    Rejected,
    /// None (or the store could not be asked).
    Missing,
}

/// A compiled component, linked against everything the host provides.
pub(crate) struct Compiled {
    pub(crate) digest: Digest,
    /// Present when the component exports `burncache:host/function`.
    pub(crate) udf: Option<UdfPre<CallState>>,
    /// Present when the component exports `burncache:host/columns`.
    pub(crate) columns: Option<ColumnarUdfPre<CallState>>,
    /// What the columnar function declared, asked once, by its first call.
    pub(crate) signature: std::sync::OnceLock<Arc<ColumnSignature>>,
    /// Present when the component exports `wasi:http/incoming-handler`.
    pub(crate) proxy: Option<ProxyPre<CallState>>,
    /// Present when the bytes are a JavaScript script (checked, and ready to run on
    /// the JavaScript runtime).
    pub(crate) script: Option<Script>,
    /// The size of its compiled code in memory, for the held bounds.
    pub(crate) size: u64,
}

/// A component looked up for a call, and the fuel its caller spent readying it (a
/// script's check, when it ran within a nested call's budget).
pub(crate) struct Looked {
    pub(crate) result: Result<Arc<Compiled>, Error>,
    pub(crate) fuel_burned: u64,
}

impl Registry {
    /// # Errors
    ///
    /// [`Error::Backend`] when the engine or the artifact directory cannot be set up.
    pub(crate) fn new(config: Config) -> Result<Registry, Error> {
        let engine = engine::build(&config)?;
        let artifacts = match &config.artifact_dir {
            Some(dir) => Some(Artifacts::open(
                dir,
                &engine,
                config.artifact_key_file.as_deref(),
                config.artifact_max_bytes,
            )?),
            None => None,
        };
        let shared = match &config.cluster_key_file {
            Some(file) if config.store.is_some() => {
                Some(Seal::shared(crate::artifacts::read_key(file)?, &engine))
            }
            Some(_) => {
                return Err(Error::InvalidInput(
                    "a cluster key shares compiled code through the store: give a store too"
                        .to_string(),
                ));
            }
            None => None,
        };
        engine::start_deadline_clock(&engine);
        let linker = sandbox::linker(&engine)?;
        Ok(Registry {
            engine,
            linker,
            config,
            counters: Counters::default(),
            artifacts,
            shared,
            slots: Mutex::default(),
            uses: AtomicU64::new(0),
            missing: Mutex::default(),
            arrivals: AtomicU64::new(0),
            fetches: Mutex::default(),
            publishing: Mutex::default(),
            js_runtime: Arc::default(),
            compiling: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            ),
            outbound: crate::outbound::OutboundClient::default(),
        })
    }

    /// See [`BurnCache::register`](crate::BurnCache::register). A guest registering
    /// bytes passes its scope as `within`, so that a script's check runs on its
    /// budget; returns the fuel that burned.
    pub(crate) async fn register(
        self: &Arc<Self>,
        bytes: &[u8],
        within: Option<&Scope>,
    ) -> (Result<Digest, Error>, u64) {
        if let Err(e) = self.check_size(bytes.len() as u64) {
            return (Err(e), 0);
        }
        let digest = Digest::of(bytes);
        self.found(&digest);
        let slot = match self.slot(&digest) {
            Some(slot) => slot,
            None => self.insert(digest, Arc::from(bytes), true),
        };
        let looked = self.ready(digest, &slot, within).await;
        if let Err(e) = looked.result {
            return (Err(e), looked.fuel_burned);
        }
        // A plain load first keeps the hit path free of writes to shared memory.
        if slot.unpublished.load(Ordering::Relaxed)
            && slot.unpublished.swap(false, Ordering::Relaxed)
        {
            self.publish_in_background(digest, slot.clone());
        }
        (Ok(digest), looked.fuel_burned)
    }

    /// See [`BurnCache::deploy`](crate::BurnCache::deploy).
    pub(crate) async fn deploy(
        self: &Arc<Self>,
        bytes: &[u8],
    ) -> Result<(Digest, Published), Error> {
        let store = self.store()?;
        self.check_size(bytes.len() as u64)?;
        let digest = Digest::of(bytes);
        self.found(&digest);
        let slot = match self.slot(&digest) {
            Some(slot) => slot,
            None => self.insert(digest, Arc::from(bytes), false),
        };
        self.ready(digest, &slot, None).await.result?;
        slot.unpublished.store(false, Ordering::Relaxed);
        let published = store.publish(&digest, bytes).await?;
        slot.durable.store(true, Ordering::Relaxed);
        Ok((digest, published))
    }

    /// Refuses bytes larger than the node takes.
    fn check_size(&self, len: u64) -> Result<(), Error> {
        let most = self.config.max_component_bytes;
        if len > most {
            return Err(Error::InvalidInput(format!(
                "{len} bytes is larger than this node's {most}-byte maximum component size"
            )));
        }
        Ok(())
    }

    /// Forgets that the store lacked `digest`: its bytes are here now.
    fn found(&self, digest: &Digest) {
        let mut missing = lock(&self.missing);
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        if !missing.is_empty() {
            missing.remove(digest);
        }
    }

    /// Waits for the publishes `register` started in the background.
    pub(crate) async fn settle(&self) {
        let pending = std::mem::take(&mut *lock(&self.publishing));
        for task in pending {
            let _ = task.await;
        }
    }

    /// The configured store.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when none is configured.
    pub(crate) fn store(&self) -> Result<&Store, Error> {
        self.config
            .store
            .as_ref()
            .ok_or_else(|| Error::Backend("no store is configured for this node".to_string()))
    }

    pub(crate) fn forget(&self, digest: &Digest) -> bool {
        self.lock().remove(digest).is_some()
    }

    pub(crate) fn source(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        self.slot(digest).map(|slot| slot.source.clone())
    }

    pub(crate) fn holds(&self, digest: &Digest) -> bool {
        self.lock().contains_key(digest)
    }

    pub(crate) fn is_compiled(&self, digest: &Digest) -> bool {
        self.slot(digest)
            .is_some_and(|slot| matches!(slot.compiled.get(), Some(Ok(_))))
    }

    /// The component's bytes: held here, or fetched from the store (and verified)
    /// without compiling them.
    pub(crate) async fn fetch_source(&self, digest: &Digest) -> Result<Arc<[u8]>, Error> {
        if let Some(slot) = self.slot(digest) {
            return Ok(slot.source.clone());
        }
        let source = self.fetch(digest).await?;
        let source = self.insert(*digest, source, false).source.clone();
        self.evict(digest);
        Ok(source)
    }

    pub(crate) fn digests(&self) -> Vec<Digest> {
        self.lock().keys().copied().collect()
    }

    pub(crate) fn len(&self) -> u64 {
        self.lock().len() as u64
    }

    /// The compiled component for `digest`: held here, or fetched from the store and
    /// readied. A nested call passes its scope as `within`, so that a script's check
    /// it sets off runs on its budget.
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        digest: &Digest,
        within: Option<&Scope>,
    ) -> Looked {
        let slot = match self.slot(digest) {
            Some(slot) => slot,
            None => match self.fetch(digest).await {
                Ok(source) => self.insert(*digest, source, false),
                Err(e) => {
                    return Looked {
                        result: Err(e),
                        fuel_burned: 0,
                    };
                }
            },
        };
        self.ready(*digest, &slot, within).await
    }

    /// The outcome of readying a slot, once (see [`Once`]): a compile, or a
    /// script's check, runs in a task of its own and keeps its outcome even if every
    /// caller waiting for it has gone.
    async fn ready(
        self: &Arc<Self>,
        digest: Digest,
        slot: &Arc<Slot>,
        within: Option<&Scope>,
    ) -> Looked {
        if let Some(done) = slot.compiled.get() {
            Counters::bump(&self.counters.hits);
            return Looked {
                result: done.clone(),
                fuel_burned: 0,
            };
        }
        Counters::bump(&self.counters.misses);
        let (result, fuel_burned) = Once::get_or_make(&slot.compiled, || {
            let registry = self.clone();
            let source = slot.source.clone();
            let within = within.cloned();
            // Made here, in the caller's span: the compile runs in a task of its
            // own, and its span is a child of the call that started it.
            let span = tracing::info_span!("compile", %digest);
            tracing::Instrument::instrument(
                async move { registry.make(digest, &source, within).await },
                span,
            )
        })
        .await;
        self.evict(&digest);
        Looked {
            result,
            fuel_burned,
        }
    }

    /// Readies bytes: checks a script on the JavaScript runtime, or compiles a
    /// component. What the bytes themselves decide (compiled, or refused) is kept;
    /// the node's trouble is not, nor what a script's check ran into on a nested
    /// call's budget (see [`Registry::check_script`]).
    async fn make(
        self: &Arc<Self>,
        digest: Digest,
        source: &Arc<[u8]>,
        within: Option<Scope>,
    ) -> Made<Arc<Compiled>> {
        match SourceKind::of(source) {
            SourceKind::Script => self.check_script(digest, source, within).await,
            SourceKind::Component => {
                let outcome = self.compile(digest, source.clone()).await.map(Arc::new);
                let keep = !matches!(outcome, Err(Error::Backend(_)));
                Made {
                    outcome,
                    keep,
                    fuel_burned: 0,
                }
            }
        }
    }

    /// Fetches and verifies bytes from the store; racing callers share one fetch.
    /// A store that failed is not remembered (it may be up next time); a digest it
    /// lacked, or held damaged, is, briefly (see [`Registry::remember_missing`]).
    async fn fetch(&self, digest: &Digest) -> Result<Arc<[u8]>, Error> {
        let Some(store) = &self.config.store else {
            return Err(Error::NotFound(*digest));
        };
        if let Some(e) = self.known_missing(digest) {
            Counters::bump(&self.counters.negative_hits);
            return Err(e);
        }
        let fetch = lock(&self.fetches).entry(*digest).or_default().clone();
        let result = fetch
            .get_or_init(|| async {
                Counters::bump(&self.counters.fetches);
                let arrivals = self.arrivals.load(Ordering::Relaxed);
                let most = self.config.max_component_bytes;
                let fetched: Result<Arc<[u8]>, Error> = tracing::Instrument::instrument(
                    store.fetch(digest, most),
                    tracing::info_span!("fetch", %digest),
                )
                .await
                .map(Arc::from);
                match &fetched {
                    Ok(bytes) => {
                        tracing::info!(%digest, bytes = bytes.len(), store = store.url(), "fetched")
                    }
                    Err(e) => {
                        tracing::warn!(%digest, store = store.url(), error = %e, "fetch failed");
                        self.remember_missing(digest, e, arrivals);
                    }
                }
                fetched
            })
            .await
            .clone();
        let mut fetches = lock(&self.fetches);
        if fetches.get(digest).is_some_and(|f| Arc::ptr_eq(f, &fetch)) {
            fetches.remove(digest);
        }
        result
    }

    /// The failure remembered for `digest`, while it is fresh.
    fn known_missing(&self, digest: &Digest) -> Option<Error> {
        let mut missing = lock(&self.missing);
        let (until, e) = missing.get(digest)?;
        if Instant::now() < *until {
            return Some(e.clone());
        }
        missing.remove(digest);
        None
    }

    /// Remembers, for a short while, that the store had no object for `digest` or
    /// a damaged one (what a caller can do nothing about by asking again soon); a
    /// store that failed is asked again at once.
    /// `arrivals`: the count when the fetch began; bytes that arrived since may be
    /// these, so nothing is remembered then.
    fn remember_missing(&self, digest: &Digest, e: &Error, arrivals: u64) {
        /// Entries kept at most; past it, the stale ones go, then the rest.
        const MOST: usize = 65_536;
        let ttl = self.config.not_found_ttl;
        if ttl.is_zero() || !matches!(e, Error::NotFound(_) | Error::Integrity(_)) {
            return;
        }
        let now = Instant::now();
        let mut missing = lock(&self.missing);
        if self.arrivals.load(Ordering::Relaxed) != arrivals {
            return;
        }
        if missing.len() >= MOST {
            missing.retain(|_, (until, _)| *until > now);
            if missing.len() >= MOST {
                missing.clear();
            }
        }
        if let Some(until) = now.checked_add(ttl) {
            missing.insert(*digest, (until, e.clone()));
        }
    }

    /// Drops the least recently used components until the node holds at most
    /// `max_held` of them and `max_held_bytes` of their bytes and code, or none but
    /// `keep` (the one just readied) can go. A component the store does not hold
    /// (registered here, not yet published) never goes: it could not come back. Callers still running a dropped component keep
    /// it until they finish; the next call loads it again.
    fn evict(&self, keep: &Digest) {
        let mut slots = self.lock();
        let size = |slot: &Slot| {
            let code = match slot.compiled.get() {
                Some(Ok(compiled)) => compiled.size,
                _ => 0,
            };
            slot.source.len() as u64 + code
        };
        let mut bytes: u64 = slots.values().map(|slot| size(slot)).sum();
        let (most, most_bytes) = (self.config.max_held, self.config.max_held_bytes);
        if slots.len() <= most && bytes <= most_bytes {
            return;
        }
        // Only a slot that can come back (the store holds its bytes), that is not
        // being readied (dropping one under way would start a second compile), and
        // that no caller holds right now.
        let mut order: Vec<(u64, Digest)> = slots
            .iter()
            .filter(|(digest, slot)| {
                *digest != keep
                    && slot.durable.load(Ordering::Relaxed)
                    && !slot.compiled.is_running()
                    && Arc::strong_count(slot) == 1
            })
            .map(|(digest, slot)| (slot.used.load(Ordering::Relaxed), *digest))
            .collect();
        order.sort_unstable_by_key(|(used, _)| *used);
        for (_, digest) in order {
            if slots.len() <= most && bytes <= most_bytes {
                break;
            }
            if let Some(slot) = slots.remove(&digest) {
                bytes = bytes.saturating_sub(size(&slot));
                Counters::bump(&self.counters.evictions);
                tracing::debug!(%digest, "dropped from memory (least recently used)");
            }
        }
    }

    fn publish_in_background(self: &Arc<Self>, digest: Digest, slot: Arc<Slot>) {
        let Some(store) = self.config.store.clone() else {
            return;
        };
        let registry = self.clone();
        let task = tokio::spawn(async move {
            match store.publish(&digest, &slot.source).await {
                Ok(published) => {
                    slot.durable.store(true, Ordering::Relaxed);
                    Counters::bump(&registry.counters.publishes);
                    tracing::debug!(%digest, store = store.url(), ?published, "published");
                }
                Err(e) => {
                    Counters::bump(&registry.counters.publish_failures);
                    tracing::warn!(%digest, error = %e, "could not publish a registered component");
                }
            }
        });
        let mut publishing = lock(&self.publishing);
        publishing.retain(|task| !task.is_finished());
        publishing.push(task);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, Arc<Slot>>> {
        lock(&self.slots)
    }

    /// The slot of `digest`, marked as used now. The clock is coarse, advancing
    /// only as slots are added, so the hit path reads it and writes the slot only
    /// when it moved.
    fn slot(&self, digest: &Digest) -> Option<Arc<Slot>> {
        let slot = self.lock().get(digest).cloned()?;
        let now = self.uses.load(Ordering::Relaxed);
        if slot.used.load(Ordering::Relaxed) != now {
            slot.used.store(now, Ordering::Relaxed);
        }
        Some(slot)
    }

    fn insert(&self, digest: Digest, source: Arc<[u8]>, unpublished: bool) -> Arc<Slot> {
        self.lock()
            .entry(digest)
            .or_insert_with(|| {
                Arc::new(Slot {
                    source,
                    compiled: Arc::default(),
                    unpublished: AtomicBool::new(unpublished),
                    durable: AtomicBool::new(!unpublished),
                    used: AtomicU64::new(self.uses.fetch_add(1, Ordering::Relaxed) + 1),
                })
            })
            .clone()
    }

    /// Compiles a component (or loads its artifact) on the blocking pool, and counts
    /// and logs how that went.
    async fn compile(
        self: &Arc<Self>,
        digest: Digest,
        source: Arc<[u8]>,
    ) -> Result<Compiled, Error> {
        let counters = &self.counters;
        let registry = self.clone();
        let started = Instant::now();
        if let Err(e) = check_is_component(&source) {
            // Counted as a compile that failed, as it always was.
            Counters::bump(&counters.compiles);
            counters.record_compile(started.elapsed(), true);
            return Err(e);
        }
        let make = async move {
            // Counted as it starts, so that a compile is counted even if no caller
            // is left to hear how it ended.
            Counters::bump(&registry.counters.compiles);
            let engine = registry.engine.clone();
            blocking(move || {
                Component::new(&engine, &source).map_err(|e| Error::CompileFailed(format!("{e:#}")))
            })
            .await
        };
        let outcome = match self.ready_code(digest, make).await {
            Ok((component, readied)) => {
                let registry = self.clone();
                blocking(move || registry.link(digest, &component))
                    .await
                    .map(|compiled| (compiled, readied))
            }
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        match &outcome {
            Ok((_, Readied::Loaded)) => {
                Counters::bump(&counters.artifact_loads);
                tracing::info!(%digest, ?took, "loaded the compiled artifact");
            }
            Ok((_, Readied::Fetched)) => {
                Counters::bump(&counters.artifact_fetches);
                tracing::info!(%digest, ?took, "loaded the cluster's shared artifact");
            }
            Ok((_, Readied::Compiled)) => {
                counters.record_compile(took, false);
                tracing::info!(%digest, ?took, "compiled");
            }
            Err(e) => {
                counters.record_compile(took, true);
                tracing::warn!(%digest, ?took, error = %e, "compile failed");
            }
        }
        outcome.map(|(compiled, _)| compiled)
    }

    /// Compiled code for `key`: this node's own artifact, else the one the cluster
    /// shares through the store (its seal verified), else what `make` compiles
    /// (one compile per core at once), which is then saved here and shared.
    pub(crate) async fn ready_code(
        self: &Arc<Self>,
        key: Digest,
        make: impl Future<Output = Result<Component, Error>>,
    ) -> Result<(Component, Readied), Error> {
        let registry = self.clone();
        if let Some(component) = blocking(move || Ok(registry.load_artifact(&key))).await? {
            return Ok((component, Readied::Loaded));
        }
        let replace = match self.fetch_shared(key).await {
            Shared::Loaded(component) => return Ok((component, Readied::Fetched)),
            Shared::Rejected => true,
            Shared::Missing => false,
        };
        let component = {
            let _compiling = self
                .compiling
                .acquire()
                .await
                .map_err(|_| Error::Backend("the node is shutting down".to_string()))?;
            make.await?
        };
        // Serialized once, for this node's artifact and the cluster's.
        let registry = self.clone();
        let serialized = component.clone();
        let code = blocking(move || {
            let code = serialized.serialize().ok();
            if let (Some(code), Some(artifacts)) = (&code, &registry.artifacts) {
                match artifacts.save_code(&key, code) {
                    Ok(evicted) => {
                        registry
                            .counters
                            .artifact_evictions
                            .fetch_add(evicted, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(%key, "{e}"),
                }
            }
            Ok(code)
        })
        .await?;
        if let Some(code) = code {
            self.share(key, &code, replace);
        }
        Ok((component, Readied::Compiled))
    }

    /// The most a shared artifact may be: compiled code runs to a few times its
    /// component's size.
    fn largest_shared_artifact(&self) -> u64 {
        self.config
            .max_component_bytes
            .saturating_mul(16)
            .min(LARGEST_SHARED_ARTIFACT)
    }

    /// The cluster's shared artifact for `key`, if there is one whose seal
    /// verifies; it is then kept as this node's own too. One that does not verify
    /// is counted, and the caller compiles (and replaces it).
    async fn fetch_shared(self: &Arc<Self>, key: Digest) -> Shared {
        let (Some(seal), Some(store)) = (self.shared.as_ref(), self.config.store.as_ref()) else {
            return Shared::Missing;
        };
        let space = seal.space();
        let fetch = store.fetch_artifact(&space, &key, self.largest_shared_artifact());
        let span = tracing::info_span!("fetch-artifact", digest = %key);
        let sealed = match tracing::Instrument::instrument(fetch, span).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return Shared::Missing,
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot fetch the shared artifact");
                return Shared::Missing;
            }
        };
        let registry = self.clone();
        let opened = blocking(move || {
            let seal = registry.shared.as_ref().expect("checked above");
            Ok(match seal.open(&registry.engine, &key, &sealed) {
                Ok(component) => {
                    registry.save_artifact(&key, &component);
                    Shared::Loaded(component)
                }
                Err(why) => {
                    Counters::bump(&registry.counters.shared_rejections);
                    tracing::warn!(%key, "refusing the cluster's shared artifact: {why}");
                    Shared::Rejected
                }
            })
        })
        .await;
        opened.unwrap_or(Shared::Missing)
    }

    /// Shares compiled code with the cluster, in the background: where there is
    /// none, or over one that did not verify (`replace`).
    fn share(self: &Arc<Self>, key: Digest, code: &[u8], replace: bool) {
        let (Some(seal), Some(store)) = (&self.shared, self.config.store.clone()) else {
            return;
        };
        let sealed = seal.seal(&key, code);
        let space = seal.space();
        let registry = self.clone();
        let task = tokio::spawn(async move {
            match store.publish_artifact(&space, &key, sealed, replace).await {
                Ok(()) => {
                    Counters::bump(&registry.counters.artifact_shares);
                    tracing::debug!(%key, "shared the compiled artifact");
                }
                Err(e) => tracing::warn!(%key, error = %e, "cannot share the compiled artifact"),
            }
        });
        let mut publishing = lock(&self.publishing);
        publishing.retain(|task| !task.is_finished());
        publishing.push(task);
    }

    /// Links a component against everything the host provides.
    fn link(&self, digest: Digest, component: &Component) -> Result<Compiled, Error> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| Error::CompileFailed(format!("cannot link: {e:#}")))?;
        let code = component.image_range();
        Ok(Compiled {
            digest,
            udf: UdfPre::new(pre.clone()).ok(),
            columns: ColumnarUdfPre::new(pre.clone()).ok(),
            signature: std::sync::OnceLock::new(),
            proxy: ProxyPre::new(pre).ok(),
            script: None,
            size: (code.end as usize).saturating_sub(code.start as usize) as u64,
        })
    }

    /// Compiles bytes for one use, outside the cache (`burncache run`).
    pub(crate) async fn compile_once_off(
        self: &Arc<Self>,
        bytes: Vec<u8>,
    ) -> Result<Component, Error> {
        check_is_component(&bytes)?;
        let registry = self.clone();
        blocking(move || {
            Component::new(&registry.engine, &bytes)
                .map_err(|e| Error::CompileFailed(format!("{e:#}")))
        })
        .await
    }

    /// The component compiled earlier under `key`, if the artifact directory has it.
    fn load_artifact(&self, key: &Digest) -> Option<Component> {
        match self.artifacts.as_ref()?.load(&self.engine, key) {
            Ok(component) => Some(component),
            Err(Unloaded::Missing) => None,
            Err(Unloaded::Rejected) => {
                Counters::bump(&self.counters.artifact_rejections);
                None
            }
        }
    }

    /// Saves a compiled component under `key`; a failure is logged, not fatal.
    fn save_artifact(&self, key: &Digest, component: &Component) {
        let Some(artifacts) = &self.artifacts else {
            return;
        };
        match artifacts.save(key, component) {
            Ok(evicted) => {
                self.counters
                    .artifact_evictions
                    .fetch_add(evicted, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(%key, "{e}"),
        }
    }
}

/// Runs CPU-heavy work (compiling, reading artifacts) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(Error::Backend(format!("the compile task failed: {e}"))))
}

/// The map locks are never held across anything that can panic half-way through an
/// update, so a poisoned lock still guards a consistent map.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
