//! The sealed store (SPEC §4 "data security", §5): records encrypted with the
//! keyring's envelope on top of any [`Store`], and the seal lifecycle
//! (init, unseal, seal, rotate).
//!
//! The seal metadata lives unencrypted in [`Table::SYS`]; the unsealed keys
//! live only in memory. While sealed, only [`SealedStore::status`],
//! [`SealedStore::init`] and [`SealedStore::unseal`] work; every record
//! operation answers [`SealError::Sealed`].
//!
//! Record keys are stored in clear (they name locations, like secret paths);
//! only values are encrypted. Never use a secret as a record key: hash it.

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::{Store, StoreError, Table, WriteOp};
use crate::id::TrustDomain;
use crate::keyring::{KdfCost, KeyringError, Keys, SealMeta};
use crate::secret::Secret;

#[cfg(test)]
mod tests;

/// Key of the seal metadata in [`Table::SYS`].
const SEAL_META_KEY: &[u8] = b"seal_meta";

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
}

/// Decides which caller-facing error a hierarchy failure becomes.
fn hierarchy_error(e: KeyringError) -> SealError {
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

/// What `status` reports; available while sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealStatus {
    /// A key hierarchy exists.
    pub initialized: bool,
    /// Keys are not in memory.
    pub sealed: bool,
    /// Trust domain recorded at init.
    pub trust_domain: Option<String>,
    /// Data-key versions in the ring.
    pub key_versions: Vec<u32>,
    /// Version new records are sealed under.
    pub active_key_version: Option<u32>,
}

/// One write in an atomic [`SealedStore::batch`].
#[derive(Clone, Copy)]
pub enum SealedWrite<'a> {
    /// Encrypt `plaintext` and store it at (`table`, `key`).
    Put {
        /// Target table.
        table: Table,
        /// Record key.
        key: &'a [u8],
        /// Value to encrypt.
        plaintext: &'a [u8],
    },
    /// Remove (`table`, `key`).
    Delete {
        /// Target table.
        table: Table,
        /// Record key.
        key: &'a [u8],
    },
}

impl fmt::Debug for SealedWrite<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealedWrite::Put {
                table,
                key,
                plaintext,
            } => f
                .debug_struct("Put")
                .field("table", table)
                .field("key", &key.escape_ascii().to_string())
                .field("plaintext", &format_args!("{} bytes", plaintext.len()))
                .finish(),
            SealedWrite::Delete { table, key } => f
                .debug_struct("Delete")
                .field("table", table)
                .field("key", &key.escape_ascii().to_string())
                .finish(),
        }
    }
}

/// Encrypted records over a [`Store`], plus the seal lifecycle.
///
/// Thread-safe. `init` and `unseal` run Argon2id (tens to hundreds of
/// milliseconds at the default cost): call them off the async runtime.
pub struct SealedStore {
    store: Arc<dyn Store>,
    cost: KdfCost,
    keys: RwLock<Option<Keys>>,
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore")
            .field("sealed", &self.read_keys().is_none())
            .finish_non_exhaustive()
    }
}

impl SealedStore {
    /// A sealed store over `store`; `cost` is used by `init` only (unseal
    /// always uses the stored parameters).
    pub fn new(store: Arc<dyn Store>, cost: KdfCost) -> Self {
        SealedStore {
            store,
            cost,
            keys: RwLock::new(None),
        }
    }

