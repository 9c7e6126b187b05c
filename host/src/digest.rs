//! Content addresses: the SHA-256 digest that names and versions a component.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// The SHA-256 digest of a component's bytes: its name and its version.
///
/// Shown and parsed as exactly 64 lower-case hexadecimal characters, the same text
/// `sha256sum` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest whose raw bytes are `bytes` (a SHA-256 computed elsewhere, say
    /// while streaming).
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The 32 raw bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the 64-character lower-case hex form.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDigest`] when `text` is not exactly 64 characters of `0-9a-f`.
    /// Upper-case hex is refused so that one component has exactly one name.
    pub fn parse(text: &str) -> Result<Digest, Error> {
        let invalid = |why: &str| Error::InvalidDigest(format!("{}: {why}", shorten(text)));
        if text.len() != 64 {
            return Err(invalid(&format!(
                "expected 64 lower-case hex characters (a SHA-256), got {}",
                text.chars().count()
            )));
        }
        if let Some(c) = text.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(invalid(&format!(
                "{c:?} is not a lower-case hex digit (0-9, a-f)"
            )));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|e| invalid(&e.to_string()))?;
        Ok(Digest(out))
    }
}

/// Keeps a rejected input short enough to quote in an error message.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Infallible: the buffer is exactly twice the input's length.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        // Hex output is always ASCII.
        f.write_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn matches_sha256sum() {
        // `printf abc | sha256sum`
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
    }

    #[test]
    fn rejects_malformed_text() {
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        for bad in [
            "",
            "abc",
            upper,
            &"g".repeat(64),
            &"a".repeat(65),
            &"é".repeat(32),
        ] {
            let err = Digest::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidDigest, "{bad}");
        }
    }

    #[test]
    fn long_input_is_quoted_short() {
        let err = Digest::parse(&"x".repeat(10_000)).expect_err("too long");
        assert!(err.to_string().len() < 300, "{err}");
    }
}
