//! The writer thread: the only code that touches the log file after open.
//! It owns the chain head and, while the store is unsealed, the chain key.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{AuditError, HeadStore, io, log_head};
use crate::audit::{CHECKPOINT_ACTION, ChainHead, ChainKey, EncodedEvent, Event, Mode, link};
use crate::clock;

/// The most messages committed by one fsync; bounds the latency of a group.
pub(super) const MAX_GROUP: usize = 4096;

/// Written groups that may wait for the syncer before the writer waits too.
/// The syncer takes them all at once, so a few are enough: the writer waits
/// here when the disk falls behind or while the syncer gathers ([`GATHER`]).
/// It waits having let go of the chain, so reads' records are still written
/// meanwhile.
pub(super) const SYNC_BACKLOG: usize = 4;

/// The longest a written read record waits for its fsync to start once the
/// syncer is free (see [`Handoff::take`]).
const READS_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// While the process keeps the CPUs busy (see [`Load`]), a sync starts no
/// sooner than this after the one before, so that it covers more records.
/// Each sync (an fdatasync, then the head saved to the sealed store, itself
/// a synced write) costs CPU in the kernel and in the store whatever it
/// covers; on a saturated machine that CPU is taken from the requests, and
/// a mint's or a write's durable record waits a little longer instead. When
/// the CPUs have room, syncs run back to back: a wait would only add
/// latency.
///
/// The wait runs from one sync's start to the next's. A sync on the
/// virtual disks measured takes about 2.4 ms (two device flushes), so a
/// shorter wait never applies there. At 3 ms, 512 token mints in flight
/// reached 0.514 of the raw signing rate against 0.502 at 2 ms (twelve
/// paired runs: a gain of about one standard error, small but not a loss).
/// At 4 ms so many mints waited on the disk at once that the cores began
/// to idle, and at 5 ms the rate fell. On a faster disk, a durable record
/// on a saturated server waits up to this long for its sync to start.
pub(super) const GATHER: std::time::Duration = std::time::Duration::from_millis(3);

/// The share of all CPUs (in percent) the process must use for [`GATHER`]
/// to apply.
const BUSY_PERCENT: u128 = 85;

/// Once gathering, the share below which it stops. Gathering itself frees
/// CPU (that is its point), so a single threshold would switch it off again
/// on the next measure and on the one after that back on.
const STILL_BUSY_PERCENT: u128 = 70;

/// How long the process's CPU use is measured over before the syncer
/// decides again whether the machine is busy.
const LOAD_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// The chain head goes to the server log at least this often (in records),
/// so an outside log collector witnesses it.
pub(super) const HEAD_LOG_INTERVAL: u64 = 1000;

pub(super) type Waiter = oneshot::Sender<Result<u64, AuditError>>;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// Once the record is written to the file (in the kernel's cache: it
    /// survives the process, not a power loss) and chained; durable at the
    /// next sync, which starts at most `READS_SYNC_DELAY` after the record
    /// was written, or after the sync running then ends. For reads only.
    Written,
    /// Once the record is on disk and the head is saved.
    Durable,
}

/// What the writer is asked to do, in order.
#[derive(Debug)]
pub(super) enum Msg {
    /// Append one event, encoded by the appender.
    Append(EncodedEvent, Ack, Waiter),
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
    /// The last durable head, for readers outside the thread.
    pub(super) shared: Arc<Mutex<ChainHead>>,
}

/// Records written, waiting for the fsync that makes them durable.
struct Job {
    head: ChainHead,
    waiters: Vec<(Result<u64, AuditError>, Waiter)>,
}

/// The thread that makes written records durable: it syncs the file and
/// saves the head while the writer goes on writing the next group, so a
/// read's record waits for its write, not for the disk. It answers the
/// durable waiters, and publishes the head only once it is durable (a head
/// read from [`super::AuditLog::head`] is never ahead of the disk).
struct Syncer {
    handoff: Arc<Handoff>,
    handle: std::thread::JoinHandle<()>,
    /// Set when a sync or head save failed: the writer refuses further appends.
    failed: Arc<std::sync::atomic::AtomicBool>,
}

