//! A store for the server's unit tests: sled underneath, with the next write
//! to a table held until the test lets it go, and the threads its calls ran
//! on noted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::id::TrustDomain;
use crate::keyring::KdfCost;
use crate::secret::Secret;
use crate::store::{
    BatchConflict, CasConflict, Expect, Records, SealedStore, SledStore, Store, StoreError, Table,
    WriteOp,
};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, SystemTime};

/// How long a test waits for the other side before failing (a guard against
/// a hang, not a speed requirement).
pub const WAIT: Duration = Duration::from_secs(30);

/// The next write to `table` (or read, see [`PausingStore::arm_after_read`])
/// stops here until `resume` says go.
struct Pause {
    table: Table,
    /// Whether it is the next read that stops, once it has read.
    after_read: bool,
    reached: Sender<()>,
    resume: Receiver<()>,
}

/// A sled store whose next write to one table can be paused, and which
/// notes the thread every call ran on.
pub struct PausingStore {
    inner: SledStore,
    armed: Mutex<Option<Pause>>,
    threads: Mutex<Vec<ThreadId>>,
}

impl PausingStore {
    fn note_thread(&self) {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }

    /// The threads calls ran on since the last call of this function.
    pub fn take_threads(&self) -> Vec<ThreadId> {
        std::mem::take(&mut *self.threads.lock().unwrap())
    }

    fn hold_if_armed(&self, table: Table) {
        self.hold(table, false);
    }

    fn hold(&self, table: Table, read: bool) {
        self.note_thread();
        let pause = {
            let mut armed = self.armed.lock().unwrap();
            match armed.as_ref() {
                Some(p) if p.table == table && p.after_read == read => armed.take(),
                _ => None,
            }
        };
        if let Some(p) = pause {
            p.reached.send(()).unwrap();
            p.resume
                .recv_timeout(WAIT)
                .expect("the test resumes the write");
        }
    }

    /// Holds a batch if it writes the armed table.
    fn hold_if_armed_for(&self, ops: &[WriteOp<'_>]) {
        let armed = self.armed.lock().unwrap().as_ref().map(|p| p.table);
        let hit = ops.iter().find_map(|op| match *op {
            WriteOp::Put { table, .. } | WriteOp::Delete { table, .. } => {
                (Some(table) == armed).then_some(table)
            }
        });
        match hit {
            Some(table) => self.hold_if_armed(table),
            None => self.note_thread(),
        }
    }

    /// Holds the next write to `table`; returns (reached, resume).
    pub fn arm(&self, table: Table) -> (Receiver<()>, Sender<()>) {
        self.arm_at(table, false)
    }

    /// Holds the next read of `table` once it has read: the moment between
    /// a writer's read and its write, outside the sealed store's writer
    /// turn, where another writer can still get in.
    pub fn arm_after_read(&self, table: Table) -> (Receiver<()>, Sender<()>) {
        self.arm_at(table, true)
    }

    fn arm_at(&self, table: Table, after_read: bool) -> (Receiver<()>, Sender<()>) {
        let (reached_tx, reached_rx) = channel();
        let (resume_tx, resume_rx) = channel();
        *self.armed.lock().unwrap() = Some(Pause {
            table,
            after_read,
            reached: reached_tx,
            resume: resume_rx,
        });
        (reached_rx, resume_tx)
    }
}

impl Store for PausingStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.inner.get(table, key);
        self.hold(table, true);
        read
    }

    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.hold_if_armed(table);
        self.inner.put(table, key, value)
    }

    fn delete(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        self.hold_if_armed(table);
        self.inner.delete(table, key)
    }

    fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError> {
        self.hold_if_armed(table);
        self.inner.compare_and_swap(table, key, expected, new)
    }

    fn batch(&self, ops: &[WriteOp<'_>]) -> Result<(), StoreError> {
        self.hold_if_armed_for(ops);
        self.inner.batch(ops)
    }

    fn batch_if(
        &self,
        expect: &[Expect<'_>],
        ops: &[WriteOp<'_>],
    ) -> Result<Result<(), BatchConflict>, StoreError> {
        // Sealed writes arrive here, with the table's digest in the batch.
        self.hold_if_armed_for(ops);
        self.inner.batch_if(expect, ops)
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Records, StoreError> {
        self.note_thread();
        self.inner.scan_prefix(table, prefix)
    }
}

/// The trust domain of the tests.
pub fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

/// `secs` after the Unix epoch.
pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// An initialized, unsealed store over a [`PausingStore`] in a temporary
/// directory (kept alive by the returned guard).
pub fn unsealed_store() -> (tempfile::TempDir, Arc<PausingStore>, Arc<SealedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(PausingStore {
        inner: SledStore::open(dir.path()).unwrap(),
        armed: Mutex::new(None),
        threads: Mutex::new(Vec::new()),
    });
    let sealed = Arc::new(SealedStore::new(raw.clone(), KdfCost::FAST_FOR_TESTS));
    sealed
        .init(&Secret::from_slice(b"server test passphrase"), &td(), at(1))
        .unwrap();
    raw.take_threads();
    (dir, raw, sealed)
}

/// Fails when any store call since the last check ran on `worker`.
pub fn assert_off(raw: &PausingStore, worker: ThreadId, what: &str) {
    let threads = raw.take_threads();
    assert!(!threads.is_empty(), "{what}: no store calls");
    assert!(
        threads.iter().all(|t| *t != worker),
        "{what}: a store call ran on the async worker thread"
    );
}
