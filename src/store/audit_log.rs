//! The audit log file: one writer thread commits records in groups (SPEC §4
//! "continuous monitoring", §6 audit appends vs fdatasync; STYLE §10). The
//! chain is behind one lock: the thread takes it per group, and a read's
//! record ([`AuditLog::append_written`]) is chained by its own caller when
//! the lock is free, or by whoever holds the lock before letting it go, so
//! the hottest request never waits for a hand-over to the thread and back.
//!
//! Every [`AuditLog::append`] waits until its record is written, the file is
//! `fdatasync`ed and the new chain head is saved in the [`HeadStore`]. Events
//! that arrive while a commit is in progress are committed together by the
//! next one, so one fsync serves many callers. If any step fails, every
//! caller in that group gets the error — the privileged operation must then
//! fail — and the log refuses further appends until it is reopened, because
//! the file's tail is no longer known to be good.
//!
//! The queue to the writer is bounded ([`QUEUE_LEN`]): when it is full,
//! appenders wait for room (back-pressure) instead of growing memory without
//! limit, and no record is ever dropped.
//!
//! While the store is unsealed the writer holds the chain key and writes
//! keyed records; [`AuditLog::unsealed`] hands it over with the re-anchor
//! record and [`AuditLog::sealing`] takes it back after a keyed checkpoint
//! (see `audit` for the rules). The chain head goes to the server log as
//! `audit chain head` (fields `seq`, `hash`, `reason`; target
//! [`HEAD_LOG_TARGET`]) every 1,000 records and at
//! every seal and shutdown, so that a log collector outside the data
//! directory witnesses how far the chain reached.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::audit::{
    ChainHead, ChainKey, EncodedEvent, Event, LinkError, Parsed, VerifyError, VerifyReport, verify,
    verify_visiting,
};
use writer::{Chain, Msg, Writer};

mod tail;
mod writer;

/// Events waiting for the writer, at most. Appenders beyond it wait.
pub const QUEUE_LEN: usize = 4096;

/// The tracing target of the `audit chain head` message.
pub const HEAD_LOG_TARGET: &str = "sigil::audit";

/// Writes the chain head to the server log, for outside witnesses. The
/// message and field names are stable: log collectors match on them.
pub fn log_head(head: &ChainHead, reason: &'static str) {
    tracing::info!(
        target: HEAD_LOG_TARGET,
        seq = head.seq,
        hash = %hex::encode(head.hash),
        reason,
        "audit chain head"
    );
}

/// Where the server keeps the chain head, out of reach of whoever can edit
/// the log file (the server uses its encrypted store), so that removing
/// records from the end of the log is detected.
pub trait HeadStore: Send + Sync + 'static {
    /// The saved head, or `None` if none was ever saved.
    fn load_head(&self) -> Result<Option<ChainHead>, String>;
    /// Durably saves `head`; the log acknowledges appends only after this returns.
    fn save_head(&self, head: &ChainHead) -> Result<(), String>;
    /// The store's write generation as last made durable; every record
    /// carries it.
    fn generation(&self) -> u64;
}

/// A [`HeadStore`] in memory, for tests and tools. Each save counts as one
/// store write for the generation.
#[derive(Debug, Default)]
pub struct MemoryHeadStore {
    head: Mutex<Option<ChainHead>>,
    generation: AtomicU64,
}

impl MemoryHeadStore {
    /// A store holding `head`.
    pub fn new(head: Option<ChainHead>) -> Self {
        Self {
            head: Mutex::new(head),
            generation: AtomicU64::new(0),
        }
    }
}

impl HeadStore for MemoryHeadStore {
    fn load_head(&self) -> Result<Option<ChainHead>, String> {
        Ok(*crate::sync::lock(&self.head))
    }

