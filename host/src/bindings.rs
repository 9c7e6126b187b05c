//! The one place the host generates bindings from `wit/`.
//!
//! Only the types and the `function` export are used from here: the `burn-cache`
//! import is registered by hand in [`crate::nested`], because its functions need the
//! calling Store (to read and charge the caller's fuel), which generated host traits
//! do not see.

wasmtime::component::bindgen!({
    path: "wit",
    world: "burncache:host/udf",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use self::burncache::host::types::{
    Error as WitError, Limits as WitLimits, Payload as WitPayload,
};

/// The JavaScript runtime's world, sharing the types above.
pub(crate) mod js {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "burncache:host/js-runtime",
        imports: { default: async },
        exports: { default: async },
        with: {
            "burncache:host/types": super::burncache::host::types,
            "burncache:host/burn-cache": super::burncache::host::burn_cache,
        },
    });

    pub(crate) use self::exports::burncache::host::script_runtime::{ColumnData, ScriptExports};
}

/// A columnar function's world, sharing the types above.
pub(crate) mod columnar {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "burncache:host/columnar-udf",
        imports: { default: async },
        exports: { default: async },
        with: {
            "burncache:host/types": super::burncache::host::types,
            "burncache:host/burn-cache": super::burncache::host::burn_cache,
        },
    });

    pub(crate) use super::burncache::host::types::{
        Column as WitColumn, ColumnType as WitColumnType, Signature as WitSignature,
    };
}
