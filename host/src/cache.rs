//! The compile-once cache: from digest to a compiled, pre-linked component.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::UdfPre;
use crate::call::CallState;
use crate::engine::{self, Config};
use crate::stats::{Counters, Stats};
use crate::{Digest, Error};

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
    slots: Mutex<HashMap<Digest, Arc<Slot>>>,
    pub(crate) counters: Counters,
}

/// One digest's place in the cache: its bytes, and the outcome of compiling them once.
struct Slot {
    source: Arc<[u8]>,
    compiled: OnceCell<Result<Arc<Compiled>, Error>>,
}

/// A compiled component, linked against everything the host provides.
pub(crate) struct Compiled {
    pub(crate) digest: Digest,
    /// Present when the component exports `burncache:host/function`.
    pub(crate) udf: Option<UdfPre<CallState>>,
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
        engine::start_deadline_clock(&engine);
        let linker = crate::call::linker(&engine)?;
        Ok(BurnCache {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                slots: Mutex::default(),
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
    pub async fn register(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let digest = Digest::of(bytes);
        let slot = match self.slot(&digest) {
            Some(slot) => slot,
            None => self.insert(digest, Arc::from(bytes)),
        };
        self.compiled(digest, &slot).await.map(|_| digest)
    }

    /// Makes sure the component `digest` is ready to run on this node, and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no component with this digest is held here; otherwise
    /// the outcome of its compile, as [`BurnCache::register`].
    pub async fn register_by_hash(&self, digest: &Digest) -> Result<Digest, Error> {
        self.lookup(digest).await.map(|c| c.digest)
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

    /// The digests this node holds, in no particular order.
    pub fn digests(&self) -> Vec<Digest> {
        self.lock().keys().copied().collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let components = self.lock().len() as u64;
        self.inner.counters.snapshot(components)
    }

    /// The compiled component for `digest`, compiling it if need be.
    pub(crate) async fn lookup(&self, digest: &Digest) -> Result<Arc<Compiled>, Error> {
        let slot = self.slot(digest).ok_or(Error::NotFound(*digest))?;
        self.compiled(*digest, &slot).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Slot>>> {
        // The map is never left half-updated, so a panic elsewhere cannot poison it
        // in a way that matters.
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, digest: &Digest) -> Option<Arc<Slot>> {
        self.lock().get(digest).cloned()
    }

    fn insert(&self, digest: Digest, source: Arc<[u8]>) -> Arc<Slot> {
        self.lock()
            .entry(digest)
            .or_insert_with(|| {
                Arc::new(Slot {
                    source,
                    compiled: OnceCell::new(),
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
        slot.compiled
            .get_or_init(|| async {
                Counters::bump(&counters.compiles);
                let inner = self.inner.clone();
                let source = slot.source.clone();
                let started = Instant::now();
                let outcome = tokio::task::spawn_blocking(move || compile(&inner, digest, &source))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Error::Backend(format!("the compile task failed: {e}")))
                    });
                let took = started.elapsed();
                counters.record_compile(took, outcome.is_err());
                log_compile(digest, took, &outcome);
                outcome.map(Arc::new)
            })
            .await
            .clone()
    }
}

fn log_compile(digest: Digest, took: Duration, outcome: &Result<Compiled, Error>) {
    match outcome {
        Ok(_) => tracing::info!(%digest, ?took, "compiled"),
        Err(e) => tracing::warn!(%digest, ?took, error = %e, "compile failed"),
    }
}

/// Checks what the bytes are, compiles them and links them against the host.
fn compile(inner: &Inner, digest: Digest, bytes: &[u8]) -> Result<Compiled, Error> {
    check_is_component(bytes)?;
    let component =
        Component::new(&inner.engine, bytes).map_err(|e| Error::CompileFailed(format!("{e:#}")))?;
    let pre = inner
        .linker
        .instantiate_pre(&component)
        .map_err(|e| Error::CompileFailed(format!("cannot link: {e:#}")))?;
    let udf = UdfPre::new(pre).ok();
    Ok(Compiled { digest, udf })
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
        "not a WebAssembly component: {} bytes starting {}",
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
