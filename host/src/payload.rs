//! What goes into and comes out of a call: JSON text or raw bytes.

use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::Error;
use crate::bindings::WitPayload;

/// The input or output of a call, mirroring the WIT `payload` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A JSON document as UTF-8 text.
    Json(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl Payload {
    /// Serializes `value` to a JSON payload.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `value` cannot be serialized (a map with non-string
    /// keys, say).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Payload, Error> {
        serde_json::to_string(value)
            .map(Payload::Json)
            .map_err(|e| Error::InvalidInput(format!("cannot serialize the input to JSON: {e}")))
    }

    /// Wraps JSON text after checking that it is one well-formed JSON document.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the line and column of the first syntax error.
    pub fn json_text(text: impl Into<String>) -> Result<Payload, Error> {
        let text = text.into();
        check_json(&text)?;
        Ok(Payload::Json(text))
    }

    /// The payload's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(text) => text.len(),
            Payload::Bytes(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload's bytes: the JSON text's UTF-8, or the raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Json(text) => text.as_bytes(),
            Payload::Bytes(bytes) => bytes,
        }
    }

    /// Deserializes a JSON payload into `T`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the payload is bytes, or its JSON does not fit `T`.
    pub fn to_value<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match self {
            Payload::Json(text) => serde_json::from_str(text)
                .map_err(|e| Error::InvalidInput(format!("the JSON does not fit: {e}"))),
            Payload::Bytes(_) => Err(Error::InvalidInput(
                "expected a JSON payload, got bytes".to_string(),
            )),
        }
    }
}

/// Checks that `text` is exactly one JSON document, without building it.
pub(crate) fn check_json(text: &str) -> Result<(), Error> {
    serde_json::from_str::<IgnoredAny>(text)
        .map(drop)
        .map_err(|e| Error::InvalidInput(format!("the input is not valid JSON: {e}")))
}

/// Checks an input before any guest code runs: JSON must be one JSON document.
///
/// # Errors
///
/// [`Error::InvalidInput`] for malformed JSON.
pub(crate) fn check_input(input: &Payload) -> Result<(), Error> {
    match input {
        Payload::Json(text) => check_json(text),
        Payload::Bytes(_) => Ok(()),
    }
}

/// Checks what a guest returned: within the output ceiling, and, in the `json` case,
/// one JSON document, as the contract says. A guest that breaks the contract fails
/// its call; its text never reaches a caller as JSON.
///
/// # Errors
///
/// [`Error::OutputTooLarge`] past the ceiling; [`Error::Guest`] for malformed JSON.
pub(crate) fn check_output(output: &WitPayload, ceiling: u64) -> Result<(), Error> {
    if payload_len(output) > ceiling {
        return Err(Error::OutputTooLarge(ceiling));
    }
    check_contract(output)
}

/// Outputs longer than this are checked on the blocking pool: reading hundreds of
/// MiB of JSON on an async worker would stall every connection it serves.
pub(crate) const CHECK_INLINE_BYTES: u64 = 256 << 10;

/// Runs `check` on `value` (of `len` bytes) where it does not hold up an async
/// worker: in place when short, on the blocking pool when long. Gives `value` back.
pub(crate) async fn off_worker<T: Send + 'static, R: Send + 'static>(
    value: T,
    len: u64,
    check: impl FnOnce(T) -> R + Send + 'static,
) -> Result<R, Error> {
    if len <= CHECK_INLINE_BYTES {
        return Ok(check(value));
    }
    tokio::task::spawn_blocking(move || check(value))
        .await
        .map_err(|e| Error::Backend(format!("the checking task failed: {e}")))
}

/// Checks that an output in the `json` case holds one JSON document.
///
/// # Errors
///
/// [`Error::Guest`] for malformed JSON.
pub(crate) fn check_contract(output: &WitPayload) -> Result<(), Error> {
    match output {
        WitPayload::Json(text) => serde_json::from_str::<IgnoredAny>(text)
            .map(drop)
            .map_err(|e| {
                Error::Guest(format!(
                    "the guest returned malformed JSON in the `json` case: {e}"
                ))
            }),
        WitPayload::Bytes(_) => Ok(()),
    }
}

/// Holds a guest's own error text to the output ceiling, as its output is.
pub(crate) fn check_error(e: Error, ceiling: u64) -> Error {
    match e {
        Error::Guest(text) if text.len() as u64 > ceiling => Error::OutputTooLarge(ceiling),
        e => e,
    }
}

pub(crate) fn payload_len(p: &WitPayload) -> u64 {
    match p {
        WitPayload::Json(text) => text.len() as u64,
        WitPayload::Bytes(bytes) => bytes.len() as u64,
    }
}

impl From<Payload> for WitPayload {
    fn from(p: Payload) -> Self {
        match p {
            Payload::Json(text) => WitPayload::Json(text),
            Payload::Bytes(bytes) => WitPayload::Bytes(bytes),
        }
    }
}

impl From<WitPayload> for Payload {
    fn from(p: WitPayload) -> Self {
        match p {
            WitPayload::Json(text) => Payload::Json(text),
            WitPayload::Bytes(bytes) => Payload::Bytes(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn json_text_is_checked() {
        assert!(Payload::json_text(r#"{"n": 1}"#).is_ok());
        let err = Payload::json_text(r#"{"n": "#).expect_err("truncated");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(Payload::json_text("1 2").is_err(), "two documents");
    }

    #[test]
    fn values_round_trip() {
        let p = Payload::json(&serde_json::json!({"n": 41})).expect("serialize");
        let v: serde_json::Value = p.to_value().expect("deserialize");
        assert_eq!(v["n"], 41);
        assert!(Payload::Bytes(vec![1]).to_value::<u8>().is_err());
    }
}
