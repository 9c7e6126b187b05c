//! The compile-once cache: from digest to a compiled, pre-linked component.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::artifacts::Artifacts;
use crate::bindings::UdfPre;
use crate::bindings::js::JsRuntimePre;
use crate::call::CallState;
use crate::engine::{self, Config};
use crate::script::{Script, SourceKind};
use crate::stats::{Counters, Stats};
use crate::store::{Published, Store};
use crate::{Digest, Error};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// A node's cache of components, keyed by digest, and the entry point for running them.
///
/// Cloning is cheap and every clone shares the same cache. Each unique component is
/// compiled exactly once however many callers race for it: the first compiles on a
/// blocking thread, the others wait for the same outcome, and no lock is held while
/// compiling. A compile failure is remembered until [`BurnCache::forget`].
///
/// The cache must be used from within a tokio runtime (compiles run on its blocking
/// pool).
#[derive(Clone)]
pub struct BurnCache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) config: Config,
    artifacts: Option<Artifacts>,
    slots: Mutex<HashMap<Digest, Arc<Slot>>>,
    /// Fetches from the store under way, so racing callers share one.
    fetches: Mutex<HashMap<Digest, Arc<Fetch>>>,
    /// Publishes started by `register`, for [`BurnCache::settle`].
    publishing: Mutex<Vec<JoinHandle<()>>>,
    /// The JavaScript runtime, compiled (or loaded) once, on the first script.
    pub(crate) js_runtime: OnceCell<JsRuntimePre<CallState>>,
    pub(crate) counters: Counters,
}

type Fetch = OnceCell<Result<Arc<[u8]>, Error>>;

/// One digest's place in the cache: its bytes, and the outcome of compiling them once.
struct Slot {
    source: Arc<[u8]>,
    compiled: OnceCell<Result<Arc<Compiled>, Error>>,
    /// Whether the bytes still need publishing: true for bytes a caller handed in,
    /// false for bytes that came from the store.
    unpublished: AtomicBool,
}

/// How a component came to be ready.
pub(crate) enum Readied {
    Compiled,
    Loaded,
}

/// A compiled component, linked against everything the host provides.
pub(crate) struct Compiled {
    pub(crate) digest: Digest,
    /// Present when the component exports `burncache:host/function`.
    pub(crate) udf: Option<UdfPre<CallState>>,
    /// Present when the component exports `wasi:http/incoming-handler`.
    pub(crate) proxy: Option<ProxyPre<CallState>>,
    /// Present when the bytes are a JavaScript script (checked, and ready to run on
    /// the JavaScript runtime).
    pub(crate) script: Option<Script>,
}

impl BurnCache {
    /// A cache with the default [`Config`].
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the engine cannot be set up on this machine (for
    /// instance, the instance pool cannot reserve its address space).
    pub fn new() -> Result<BurnCache, Error> {
        BurnCache::with_config(Config::default())
    }

    /// A cache with the operator's `config`.
    ///
    /// # Errors
    ///
    /// As [`BurnCache::new`].
    pub fn with_config(config: Config) -> Result<BurnCache, Error> {
        let engine = engine::build(&config)?;
        let artifacts = match &config.artifact_dir {
            Some(dir) => Some(Artifacts::open(dir, &engine)?),
            None => None,
        };
        engine::start_deadline_clock(&engine);
        let linker = crate::call::linker(&engine)?;
        Ok(BurnCache {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                artifacts,
                slots: Mutex::default(),
                fetches: Mutex::default(),
                publishing: Mutex::default(),
                js_runtime: OnceCell::new(),
                counters: Counters::default(),
            }),
        })
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The settings this cache was made with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Registers a component from its bytes, compiling it unless this node already
    /// has, and returns its digest.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidInput`] when the bytes are not a component (not WebAssembly at
    ///   all, or a core module).
    /// - [`Error::CompileFailed`] when the component is invalid or imports something
    ///   the host does not provide.
    ///
    /// Both are remembered: registering the same bytes again fails the same way
    /// without compiling again, until [`BurnCache::forget`].
    ///
    /// With a store configured, newly registered bytes are also published to it, in
    /// the background: a failure to publish is logged and counted
    /// (`Stats::publish_failures`) but does not fail the registration. Use
    /// [`BurnCache::deploy`] when publishing must succeed.
    pub async fn register(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let digest = Digest::of(bytes);
        let slot = match self.slot(&digest) {
            Some(slot) => slot,
            None => self.insert(digest, Arc::from(bytes), true),
        };
        self.compiled(digest, &slot).await?;
        // A plain load first keeps the hit path free of writes to shared memory.
        if slot.unpublished.load(Ordering::Relaxed)
            && slot.unpublished.swap(false, Ordering::Relaxed)
        {
            self.publish_in_background(digest, slot.source.clone());
        }
        Ok(digest)
    }