/// What the writer has written and the syncer has not taken yet.
#[derive(Default)]
struct Pending {
    /// Groups someone waits on, oldest first.
    jobs: Vec<Job>,
    /// The head after the newest group of reads only (nobody waits on it).
    reads: Option<ChainHead>,
    /// When the oldest of those reads' groups was written.
    reads_since: Option<std::time::Instant>,
    /// The writer has closed: sync what is here, then end.
    closed: bool,
    /// The syncer has ended: nothing queued from now on is synced.
    gone: bool,
}

/// The writer hands written groups to the syncer here. The syncer takes
/// everything at once when it starts a sync: one fsync covers every record
/// written before it, so a record waits for at most the sync running when it
/// was written and the next one, however many groups were written meanwhile.
#[derive(Default)]
struct Handoff {
    pending: Mutex<Pending>,
    /// Signalled when there is something to sync, or the writer closed.
    work: Condvar,
    /// Signalled when the syncer took the pending groups.
    room: Condvar,
}

impl Handoff {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        crate::sync::lock(&self.pending)
    }

    /// Queues a group someone waits on. Waits while [`SYNC_BACKLOG`] groups
    /// are queued already: when the disk stalls, the writer stops here and
    /// the bounded queue in front of it fills, so appenders wait instead of
    /// memory growing. Hands the job back if the syncer has ended.
    #[allow(
        clippy::result_large_err,
        reason = "the Err is the caller's own job handed back, so its waiters can be failed"
    )]
    fn push(&self, job: Job) -> Result<(), Job> {
        let mut pending = self.pending();
        while pending.jobs.len() >= SYNC_BACKLOG && !pending.gone {
            pending = self
                .room
                .wait(pending)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if pending.gone {
            return Err(job);
        }
        pending.jobs.push(job);
        self.work.notify_one();
        Ok(())
    }

    /// Notes the head after a group of reads only. Never waits, so an
    /// appender on an async worker never blocks here; wakes the syncer only
    /// when nothing was pending, so a steady stream of reads wakes it once
    /// per sync, not once per group.
    fn push_reads(&self, head: ChainHead) {
        let mut pending = self.pending();
        let idle = pending.jobs.is_empty() && pending.reads.is_none();
        if pending.reads.replace(head).is_none() {
            pending.reads_since = Some(clock::monotonic());
        }
        if idle {
            self.work.notify_one();
        }
    }

    /// Ends the syncer once it has synced what is pending.
    fn close(&self) {
        self.pending().closed = true;
        self.work.notify_one();
    }

    /// Everything pending, once there is something; `None` once the writer
    /// closed and everything was taken. Reads only are taken at most
    /// [`READS_SYNC_DELAY`] after the first of them was written (or at once,
    /// if a sync ran longer than that), with whatever came meanwhile: under
    /// a steady read load an fsync and a head save per group cost more than
    /// the reads. A group someone waits on ends the wait at once.
    fn take(&self) -> Option<(Vec<Job>, Option<ChainHead>)> {
        let mut pending = self.pending();
        while pending.jobs.is_empty() && pending.reads.is_none() {
            if pending.closed {
                return None;
            }
            pending = self
                .work
                .wait(pending)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let deadline = pending.reads_since.unwrap_or_else(clock::monotonic) + READS_SYNC_DELAY;
        while pending.jobs.is_empty() && !pending.closed {
            let left = deadline.saturating_duration_since(clock::monotonic());
            if left.is_zero() {
                break;
            }
            pending = self
                .work
                .wait_timeout(pending, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let jobs = std::mem::take(&mut pending.jobs);
        let reads = pending.reads.take();
        pending.reads_since = None;
        self.room.notify_all();
        Some((jobs, reads))
    }
}

/// Ends the hand-off with the syncer, however the syncer ends (a panic
/// included, which the lints rule out): a writer waiting for room, or
/// queueing later, is told instead of waiting forever, and the waiters of
/// what was queued are failed.
struct Gone<'a> {
    handoff: &'a Handoff,
    failed: &'a std::sync::atomic::AtomicBool,
}

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        self.failed
            .store(true, std::sync::atomic::Ordering::Release);
        let jobs = {
            let mut pending = self.handoff.pending();
            pending.gone = true;
            std::mem::take(&mut pending.jobs)
        };
        self.handoff.room.notify_all();
        for job in jobs {
            for (_, waiter) in job.waiters {
                let _ = waiter.send(Err(AuditError::Failed));
            }
        }
    }
}

