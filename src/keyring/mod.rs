//! The key hierarchy and the record envelope (SPEC §4, "data security" and the
//! key-hierarchy paragraph).
//!
//! ```text
//! operator passphrase ─Argon2id(stored salt, params)→ KEK
//!   KEK ─unwraps→ root key ─unwraps→ data-key ring (versioned, one active)
//!   active data key ─AES-256-GCM, AAD = table ‖ key ‖ version→ record
//! ```
//!
//! The root key also derives (HKDF-SHA-256) the audit chain's HMAC key and
//! the store-integrity HMAC key ([`DerivedKey`]); neither is ever stored.
//!
//! Core module: no I/O and no clock. [`SealMeta`] is the unencrypted, serde
//! description of the hierarchy that the store persists; [`Keys`] is the
//! unsealed key material, held only in zeroizing memory and never printable.

mod envelope;
mod hierarchy;
mod kdf;

#[cfg(test)]
mod tests;

pub use envelope::RECORD_FORMAT;
pub use hierarchy::{DerivedKey, Keys, META_FORMAT, SealMeta};
pub use kdf::{KdfCost, KdfParams, MIN_PASSPHRASE_LEN};

/// Everything that can go wrong in the key hierarchy. No variant carries key
/// material, plaintext or passphrase bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The passphrase is shorter than [`MIN_PASSPHRASE_LEN`] bytes.
    #[error("passphrase must be at least {MIN_PASSPHRASE_LEN} bytes")]
    PassphraseTooShort,
    /// The passphrase does not derive the key that sealed this store.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The Argon2id parameters are outside the accepted range.
    #[error("key-derivation parameters out of range")]
    KdfParamsOutOfRange,
    /// The system random number generator failed.
    #[error("system random number generator unavailable")]
    RandomUnavailable,
    /// The seal metadata could not be decoded.
    #[error("seal metadata is malformed")]
    MetaMalformed,
    /// The seal metadata uses a format version this build does not know.
    #[error("unsupported seal metadata format {0}")]
    UnsupportedMetaFormat(u32),
    /// The passphrase is right but the wrapped keys or the fields bound to
    /// them (trust domain, creation time, key versions) do not authenticate.
    #[error("seal metadata has been altered")]
    MetaTampered,
    /// The data-key ring decrypted but its structure is invalid.
    #[error("data-key ring is malformed")]
    RingMalformed,
    /// The seal metadata was not produced by the root key these keys hold.
    #[error("seal metadata belongs to another key hierarchy")]
    MetaNotForTheseKeys,
    /// No further data-key version number is available.
    #[error("data-key versions exhausted")]
    KeyVersionsExhausted,
    /// The plaintext exceeds the AES-GCM limit.
    #[error("plaintext too long to encrypt")]
    PlaintextTooLong,
    /// The record is shorter than its header, nonce and tag.
    #[error("record truncated")]
    RecordTruncated,
    /// The record's format byte is not one this build writes.
    #[error("unsupported record format {0}")]
    UnsupportedRecordFormat(u8),
    /// The record names a data-key version that is not in the ring.
    #[error("record sealed under unknown data-key version {0}")]
    UnknownKeyVersion(u32),
    /// The record does not authenticate at this location and version: it was
    /// altered, or moved from another table, key or version.
    #[error("record failed authentication")]
    RecordAuthenticationFailed,
}
