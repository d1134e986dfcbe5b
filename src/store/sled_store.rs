//! The embedded [`Store`] on sled (SPEC §5).
//!
//! All tables share one sled tree with keys `table ‖ 0x00 ‖ key`, so a batch
//! spanning tables is a single atomic sled batch. Every write is followed by
//! sled's `flush()` and an `fdatasync` of sled's data file: once a write
//! method returns, the write survives a killed process or a power cut.
//! Values and pages too large for sled's log live in blob files of their
//! own, which sled does not sync; the flush syncs them too.
//! Writers waiting at once share one flush and one `fdatasync`
//! (`group_sync`). A conditional batch is a sled transaction, which sled
//! isolates from every other read and write on the tree; the flush follows
//! the transaction, so it joins the same group.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::group_sync::GroupSync;
use super::{BatchConflict, CasConflict, Expect, Records, Store, StoreError, Table, WriteOp};

/// Name of sled's data file inside the store directory (a sled 0.34 detail).
const SLED_DATA_FILE: &str = "db";

/// A sled database in one directory. Cheap to share behind an `Arc`; sled
/// serializes concurrent writers internally.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    /// sled's data file, kept open to `fdatasync` it after each flush.
    data: std::fs::File,
    dir: PathBuf,
    /// The flush and fdatasync that concurrent writers share.
    sync: GroupSync,
    /// sled's blob files already synced, with the length they had then
    /// (see [`SledStore::sync_blobs`]).
    blobs: std::sync::Mutex<std::collections::HashMap<std::ffi::OsString, u64>>,
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`. Fails with
    /// [`StoreError::Locked`] if another process has it open and
    /// [`StoreError::Corrupt`] if its files cannot be recovered.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let had_data = std::fs::metadata(dir.join(SLED_DATA_FILE)).is_ok_and(|m| m.len() > 0);
        let db = open_db(dir)?;
        // sled discards a log it cannot parse and starts empty instead of
        // failing. A data file that existed but yielded nothing is corruption,
        // and must not look like a fresh store that invites a new `init`.
        if had_data && !db.was_recovered() {
            return Err(StoreError::Corrupt {
                dir: dir.to_path_buf(),
                reason: "the existing data file could not be recovered".into(),
            });
        }
        let data = std::fs::File::open(dir.join(SLED_DATA_FILE)).map_err(StoreError::Io)?;
        // The directory entry of a newly created data file must be durable too.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::Io)?;
        Ok(SledStore {
            db,
            data,
            dir: dir.to_path_buf(),
            sync: GroupSync::default(),
            blobs: std::sync::Mutex::default(),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Durability point: an acknowledged write must be on disk (SPEC §5).
        // Concurrent writers share one flush and one fdatasync.
        self.sync.sync(|| {
            self.db.flush().map_err(|e| classify(&self.dir, e))?;
            self.sync_blobs().map_err(StoreError::Io)?;
            // sled 0.34 flushes its log with sync_file_range, which persists
            // neither the file's metadata nor the drive's write cache; an
            // fdatasync on the data file does both, so the write survives a
            // power cut and not only a killed process.
            self.data.sync_data().map_err(StoreError::Io)
        })
    }

    /// Syncs the blob files sled wrote since the last call, and the
    /// directory that names them. sled 0.34 keeps a value or page larger
    /// than about 128 KiB (a quarter of its 512 KiB segment) in a file of
    /// its own under `blobs/`, written when the record is, and never syncs
    /// it; a secret version may be 512 KiB. Without this, such a write
    /// would be acknowledged while its bytes were still only in the page
    /// cache. They are synced before the data file, whose log points at
    /// them. A file is synced again if its length changed since (it was
    /// still being written when last seen); names sled has since removed
    /// are forgotten.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = crate::sync::lock(&self.blobs);
        let mut now = std::collections::HashMap::with_capacity(synced.len());
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let len = entry.metadata()?.len();
            let name = entry.file_name();
            if synced.get(&name) != Some(&len) {
                std::fs::File::open(entry.path())?.sync_data()?;
                new = true;
            }
            now.insert(name, len);
        }
        if new {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        *synced = now;
        Ok(())
    }

    /// The blob files synced so far, by name, with their lengths.
    #[cfg(test)]
    fn synced_blobs(&self) -> std::collections::HashMap<std::ffi::OsString, u64> {
        crate::sync::lock(&self.blobs).clone()
    }

    fn err(&self, e: sled::Error) -> StoreError {
        classify(&self.dir, e)
    }
}

/// How long [`open_db`] waits for a lock that a store closed in this same
/// process may still hold.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Opens sled in `dir`. sled releases its file lock only when the last of its
/// background I/O tasks lets go of the file, a moment after the `Db` is
/// dropped; a store closed and reopened in one process (a restart in place,
/// tests) can meet its own lock. So a held lock is retried briefly before it
/// is reported as [`StoreError::Locked`]: another process that really holds
/// the store is still reported, only [`LOCK_PATIENCE`] later.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let mut waited = Duration::ZERO;
    let mut step = Duration::from_millis(5);
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(e) => match classify(dir, e) {
                StoreError::Locked { .. } if waited < LOCK_PATIENCE => {
                    crate::clock::pause_thread(step);
                    waited += step;
                    step = (step * 2).min(Duration::from_millis(200));
                }
                other => return Err(other),
            },
        }
    }
}

/// The physical key of (`table`, `key`).
fn physical_key(table: Table, key: &[u8]) -> Vec<u8> {
    let name = table.name().as_bytes();
    let mut out = Vec::with_capacity(name.len() + 1 + key.len());
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(key);
    out
}

/// Maps sled's errors to ours. sled reports a held lock only as an I/O error
/// whose message starts with "could not acquire lock", so that is matched.
fn classify(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                dir: dir.to_path_buf(),
            }
        }
        sled::Error::Io(io) => StoreError::Io(io),
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            dir: dir.to_path_buf(),
            reason: format!("corruption at {at:?}"),
        },
        sled::Error::Unsupported(reason) => StoreError::Corrupt {
            dir: dir.to_path_buf(),
            reason,
        },
        other => StoreError::Backend(other.to_string()),
    }
}

impl Store for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .db
            .get(physical_key(table, key))
            .map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db
            .insert(physical_key(table, key), value)
            .map_err(|e| self.err(e))?;
        self.flush()
    }

    fn delete(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        let old = self
            .db
            .remove(physical_key(table, key))
            .map_err(|e| self.err(e))?;
        self.flush()?;
        Ok(old.is_some())
    }

    fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError> {
        let outcome = self
            .db
            .compare_and_swap(physical_key(table, key), expected, new)
            .map_err(|e| self.err(e))?;
        match outcome {
            Ok(()) => {
                self.flush()?;
                Ok(Ok(()))
            }
            Err(conflict) => Ok(Err(CasConflict {
                current: conflict.current.map(|v| v.to_vec()),
            })),
        }
    }

    fn batch(&self, ops: &[WriteOp<'_>]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match *op {
                WriteOp::Put { table, key, value } => batch.insert(physical_key(table, key), value),
                WriteOp::Delete { table, key } => batch.remove(physical_key(table, key)),
            }
        }
        self.db.apply_batch(batch).map_err(|e| self.err(e))?;
        self.flush()
    }

    fn batch_if(
        &self,
        expect: &[Expect<'_>],
        ops: &[WriteOp<'_>],
    ) -> Result<Result<(), BatchConflict>, StoreError> {
        let applied = self.batch_if_unsynced(expect, ops)?;
        if applied.is_ok() {
            self.flush()?;
        }
        Ok(applied)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.flush()
    }

    fn batch_if_unsynced(
        &self,
        expect: &[Expect<'_>],
        ops: &[WriteOp<'_>],
    ) -> Result<Result<(), BatchConflict>, StoreError> {
        // One write conditioned on the record it replaces is a
        // compare-and-swap, which sled logs as one message. A transaction
        // is logged as two writes of the log: sled first writes a batch
        // marker in a log buffer of its own (so that recovery applies the
        // batch whole or not at all), then the records.
        if let ([only], [op]) = (expect, ops) {
            let (table, key, new) = match *op {
                WriteOp::Put { table, key, value } => (table, key, Some(value)),
                WriteOp::Delete { table, key } => (table, key, None),
            };
            if only.table == table && only.key == key {
                let swapped = self
                    .db
                    .compare_and_swap(physical_key(table, key), only.value, new)
                    .map_err(|e| self.err(e))?;
                return Ok(swapped.map_err(|_| BatchConflict { failed: 0 }));
            }
        }
        // sled may run the closure again after an internal conflict, so it
        // only reads its arguments.
        let outcome = self.db.transaction(|tx: &TransactionalTree| {
            for (failed, e) in expect.iter().enumerate() {
                let current = tx.get(physical_key(e.table, e.key))?;
                if current.as_deref() != e.value {
                    return Err(ConflictableTransactionError::Abort(BatchConflict {
                        failed,
                    }));
                }
            }
            for op in ops {
                match *op {
                    WriteOp::Put { table, key, value } => {
                        tx.insert(physical_key(table, key), value)?;
                    }
                    WriteOp::Delete { table, key } => {
                        tx.remove(physical_key(table, key))?;
                    }
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(Ok(())),
            Err(TransactionError::Abort(conflict)) => Ok(Err(conflict)),
            Err(TransactionError::Storage(e)) => Err(self.err(e)),
        }
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Records, StoreError> {
        let full = physical_key(table, prefix);
        let strip = table.name().len() + 1;
        let mut out = Vec::new();
        // sled iterates in lexicographic key order, which is the order the
        // trait promises.
        for item in self.db.scan_prefix(&full) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = k.get(strip..).unwrap_or_default().to_vec();
            out.push((key, v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    fn open() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn put_get_delete() {
        let (_dir, s) = open();
        assert_eq!(s.get(Table::ENTRIES, b"a").unwrap(), None);
        s.put(Table::ENTRIES, b"a", b"1").unwrap();
        assert_eq!(s.get(Table::ENTRIES, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(Table::AGENTS, b"a").unwrap(), None);
        assert!(s.delete(Table::ENTRIES, b"a").unwrap());
        assert!(!s.delete(Table::ENTRIES, b"a").unwrap());
    }

    #[test]
    fn tables_do_not_leak_into_each_other_in_scans() {
        let (_dir, s) = open();
        s.put(Table::META, b"x", b"meta").unwrap();
        s.put(Table::SECRETS, b"b/2", b"2").unwrap();
        s.put(Table::SECRETS, b"b/1", b"1").unwrap();
        s.put(Table::SECRETS, b"c", b"3").unwrap();
        let all = s.scan_prefix(Table::SECRETS, b"").unwrap();
        let keys: Vec<_> = all.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"b/1"[..], b"b/2", b"c"]);
        let b = s.scan_prefix(Table::SECRETS, b"b/").unwrap();
        assert_eq!(
            b,
            vec![
                (b"b/1".to_vec(), b"1".to_vec()),
                (b"b/2".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(s.scan_prefix(Table::META, b"").unwrap().len(), 1);
    }

    #[test]
    fn compare_and_swap_reports_current_value() {
        let (_dir, s) = open();
        assert_eq!(
            s.compare_and_swap(Table::SYS, b"k", None, Some(b"1"))
                .unwrap(),
            Ok(())
        );
        let lost = s
            .compare_and_swap(Table::SYS, b"k", None, Some(b"2"))
            .unwrap();
        assert_eq!(
            lost,
            Err(CasConflict {
                current: Some(b"1".to_vec())
            })
        );
        assert_eq!(
            s.compare_and_swap(Table::SYS, b"k", Some(b"1"), None)
                .unwrap(),
            Ok(())
        );
        assert_eq!(s.get(Table::SYS, b"k").unwrap(), None);
    }

    #[test]
    fn batch_applies_across_tables_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put(Table::AGENTS, b"gone", b"x").unwrap();
            s.batch(&[
                WriteOp::Put {
                    table: Table::ENTRIES,
                    key: b"e",
                    value: b"1",
                },
                WriteOp::Put {
                    table: Table::META,
                    key: b"m",
                    value: b"2",
                },
                WriteOp::Delete {
                    table: Table::AGENTS,
                    key: b"gone",
                },
            ])
            .unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get(Table::ENTRIES, b"e").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(Table::META, b"m").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(Table::AGENTS, b"gone").unwrap(), None);
    }

    #[test]
    fn batch_if_applies_only_when_every_precondition_holds() {
        let (_dir, s) = open();
        s.put(Table::STATE, b"v", b"1").unwrap();
        let put = [
            WriteOp::Put {
                table: Table::STATE,
                key: b"v",
                value: b"2",
            },
            WriteOp::Put {
                table: Table::ENTRIES,
                key: b"e",
                value: b"x",
            },
        ];
        let stale = [
            Expect {
                table: Table::ENTRIES,
                key: b"e",
                value: None,
            },
            Expect {
                table: Table::STATE,
                key: b"v",
                value: Some(b"0"),
            },
        ];
        assert_eq!(
            s.batch_if(&stale, &put).unwrap(),
            Err(BatchConflict { failed: 1 })
        );
        assert_eq!(s.get(Table::ENTRIES, b"e").unwrap(), None);
        let current = [
            Expect {
                table: Table::ENTRIES,
                key: b"e",
                value: None,
            },
            Expect {
                table: Table::STATE,
                key: b"v",
                value: Some(b"1"),
            },
        ];
        assert_eq!(s.batch_if(&current, &put).unwrap(), Ok(()));
        assert_eq!(s.get(Table::STATE, b"v").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(Table::ENTRIES, b"e").unwrap(), Some(b"x".to_vec()));
    }

    /// One write conditioned on its own record (a compare-and-swap for
    /// sled) keeps the batch contract: applied only on a match, a conflict
    /// naming precondition 0, deletion included; a write conditioned on
    /// another record still checks that record.
    #[test]
    fn a_write_conditioned_on_its_own_record_is_applied_only_on_a_match() {
        let (_dir, s) = open();
        s.put(Table::STATE, b"v", b"1").unwrap();
        let on = |value: Option<&'static [u8]>| {
            [Expect {
                table: Table::STATE,
                key: b"v",
                value,
            }]
        };
        let put = [WriteOp::Put {
            table: Table::STATE,
            key: b"v",
            value: b"2",
        }];
        assert_eq!(
            s.batch_if(&on(Some(b"0")), &put).unwrap(),
            Err(BatchConflict { failed: 0 })
        );
        assert_eq!(
            s.batch_if(&on(None), &put).unwrap(),
            Err(BatchConflict { failed: 0 })
        );
        assert_eq!(s.get(Table::STATE, b"v").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.batch_if(&on(Some(b"1")), &put).unwrap(), Ok(()));
        assert_eq!(s.get(Table::STATE, b"v").unwrap(), Some(b"2".to_vec()));
        let delete = [WriteOp::Delete {
            table: Table::STATE,
            key: b"v",
        }];
        assert_eq!(
            s.batch_if_unsynced(&on(Some(b"2")), &delete).unwrap(),
            Ok(())
        );
        assert_eq!(s.get(Table::STATE, b"v").unwrap(), None);
        // Conditioned on another record: that record is what is checked.
        let other = [Expect {
            table: Table::ENTRIES,
            key: b"v",
            value: Some(b"2"),
        }];
        assert_eq!(
            s.batch_if(&other, &put).unwrap(),
            Err(BatchConflict { failed: 0 })
        );
        assert_eq!(s.get(Table::STATE, b"v").unwrap(), None);
        s.put(Table::ENTRIES, b"v", b"2").unwrap();
        assert_eq!(s.batch_if(&other, &put).unwrap(), Ok(()));
        assert_eq!(s.get(Table::STATE, b"v").unwrap(), Some(b"2".to_vec()));
    }

    /// Many threads increment one counter with read + conditional batch and
    /// retry on conflict: no increment is lost.
    #[test]
    fn concurrent_conditional_batches_lose_no_update() {
        let (_dir, s) = open();
        let s = std::sync::Arc::new(s);
        s.put(Table::STATE, b"n", &0u64.to_be_bytes()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        loop {
                            let old = s.get(Table::STATE, b"n").unwrap().unwrap();
                            let n = u64::from_be_bytes(old.clone().try_into().unwrap());
                            let new = (n + 1).to_be_bytes();
                            let expect = [Expect {
                                table: Table::STATE,
                                key: b"n",
                                value: Some(&old),
                            }];
                            let op = [WriteOp::Put {
                                table: Table::STATE,
                                key: b"n",
                                value: &new,
                            }];
                            if s.batch_if(&expect, &op).unwrap().is_ok() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = s.get(Table::STATE, b"n").unwrap().unwrap();
        assert_eq!(u64::from_be_bytes(n.try_into().unwrap()), 100);
    }

    /// A value too large for sled's log goes to a blob file of its own,
    /// which sled never syncs: the write's flush syncs it (with its
    /// length at the time), and it reads back after a reopen.
    #[test]
    fn a_value_kept_in_a_blob_file_is_synced_by_the_write() {
        let (dir, s) = open();
        let big = vec![7u8; 300 * 1024];
        s.put(Table::SECRETS, b"big", &big).unwrap();
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect();
        assert!(!blobs.is_empty(), "sled kept the value in a blob file");
        let synced = s.synced_blobs();
        for (name, len) in &blobs {
            assert_eq!(synced.get(name), Some(len), "{name:?} synced");
        }
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get(Table::SECRETS, b"big").unwrap().unwrap(), big);
    }

    #[test]
    fn damaged_data_file_reports_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put(Table::ENTRIES, b"a", b"1").unwrap();
        }
        let file = dir.path().join(SLED_DATA_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.iter_mut().take(64).for_each(|b| *b ^= 0xff);
        std::fs::write(&file, &bytes).unwrap();
        match SledStore::open(dir.path()) {
            Err(StoreError::Corrupt { dir: d, .. }) => assert_eq!(d, dir.path()),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn reopening_an_empty_store_is_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        drop(SledStore::open(dir.path()).unwrap());
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get(Table::SYS, b"k").unwrap(), None);
    }

    #[test]
    fn second_open_of_same_directory_reports_locked() {
        let (dir, _s) = open();
        match SledStore::open(dir.path()) {
            Err(StoreError::Locked { dir: d }) => assert_eq!(d, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
    }
}