    fn save_head(&self, head: &ChainHead) -> Result<(), String> {
        *crate::sync::lock(&self.head) = Some(*head);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Why the audit log could not open, verify or append.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit log {op}: {message}")]
    Io {
        /// What was being done (`open`, `read`, `write`, `fdatasync`, …).
        op: &'static str,
        /// The OS error.
        message: String,
    },
    /// The stored chain breaks a rule: the log was altered, or records were removed.
    #[error("audit log failed verification: {0}")]
    Tampered(#[from] VerifyError),
    /// The head store could not load or save the chain head.
    #[error("audit chain head store: {0}")]
    HeadStore(String),
    /// An event could not be made into a record.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// An allowed request reached the log after the chain key was dropped
    /// (it raced a seal): without the key its record would be an
    /// unauthenticated "allow", which verification rejects, so the request
    /// fails instead.
    #[error("audit log cannot record an allowed request while sealed")]
    SealedAllow,
    /// Another `AuditLog` (in this or another process) has the file open.
    #[error("audit log is already open in another writer")]
    InUse,
    /// An earlier commit failed; the log accepts nothing until it is reopened.
    #[error("audit log is failed after an earlier write error; reopen it")]
    Failed,
    /// The writer thread is gone.
    #[error("audit log writer has stopped")]
    Closed,
}

pub(crate) fn io(op: &'static str) -> impl Fn(std::io::Error) -> AuditError {
    move |e| AuditError::Io {
        op,
        message: e.to_string(),
    }
}

/// The open audit log. Cheap to share behind an `Arc`; appends from any
/// number of tasks are serialized by one writer thread.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    chain: Arc<Chain>,
    head: Arc<Mutex<ChainHead>>,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, checks the chain's
    /// structure (links, sequence, unauthenticated records; keyed records
    /// are authenticated at unseal, when the key exists) against the stored
    /// head, and starts the writer. Refuses a log that fails: the server
    /// must not start on it.
    ///
    /// A final line without a newline is a write torn by a crash: it was
    /// never acknowledged, so it is cut off (with a warning) once everything
    /// before it verifies.
    pub fn open(path: &Path, heads: Arc<dyn HeadStore>) -> Result<AuditLog, AuditError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io("open"))?;
        // One writer owns the chain: a second one appending to the same file
        // would fork it. The lock is released when the writer closes the file.
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => AuditError::InUse,
            std::fs::TryLockError::Error(e) => io("lock")(e),
        })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        let stored = heads.load_head().map_err(AuditError::HeadStore)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let report = verify(
            bytes.get(..complete).unwrap_or_default(),
            None,
            stored.as_ref(),
        )?;
        if complete < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                bytes = bytes.len() - complete,
                "audit log ends in a torn record; removing it"
            );
            file.set_len(complete as u64).map_err(io("truncate"))?;
            file.sync_data().map_err(io("fdatasync"))?;
        }
        anchor(path, &report, stored.as_ref(), heads.as_ref())?;
        let head = Arc::new(Mutex::new(report.head));
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let writer = Writer {
            file,
            head: report.head,
            heads,
            key: None,
            sealed_run: report.pending_unauthenticated(),
            failed: false,
            shared: head.clone(),
        };
        let (chain, handle) = Chain::start(writer, rx)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            tx: Some(tx),
            writer: Some(handle),
            chain,
            head,
        })
    }

    async fn send(&self, msg: impl FnOnce(writer::Waiter) -> Msg) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(AuditError::Closed)?;
        // Waits for room when the queue is full: back-pressure, never a drop.
        tx.send(msg(done)).await.map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// Appends `event` and waits until it is durable and the head is saved.
    /// Returns the record's sequence number. On error the caller must treat
    /// the audited operation as failed.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        let event = EncodedEvent::new(&event)?;
        self.send(|done| Msg::Append(event, writer::Ack::Durable, done))
            .await
    }

    /// Appends `event` and waits until it is written to the log file and
    /// chained, not until it is on disk: an fsync that starts at most 20 ms
    /// later covers it (reads' records are synced together). For reads,
    /// whose record must exist before what was read is returned: the record
    /// survives a crash of the process, and is lost only if the machine
    /// loses power within that moment. Everything that changes state uses
    /// [`AuditLog::append`]. A failed write (or a failed sync before it) is
    /// an error here too.
    pub async fn append_written(&self, event: Event) -> Result<u64, AuditError> {
        if self.tx.is_none() {
            return Err(AuditError::Closed);
        }
        let event = EncodedEvent::new(&event)?;
        // Written on this thread when the chain is free, by its holder
        // otherwise. Either way it is chained under the same lock as every
        // other record.
        match self.chain.append_written(event) {
            writer::Written::Done(answer) => answer,
            writer::Written::Waiting(answer) => answer.await.map_err(|_| AuditError::Closed)?,
        }
    }

    /// Hands the writer the chain key and writes `anchor` as the first keyed
    /// record, stating how many records were written while sealed. Returns
    /// its sequence number.
    pub async fn unsealed(&self, key: ChainKey, anchor: Event) -> Result<u64, AuditError> {
        self.send(|done| Msg::Unseal { key, anchor, done }).await
    }

    /// Writes `checkpoint` as a keyed record (if the writer holds the key),
    /// then drops the key and logs the head. Records after it are written
    /// unauthenticated.
    pub async fn sealing(&self, checkpoint: Event) -> Result<(), AuditError> {
        self.send(|done| Msg::Seal { checkpoint, done })
            .await
            .map(drop)
    }

    /// The head as of the last commit.
    pub fn head(&self) -> ChainHead {
        *crate::sync::lock(&self.head)
    }

    /// Verifies the chain as it is on disk now (keyed records under `key`)
    /// against `head`. Read the head before calling: the head is saved only
    /// after its records are durable, so a head read first is never ahead of
    /// the file read after it. A record being written concurrently is left
    /// out, not reported. Reads the whole file: call it off the async workers.
    pub fn verify(
        &self,
        key: Option<&ChainKey>,
        head: Option<&ChainHead>,
    ) -> Result<VerifyReport, AuditError> {
        self.verify_visiting(key, head, &mut |_| {})
    }

    /// [`AuditLog::verify`], showing `visit` each record whose tag was
    /// checked (see [`crate::audit::verify_visiting`]).
    pub fn verify_visiting(
        &self,
        key: Option<&ChainKey>,
        head: Option<&ChainHead>,
        visit: &mut dyn FnMut(&Parsed),
    ) -> Result<VerifyReport, AuditError> {
        let bytes = std::fs::read(&self.path).map_err(io("read"))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Ok(verify_visiting(
            bytes.get(..complete).unwrap_or_default(),
            key,
            head,
            visit,
        )?)
    }

    /// The bodies (JSON) of the last `n` complete records, oldest first.
    /// Reads backwards from the end of the file; does not verify the chain
    /// (use [`AuditLog::verify`]).
    pub fn tail(&self, n: usize) -> Result<Vec<String>, AuditError> {
        let mut file = std::fs::File::open(&self.path).map_err(io("open"))?;
        let lines = tail::last_lines(&mut file, n).map_err(io("read"))?;
        Ok(lines
            .iter()
            .map(|line| {
                let body = line.get(65..).unwrap_or_default();
                String::from_utf8_lossy(body).into_owned()
            })
            .collect())
    }
}