/// Whether the process has lately kept the CPUs busy: its CPU time over the
/// last [`LOAD_WINDOW`] against the wall time on every core.
struct Load {
    cores: u128,
    since: std::time::Instant,
    cpu: Option<std::time::Duration>,
    busy: bool,
}

impl Load {
    fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            cores: u128::try_from(cores).unwrap_or(1),
            since: clock::monotonic(),
            cpu: clock::process_cpu_time(),
            busy: false,
        }
    }

    /// Whether the process keeps the CPUs it may use busy, measured anew
    /// once a window has passed (so after an idle spell, over that spell).
    fn busy(&mut self) -> bool {
        let at = clock::monotonic();
        let wall = at.saturating_duration_since(self.since);
        if wall >= LOAD_WINDOW {
            let cpu = clock::process_cpu_time();
            self.busy = match (self.cpu, cpu) {
                (Some(before), Some(now)) => {
                    busy(now.saturating_sub(before), wall, self.cores, self.busy)
                }
                _ => false,
            };
            self.since = at;
            self.cpu = cpu;
        }
        self.busy
    }
}

/// Whether `cpu` spent over `wall` on `cores` CPUs is at least
/// [`BUSY_PERCENT`] of all of them ([`STILL_BUSY_PERCENT`] if the machine
/// `was` busy).
pub(super) fn busy(
    cpu: std::time::Duration,
    wall: std::time::Duration,
    cores: u128,
    was: bool,
) -> bool {
    let percent = if was {
        STILL_BUSY_PERCENT
    } else {
        BUSY_PERCENT
    };
    !wall.is_zero() && cpu.as_nanos() * 100 >= wall.as_nanos() * cores * percent
}

fn sync_loop(
    handoff: &Handoff,
    file: File,
    heads: Arc<dyn HeadStore>,
    shared: Arc<Mutex<ChainHead>>,
    failed: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let _gone = Gone {
        handoff,
        failed: &failed,
    };
    let mut synced = crate::sync::lock(&shared).seq;
    let mut load = Load::new();
    let mut last = clock::monotonic();
    loop {
        if load.busy() {
            let left = (last + GATHER).saturating_duration_since(clock::monotonic());
            if !left.is_zero() {
                clock::pause_thread(left);
            }
        }
        let Some((jobs, reads)) = handoff.take() else {
            break;
        };
        last = clock::monotonic();
        // Taken together under the hand-off's lock: every record the writer
        // wrote before it queued these heads is in the file, so the fsync
        // below covers it.
        let Some(head) = jobs
            .iter()
            .map(|j| j.head)
            .chain(reads)
            .max_by_key(|h| h.seq)
        else {
            continue;
        };
        // One fsync covers every write made before it, so the newest head
        // stands for the whole batch.
        let result = if failed.load(Ordering::Acquire) {
            Err(AuditError::Failed)
        } else if head.seq <= synced {
            // A job whose records an earlier sync already covered: the head
            // store never goes back.
            Ok(())
        } else {
            file.sync_data()
                .map_err(io("fdatasync"))
                .and_then(|()| heads.save_head(&head).map_err(AuditError::HeadStore))
        };
        match &result {
            Ok(()) if head.seq > synced => {
                synced = head.seq;
                *crate::sync::lock(&shared) = head;
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "audit sync failed; refusing further appends");
                failed.store(true, Ordering::Release);
            }
        }
        for job in jobs {
            for (answer, waiter) in job.waiters {
                let answer = match (&result, answer) {
                    (Ok(()), a) => a,
                    (Err(e), _) => Err(e.clone()),
                };
                // A waiter that gave up (its request was cancelled) is not an error.
                let _ = waiter.send(answer);
            }
        }
    }
}

/// Lines built for one group, not yet written.
struct Staged {
    head: ChainHead,
    key: Option<ChainKey>,
    sealed_run: u64,
    sealed: bool,
    buf: Vec<u8>,
}

/// The writer's state and its syncer, behind one lock: the writer thread
/// takes it for each group from the queue, and an appender of a read's
/// record takes it directly ([`Chain::append_written`]).
pub(super) struct Chain {
    state: Mutex<Locked>,
    /// Reads' records whose appenders found the chain busy. Whoever holds
    /// the chain commits them before letting it go (see [`Chain::release`]),
    /// so a busy chain never costs a read a wake-up of the writer thread.
    /// Each waiting request holds one record here, so its length is bounded
    /// by the requests in flight.
    pub(super) waiting: Mutex<Vec<Msg>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").finish_non_exhaustive()
    }
}