    /// Registers a component and publishes it to the store, waiting for the store.
    /// Publishing bytes the store already holds succeeds and changes nothing.
    ///
    /// # Errors
    ///
    /// As [`BurnCache::register`], and [`Error::Backend`] when no store is
    /// configured or it cannot be written.
    pub async fn deploy(&self, bytes: &[u8]) -> Result<(Digest, Published), Error> {
        let store = self.store()?;
        let digest = Digest::of(bytes);
        let slot = match self.slot(&digest) {
            Some(slot) => slot,
            None => self.insert(digest, Arc::from(bytes), false),
        };
        self.compiled(digest, &slot).await?;
        slot.unpublished.store(false, Ordering::Relaxed);
        let published = store.publish(&digest, bytes).await?;
        Ok((digest, published))
    }

    /// Waits for the publishes `register` started in the background. A short-lived
    /// process calls this before it exits, so what it registered reaches the store.
    pub async fn settle(&self) {
        let pending = std::mem::take(&mut *lock(&self.inner.publishing));
        for task in pending {
            let _ = task.await;
        }
    }

    /// Makes sure the component `digest` is ready to run on this node, and returns it:
    /// from what this node holds, or else fetched from the store, verified against
    /// the digest, and compiled (or loaded from the artifact directory).
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`] when neither this node nor its store has the component;
    /// - [`Error::Integrity`] when the store's bytes do not hash to the digest
    ///   (nothing is cached);
    /// - [`Error::Backend`] when the store cannot be reached (components this node
    ///   holds keep working);
    /// - otherwise the outcome of its compile, as [`BurnCache::register`].
    pub async fn register_by_hash(&self, digest: &Digest) -> Result<Digest, Error> {
        self.lookup(digest).await.map(|c| c.digest)
    }

    /// The configured store.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when none is configured.
    pub fn store(&self) -> Result<&Store, Error> {
        self.inner
            .config
            .store
            .as_ref()
            .ok_or_else(|| Error::Backend("no store is configured for this node".to_string()))
    }

    /// Drops the component from this node: its bytes, compiled code and any remembered
    /// failure. Calls already running finish. Returns whether it was held.
    pub fn forget(&self, digest: &Digest) -> bool {
        self.lock().remove(digest).is_some()
    }

    /// The bytes of a registered component.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no component with this digest is held here.
    pub fn source(&self, digest: &Digest) -> Result<Arc<[u8]>, Error> {
        self.slot(digest)
            .map(|slot| slot.source.clone())
            .ok_or(Error::NotFound(*digest))
    }

    /// Whether this node holds the component (compiled, failed, or not yet compiled).
    pub fn holds(&self, digest: &Digest) -> bool {
        self.lock().contains_key(digest)
    }

    /// Whether this node holds the component compiled and ready to run.
    pub fn is_compiled(&self, digest: &Digest) -> bool {
        self.slot(digest)
            .is_some_and(|slot| matches!(slot.compiled.get(), Some(Ok(_))))
    }

    /// The component's bytes: held here, or fetched from the store (and verified)
    /// without compiling them.
    ///
    /// # Errors
    ///
    /// As [`BurnCache::register_by_hash`], less compile failures.
    pub async fn fetch_source(&self, digest: &Digest) -> Result<Arc<[u8]>, Error> {
        if let Some(slot) = self.slot(digest) {
            return Ok(slot.source.clone());
        }
        let source = self.fetch(digest).await?;
        Ok(self.insert(*digest, source, false).source.clone())
    }

    /// The digests this node holds, in no particular order.
    pub fn digests(&self) -> Vec<Digest> {
        self.lock().keys().copied().collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let components = self.lock().len() as u64;
        self.inner.counters.snapshot(components)
    }

    /// The compiled component for `digest`: held here, or fetched from the store.
    pub(crate) async fn lookup(&self, digest: &Digest) -> Result<Arc<Compiled>, Error> {
        let slot = match self.slot(digest) {
            Some(slot) => slot,
            None => {
                let source = self.fetch(digest).await?;
                self.insert(*digest, source, false)
            }
        };
        self.compiled(*digest, &slot).await
    }

    /// Fetches and verifies bytes from the store; racing callers share one fetch.
    /// Failures are not remembered: a store that is down now may be up next time.
    async fn fetch(&self, digest: &Digest) -> Result<Arc<[u8]>, Error> {
        let Some(store) = &self.inner.config.store else {
            return Err(Error::NotFound(*digest));
        };
        let fetch = lock(&self.inner.fetches)
            .entry(*digest)
            .or_default()
            .clone();
        let result = fetch
            .get_or_init(|| async {
                Counters::bump(&self.inner.counters.fetches);
                let fetched: Result<Arc<[u8]>, Error> = store.fetch(digest).await.map(Arc::from);
                match &fetched {
                    Ok(bytes) => {
                        tracing::info!(%digest, bytes = bytes.len(), store = store.url(), "fetched")
                    }
                    Err(e) => {
                        tracing::warn!(%digest, store = store.url(), error = %e, "fetch failed")
                    }
                }
                fetched
            })
            .await
            .clone();
        let mut fetches = lock(&self.inner.fetches);
        if fetches.get(digest).is_some_and(|f| Arc::ptr_eq(f, &fetch)) {
            fetches.remove(digest);
        }
        result
    }

    fn publish_in_background(&self, digest: Digest, bytes: Arc<[u8]>) {
        let Some(store) = self.inner.config.store.clone() else {
            return;
        };
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            match store.publish(&digest, &bytes).await {
                Ok(published) => {
                    Counters::bump(&inner.counters.publishes);
                    tracing::debug!(%digest, store = store.url(), ?published, "published");
                }
                Err(e) => {
                    Counters::bump(&inner.counters.publish_failures);
                    tracing::warn!(%digest, error = %e, "could not publish a registered component");
                }
            }
        });
        let mut publishing = lock(&self.inner.publishing);
        publishing.retain(|task| !task.is_finished());
        publishing.push(task);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, Arc<Slot>>> {
        lock(&self.inner.slots)
    }

    fn slot(&self, digest: &Digest) -> Option<Arc<Slot>> {
        self.lock().get(digest).cloned()
    }

    fn insert(&self, digest: Digest, source: Arc<[u8]>, unpublished: bool) -> Arc<Slot> {
        self.lock()
            .entry(digest)
            .or_insert_with(|| {
                Arc::new(Slot {
                    source,
                    compiled: OnceCell::new(),
                    unpublished: AtomicBool::new(unpublished),
                })
            })
            .clone()
    }

    async fn compiled(&self, digest: Digest, slot: &Slot) -> Result<Arc<Compiled>, Error> {
        let counters = &self.inner.counters;
        if let Some(done) = slot.compiled.get() {
            Counters::bump(&counters.hits);
            return done.clone();
        }
        Counters::bump(&counters.misses);
        let readied = slot
            .compiled
            .get_or_try_init(|| async {
                let outcome = match SourceKind::of(&slot.source) {
                    SourceKind::Script => self.check_script(digest, &slot.source).await,
                    SourceKind::Component => self.compile(digest, slot.source.clone()).await,
                };
                match outcome {
                    // The node's trouble (no free instance for a script's check, a
                    // failed task), not the bytes': not remembered, so the next caller
                    // tries again.
                    Err(e @ Error::Backend(_)) => Err(e),
                    remembered => Ok(remembered.map(Arc::new)),
                }
            })
            .await;
        match readied {
            Ok(remembered) => remembered.clone(),
            Err(e) => Err(e),
        }
    }

    /// Compiles a component (or loads its artifact) on the blocking pool, and counts
    /// and logs how that went.
    async fn compile(&self, digest: Digest, source: Arc<[u8]>) -> Result<Compiled, Error> {
        let counters = &self.inner.counters;
        let inner = self.inner.clone();
        let started = Instant::now();
        let outcome = blocking(move || ready(&inner, digest, &source)).await;
        let took = started.elapsed();
        match &outcome {
            Ok((_, Readied::Loaded)) => {
                Counters::bump(&counters.artifact_loads);
                tracing::info!(%digest, ?took, "loaded the compiled artifact");
            }
            Ok((_, Readied::Compiled)) => {
                Counters::bump(&counters.compiles);
                counters.record_compile(took, false);
                tracing::info!(%digest, ?took, "compiled");
            }
            Err(e) => {
                Counters::bump(&counters.compiles);
                counters.record_compile(took, true);
                tracing::warn!(%digest, ?took, error = %e, "compile failed");
            }
        }
        outcome.map(|(compiled, _)| compiled)
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

/// Checks what the bytes are, then loads the compiled component this host saved
/// earlier or compiles it (saving the result), and links it against the host.
fn ready(inner: &Inner, digest: Digest, bytes: &[u8]) -> Result<(Compiled, Readied), Error> {
    check_is_component(bytes)?;
    let (component, readied) = compile_or_load(inner, &digest, bytes)?;
    let pre = inner
        .linker
        .instantiate_pre(&component)
        .map_err(|e| Error::CompileFailed(format!("cannot link: {e:#}")))?;
    let udf = UdfPre::new(pre.clone()).ok();
    let proxy = ProxyPre::new(pre).ok();
    let compiled = Compiled {
        digest,
        udf,
        proxy,
        script: None,
    };
    Ok((compiled, readied))
}

/// The component compiled from `bytes`: loaded from the artifact directory when this
/// host saved it earlier, else compiled (and saved).
fn compile_or_load(
    inner: &Inner,
    digest: &Digest,
    bytes: &[u8],
) -> Result<(Component, Readied), Error> {
    if let Some(component) = inner.load_artifact(digest) {
        return Ok((component, Readied::Loaded));
    }
    let component =
        Component::new(&inner.engine, bytes).map_err(|e| Error::CompileFailed(format!("{e:#}")))?;
    inner.save_artifact(digest, &component);
    Ok((component, Readied::Compiled))
}

impl Inner {
    /// The component compiled earlier under `key`, if the artifact directory has it.
    pub(crate) fn load_artifact(&self, key: &Digest) -> Option<Component> {
        self.artifacts.as_ref()?.load(&self.engine, key)
    }

    /// Saves a compiled component under `key`; a failure is logged, not fatal.
    pub(crate) fn save_artifact(&self, key: &Digest, component: &Component) {
        if let Some(artifacts) = &self.artifacts
            && let Err(e) = artifacts.save(key, component)
        {
            tracing::warn!(%key, "{e}");
        }
    }
}

/// Tells a component from a core module or from bytes that are not WebAssembly.
pub(crate) fn check_is_component(bytes: &[u8]) -> Result<(), Error> {
    if wasmparser::Parser::is_component(bytes) {
        return Ok(());
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(Error::InvalidInput(
            "this is a core WebAssembly module, not a component; build for \
             wasm32-wasip2 or wrap it with `wasm-tools component new`"
                .to_string(),
        ));
    }
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(Error::InvalidInput(format!(
        "neither a WebAssembly component nor a UTF-8 JavaScript script: {} bytes starting {}",
        bytes.len(),
        if head.is_empty() {
            "with nothing".to_string()
        } else {
            format!("`{}`", head.join(" "))
        }
    )))
}

impl std::fmt::Debug for BurnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnCache")
            .field("components", &self.lock().len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