impl Drop for AuditLog {
    /// Blocks until queued events are committed and the shutdown checkpoint
    /// is written (at most a few fsyncs).
    fn drop(&mut self) {
        // Closing the channel lets the writer finish queued events and exit;
        // joining it means the file is closed when drop returns.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// Brings the stored head up to the verified end of the log. Records past the
/// stored head come from a crash after fsync but before the head was saved.
fn anchor(
    path: &Path,
    report: &VerifyReport,
    stored: Option<&ChainHead>,
    heads: &dyn HeadStore,
) -> Result<(), AuditError> {
    if stored.copied().unwrap_or(ChainHead::GENESIS) == report.head {
        return Ok(());
    }
    match stored {
        None if report.records > 0 => tracing::debug!(
            path = %path.display(),
            records = report.records,
            "no stored audit chain head yet (sealed); it is checked at unseal"
        ),
        Some(_) if report.unanchored > 0 => tracing::warn!(
            path = %path.display(),
            records = report.unanchored,
            "audit log has records past the stored head (unacknowledged); keeping them"
        ),
        _ => {}
    }
    heads.save_head(&report.head).map_err(AuditError::HeadStore)
}

/// Offline verification for `sigil audit verify`: reads the file and checks
/// it (keyed records under `key`) against `head` if given. A torn final
/// line is reported, not repaired.
pub fn verify_file(
    path: &Path,
    key: Option<&ChainKey>,
    head: Option<&ChainHead>,
) -> Result<VerifyReport, AuditError> {
    let bytes = std::fs::read(path).map_err(io("read"))?;
    Ok(verify(&bytes, key, head)?)
}

#[cfg(test)]
mod tests;
