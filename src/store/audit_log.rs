//! The audit log file: one writer thread owns the hash chain and commits
//! records in groups (SPEC §4 "continuous monitoring", §6 audit appends vs
//! fdatasync; STYLE §10).
//!
//! Every [`AuditLog::append`] waits until its record is written, the file is
//! `fdatasync`ed and the new chain head is saved in the [`HeadStore`]. Events
//! that arrive while a commit is in progress are committed together by the
//! next one, so one fsync serves many callers. If any step fails, every
//! caller in that group gets the error — the privileged operation must then
//! fail — and the log refuses further appends until it is reopened, because
//! the file's tail is no longer known to be good.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::audit::{
    ChainHead, Event, LinkError, VerifyError, VerifyReport, link, parse_line, verify,
};

/// The most events committed by one fsync; bounds the latency of a group.
const MAX_GROUP: usize = 4096;

/// Where the server keeps the chain head, out of reach of whoever can edit
/// the log file (the server uses its encrypted store), so that removing
/// records from the end of the log is detected.
pub trait HeadStore: Send + Sync + 'static {
    /// The saved head, or `None` if none was ever saved.
    fn load_head(&self) -> Result<Option<ChainHead>, String>;
    /// Durably saves `head`; the log acknowledges appends only after this returns.
    fn save_head(&self, head: &ChainHead) -> Result<(), String>;
}

/// A [`HeadStore`] in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryHeadStore(Mutex<Option<ChainHead>>);

impl MemoryHeadStore {
    /// A store holding `head`.
    pub fn new(head: Option<ChainHead>) -> Self {
        Self(Mutex::new(head))
    }
}

impl HeadStore for MemoryHeadStore {
    fn load_head(&self) -> Result<Option<ChainHead>, String> {
        Ok(*crate::sync::lock(&self.0))
    }

    fn save_head(&self, head: &ChainHead) -> Result<(), String> {
        *crate::sync::lock(&self.0) = Some(*head);
        Ok(())
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

fn io(op: &'static str) -> impl Fn(std::io::Error) -> AuditError {
    move |e| AuditError::Io {
        op,
        message: e.to_string(),
    }
}

type Waiter = oneshot::Sender<Result<u64, AuditError>>;

/// The open, verified audit log. Cheap to share behind an `Arc`; appends from
/// any number of tasks are serialized by one writer thread.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    tx: Option<mpsc::Sender<(Event, Waiter)>>,
    writer: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, verifies the whole
    /// chain against the stored head, and starts the writer. Refuses a log
    /// that fails verification: the server must not start on it.
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
        let report = verify(bytes.get(..complete).unwrap_or_default(), stored.as_ref())?;
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
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            file,
            head: report.head,
            heads,
            failed: false,
        };
        let handle = std::thread::Builder::new()
            .name("audit-log".to_string())
            .spawn(move || writer.run(rx))
            .map_err(io("spawn writer"))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            tx: Some(tx),
            writer: Some(handle),
        })
    }

    /// Appends `event` and waits until it is durable and the head is saved.
    /// Returns the record's sequence number. On error the caller must treat
    /// the audited operation as failed.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(AuditError::Closed)?;
        tx.send((event, done)).map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// Verifies the chain as it is on disk now against `head`. Read the head
    /// before calling: the head is saved only after its records are durable,
    /// so a head read first is never ahead of the file read after it. A
    /// record being written concurrently is left out, not reported.
    pub fn verify(&self, head: Option<&ChainHead>) -> Result<VerifyReport, VerifyError> {
        let bytes = std::fs::read(&self.path).map_err(|_| VerifyError::Malformed { record: 1 })?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        verify(bytes.get(..complete).unwrap_or_default(), head)
    }

    /// The bodies (JSON) of the last `n` complete records, oldest first.
    /// Reads the file; does not verify the chain (use [`verify_file`]).
    pub fn tail(&self, n: usize) -> Result<Vec<String>, AuditError> {
        let bytes = std::fs::read(&self.path).map_err(io("read"))?;
        let complete = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&[][..], |i| bytes.get(..i).unwrap_or_default());
        if complete.is_empty() {
            return Ok(Vec::new());
        }
        let lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .zip((skip as u64).saturating_add(1)..)
            .map(|(line, record)| {
                let (_, body, _) = parse_line(line, record)?;
                Ok(String::from_utf8_lossy(body).into_owned())
            })
            .collect()
    }
}

impl Drop for AuditLog {
    /// Blocks until queued events are committed (at most one group's fsync).
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
        None if report.records > 0 => tracing::warn!(
            path = %path.display(),
            records = report.records,
            "no stored audit chain head; trusting the log as found"
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
/// it against `head` if given. A torn final line is reported, not repaired.
pub fn verify_file(path: &Path, head: Option<&ChainHead>) -> Result<VerifyReport, AuditError> {
    let bytes = std::fs::read(path).map_err(io("read"))?;
    Ok(verify(&bytes, head)?)
}

/// The writer thread's state: the only code that touches the file after open.
struct Writer {
    file: File,
    head: ChainHead,
    heads: Arc<dyn HeadStore>,
    /// Set after a failed commit: the tail of the file is unknown, so no more
    /// records may be chained onto it.
    failed: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<(Event, Waiter)>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(item) => group.push(item),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    /// Writes, syncs and anchors one group, then answers every waiter in it.
    fn commit(&mut self, group: Vec<(Event, Waiter)>) {
        let outcome = if self.failed {
            Err(AuditError::Failed)
        } else {
            self.write_group(&group)
        };
        if let Err(e) = &outcome {
            if !self.failed {
                tracing::error!(error = %e, "audit commit failed; refusing further appends");
            }
            self.failed = true;
        }
        for (i, (_, waiter)) in group.into_iter().enumerate() {
            let answer = match &outcome {
                Ok(first_seq) => Ok(first_seq.saturating_add(i as u64)),
                Err(e) => Err(e.clone()),
            };
            // A waiter that gave up (its request was cancelled) is not an error.
            let _ = waiter.send(answer);
        }
    }

    /// Returns the first record's sequence number.
    fn write_group(&mut self, group: &[(Event, Waiter)]) -> Result<u64, AuditError> {
        let mut head = self.head;
        let mut buf = Vec::new();
        for (event, _) in group {
            let (line, next) = link(&head, event)?;
            buf.extend_from_slice(&line);
            head = next;
        }
        let first = self.head.seq.saturating_add(1);
        self.file.write_all(&buf).map_err(io("write"))?;
        self.file.sync_data().map_err(io("fdatasync"))?;
        self.heads.save_head(&head).map_err(AuditError::HeadStore)?;
        self.head = head;
        Ok(first)
    }
}

#[cfg(test)]
mod tests;
