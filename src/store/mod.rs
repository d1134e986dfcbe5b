//! Storage (SPEC §5): the [`Store`] trait the rest of the server uses, its
//! embedded sled implementation, the sealed (encrypted) store on top, and the
//! audit log file.
//!
//! The trait is deliberately small and honest about what a networked database
//! can do atomically: point reads and writes, compare-and-swap, multi-key
//! batches (also conditional on the current values of some keys, which is one
//! transaction on a database) and ordered prefix scans. No sled type appears in it, and callers
//! must not assume a local disk. Every write method returns only once the
//! write is durable, because every acknowledged write must survive a crash.

pub mod audit_log;
mod group_sync;
pub mod sealed;
pub mod sled_store;

use std::fmt;
use std::path::PathBuf;

pub use sealed::{SealError, SealStatus, SealedStore, SealedWrite, Stamp, Unless, Unsealing};
pub use sled_store::SledStore;

/// A named table. Tables are fixed at compile time and their names never
/// contain NUL, which lets an implementation keep them in one key space as
/// `name ‖ 0x00 ‖ key` without two tables ever sharing a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(&'static str);

impl Table {
    /// Seal metadata and other store-wide system records (unencrypted).
    pub const SYS: Table = Table("sys");
    /// Registration entries.
    pub const ENTRIES: Table = Table("entries");
    /// Attested agent nodes.
    pub const AGENTS: Table = Table("agents");
    /// Join tokens, keyed by a hash of the token, never the token itself.
    pub const JOIN_TOKENS: Table = Table("join_tokens");
    /// Secret values, per path and version.
    pub const SECRETS: Table = Table("secrets");
    /// Secret metadata (versions, deletion state, rotation settings).
    pub const META: Table = Table("meta");
    /// Certificate-authority and JWT signing keys.
    pub const AUTHORITY: Table = Table("authority");
    /// Issued-token state (revocations).
    pub const TOKENS: Table = Table("tokens");
    /// Just-in-time elevation requests and grants.
    pub const GRANTS: Table = Table("grants");
    /// Registration-entry uniqueness index: hash of (SPIFFE ID, parent, selectors) → entry ID.
    pub const ENTRY_INDEX: Table = Table("entry_index");
    /// Server state records such as the audit chain head.
    pub const STATE: Table = Table("state");
    /// The store's write generation and per-table digests (see `sealed`).
    pub const INTEGRITY: Table = Table("integrity");
    /// Foreign trust domains' bundles (SPIFFE Federation), keyed by trust domain name.
    pub const FEDERATED_BUNDLES: Table = Table("federated_bundles");
    /// Quarantined identities, keyed by SPIFFE ID.
    pub const QUARANTINE: Table = Table("quarantine");

    /// Every table, for tools that walk the whole store.
    pub const ALL: [Table; 14] = [
        Table::SYS,
        Table::ENTRIES,
        Table::AGENTS,
        Table::JOIN_TOKENS,
        Table::SECRETS,
        Table::META,
        Table::AUTHORITY,
        Table::TOKENS,
        Table::GRANTS,
        Table::ENTRY_INDEX,
        Table::STATE,
        Table::INTEGRITY,
        Table::FEDERATED_BUNDLES,
        Table::QUARANTINE,
    ];

    /// The table's name.
    pub fn name(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({})", self.0)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// One write in an atomic [`Store::batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp<'a> {
    /// Set `key` in `table` to `value`.
    Put {
        /// Target table.
        table: Table,
        /// Record key.
        key: &'a [u8],
        /// New value.
        value: &'a [u8],
    },
    /// Remove `key` from `table` (no error if absent).
    Delete {
        /// Target table.
        table: Table,
        /// Record key.
        key: &'a [u8],
    },
}

/// A precondition of [`Store::batch_if`]: (`table`, `key`) holds exactly
/// `value` (`None`: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect<'a> {
    /// Table of the record.
    pub table: Table,
    /// Record key.
    pub key: &'a [u8],
    /// The value it must hold, or `None` if it must be absent.
    pub value: Option<&'a [u8]>,
}

/// A conditional batch was not applied: a precondition did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConflict {
    /// Index of the first precondition that did not hold.
    pub failed: usize,
}

/// Records from a scan: `(key, value)` pairs ordered by key.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// A compare-and-swap lost: the stored value was not the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasConflict {
    /// The value actually stored (None if absent), for a retry.
    pub current: Option<Vec<u8>>,
}

/// Storage failures. Messages name paths and causes, never record values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store's lock on this directory.
    #[error("store directory {dir} is locked by another process")]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },
    /// The store's files are corrupt.
    #[error("store at {dir} is corrupt: {reason}")]
    Corrupt {
        /// The store directory.
        dir: PathBuf,
        /// What the backend reported.
        reason: String,
    },
    /// Reading or writing the backing storage failed.
    #[error("store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The backend failed in a way it does not classify further.
    #[error("store backend failed: {0}")]
    Backend(String),
}

/// The storage contract. Implementations are shared across threads; every
/// write method is durable before it returns.
pub trait Store: Send + Sync + 'static {
    /// The value at (`table`, `key`), if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets (`table`, `key`) to `value`. Durable before return.
    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Removes (`table`, `key`); true if it existed. Durable before return.
    fn delete(&self, table: Table, key: &[u8]) -> Result<bool, StoreError>;

    /// Sets (`table`, `key`) to `new` (None removes it) only if it currently
    /// holds `expected` (None means absent). Durable before return.
    fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError>;

    /// Applies all `ops` atomically: after a crash either all or none are
    /// visible. Durable before return.
    fn batch(&self, ops: &[WriteOp<'_>]) -> Result<(), StoreError>;

    /// Applies all `ops` atomically, and only if every precondition in
    /// `expect` holds at that moment: one transaction on a database, checked
    /// and applied with no other write in between. When a precondition
    /// fails nothing is written and the conflict names it. Durable before
    /// return when applied.
    fn batch_if(
        &self,
        expect: &[Expect<'_>],
        ops: &[WriteOp<'_>],
    ) -> Result<Result<(), BatchConflict>, StoreError>;

    /// As [`Store::batch_if`], except that it may return before the batch
    /// is durable: the caller must [`Store::sync`] before it tells anyone
    /// the batch was written. For a writer that holds a lock across the
    /// batch, so the disk wait happens after the lock is released and
    /// writers queued behind it share one sync. By default, `batch_if`.
    fn batch_if_unsynced(
        &self,
        expect: &[Expect<'_>],
        ops: &[WriteOp<'_>],
    ) -> Result<Result<(), BatchConflict>, StoreError> {
        self.batch_if(expect, ops)
    }

    /// Makes every write that returned before this call durable. By
    /// default nothing: a store whose writes are all durable on return.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// All records in `table` whose key starts with `prefix`, ordered by key.
    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Records, StoreError>;
}
