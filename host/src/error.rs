//! The one error type of the library, mirroring the WIT `error` variant.

use crate::Digest;
use crate::bindings::WitError;

/// Every failure a caller of burncache can see.
///
/// The variants mirror `burncache:host/types.error` one for one, so that an error
/// crosses between host and guest without losing its class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No component with this digest is held by this node or its store.
    #[error("no component with digest {0} is registered here")]
    NotFound(Digest),
    /// Text that should have been a digest is not one.
    #[error("invalid digest {0}")]
    InvalidDigest(String),
    /// The bytes are a component, but it does not compile or link.
    #[error("compile failed: {0}")]
    CompileFailed(String),
    /// The call burned all the fuel it was given.
    #[error("the call ran out of fuel")]
    FuelExhausted,
    /// The call tried to grow its memory past its ceiling, or to make the host
    /// keep more state for it than its ceiling allows.
    #[error("the call tried to grow its memory past its ceiling")]
    MemoryLimit,
    /// The call ran past its wall-clock deadline.
    #[error("the call ran past its deadline")]
    Timeout,
    /// The output was larger than the ceiling (in bytes) the call ran under.
    #[error("the output is larger than the {0}-byte ceiling")]
    OutputTooLarge(u64),
    /// The guest trapped.
    #[error("the guest trapped: {0}")]
    Trap(String),
    /// The guest returned an error of its own, or an output that breaks the
    /// contract (text in the `json` case that is not one JSON document).
    #[error("the guest returned an error: {0}")]
    Guest(String),
    /// The input was rejected before anything ran.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Nested calls went deeper than the limit carried here.
    #[error("nested calls went deeper than the limit of {0}")]
    DepthExceeded(u32),
    /// The object store or another host resource failed.
    #[error("backend failure: {0}")]
    Backend(String),
    /// Bytes fetched for a digest do not hash to it.
    #[error("integrity check failed: {0}")]
    Integrity(String),
}

/// The class of an [`Error`], without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    NotFound,
    InvalidDigest,
    CompileFailed,
    FuelExhausted,
    MemoryLimit,
    Timeout,
    OutputTooLarge,
    Trap,
    Guest,
    InvalidInput,
    PermissionDenied,
    DepthExceeded,
    Backend,
    Integrity,
}

impl ErrorKind {
    /// Every kind, in the order of the WIT variant.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::NotFound,
        ErrorKind::InvalidDigest,
        ErrorKind::CompileFailed,
        ErrorKind::FuelExhausted,
        ErrorKind::MemoryLimit,
        ErrorKind::Timeout,
        ErrorKind::OutputTooLarge,
        ErrorKind::Trap,
        ErrorKind::Guest,
        ErrorKind::InvalidInput,
        ErrorKind::PermissionDenied,
        ErrorKind::DepthExceeded,
        ErrorKind::Backend,
        ErrorKind::Integrity,
    ];

    /// The kind's name as the WIT spells it (`not-found`, `fuel-exhausted`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::InvalidDigest => "invalid-digest",
            ErrorKind::CompileFailed => "compile-failed",
            ErrorKind::FuelExhausted => "fuel-exhausted",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutputTooLarge => "output-too-large",
            ErrorKind::Trap => "trap",
            ErrorKind::Guest => "guest",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::DepthExceeded => "depth-exceeded",
            ErrorKind::Backend => "backend",
            ErrorKind::Integrity => "integrity",
        }
    }

    /// A position in [`ErrorKind::ALL`], for per-kind counters.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// This error's class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::InvalidDigest(_) => ErrorKind::InvalidDigest,
            Error::CompileFailed(_) => ErrorKind::CompileFailed,
            Error::FuelExhausted => ErrorKind::FuelExhausted,
            Error::MemoryLimit => ErrorKind::MemoryLimit,
            Error::Timeout => ErrorKind::Timeout,
            Error::OutputTooLarge(_) => ErrorKind::OutputTooLarge,
            Error::Trap(_) => ErrorKind::Trap,
            Error::Guest(_) => ErrorKind::Guest,
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::DepthExceeded(_) => ErrorKind::DepthExceeded,
            Error::Backend(_) => ErrorKind::Backend,
            Error::Integrity(_) => ErrorKind::Integrity,
        }
    }
}

