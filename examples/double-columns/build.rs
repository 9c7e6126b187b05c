//! Starts the component's linear memory at 8 MiB, enough for the Arrow buffers of
//! a 64 Ki-row batch in and out. A memory the function has to grow during a call
//! is grown again in every fresh instance (the host's allocator puts a reused
//! slot's memory back to its initial size, a change of page protection that stops
//! every core running the process); memory that was there from the start costs
//! only the pages the call touches. It counts against the call's memory ceiling:
//! under a ceiling below 8 MiB (the default is 64 MiB) no call of it can start.
fn main() {
    // Only for WebAssembly: the workspace's tests build this crate natively too.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=--initial-memory={}", 8 << 20);
    }
}
