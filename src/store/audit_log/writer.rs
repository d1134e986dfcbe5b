//! The writer thread: the only code that touches the log file after open.
//! It owns the chain head and, while the store is unsealed, the chain key.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{AuditError, HeadStore, io, log_head};
use crate::audit::{
    CHECKPOINT_ACTION, ChainHead, ChainKey, Event, Mode, allowed_unauthenticated, link,
};
use crate::clock;

/// The most messages committed by one fsync; bounds the latency of a group.
const MAX_GROUP: usize = 4096;

/// The chain head goes to the server log at least this often (in records),
/// so an outside log collector witnesses it.
pub(super) const HEAD_LOG_INTERVAL: u64 = 1000;

pub(super) type Waiter = oneshot::Sender<Result<u64, AuditError>>;

/// What the writer is asked to do, in order.
#[derive(Debug)]
pub(super) enum Msg {
    /// Append one event.
    Append(Event, Waiter),
    /// Take the chain key and write the re-anchor: the first keyed record
    /// after unseal, stating how many records were written while sealed.
    Unseal {
        /// The chain key.
        key: ChainKey,
        /// The re-anchor event; the writer adds the count to its reasons.
        anchor: Event,
        /// Answered with the re-anchor's sequence number.
        done: Waiter,
    },
    /// Write a keyed checkpoint (if the key is held), then drop the key.
    /// Answered with the checkpoint's sequence number, or 0 if none.
    Seal {
        /// The checkpoint event.
        checkpoint: Event,
        /// Answered when written.
        done: Waiter,
    },
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) file: File,
    pub(super) head: ChainHead,
    pub(super) heads: Arc<dyn HeadStore>,
    /// Held while the store is unsealed.
    pub(super) key: Option<ChainKey>,
    /// Records written while sealed since the last keyed record.
    pub(super) sealed_run: u64,
    /// Set after a failed commit: the tail of the file is unknown, so no more
    /// records may be chained onto it.
    pub(super) failed: bool,
    /// The last committed head, for readers outside the thread.
    pub(super) shared: Arc<Mutex<ChainHead>>,
}

/// Lines built for one group, not yet written.
struct Staged {
    head: ChainHead,
    key: Option<ChainKey>,
    sealed_run: u64,
    sealed: bool,
    buf: Vec<u8>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(msg) => group.push(msg),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        self.close();
    }

    /// At shutdown (every `AuditLog` handle dropped): a keyed checkpoint
    /// carrying the store's generation, so that restoring an older store
    /// afterwards is caught at unseal, and the final head to the server log.
    fn close(&mut self) {
        if self.key.is_some() && !self.failed {
            let checkpoint = Event::by_server(
                clock::unix_seconds(clock::now()),
                CHECKPOINT_ACTION,
                vec!["shutdown".to_owned()],
            );
            let (done, _) = oneshot::channel();
            self.commit(vec![Msg::Seal { checkpoint, done }]);
        }
        log_head(&self.head, "shutdown");
    }

    /// Writes, syncs and anchors one group, then answers every waiter in it.
    fn commit(&mut self, group: Vec<Msg>) {
        let before = self.head.seq;
        let mut staged = Staged {
            head: self.head,
            key: self.key.clone(),
            sealed_run: self.sealed_run,
            sealed: false,
            buf: Vec::new(),
        };
        let generation = self.heads.generation();
        let mut answers = Vec::with_capacity(group.len());
        for msg in group {
            let (answer, waiter) = if self.failed {
                (Err(AuditError::Failed), waiter_of(msg))
            } else {
                stage(&mut staged, msg, generation)
            };
            answers.push((answer, waiter));
        }
        if !self.failed
            && !staged.buf.is_empty()
            && let Err(e) = self.write(&staged)
        {
            tracing::error!(error = %e, "audit commit failed; refusing further appends");
            self.failed = true;
            // Nothing more is written, so the key has no use left.
            self.key = None;
            for (answer, _) in &mut answers {
                if answer.is_ok() {
                    *answer = Err(e.clone());
                }
            }
        }
        if !self.failed {
            self.head = staged.head;
            self.key = staged.key;
            self.sealed_run = staged.sealed_run;
            *crate::sync::lock(&self.shared) = self.head;
            if staged.sealed {
                log_head(&self.head, "seal");
            } else if self.head.seq / HEAD_LOG_INTERVAL > before / HEAD_LOG_INTERVAL {
                log_head(&self.head, "interval");
            }
        }
        for (answer, waiter) in answers {
            // A waiter that gave up (its request was cancelled) is not an error.
            let _ = waiter.send(answer);
        }
    }

    fn write(&mut self, staged: &Staged) -> Result<(), AuditError> {
        self.file.write_all(&staged.buf).map_err(io("write"))?;
        self.file.sync_data().map_err(io("fdatasync"))?;
        self.heads
            .save_head(&staged.head)
            .map_err(AuditError::HeadStore)
    }
}

fn waiter_of(msg: Msg) -> Waiter {
    match msg {
        Msg::Append(_, done) | Msg::Unseal { done, .. } | Msg::Seal { done, .. } => done,
    }
}

/// Turns one message into its line (if any) in `staged`; returns the answer
/// its waiter gets if the group commits.
fn stage(staged: &mut Staged, msg: Msg, generation: u64) -> (Result<u64, AuditError>, Waiter) {
    match msg {
        Msg::Append(event, done) => {
            let key = staged.key.clone();
            let mode = match &key {
                Some(key) => Mode::Keyed {
                    key,
                    sealed_records: None,
                },
                // Verification rejects an unauthenticated "allow" of what a
                // sealed server refuses; a request that raced a seal to here
                // must fail rather than write one.
                None if !allowed_unauthenticated(&event) => {
                    return (Err(AuditError::SealedAllow), done);
                }
                None => Mode::Unauthenticated,
            };
            let answer = push(staged, &event, generation, mode);
            if answer.is_ok() && staged.key.is_none() {
                staged.sealed_run = staged.sealed_run.saturating_add(1);
            }
            (answer, done)
        }
        Msg::Unseal {
            key,
            mut anchor,
            done,
        } => {
            let run = staged.sealed_run;
            anchor.reasons.push(format!(
                "{run} records written while sealed precede this one (unauthenticated)"
            ));
            let mode = Mode::Keyed {
                key: &key,
                sealed_records: Some(run),
            };
            let answer = push(staged, &anchor, generation, mode);
            if answer.is_ok() {
                staged.sealed_run = 0;
                staged.key = Some(key);
            }
            (answer, done)
        }
        Msg::Seal { checkpoint, done } => {
            let answer = match staged.key.take() {
                Some(key) => {
                    let mode = Mode::Keyed {
                        key: &key,
                        sealed_records: None,
                    };
                    push(staged, &checkpoint, generation, mode)
                }
                None => Ok(0),
            };
            staged.sealed = true;
            (answer, done)
        }
    }
}

fn push(
    staged: &mut Staged,
    event: &Event,
    generation: u64,
    mode: Mode<'_>,
) -> Result<u64, AuditError> {
    let (line, next) = link(&staged.head, event, generation, mode)?;
    staged.buf.extend_from_slice(&line);
    staged.head = next;
    Ok(next.seq)
}
