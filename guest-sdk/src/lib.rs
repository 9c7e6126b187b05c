//! Write [burncache](https://example.invalid/burncache) function guests in Rust.
//!
//! A function guest is a WebAssembly component that exports
//! `burncache:host/function`. With this crate it is a plain Rust function and one
//! macro:
//!
//! ```ignore
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Number { n: i64 }
//!
//! fn add_one(input: Number) -> Result<Number, String> {
//!     Ok(Number { n: input.n + 1 })
//! }
//!
//! burncache_guest::export_json!(add_one);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` in a crate with
//! `crate-type = ["cdylib"]`; the `.wasm` file is the component to register.
//!
//! Three macros export a function, from the simplest to the most control:
//!
//! - [`export_json!`]: `fn(I) -> Result<O, E>` with `I`, `O` serde types and `E:
//!   Display`. JSON in, JSON out.
//! - [`export_fn!`]: `fn(I) -> Result<O, E>` with `I:` [`FromPayload`] and `O:`
//!   [`IntoPayload`]: raw bytes (`Vec<u8>`), [`Json<T>`], or the [`Payload`] itself.
//! - [`export!`]: a type implementing [`Function`], to write `call_batch` yourself
//!   (for example to share work across the rows of a batch).
//!
//! In every form, `call-batch` is provided: by default it calls the function once
//! per row, in the same instance.
//!
//! With the `columns` feature, a guest can be a columnar function instead, over
//! Apache Arrow arrays: see the `columns` module.
//!
//! Guests can call other components by digest through the host's `burn-cache`
//! interface: [`execute`] with typed values, [`execute_payload`] with raw payloads.
//! Those calls are charged to the caller's fuel and capped by what it has left.

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bindings generated from the `burncache:host` WIT package.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "burncache:host/udf",
        pub_export_macro: true,
        export_macro_name: "__export_udf",
        default_bindings_module: "::burncache_guest::bindings",
    });
}

/// The `burn-cache` import on its own (the `client` world), so that guests that are
/// not functions (HTTP guests, commands) can call components too: its type
/// information is linked into every guest that calls [`execute`], whether or not it
/// exports a function.
#[doc(hidden)]
pub mod client {
    wit_bindgen::generate!({
        path: "wit",
        world: "burncache:host/client",
        with: {
            "burncache:host/types@0.1.1": crate::bindings::burncache::host::types,
        },
    });
}

pub use bindings::burncache::host::types::{Error, Limits, Payload};

#[cfg(feature = "columns")]
pub mod columns;

use client::burncache::host::burn_cache;

/// A function guest with full control over both entry points.
pub trait Function {
    /// Computes one output from one input; `Err` is the guest's own error message.
    fn call(input: Payload) -> Result<Payload, String>;

    /// Computes one result per input, in order. By default, `call` on each row.
    fn call_batch(inputs: Vec<Payload>) -> Vec<Result<Payload, String>> {
        inputs.into_iter().map(Self::call).collect()
    }
}

/// A value a function can take as its input.
pub trait FromPayload: Sized {
    /// Converts the payload, or says why it does not fit.
    fn from_payload(payload: Payload) -> Result<Self, String>;
}

/// A value a function can return as its output.
pub trait IntoPayload {
    /// Converts the value, or says why it cannot be.
    fn into_payload(self) -> Result<Payload, String>;
}

/// A JSON value of type `T`, as a function's input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl FromPayload for Payload {
    fn from_payload(payload: Payload) -> Result<Self, String> {
        Ok(payload)
    }
}

impl IntoPayload for Payload {
    fn into_payload(self) -> Result<Payload, String> {
        Ok(self)
    }
}

/// Raw bytes; a JSON input arrives as its UTF-8 text.
impl FromPayload for Vec<u8> {
    fn from_payload(payload: Payload) -> Result<Self, String> {
        Ok(match payload {
            Payload::Bytes(bytes) => bytes,
            Payload::Json(text) => text.into_bytes(),
        })
    }
}

impl IntoPayload for Vec<u8> {
    fn into_payload(self) -> Result<Payload, String> {
        Ok(Payload::Bytes(self))
    }
}

/// JSON; a bytes input is parsed as JSON text too.
impl<T: DeserializeOwned> FromPayload for Json<T> {
    fn from_payload(payload: Payload) -> Result<Self, String> {
        let parsed = match &payload {
            Payload::Json(text) => serde_json::from_str(text),
            Payload::Bytes(bytes) => serde_json::from_slice(bytes),
        };
        parsed
            .map(Json)
            .map_err(|e| format!("the input does not fit: {e}"))
    }
}

impl<T: Serialize> IntoPayload for Json<T> {
    fn into_payload(self) -> Result<Payload, String> {
        serde_json::to_string(&self.0)
            .map(Payload::Json)
            .map_err(|e| format!("cannot serialize the output: {e}"))
    }
}