pub(super) struct Locked {
    writer: Writer,
    /// `None` once the writer thread has closed the log.
    syncer: Option<Syncer>,
}

impl Locked {
    /// Commits `group` and queues what must be synced, waiting for room in
    /// the hand-off while holding the chain: for reads' records, which never
    /// need the syncer's answer and so never wait there.
    fn commit(&mut self, group: Vec<Msg>) {
        if let Some((job, handoff)) = self.commit_unqueued(group) {
            self.writer.queue(job, &handoff);
        }
    }

    /// Commits `group` and returns what must be synced, for the caller to
    /// queue ([`Chain::queue`]) once it has let go of the chain.
    fn commit_unqueued(&mut self, group: Vec<Msg>) -> Option<(Job, Arc<Handoff>)> {
        match &self.syncer {
            Some(syncer) => self
                .writer
                .commit(group, syncer)
                .map(|job| (job, Arc::clone(&syncer.handoff))),
            None => {
                for msg in group {
                    let _ = waiter_of(msg).1.1.send(Err(AuditError::Closed));
                }
                None
            }
        }
    }
}

/// How a read's record was appended by [`Chain::append_written`].
pub(super) enum Written {
    /// On the calling thread: the answer.
    Done(Result<u64, AuditError>),
    /// By whoever held the chain: the answer comes here once it is written.
    Waiting(oneshot::Receiver<Result<u64, AuditError>>),
}

impl Chain {
    /// Starts the syncer and the writer thread, which commits what arrives
    /// on `rx` until every sender is gone, then closes the log.
    pub(super) fn start(
        writer: Writer,
        rx: mpsc::Receiver<Msg>,
    ) -> Result<(Arc<Chain>, std::thread::JoinHandle<()>), AuditError> {
        let syncer = writer.start_syncer()?;
        let chain = Arc::new(Chain {
            state: Mutex::new(Locked {
                writer,
                syncer: Some(syncer),
            }),
            waiting: Mutex::new(Vec::new()),
        });
        let thread_chain = Arc::clone(&chain);
        // The writer logs to whatever subscriber the opener uses.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let handle = std::thread::Builder::new()
            .name("audit-log".to_string())
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || thread_chain.run(rx)))
            .map_err(io("spawn writer"))?;
        Ok((chain, handle))
    }

    /// The state, waiting for it; a poisoned one refuses appends
    /// ([`poisoned`]). Let it go with [`Chain::release`].
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Locked> {
        self.state.lock().unwrap_or_else(poisoned)
    }

    /// The state if nobody holds it; `None` if someone does.
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Locked>> {
        match self.state.try_lock() {
            Ok(locked) => Some(locked),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(poisoned(p)),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Lets the chain go, then commits the reads that waited for it
    /// meanwhile, for as long as there are any and the chain is free. A
    /// record queued while someone held the chain is committed by that
    /// holder: it checks `waiting` after letting go, and the appender that
    /// queued it tried the lock after queueing (see [`Chain::append_written`]),
    /// so either of them finds it. The loop goes on only while others keep
    /// queueing; each round commits records that belong to requests in
    /// flight, work that someone must do before those requests answer.
    pub(super) fn release(&self, locked: std::sync::MutexGuard<'_, Locked>) {
        drop(locked);
        loop {
            if crate::sync::lock(&self.waiting).is_empty() {
                return;
            }
            let Some(mut locked) = self.try_lock() else {
                // The holder checks `waiting` after letting go.
                return;
            };
            let group = std::mem::take(&mut *crate::sync::lock(&self.waiting));
            locked.commit(group);
            drop(locked);
        }
    }

    /// Appends a read's record ([`Ack::Written`]) on the calling thread if
    /// the chain is free or becomes free within a few microseconds; otherwise
    /// queues it for whoever holds the chain, who commits it before letting
    /// go. Either way there is no hand-over to the writer thread and back,
    /// which costs a read more than the write itself. Never sleeps on the
    /// lock, so an async worker never blocks behind a group the writer
    /// thread commits.
    pub(super) fn append_written(&self, event: EncodedEvent) -> Written {
        // Most often the chain is held by another worker appending its own
        // read, which takes a few microseconds: a short spin is cheaper than
        // the queued path's wake-up. It is bounded (about fifty pause
        // instructions in all), so a holder that was descheduled costs the
        // appender no more than that.
        const SPIN_ROUNDS: u32 = 3;
        for round in 0..=SPIN_ROUNDS {
            if let Some(mut locked) = self.try_lock() {
                let (done, mut answer) = oneshot::channel();
                locked.commit(vec![Msg::Append(event, Ack::Written, done)]);
                self.release(locked);
                // A written-only append is answered inside `commit`.
                return Written::Done(answer.try_recv().unwrap_or(Err(AuditError::Failed)));
            }
            if round < SPIN_ROUNDS {
                for _ in 0..(8u32 << round) {
                    std::hint::spin_loop();
                }
            }
        }
        let (done, answer) = oneshot::channel();
        crate::sync::lock(&self.waiting).push(Msg::Append(event, Ack::Written, done));
        // The holder may have checked `waiting` before the push: whoever
        // takes the chain now commits it.
        if let Some(locked) = self.try_lock() {
            self.release(locked);
        }
        Written::Waiting(answer)
    }

    /// Hands a committed group to the syncer, waiting while the hand-off is
    /// full, without holding the chain: reads' records are written meanwhile.
    /// Only the writer thread queues groups, so they reach the syncer in the
    /// order they were chained. A record chained after this group and synced
    /// before it is queued (a read's) was written after it, so that sync
    /// covers this group too, and the syncer answers it without another.
    fn queue(&self, job: Job, handoff: &Handoff) {
        if let Err(job) = handoff.push(job) {
            self.lock().writer.refuse(job);
        }
    }

    fn run(&self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(msg) => group.push(msg),
                    Err(_) => break,
                }
            }
            let mut locked = self.lock();
            let job = locked.commit_unqueued(group);
            self.release(locked);
            if let Some((job, handoff)) = job {
                self.queue(job, &handoff);
            }
        }
        let syncer = {
            let mut locked = self.lock();
            let Locked { writer, syncer } = &mut *locked;
            if let Some(syncer) = syncer {
                writer.close(syncer);
            }
            syncer.take()
        };
        // Every job queued is synced and answered before the thread ends.
        if let Some(Syncer {
            handoff, handle, ..
        }) = syncer
        {
            handoff.close();
            let _ = handle.join();
        }
    }
}

