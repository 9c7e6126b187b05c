//! burncache runs WebAssembly components by content address.
//!
//! A component's SHA-256 [`Digest`] is its name and its version. A [`BurnCache`]
//! compiles each unique component exactly once, however many callers race for it, and
//! runs every call in its own wasmtime Store with fuel, a memory ceiling, a wall-clock
//! deadline, an output ceiling and a sealed WASI context. Guests can call each other
//! by digest through the imported `burncache:host/burn-cache` interface; such nested
//! calls draw on their caller's budget.
//!
//! ```no_run
//! use burncache::{BurnCache, Limits, Payload};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), burncache::Error> {
//!     let cache = BurnCache::new()?;
//!     let bytes = std::fs::read("add_one.wasm").expect("read the component");
//!     let digest = cache.register(&bytes).await?;
//!     let input = Payload::json(&serde_json::json!({ "n": 41 }))?;
//!     let output = cache.execute(&digest, input, &Limits::default()).await?;
//!     assert_eq!(output, Payload::Json(r#"{"n":42}"#.into()));
//!     Ok(())
//! }
//! ```

// Read bottom-up; each layer uses only the layers above it in this list.
//
// vocabulary: what calls are made of
mod bindings;
mod columns;
mod digest;
mod error;
mod limits;
mod payload;
mod source;
// resources: what a node has
mod artifacts;
mod engine;
mod outbound;
mod output;
mod stats;
mod store;
// the sandbox: the one place a Store is made and a call runs
mod sandbox;
// the registry: compile-once, fetch and verify, publish, the JavaScript runtime
mod registry;
// the call kinds: function, batch, HTTP guest, command
mod calls;
// the facade
mod burncache;
mod compose;
mod inspect;
// front ends
pub mod server;

pub use artifacts::{ArtifactStats, artifact_stats, clear_artifacts, default_artifact_dir};
pub use burncache::BurnCache;
pub use calls::{HttpFinish, HttpResponse, RunOptions};
pub use columns::{ARROW_STREAM, ColumnSignature, plain_strings, type_name as column_type_name};
pub use compose::compose;
pub use digest::Digest;
pub use engine::{Config, HttpGuestGrants};
pub use error::{Error, ErrorKind};
pub use inspect::{COLUMNS_EXPORT, ComponentKind, FUNCTION_EXPORT, Inspection, inspect};
pub use limits::{Ceilings, Limits};
pub use outbound::{AllowedOutbound, OutboundPolicy};
pub use payload::Payload;
pub use sandbox::Outcome;
pub use source::SourceKind;
pub use stats::Stats;
pub use store::{Published, Store, file_url};
