//! The one type that holds secret bytes: passphrases, private keys, data keys,
//! secret values and bearer tokens (STYLE.md §5).
//!
//! It zeroizes its memory on drop, its `Debug` shows only the length, it has
//! no `Display` or `Serialize`, and reading it takes an explicit call to
//! [`Secret::expose`].

use std::fmt;
use zeroize::Zeroizing;

/// Secret bytes. See the module docs for the guarantees.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps `bytes`; the caller's copy moves in and is zeroized with this value.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` in. Prefer [`Secret::new`] so no unzeroized copy lingers.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The secret bytes. Every call site is a place where the secret is used,
    /// so keep them few and never pass the result to a formatter.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_length() {
        let s = Secret::from("hunter2-marker".to_string());
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("14 bytes"));
    }
}
