//! Paths to the guests the tests run, each built from source for `wasm32-wasip2` by
//! this crate's build script (see `build.rs`).

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
