//! The sealed store's errors, and which one a key-hierarchy failure becomes.

use super::{StoreError, Table};
use crate::keyring::KeyringError;

/// Failures of the sealed store. None carries a value or key material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The store is sealed: unseal it first.
    #[error("store is sealed")]
    Sealed,
    /// The store has no key hierarchy yet: initialise it first.
    #[error("store is not initialized")]
    NotInitialized,
    /// The store already has a key hierarchy.
    #[error("store is already initialized")]
    AlreadyInitialized,
    /// The passphrase does not unseal this store.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The passphrase is shorter than the minimum length.
    #[error("passphrase too short")]
    PassphraseTooShort,
    /// A create found a record already at that location.
    #[error("record already exists")]
    AlreadyExists,
    /// A compare-and-put found a value other than the expected one.
    #[error("record changed concurrently")]
    Conflict,
    /// The system table holds the seal metadata and takes no record operations.
    #[error("table {0} is reserved")]
    ReservedTable(Table),
    /// A stored record does not decrypt at its location: it was altered or
    /// moved. Names where, never what.
    #[error("record {table}/{key} is corrupt")]
    Corrupt {
        /// Table of the record.
        table: Table,
        /// Record key, escaped for printing.
        key: String,
        /// Which envelope check failed.
        #[source]
        cause: KeyringError,
    },
    /// The stored seal metadata is unreadable or has been altered.
    #[error("seal metadata is invalid")]
    MetaInvalid(#[source] KeyringError),
    /// The key hierarchy failed for another reason (random source, sizes).
    #[error("keyring failure")]
    Keyring(#[source] KeyringError),
    /// The backing store failed.
    #[error("storage failure")]
    Backend(#[from] StoreError),
    /// The integrity record (digests and write generation) is missing from
    /// an initialized store: it was deleted, or the store was damaged.
    #[error("store integrity record is missing: the store was altered outside the server")]
    IntegrityMissing,
    /// The integrity record decrypted but is not one this build wrote.
    #[error("store integrity record is invalid")]
    IntegrityInvalid,
    /// A table's records do not match its digest: records were altered,
    /// removed, added or restored outside the server.
    #[error(
        "store table {table} does not match its digest ({found} records, {stored} expected): records were altered, removed or added outside the server"
    )]
    TableTampered {
        /// The table.
        table: Table,
        /// Records the digest counts.
        stored: u64,
        /// Records found.
        found: u64,
    },
    /// A table could not be read back while checking it (the backing files
    /// are damaged).
    #[error("store table {table} cannot be read: the store files are damaged")]
    TableUnreadable {
        /// The table.
        table: Table,
        /// What the backend reported.
        #[source]
        source: StoreError,
    },
    /// Concurrent writes kept invalidating this one; nothing was written.
    #[error("store too busy: a write kept conflicting with others")]
    Contended,
}

/// Decides which caller-facing error a hierarchy failure becomes.
pub(super) fn hierarchy_error(e: KeyringError) -> SealError {
    match e {
        KeyringError::WrongPassphrase => SealError::WrongPassphrase,
        KeyringError::PassphraseTooShort => SealError::PassphraseTooShort,
        KeyringError::MetaMalformed
        | KeyringError::UnsupportedMetaFormat(_)
        | KeyringError::MetaTampered
        | KeyringError::RingMalformed
        | KeyringError::MetaNotForTheseKeys
        | KeyringError::KdfParamsOutOfRange => SealError::MetaInvalid(e),
        other => SealError::Keyring(other),
    }
}
