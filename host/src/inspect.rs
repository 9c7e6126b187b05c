//! What a component is: its WIT world, imports and exports, size and digest.

use serde::Serialize;
use wit_component::{DecodedWasm, WitPrinter};

use crate::source::check_is_component;
use crate::{Digest, Error, SourceKind};

/// The interface a function guest exports.
pub const FUNCTION_EXPORT: &str = "burncache:host/function@0.1.1";

/// The interface a columnar function guest exports.
pub const COLUMNS_EXPORT: &str = "burncache:host/columns@0.1.1";

/// What kind of program a component is, from what it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// Exports `burncache:host/function`: callable with `execute`.
    Function,
    /// Exports `burncache:host/columns`: callable with `execute_columns` and
    /// `burncache map`.
    Columnar,
    /// Exports `wasi:cli/run`: runnable with `burncache run`.
    Command,
    /// Exports `wasi:http/incoming-handler`: an HTTP guest.
    Http,
    /// Not a component: a JavaScript script, called with `execute` like a function
    /// and run on the node's JavaScript runtime.
    Script,
    /// None of the above.
    Other,
}

/// A description of a component.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The component's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// What it is, from its exports.
    pub kind: ComponentKind,
    /// The names of what it imports (interfaces or functions).
    pub imports: Vec<String>,
    /// The names of what it exports.
    pub exports: Vec<String>,
    /// Its world, printed as WIT.
    pub wit: String,
}

/// Describes the component in `bytes`.
///
/// # Errors
///
/// [`Error::InvalidInput`] when the bytes are not a component, or its type
/// information cannot be decoded.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, Error> {
    if SourceKind::of(bytes) == SourceKind::Script {
        return Ok(Inspection {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            kind: ComponentKind::Script,
            imports: vec!["burncache:host/burn-cache@0.1.1".to_string()],
            exports: vec![FUNCTION_EXPORT.to_string()],
            wit: "// A JavaScript script: its exported function is run on burncache's \
                  JavaScript runtime\n// (world burncache:host/js-runtime), and it may \
                  call any digest with burncache.execute.\n"
                .to_string(),
        });
    }
    check_is_component(bytes)?;
    let decoded = wit_component::decode(bytes)
        .map_err(|e| Error::InvalidInput(format!("cannot decode the component's types: {e:#}")))?;
    let DecodedWasm::Component(resolve, world_id) = decoded else {
        return Err(Error::InvalidInput(
            "this is a WIT package, not a runnable component".to_string(),
        ));
    };
    let world = &resolve.worlds[world_id];
    let names = |items: &mut dyn Iterator<Item = &wit_parser::WorldKey>| -> Vec<String> {
        items.map(|key| resolve.name_world_key(key)).collect()
    };
    let imports = names(&mut world.imports.keys());
    let exports = names(&mut world.exports.keys());
    // HTTP guests built as binaries (with `wstd`, say) export `wasi:cli/run` too;
    // what they are for is serving HTTP.
    let exports_one = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
    // Any 0.1.x of the contract: a guest built against 0.1.0 runs unchanged.
    let kind = if exports_one("burncache:host/function@0.1.") {
        ComponentKind::Function
    } else if exports_one("burncache:host/columns@0.1.") {
        ComponentKind::Columnar
    } else if exports_one("wasi:http/incoming-handler@") {
        ComponentKind::Http
    } else if exports_one("wasi:cli/run@") {
        ComponentKind::Command
    } else {
        ComponentKind::Other
    };
    let mut printer = WitPrinter::default();
    let wit = match world.package {
        Some(package) => printer
            .print(&resolve, package, &[])
            .map(|()| printer.output.to_string())
            .unwrap_or_else(|e| format!("// cannot print the world: {e}")),
        None => String::new(),
    };
    Ok(Inspection {
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        kind,
        imports,
        exports,
        wit,
    })
}
