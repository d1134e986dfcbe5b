//! Why an entry operation was refused or failed. Each variant names the rule
//! that was broken; `api::error` alone decides the gRPC code and what the
//! caller is told.

use crate::registry::{EntryError, EntryId};
use crate::store::SealError;

/// Why an entry operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EntriesError {
    /// The entry breaks a field rule (the message names the field).
    #[error(transparent)]
    Invalid(#[from] EntryError),
    /// Another entry has the same SPIFFE ID, parent ID and selectors.
    #[error(
        "an entry with the same SPIFFE ID, parent ID and selectors exists{}",
        .holder.as_ref().map(|h| format!(": {}", h.as_str())).unwrap_or_default()
    )]
    EntryExists {
        /// The entry that holds them, when known.
        holder: Option<EntryId>,
    },
    /// No entry has this ID.
    #[error("entry {} not found", .0.as_str())]
    EntryNotFound(EntryId),
    /// The caller expected another revision: the entry changed since it was read.
    #[error("entry {} is at revision {current}, not {expected}", .id.as_str())]
    RevisionConflict {
        /// The entry.
        id: EntryId,
        /// Its revision now.
        current: u64,
        /// The revision the caller expected.
        expected: u64,
    },
    /// A stored entry decrypted but does not decode.
    #[error("stored entry does not decode: {0}")]
    RecordCorrupt(String),
    /// An entry could not be encoded for storing.
    #[error("entry does not encode: {0}")]
    RecordUnencodable(String),
    /// The system's random source failed.
    #[error("no randomness")]
    NoRandomness,
    /// The sealed store refused or failed (sealed, lost a compare-and-swap,
    /// corrupt record, I/O).
    #[error(transparent)]
    Store(#[from] SealError),
    /// The store work did not run to completion (its task panicked, or the
    /// runtime is shutting down).
    #[error("store task did not complete: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
}