/// The state of a chain whose holder panicked (which the lints rule out):
/// the file's tail is unknown, so it refuses further appends, as after a
/// failed write, instead of chaining onto it.
fn poisoned(
    p: std::sync::PoisonError<std::sync::MutexGuard<'_, Locked>>,
) -> std::sync::MutexGuard<'_, Locked> {
    let mut locked = p.into_inner();
    locked.writer.failed = true;
    locked.writer.key = None;
    locked
}

impl Writer {
    fn start_syncer(&self) -> Result<Syncer, AuditError> {
        let file = self.file.try_clone().map_err(io("clone"))?;
        let handoff = Arc::new(Handoff::default());
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (heads, shared, flag) = (self.heads.clone(), self.shared.clone(), failed.clone());
        let theirs = Arc::clone(&handoff);
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let handle = std::thread::Builder::new()
            .name("audit-sync".to_string())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    sync_loop(&theirs, file, heads, shared, flag);
                });
            })
            .map_err(io("spawn syncer"))?;
        Ok(Syncer {
            handoff,
            handle,
            failed,
        })
    }

    /// At shutdown (every `AuditLog` handle dropped): a keyed checkpoint
    /// carrying the store's generation, so that restoring an older store
    /// afterwards is caught at unseal, and the final head to the server log.
    fn close(&mut self, syncer: &Syncer) {
        if self.key.is_some() && !self.failed {
            let checkpoint = Event::by_server(
                clock::unix_seconds(clock::now()),
                CHECKPOINT_ACTION,
                vec!["shutdown".to_owned()],
            );
            let (done, _) = oneshot::channel();
            if let Some(job) = self.commit(vec![Msg::Seal { checkpoint, done }], syncer) {
                self.queue(job, &syncer.handoff);
            }
        }
        log_head(&self.head, "shutdown");
    }

    /// Writes and chains one group and answers the waiters that asked only
    /// for the write. Returns the rest, for the syncer, which answers them
    /// once the group is durable and its head saved.
    fn commit(&mut self, group: Vec<Msg>, syncer: &Syncer) -> Option<Job> {
        if syncer.failed.load(std::sync::atomic::Ordering::Acquire) && !self.failed {
            self.failed = true;
            self.key = None;
        }
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
            let (ack, waiter_msg) = waiter_of(msg);
            let (answer, waiter) = if self.failed {
                (Err(AuditError::Failed), waiter_msg.1)
            } else {
                stage(&mut staged, waiter_msg.0, waiter_msg.1, generation)
            };
            answers.push((answer, waiter, ack));
        }
        if !self.failed
            && !staged.buf.is_empty()
            && let Err(e) = self.file.write_all(&staged.buf).map_err(io("write"))
        {
            tracing::error!(error = %e, "audit write failed; refusing further appends");
            self.failed = true;
            // Nothing more is written, so the key has no use left.
            self.key = None;
            for (answer, _, _) in &mut answers {
                if answer.is_ok() {
                    *answer = Err(e.clone());
                }
            }
        }
        if !self.failed {
            self.head = staged.head;
            self.key = staged.key;
            self.sealed_run = staged.sealed_run;
            if staged.sealed {
                log_head(&self.head, "seal");
            } else if self.head.seq / HEAD_LOG_INTERVAL > before / HEAD_LOG_INTERVAL {
                log_head(&self.head, "interval");
            }
        }
        let mut durable = Vec::new();
        for (answer, waiter, ack) in answers {
            if ack == Ack::Written || answer.is_err() || self.failed {
                let _ = waiter.send(answer);
            } else {
                durable.push((answer, waiter));
            }
        }
        if self.failed || staged.buf.is_empty() && durable.is_empty() {
            return None;
        }
        if durable.is_empty() {
            syncer.handoff.push_reads(self.head);
            return None;
        }
        Some(Job {
            head: self.head,
            waiters: durable,
        })
    }

    /// Hands `job` to the syncer while holding the chain (see
    /// [`Locked::commit`]); fails its waiters, and everything after it, if
    /// the syncer has ended.
    fn queue(&mut self, job: Job, handoff: &Handoff) {
        if let Err(job) = handoff.push(job) {
            self.refuse(job);
        }
    }

    /// The syncer has ended: fails `job`'s waiters, and refuses every
    /// append from now on.
    fn refuse(&mut self, job: Job) {
        self.failed = true;
        self.key = None;
        for (_, waiter) in job.waiters {
            let _ = waiter.send(Err(AuditError::Failed));
        }
    }
}

