//! The wasmtime engine every call runs on: how it is configured, and the one thread
//! that drives wall-clock deadlines.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::Error;
use crate::limits::Ceilings;
use crate::store::Store;

/// How often the deadline clock ticks. A deadline is enforced to within one tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How much fuel a guest burns between yields to the async executor, so that a busy
/// guest never holds a worker thread for long.
pub(crate) const FUEL_YIELD_INTERVAL: u64 = 50_000;

/// How much of an instance's dirtied memory is reset in place for reuse rather than
/// handed back to the kernel.
const KEEP_RESIDENT: usize = 4 << 20;

/// An operator's settings for a [`BurnCache`](crate::BurnCache).
#[derive(Debug, Clone)]
pub struct Config {
    /// The ceilings a call gets when it asks for nothing.
    pub defaults: Ceilings,
    /// The most a call may ask for; larger requests are clamped to these.
    pub maxima: Ceilings,
    /// How deep guests may nest `burn-cache.execute` calls.
    pub max_depth: u32,
    /// Whether guests may `register` new component bytes and `forget` components.
    /// Off by default: a guest can run what the operator deployed, not add to it.
    pub allow_guest_register: bool,
    /// How many instances may be alive at once on this node (the size of the
    /// instance pool). Calls beyond it fail with a `backend` error.
    pub max_instances: u32,
    /// Whether to pre-allocate instance slots (the pooling allocator with
    /// copy-on-write memory images). On by default: it is what makes a fresh
    /// instance per call cheap.
    pub pooling: bool,
    /// Where component bytes are published on `register` and fetched from on
    /// `register_by_hash`. `None`: this node only knows what it was given.
    pub store: Option<Store>,
    /// Where compiled code is kept across restarts. `None`: compile in every process.
    pub artifact_dir: Option<PathBuf>,
    /// The key file artifacts are authenticated with (64 hex digits, mode 0600).
    /// `None`: `node.key` in the artifact directory, made on first use. Nodes given
    /// one key file can use each other's artifacts.
    pub artifact_key_file: Option<PathBuf>,
    /// The cluster key file (64 hex digits, mode 0600): with one (and a store),
    /// compiled code is shared through the store, sealed under the key, and a node
    /// loads what another compiled instead of compiling. Without one, nothing
    /// compiled is ever read from the store.
    pub cluster_key_file: Option<PathBuf>,
    /// The most bytes of artifacts kept per engine configuration; the least
    /// recently used are deleted past it.
    pub artifact_max_bytes: u64,
    /// The largest component (or script) this node takes, from a caller or from
    /// the store; a larger object is refused before it is read.
    pub max_component_bytes: u64,
    /// The most components held in memory at once; the least recently used are
    /// dropped past it (and loaded again when called).
    pub max_held: usize,
    /// The most bytes of components held in memory (their bytes and compiled
    /// code); the least recently used are dropped past it.
    pub max_held_bytes: u64,
    /// Which guests may send HTTP requests, and where to. Default: none, nowhere.
    pub outbound: crate::outbound::OutboundPolicy,
    /// What HTTP guests get beyond the sealed base: environment variables and
    /// directories, as `wasmtime serve --env/--dir` grant them. Default: nothing.
    pub http_guests: HttpGuestGrants,
    /// How long the node remembers that the store had no object (or a damaged one)
    /// for a digest, instead of asking again on every call. Zero: never.
    pub not_found_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            defaults: Ceilings::DEFAULT,
            maxima: Ceilings::MAXIMUM,
            max_depth: 8,
            allow_guest_register: false,
            max_instances: 256,
            pooling: true,
            store: None,
            artifact_dir: None,
            artifact_key_file: None,
            cluster_key_file: None,
            artifact_max_bytes: 4 << 30,
            max_component_bytes: 64 << 20,
            max_held: 1024,
            max_held_bytes: 2 << 30,
            not_found_ttl: Duration::from_secs(2),
            outbound: crate::outbound::OutboundPolicy::default(),
            http_guests: HttpGuestGrants::default(),
        }
    }
}

/// What an operator grants HTTP guests beyond the sealed base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGuestGrants {
    /// Environment variables the guests see.
    pub env: Vec<(String, String)>,
    /// Directories the guests may read and write: the host's directory, and the path
    /// the guests see it at.
    pub dirs: Vec<(PathBuf, String)>,
}

/// Builds the engine: the component model, fuel, epoch deadlines, and (by default)
/// the pooling allocator sized from `config`.
pub(crate) fn build(config: &Config) -> Result<Engine, Error> {
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    if config.pooling {
        let slots = config.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            // Components built from Rust or C hold a few core instances each (the
            // program, its shims and fix-ups); nested calls each take their own.
            .total_core_instances(slots.saturating_mul(4))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_memory_size(usize::try_from(config.maxima.memory_bytes).unwrap_or(usize::MAX))
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .table_elements(100_000)
            // Reset a freed instance's memory by rewriting only the pages it dirtied
            // (found with Linux's PAGEMAP_SCAN) instead of unmapping them: the next
            // call then takes no page faults and no TLB shootdowns. Beyond this many
            // dirty bytes, the rest is released to the kernel as before.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 8)
            .pagemap_scan(Enabled::Auto);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&wasm).map_err(|e| Error::Backend(format!("cannot configure the engine: {e:#}")))
}

/// Starts the thread that advances the engine's epoch every [`EPOCH_TICK`]. It stops
/// by itself once the engine is dropped.
pub(crate) fn start_deadline_clock(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("burncache-deadlines".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        // Without the clock, deadlines would never fire; fuel still bounds every call.
        tracing::error!("cannot start the deadline clock thread: {e}");
    }
}

/// Epoch ticks from now until `remaining` has passed, rounded up, plus one so that a
/// tick landing right after the call starts does not cut it short.
pub(crate) fn ticks_for(remaining: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    u64::try_from(remaining.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}
