//! What registered bytes are: a WebAssembly component or a JavaScript script, told by
//! content, never by a file name.

use crate::Error;

/// What registered bytes are, told by their content (never by a file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// WebAssembly (a component, or something the compile step will refuse).
    Component,
    /// UTF-8 text: a JavaScript script.
    Script,
}

impl SourceKind {
    /// Tells a script from a component: WebAssembly starts with `\0asm`; anything
    /// else that is non-empty, valid UTF-8 is a script. Other bytes are handed to the
    /// component checks, which say what is wrong with them.
    pub fn of(bytes: &[u8]) -> SourceKind {
        if !bytes.is_empty() && !bytes.starts_with(b"\0asm") && std::str::from_utf8(bytes).is_ok() {
            SourceKind::Script
        } else {
            SourceKind::Component
        }
    }

    /// The file extension objects of this kind get in a store.
    pub fn extension(self) -> &'static str {
        match self {
            SourceKind::Component => "wasm",
            SourceKind::Script => "js",
        }
    }

    /// The media type the HTTP API serves these bytes as.
    pub fn media_type(self) -> &'static str {
        match self {
            SourceKind::Component => "application/wasm",
            SourceKind::Script => "text/javascript",
        }
    }
}

/// Tells a component from a core module or from bytes that are not WebAssembly.
///
/// # Errors
///
/// [`Error::InvalidInput`] saying what the bytes are instead.
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