/// A message's acknowledgement mode, and the message (split so the waiter
/// can be answered without staging it).
fn waiter_of(msg: Msg) -> (Ack, (StageMsg, Waiter)) {
    match msg {
        Msg::Append(event, ack, done) => (ack, (StageMsg::Append(event), done)),
        Msg::Unseal { key, anchor, done } => {
            (Ack::Durable, (StageMsg::Unseal { key, anchor }, done))
        }
        Msg::Seal { checkpoint, done } => (Ack::Durable, (StageMsg::Seal { checkpoint }, done)),
    }
}

/// A message without its waiter.
enum StageMsg {
    Append(EncodedEvent),
    Unseal { key: ChainKey, anchor: Event },
    Seal { checkpoint: Event },
}

/// Turns one message into its line (if any) in `staged`; returns the answer
/// its waiter gets if the group commits.
fn stage(
    staged: &mut Staged,
    msg: StageMsg,
    done: Waiter,
    generation: u64,
) -> (Result<u64, AuditError>, Waiter) {
    match msg {
        StageMsg::Append(event) => {
            let key = staged.key.clone();
            let mode = match &key {
                Some(key) => Mode::Keyed {
                    key,
                    sealed_records: None,
                },
                // Verification rejects an unauthenticated "allow" of what a
                // sealed server refuses; a request that raced a seal to here
                // must fail rather than write one.
                None if !event.allowed_unauthenticated() => {
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
        StageMsg::Unseal { key, mut anchor } => {
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
        StageMsg::Seal { checkpoint } => {
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
    event: &impl crate::audit::Linkable,
    generation: u64,
    mode: Mode<'_>,
) -> Result<u64, AuditError> {
    let (line, next) = link(&staged.head, event, generation, mode)?;
    // A group's first line becomes its buffer instead of being copied there.
    if staged.buf.is_empty() {
        staged.buf = line;
    } else {
        staged.buf.extend_from_slice(&line);
    }
    staged.head = next;
    Ok(next.seq)
}