/// Runs `f` on a payload: converts the input, calls, converts the output. Used by
/// the export macros.
#[doc(hidden)]
pub fn __call<I, O, E>(f: fn(I) -> Result<O, E>, input: Payload) -> Result<Payload, String>
where
    I: FromPayload,
    O: IntoPayload,
    E: Display,
{
    let input = I::from_payload(input)?;
    f(input).map_err(|e| e.to_string())?.into_payload()
}

/// Runs a typed JSON function on a payload. Used by [`export_json!`].
#[doc(hidden)]
pub fn __call_json<I, O, E>(f: fn(I) -> Result<O, E>, input: Payload) -> Result<Payload, String>
where
    I: DeserializeOwned,
    O: Serialize,
    E: Display,
{
    let Json(input) = Json::<I>::from_payload(input)?;
    Json(f(input).map_err(|e| e.to_string())?).into_payload()
}

/// Exports a type implementing [`Function`] as this component's function.
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        const _: () = {
            struct __BurncacheExport;
            impl $crate::bindings::exports::burncache::host::function::Guest for __BurncacheExport {
                fn call(
                    input: $crate::Payload,
                ) -> ::core::result::Result<$crate::Payload, ::std::string::String> {
                    <$ty as $crate::Function>::call(input)
                }
                fn call_batch(
                    inputs: ::std::vec::Vec<$crate::Payload>,
                ) -> ::std::vec::Vec<::core::result::Result<$crate::Payload, ::std::string::String>>
                {
                    <$ty as $crate::Function>::call_batch(inputs)
                }
            }
    $crate::bindings::__export_udf!(__BurncacheExport with_types_in $crate::bindings);
        };
    };
}

/// Exports `fn(I) -> Result<O, E>` where `I` and `O` are serde types: JSON in and out.
#[macro_export]
macro_rules! export_json {
    ($f:path) => {
        const _: () = {
            struct __BurncacheJson;
            impl $crate::Function for __BurncacheJson {
                fn call(
                    input: $crate::Payload,
                ) -> ::core::result::Result<$crate::Payload, ::std::string::String> {
                    $crate::__call_json($f, input)
                }
            }
            $crate::export!(__BurncacheJson);
        };
    };
}

/// Exports `fn(I) -> Result<O, E>` where `I:` [`FromPayload`] and `O:`
/// [`IntoPayload`]: bytes, [`Json<T>`] or [`Payload`].
#[macro_export]
macro_rules! export_fn {
    ($f:path) => {
        const _: () = {
            struct __BurncacheFn;
            impl $crate::Function for __BurncacheFn {
                fn call(
                    input: $crate::Payload,
                ) -> ::core::result::Result<$crate::Payload, ::std::string::String> {
                    $crate::__call($f, input)
                }
            }
            $crate::export!(__BurncacheFn);
        };
    };
}

/// Calls the function component `digest` with a typed JSON input and decodes its
/// JSON output, under the host's default ceilings (capped by what this call has left).
///
/// # Errors
///
/// The callee's classified [`Error`]; an output that does not decode as `O` is
/// reported as [`Error::Guest`].
pub fn execute<I: Serialize + ?Sized, O: DeserializeOwned>(
    digest: &str,
    input: &I,
) -> Result<O, Error> {
    let input = serde_json::to_string(input)
        .map(Payload::Json)
        .map_err(|e| Error::InvalidInput(format!("cannot serialize the input: {e}")))?;
    let output = execute_payload(digest, input, None)?;
    let decoded = match &output {
        Payload::Json(text) => serde_json::from_str(text),
        Payload::Bytes(bytes) => serde_json::from_slice(bytes),
    };
    decoded.map_err(|e| Error::Guest(format!("the output of {digest} does not fit: {e}")))
}

/// Calls the function component `digest` with a raw payload and optional ceilings.
///
/// # Errors
///
/// The callee's classified [`Error`].
pub fn execute_payload(
    digest: &str,
    input: Payload,
    limits: Option<Limits>,
) -> Result<Payload, Error> {
    burn_cache::execute(digest, &input, limits)
}

/// Runs every input through one instance of `digest`; one result per row.
///
/// # Errors
///
/// The outer error is a failure of the whole batch.
pub fn execute_batch(
    digest: &str,
    inputs: &[Payload],
    limits: Option<Limits>,
) -> Result<Vec<Result<Payload, Error>>, Error> {
    burn_cache::execute_batch(digest, inputs, limits)
}

/// Registers component bytes and returns their digest (if the operator allows
/// guests to register).
///
/// # Errors
///
/// [`Error::PermissionDenied`] unless allowed; otherwise as a host-side register.
pub fn register(component: &[u8]) -> Result<String, Error> {
    burn_cache::register(component)
}

/// Makes sure the component `digest` is ready to run.
///
/// # Errors
///
/// [`Error::NotFound`] or [`Error::InvalidDigest`], or the component's compile error.
pub fn register_by_hash(digest: &str) -> Result<String, Error> {
    burn_cache::register_by_hash(digest)
}

/// `_`, whatever it is given: a fn-pointer type with one inferred parameter per
/// named column. Used by the columnar export macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __infer {
    ($x:ident) => {
        _
    };
}