    fn read_keys(&self) -> RwLockReadGuard<'_, Option<Keys>> {
        crate::sync::read(&self.keys)
    }

    fn write_keys(&self) -> RwLockWriteGuard<'_, Option<Keys>> {
        crate::sync::write(&self.keys)
    }

    /// The stored metadata and its raw bytes (for compare-and-swap).
    fn load_meta(&self) -> Result<Option<(SealMeta, Vec<u8>)>, SealError> {
        let Some(raw) = self.store.get(Table::SYS, SEAL_META_KEY)? else {
            return Ok(None);
        };
        let meta = SealMeta::decode(&raw).map_err(SealError::MetaInvalid)?;
        Ok(Some((meta, raw)))
    }

    /// Whether the store is initialised and unsealed, and its key versions.
    pub fn status(&self) -> Result<SealStatus, SealError> {
        let sealed = self.read_keys().is_none();
        Ok(match self.load_meta()? {
            None => SealStatus {
                initialized: false,
                sealed,
                trust_domain: None,
                key_versions: Vec::new(),
                active_key_version: None,
            },
            Some((meta, _)) => SealStatus {
                initialized: true,
                sealed,
                trust_domain: Some(meta.trust_domain),
                key_versions: meta.key_versions,
                active_key_version: Some(meta.active_key_version),
            },
        })
    }

    /// Creates the key hierarchy and leaves the store unsealed. Refuses a
    /// store that already has one, even if another server got there first.
    pub fn init(
        &self,
        passphrase: &Secret,
        trust_domain: &TrustDomain,
        now: SystemTime,
    ) -> Result<(), SealError> {
        // Cheap check first so a repeated init does not pay for Argon2id.
        if self.store.get(Table::SYS, SEAL_META_KEY)?.is_some() {
            return Err(SealError::AlreadyInitialized);
        }
        let (meta, keys) =
            Keys::create(passphrase, trust_domain, now, self.cost).map_err(hierarchy_error)?;
        let bytes = meta.encode().map_err(SealError::Keyring)?;
        let mut guard = self.write_keys();
        self.store
            .compare_and_swap(Table::SYS, SEAL_META_KEY, None, Some(&bytes))?
            .map_err(|_| SealError::AlreadyInitialized)?;
        *guard = Some(keys);
        Ok(())
    }

    /// Derives the keys from `passphrase` and keeps them in memory. Writes
    /// nothing, whatever the outcome. Unsealing an unsealed store re-checks
    /// the passphrase and keeps it unsealed.
    pub fn unseal(&self, passphrase: &Secret) -> Result<(), SealError> {
        let (meta, _) = self.load_meta()?.ok_or(SealError::NotInitialized)?;
        let keys = Keys::open(&meta, passphrase).map_err(hierarchy_error)?;
        *self.write_keys() = Some(keys);
        Ok(())
    }

    /// Drops the keys from memory (they are zeroized). Waits for record
    /// operations in flight to finish.
    pub fn seal(&self) {
        *self.write_keys() = None;
    }

    /// Adds a data-key version and makes it active, persisting the new ring
    /// durably before new records use it. Returns the new version.
    pub fn rotate_data_key(&self) -> Result<u32, SealError> {
        let mut guard = self.write_keys();
        let keys = guard.as_ref().ok_or(SealError::Sealed)?;
        let (mut meta, raw) = self.load_meta()?.ok_or(SealError::NotInitialized)?;
        let mut next = keys.clone();
        let version = next.rotate_data_key(&mut meta).map_err(hierarchy_error)?;
        let bytes = meta.encode().map_err(SealError::Keyring)?;
        // Compare-and-swap so a server sharing this store cannot lose a
        // concurrent rotation.
        self.store
            .compare_and_swap(Table::SYS, SEAL_META_KEY, Some(&raw), Some(&bytes))?
            .map_err(|_| SealError::Conflict)?;
        *guard = Some(next);
        Ok(version)
    }

    /// Runs `f` with the unsealed keys. The read lock is held for the whole
    /// operation, so once `seal` returns no record operation is in flight.
    fn with_keys<T>(
        &self,
        table: Table,
        f: impl FnOnce(&Keys) -> Result<T, SealError>,
    ) -> Result<T, SealError> {
        check_table(table)?;
        self.unsealed(f)
    }

    fn unsealed<T>(&self, f: impl FnOnce(&Keys) -> Result<T, SealError>) -> Result<T, SealError> {
        let guard = self.read_keys();
        let keys = guard.as_ref().ok_or(SealError::Sealed)?;
        f(keys)
    }

    /// The decrypted value at (`table`, `key`).
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Secret>, SealError> {
        self.with_keys(table, |keys| {
            self.store
                .get(table, key)?
                .map(|raw| open(keys, table, key, &raw))
                .transpose()
        })
    }

    /// Encrypts and stores `plaintext` at (`table`, `key`). Durable on return.
    pub fn put(&self, table: Table, key: &[u8], plaintext: &[u8]) -> Result<(), SealError> {
        self.with_keys(table, |keys| {
            let raw = seal(keys, table, key, plaintext)?;
            Ok(self.store.put(table, key, &raw)?)
        })
    }

    /// Like `put`, but fails with [`SealError::AlreadyExists`] if a record is
    /// already there.
    pub fn create(&self, table: Table, key: &[u8], plaintext: &[u8]) -> Result<(), SealError> {
        self.with_keys(table, |keys| {
            let raw = seal(keys, table, key, plaintext)?;
            self.store
                .compare_and_swap(table, key, None, Some(&raw))?
                .map_err(|_| SealError::AlreadyExists)
        })
    }

    /// Replaces the value at (`table`, `key`) with `new` (None deletes) only
    /// if its plaintext is `expected` (None: absent); otherwise
    /// [`SealError::Conflict`]. The swap itself compares the exact stored
    /// ciphertext, so a concurrent writer is always detected.
    pub fn compare_and_put(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), SealError> {
        self.with_keys(table, |keys| {
            let raw = self.store.get(table, key)?;
            let current = raw
                .as_deref()
                .map(|r| open(keys, table, key, r))
                .transpose()?;
            let matches = match (&current, expected) {
                (None, None) => true,
                (Some(c), Some(e)) => constant_time_eq(c.expose(), e),
                _ => false,
            };
            if !matches {
                return Err(SealError::Conflict);
            }
            let new_raw = new.map(|p| seal(keys, table, key, p)).transpose()?;
            self.store
                .compare_and_swap(table, key, raw.as_deref(), new_raw.as_deref())?
                .map_err(|_| SealError::Conflict)
        })
    }

    /// Removes (`table`, `key`); true if it existed. Durable on return.
    pub fn delete(&self, table: Table, key: &[u8]) -> Result<bool, SealError> {
        self.with_keys(table, |_| Ok(self.store.delete(table, key)?))
    }

    /// All records in `table` whose key starts with `prefix`, decrypted,
    /// ordered by key. Fails on the first corrupt record.
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Secret)>, SealError> {
        self.with_keys(table, |keys| {
            self.store
                .scan_prefix(table, prefix)?
                .into_iter()
                .map(|(key, raw)| {
                    let value = open(keys, table, &key, &raw)?;
                    Ok((key, value))
                })
                .collect()
        })
    }

    /// Applies encrypted puts and deletes atomically. Durable on return.
    pub fn batch(&self, ops: &[SealedWrite<'_>]) -> Result<(), SealError> {
        ops.iter().map(write_table).try_for_each(check_table)?;
        self.unsealed(|keys| {
            let sealed = ops
                .iter()
                .map(|op| match *op {
                    SealedWrite::Put {
                        table,
                        key,
                        plaintext,
                    } => seal(keys, table, key, plaintext).map(Some),
                    SealedWrite::Delete { .. } => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let raw_ops: Vec<WriteOp<'_>> = ops
                .iter()
                .zip(&sealed)
                .map(|(op, raw)| match (*op, raw) {
                    (SealedWrite::Put { table, key, .. }, Some(value)) => {
                        WriteOp::Put { table, key, value }
                    }
                    (
                        SealedWrite::Put { table, key, .. } | SealedWrite::Delete { table, key },
                        _,
                    ) => WriteOp::Delete { table, key },
                })
                .collect();
            Ok(self.store.batch(&raw_ops)?)
        })
    }
}

/// Record operations never touch [`Table::SYS`], where the seal metadata lives.
fn check_table(table: Table) -> Result<(), SealError> {
    if table == Table::SYS {
        return Err(SealError::ReservedTable(table));
    }
    Ok(())
}

fn write_table(op: &SealedWrite<'_>) -> Table {
    match *op {
        SealedWrite::Put { table, .. } | SealedWrite::Delete { table, .. } => table,
    }
}

fn seal(keys: &Keys, table: Table, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    keys.seal_record(table.name(), key, plaintext)
        .map_err(SealError::Keyring)
}

/// Decrypts a stored record; any envelope failure is reported as corruption
/// of that location.
fn open(keys: &Keys, table: Table, key: &[u8], raw: &[u8]) -> Result<Secret, SealError> {
    keys.open_record(table.name(), key, raw)
        .map_err(|cause| SealError::Corrupt {
            table,
            key: key.escape_ascii().to_string(),
            cause,
        })
}

/// Compares secret plaintexts without an early exit, so the time taken does
/// not reveal how long a prefix of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