impl Error {
    /// What may be shown to a caller the node does not trust (an HTTP client, a
    /// guest) in place of this error's details, when those details say where the
    /// node's store lives or what it holds: `None` when the details are the caller's
    /// own business. The details are logged.
    pub(crate) fn redacted(&self) -> Option<&'static str> {
        match self {
            Error::Backend(details) => {
                tracing::warn!("backend failure: {details}");
                Some(
                    "the node could not reach a resource it needs (the object store, or a \
                     free instance); details are in the node's log",
                )
            }
            Error::Integrity(details) => {
                tracing::warn!("integrity failure: {details}");
                Some(
                    "the bytes the object store returned do not hash to their digest; \
                     details are in the node's log",
                )
            }
            _ => None,
        }
    }
}

/// Guests see what failed, never where the node's store lives: backend and
/// integrity details go to the log.
impl From<Error> for WitError {
    fn from(e: Error) -> WitError {
        if let Some(message) = e.redacted() {
            return match e {
                Error::Integrity(_) => WitError::Integrity(message.to_string()),
                _ => WitError::Backend(message.to_string()),
            };
        }
        match e {
            Error::NotFound(d) => WitError::NotFound(d.to_string()),
            Error::InvalidDigest(s) => WitError::InvalidDigest(s),
            Error::CompileFailed(s) => WitError::CompileFailed(s),
            Error::FuelExhausted => WitError::FuelExhausted,
            Error::MemoryLimit => WitError::MemoryLimit,
            Error::Timeout => WitError::Timeout,
            Error::OutputTooLarge(n) => WitError::OutputTooLarge(n),
            Error::Trap(s) => WitError::Trap(s),
            Error::Guest(s) => WitError::Guest(s),
            Error::InvalidInput(s) => WitError::InvalidInput(s),
            Error::PermissionDenied(s) => WitError::PermissionDenied(s),
            Error::DepthExceeded(n) => WitError::DepthExceeded(n),
            Error::Backend(s) => WitError::Backend(s),
            Error::Integrity(s) => WitError::Integrity(s),
        }
    }
}

impl From<WitError> for Error {
    fn from(e: WitError) -> Error {
        match e {
            WitError::NotFound(d) => match Digest::parse(&d) {
                Ok(digest) => Error::NotFound(digest),
                Err(_) => Error::InvalidDigest(d),
            },
            WitError::InvalidDigest(s) => Error::InvalidDigest(s),
            WitError::CompileFailed(s) => Error::CompileFailed(s),
            WitError::FuelExhausted => Error::FuelExhausted,
            WitError::MemoryLimit => Error::MemoryLimit,
            WitError::Timeout => Error::Timeout,
            WitError::OutputTooLarge(n) => Error::OutputTooLarge(n),
            WitError::Trap(s) => Error::Trap(s),
            WitError::Guest(s) => Error::Guest(s),
            WitError::InvalidInput(s) => Error::InvalidInput(s),
            WitError::PermissionDenied(s) => Error::PermissionDenied(s),
            WitError::DepthExceeded(n) => Error::DepthExceeded(n),
            WitError::Backend(s) => Error::Backend(s),
            WitError::Integrity(s) => Error::Integrity(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_in_wit_order() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        assert_eq!(Error::Timeout.kind().as_str(), "timeout");
    }

    #[test]
    fn guests_see_what_failed_not_where_the_store_lives() {
        let secret = "s3://private-bucket/prefix/sha256/00.wasm";
        for e in [
            Error::Backend(format!("store {secret}: connection refused")),
            Error::Integrity(format!("object {secret} hashes to something else")),
        ] {
            let kind = e.kind();
            let seen = Error::from(WitError::from(e));
            assert_eq!(seen.kind(), kind);
            assert!(!seen.to_string().contains("private-bucket"), "{seen}");
        }
    }
}
