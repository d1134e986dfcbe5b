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
//!
//! Every write also updates the per-table digests and the write generation
//! in the same atomic batch, and unseal checks them before any key is put
//! to use (see `sealed/integrity.rs`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::{Expect, Store, StoreError, Table, WriteOp};
use crate::audit::ChainKey;
use crate::id::TrustDomain;
use crate::keyring::{KdfCost, Keys, SealMeta};
use crate::secret::Secret;
pub use error::SealError;
use error::hierarchy_error;
use integrity::{Change, Commit};
pub use unsealing::Unsealing;
use unsealing::chain_key;

mod error;
mod integrity;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_integrity;
mod unsealing;

/// Key of the seal metadata in [`Table::SYS`].
const SEAL_META_KEY: &[u8] = b"seal_meta";

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
    /// The highest write generation known durable; kept while sealed.
    generation: AtomicU64,
    /// The highest generation applied without a sync of its own; published
    /// by the next [`SealedStore::sync`] (a durable write's is higher).
    applied: AtomicU64,
    /// Held by a write while it reads and replaces the integrity state.
    writers: integrity::Writers,
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
            generation: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            writers: integrity::Writers::default(),
        }
    }

    /// The store's write generation as last made durable by this process
    /// (or read at unseal). It only grows; it stays readable while sealed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn saw_generation(&self, generation: u64) {
        self.generation.fetch_max(generation, Ordering::AcqRel);
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
        let state = integrity::initial_state(&keys)?;
        let mut guard = self.write_keys();
        // The seal metadata and the first integrity record land together, so
        // an initialized store always has one.
        let expect = [Expect {
            table: Table::SYS,
            key: SEAL_META_KEY,
            value: None,
        }];
        let ops = [
            WriteOp::Put {
                table: Table::SYS,
                key: SEAL_META_KEY,
                value: &bytes,
            },
            WriteOp::Put {
                table: Table::INTEGRITY,
                key: integrity::STATE_KEY,
                value: &state,
            },
        ];
        self.store
            .batch_if(&expect, &ops)?
            .map_err(|_| SealError::AlreadyInitialized)?;
        *guard = Some(keys);
        Ok(())
    }

    /// Derives the keys from `passphrase` and checks the store's integrity
    /// (every table against its digest) with them, without putting them to
    /// use: nothing can write while the check runs, and nothing is written.
    /// Call it while sealed; [`Unsealing::publish`] then unseals.
    pub fn open_keys(&self, passphrase: &Secret) -> Result<Unsealing<'_>, SealError> {
        let (meta, _) = self.load_meta()?.ok_or(SealError::NotInitialized)?;
        let keys = Keys::open(&meta, passphrase).map_err(hierarchy_error)?;
        // The generation read here is published to the audit log, which
        // must never be ahead of the disk: a batch applied without a sync
        // before the last seal is synced first.
        self.store.sync()?;
        let (generation, anchor) = integrity::check(self.store.as_ref(), &keys)?;
        Ok(Unsealing {
            store: self,
            keys,
            generation,
            anchor,
        })
    }

    /// Opens the keys, checks the store and unseals. Writes nothing,
    /// whatever the outcome. Unsealing an unsealed store re-checks the
    /// passphrase and keeps it unsealed.
    pub fn unseal(&self, passphrase: &Secret) -> Result<(), SealError> {
        if self.read_keys().is_some() {
            // Writers are running: only the passphrase is checked again.
            let (meta, _) = self.load_meta()?.ok_or(SealError::NotInitialized)?;
            Keys::open(&meta, passphrase).map_err(hierarchy_error)?;
            return Ok(());
        }
        self.open_keys(passphrase)?.publish();
        Ok(())
    }

    /// The audit chain's HMAC key, derived from the root key.
    pub fn chain_key(&self) -> Result<ChainKey, SealError> {
        self.unsealed(chain_key)
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

    /// The value at (`table`, `key`), decrypted only when its stored bytes
    /// differ from `known` (the bytes of a value the caller opened before),
    /// so a caller that keeps what it parsed from a value can reuse it while
    /// the record is unchanged. The same bytes always open to the same
    /// value: every key that sealed a record stays in the ring. Sealed, this
    /// fails like [`SealedStore::get`], whatever the caller knows.
    pub fn get_unless(
        &self,
        table: Table,
        key: &[u8],
        known: Option<&[u8]>,
    ) -> Result<Unless, SealError> {
        self.with_keys(table, |keys| {
            let Some(raw) = self.store.get(table, key)? else {
                return Ok(Unless::Absent);
            };
            if known == Some(raw.as_slice()) {
                return Ok(Unless::Unchanged);
            }
            let value = open(keys, table, key, &raw)?;
            Ok(Unless::Changed { raw, value })
        })
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

    /// Writes `changes` with their digests and generation (see `sealed/integrity.rs`).
    fn commit(&self, keys: &Keys, changes: &[Change<'_>]) -> Result<Commit, SealError> {
        self.commit_with(keys, changes, integrity::Durability::Now)
    }

    fn commit_with(
        &self,
        keys: &Keys,
        changes: &[Change<'_>],
        sync: integrity::Durability,
    ) -> Result<Commit, SealError> {
        self.commit_anchored(keys, changes, None, sync)
    }

    fn commit_anchored(
        &self,
        keys: &Keys,
        changes: &[Change<'_>],
        anchor: Option<&str>,
        sync: integrity::Durability,
    ) -> Result<Commit, SealError> {
        let done = integrity::commit(
            self.store.as_ref(),
            &self.writers,
            keys,
            changes,
            anchor,
            0,
            sync,
        )?;
        // Audit records carry the generation seen here, and unseal takes an
        // audit log ahead of the store for a rolled-back store: so only a
        // generation known to be on disk is published. An unsynced write's
        // generation is covered by the next durable write's, which is higher.
        if let Commit::Applied { generation, .. } = done {
            match sync {
                integrity::Durability::Now => self.saw_generation(generation),
                integrity::Durability::Later => {
                    self.applied.fetch_max(generation, Ordering::AcqRel);
                }
            }
        }
        Ok(done)
    }

    /// Sets the anchor: one short value kept inside the store's integrity
    /// record (encrypted and authenticated with it, and moving the write
    /// generation like any write) rather than in a record of its own, so
    /// that a writer that replaces it often pays for one record, not two.
    /// With `replaces`, that record (the value's former home) is deleted in
    /// the same write. Durable on return.
    pub fn set_anchor(
        &self,
        anchor: &str,
        replaces: Option<(Table, &[u8])>,
    ) -> Result<(), SealError> {
        self.unsealed(|keys| {
            let changes: Vec<Change<'_>> = replaces
                .into_iter()
                .map(|(table, key)| {
                    check_table(table)?;
                    Ok(Change {
                        table,
                        key,
                        new: None,
                        expect: None,
                    })
                })
                .collect::<Result<_, SealError>>()?;
            self.commit_anchored(keys, &changes, Some(anchor), integrity::Durability::Now)
                .map(drop)
        })
    }

    /// The anchor (see [`SealedStore::set_anchor`]), if one was set.
    pub fn anchor(&self) -> Result<Option<String>, SealError> {
        self.unsealed(|keys| integrity::anchor(self.store.as_ref(), keys))
    }

    /// Encrypts and stores `plaintext` at (`table`, `key`). Durable on return.
    pub fn put(&self, table: Table, key: &[u8], plaintext: &[u8]) -> Result<(), SealError> {
        self.with_keys(table, |keys| {
            let new = Some(seal(keys, table, key, plaintext)?);
            let change = Change {
                table,
                key,
                new,
                expect: None,
            };
            self.commit(keys, &[change]).map(drop)
        })
    }

    /// Like `put`, but fails with [`SealError::AlreadyExists`] if a record is
    /// already there.
    pub fn create(&self, table: Table, key: &[u8], plaintext: &[u8]) -> Result<(), SealError> {
        self.with_keys(table, |keys| {
            let new = Some(seal(keys, table, key, plaintext)?);
            let change = Change {
                table,
                key,
                new,
                expect: Some(None),
            };
            match self.commit(keys, &[change])? {
                Commit::Applied { .. } => Ok(()),
                Commit::Stale(_) => Err(SealError::AlreadyExists),
            }
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
            let change = Change {
                table,
                key,
                new: new.map(|p| seal(keys, table, key, p)).transpose()?,
                expect: Some(raw.as_deref()),
            };
            match self.commit(keys, &[change])? {
                Commit::Applied { .. } => Ok(()),
                Commit::Stale(_) => Err(SealError::Conflict),
            }
        })
    }

    /// Removes (`table`, `key`); true if it existed. Durable on return.
    pub fn delete(&self, table: Table, key: &[u8]) -> Result<bool, SealError> {
        self.with_keys(table, |keys| {
            let change = Change {
                table,
                key,
                new: None,
                expect: None,
            };
            Ok(match self.commit(keys, &[change])? {
                Commit::Applied { existed, .. } => existed.first().copied().unwrap_or(false),
                Commit::Stale(_) => false,
            })
        })
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
        self.batch_with(ops, integrity::Durability::Now)
    }

    /// Applies encrypted puts and deletes atomically, without waiting for
    /// the disk: they become durable with the next durable write of the
    /// store (or the backend's own periodic flush) and are lost, all of
    /// them or none, if the machine or the process stops before that. For
    /// writes that a crash may lose.
    pub fn batch_unsynced(&self, ops: &[SealedWrite<'_>]) -> Result<(), SealError> {
        self.batch_with(ops, integrity::Durability::Later)
    }

    /// Waits until every write applied before the call is on disk, and
    /// publishes their generation.
    pub fn sync(&self) -> Result<(), SealError> {
        // Read before the sync: the backend's sync covers every write
        // applied before it was called, so this generation is on disk after.
        let applied = self.applied.load(Ordering::Acquire);
        self.store.sync()?;
        self.saw_generation(applied);
        Ok(())
    }

    fn batch_with(
        &self,
        ops: &[SealedWrite<'_>],
        sync: integrity::Durability,
    ) -> Result<(), SealError> {
        ops.iter().map(write_table).try_for_each(check_table)?;
        self.unsealed(|keys| {
            let changes = ops
                .iter()
                .map(|op| {
                    Ok(match *op {
                        SealedWrite::Put {
                            table,
                            key,
                            plaintext,
                        } => Change {
                            table,
                            key,
                            new: Some(seal(keys, table, key, plaintext)?),
                            expect: None,
                        },
                        SealedWrite::Delete { table, key } => Change {
                            table,
                            key,
                            new: None,
                            expect: None,
                        },
                    })
                })
                .collect::<Result<Vec<_>, SealError>>()?;
            self.commit_with(keys, &changes, sync).map(drop)
        })
    }
}

/// Record operations never touch [`Table::SYS`], where the seal metadata
/// lives, nor [`Table::INTEGRITY`], which only the write path maintains.
fn check_table(table: Table) -> Result<(), SealError> {
    if table == Table::SYS || table == Table::INTEGRITY {
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

/// The stored form of a record as read, to make a later write conditional on
/// it ([`SealedStore::batch_if`]). Opaque: it holds ciphertext only.
#[derive(Clone, PartialEq, Eq)]
pub struct Stamp(Option<Vec<u8>>);

/// What [`SealedStore::get_unless`] found.
#[derive(Debug)]
pub enum Unless {
    /// Nothing is stored there.
    Absent,
    /// The stored bytes are the ones the caller knows.
    Unchanged,
    /// Something else is stored: its bytes, and the value they open to.
    Changed {
        /// The stored (sealed) bytes.
        raw: Vec<u8>,
        /// The decrypted value.
        value: Secret,
    },
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(raw) => write!(f, "Stamp({} bytes)", raw.len()),
            None => f.write_str("Stamp(absent)"),
        }
    }
}

impl SealedStore {
    /// The decrypted value at (`table`, `key`) with a [`Stamp`] of what was
    /// read, for a compare-and-swap over several records.
    pub fn get_stamped(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<(Option<Secret>, Stamp), SealError> {
        self.with_keys(table, |keys| {
            let raw = self.store.get(table, key)?;
            let value = raw
                .as_deref()
                .map(|r| open(keys, table, key, r))
                .transpose()?;
            Ok((value, Stamp(raw)))
        })
    }

    /// Applies `ops` atomically only if (`table`, `key`) still holds what
    /// `stamp` saw; otherwise [`SealError::Conflict`] and nothing is written.
    /// The check and the writes are one batch of the underlying store, so a
    /// networked store can do it atomically too. `ops` must write the guarded
    /// record (its new value is what makes the swap); a batch that does not is
    /// refused as a conflict.
    pub fn batch_if(
        &self,
        (table, key, stamp): (Table, &[u8], &Stamp),
        ops: &[SealedWrite<'_>],
    ) -> Result<(), SealError> {
        check_table(table)?;
        ops.iter().map(write_table).try_for_each(check_table)?;
        self.unsealed(|keys| {
            let mut changes = Vec::with_capacity(ops.len() + 1);
            let mut guarded = false;
            for op in ops {
                let change = match *op {
                    SealedWrite::Put {
                        table: t,
                        key: k,
                        plaintext,
                    } => Change {
                        table: t,
                        key: k,
                        new: Some(seal(keys, t, k, plaintext)?),
                        expect: None,
                    },
                    SealedWrite::Delete { table: t, key: k } => Change {
                        table: t,
                        key: k,
                        new: None,
                        expect: None,
                    },
                };
                // The guarded record written in the same batch carries the check.
                if t_eq(&change, table, key) {
                    guarded = true;
                    changes.push(Change {
                        expect: Some(stamp.0.as_deref()),
                        ..change
                    });
                } else {
                    changes.push(change);
                }
            }
            if !guarded {
                return Err(SealError::Conflict);
            }
            match self.commit(keys, &changes)? {
                Commit::Applied { .. } => Ok(()),
                Commit::Stale(_) => Err(SealError::Conflict),
            }
        })
    }
}

fn t_eq(change: &Change<'_>, table: Table, key: &[u8]) -> bool {
    change.table == table && change.key == key
}
