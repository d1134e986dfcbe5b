//! Tests for the audit log writer: group commit, reopen, tamper and
//! truncation detection, fail-closed appends, the chain key's hand-over,
//! back-pressure, head emission, and append throughput.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock;

use super::*;
use crate::audit::{ANCHOR_ACTION, CHECKPOINT_ACTION, SealedRun, Verdict};
use crate::secret::Secret;

fn key() -> ChainKey {
    ChainKey::new(Secret::from_slice(&[3u8; 32]))
}

/// What only an unsealed server may record: an allowed entry create.
fn privileged(i: u64) -> Event {
    Event {
        action: "entry.create".to_string(),
        ..event(i)
    }
}

fn anchor() -> Event {
    Event::by_server(1, ANCHOR_ACTION, vec!["unsealed".into()])
}

/// An event a sealed server may record without the key (most tests here
/// are about the file, not the key).
fn event(i: u64) -> Event {
    Event {
        time: 1_700_000_000 + i,
        subject: "uid:0".to_string(),
        authn: "admin_socket".to_string(),
        action: "operator.status".to_string(),
        resource: format!("entry:{i}"),
        decision: Verdict::Allow,
        reasons: vec![],
        source: "unix:uid=0".to_string(),
        token: None,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    heads: Arc<MemoryHeadStore>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    Fixture {
        _dir: dir,
        path,
        heads: Arc::new(MemoryHeadStore::default()),
    }
}

impl Fixture {
    fn open(&self) -> Result<AuditLog, AuditError> {
        AuditLog::open(&self.path, self.heads.clone())
    }
    fn head(&self) -> ChainHead {
        self.heads.load_head().unwrap().unwrap()
    }
    async fn write(&self, n: u64) {
        let log = self.open().unwrap();
        for i in 0..n {
            log.append(event(i)).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_distinct_seqs() {
    let f = fixture();
    let log = Arc::new(f.open().unwrap());
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(event(i)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=32).collect::<Vec<u64>>());
    let report = verify_file(&f.path, None, Some(&f.head())).unwrap();
    assert_eq!((report.records, report.unanchored), (32, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_chained_in_place_and_writes_through_the_thread_form_one_chain() {
    let f = fixture();
    let log = Arc::new(f.open().unwrap());
    log.unsealed(key(), anchor()).await.unwrap();
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                if i % 4 == 0 {
                    log.append(privileged(i)).await
                } else {
                    log.append_written(privileged(i)).await
                }
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    // Sequence 1 is the re-anchor.
    assert_eq!(seqs, (2..=65).collect::<Vec<u64>>());
    // Nothing else is appended: the reads' records become durable, and the
    // head saved, on their own, within the read sync delay.
    let deadline = clock::monotonic() + Duration::from_secs(5);
    while f.head().seq < 65 && clock::monotonic() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.head().seq, 65);
    assert_eq!(log.head(), f.head(), "the head is published once durable");
    let report = verify_file(&f.path, Some(&key()), Some(&f.head())).unwrap();
    assert_eq!(report.records, 65);
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let f = fixture();
    let log = f.open().unwrap();
    assert_eq!(f.open().unwrap_err(), AuditError::InUse);
    drop(log);
    drop(f.open().unwrap());
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let f = fixture();
    f.write(3).await;
    let log = f.open().unwrap();
    assert_eq!(log.append(event(9)).await.unwrap(), 4);
    drop(log);
    assert_eq!(
        verify_file(&f.path, None, Some(&f.head())).unwrap().records,
        4
    );
}

#[tokio::test]
async fn flipped_byte_names_its_record() {
    let f = fixture();
    f.write(5).await;
    let mut bytes = std::fs::read(&f.path).unwrap();
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    // Inside record 3's event (its source field), keeping the JSON valid.
    bytes[starts[3] - 10] ^= 0x01;
    std::fs::write(&f.path, &bytes).unwrap();
    let want = AuditError::Tampered(VerifyError::BadHash { record: 3 });
    assert_eq!(
        verify_file(&f.path, None, Some(&f.head())).unwrap_err(),
        want
    );
    assert_eq!(f.open().unwrap_err(), want);
}

#[tokio::test]
async fn dropped_last_record_is_truncation() {
    let f = fixture();
    f.write(4).await;
    let bytes = std::fs::read(&f.path).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    let keep = text.trim_end().rfind('\n').unwrap() + 1;
    std::fs::write(&f.path, &bytes[..keep]).unwrap();
    let want = AuditError::Tampered(VerifyError::Truncated {
        expected_records: 4,
        found: 3,
    });
    assert_eq!(
        verify_file(&f.path, None, Some(&f.head())).unwrap_err(),
        want
    );
    assert_eq!(f.open().unwrap_err(), want);
}

#[tokio::test]
async fn torn_final_line_is_removed_on_open() {
    let f = fixture();
    f.write(2).await;
    let len = std::fs::metadata(&f.path).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&f.path).unwrap();
    file.write_all(b"0123abc {\"seq\":3").unwrap();
    drop(file);
    assert_eq!(
        verify_file(&f.path, None, None).unwrap_err(),
        AuditError::Tampered(VerifyError::Unterminated { record: 3 })
    );
    let log = f.open().unwrap();
    assert_eq!(std::fs::metadata(&f.path).unwrap().len(), len);
    assert_eq!(log.append(event(3)).await.unwrap(), 3);
}

#[tokio::test]
async fn records_past_a_lagging_head_are_anchored() {
    let f = fixture();
    f.write(1).await;
    let one = f.head();
    f.write(2).await;
    let three = f.head();
    f.heads.save_head(&one).unwrap();
    drop(f.open().unwrap());
    assert_eq!(f.head(), three);
}

struct BrokenHeads;
impl HeadStore for BrokenHeads {
    fn load_head(&self) -> Result<Option<ChainHead>, String> {
        Ok(None)
    }
    fn save_head(&self, _: &ChainHead) -> Result<(), String> {
        Err("store sealed".to_string())
    }
    fn generation(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn failed_head_save_fails_the_append_and_the_log() {
    let f = fixture();
    let log = AuditLog::open(&f.path, Arc::new(BrokenHeads)).unwrap();
    assert_eq!(
        log.append(event(1)).await.unwrap_err(),
        AuditError::HeadStore("store sealed".to_string())
    );
    assert_eq!(log.append(event(2)).await.unwrap_err(), AuditError::Failed);
}

#[tokio::test]
async fn file_is_private_and_tail_shows_bodies() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    f.write(3).await;
    let mode = std::fs::metadata(&f.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = f.open().unwrap();
    let tail = log.tail(2).unwrap();
    assert_eq!(tail.len(), 2);
    let v: serde_json::Value = serde_json::from_str(&tail[1]).unwrap();
    assert_eq!(v["seq"], 3);
    assert_eq!(log.tail(10).unwrap().len(), 3);
}

#[tokio::test]
async fn an_allowed_privileged_request_is_not_recorded_without_the_key() {
    let f = fixture();
    let log = f.open().unwrap();
    assert_eq!(
        log.append(privileged(1)).await.unwrap_err(),
        AuditError::SealedAllow
    );
    // What a sealed server does answer is recorded, and the log goes on.
    assert_eq!(log.append(event(2)).await.unwrap(), 1);
    let denied = Event {
        decision: Verdict::Deny,
        ..privileged(3)
    };
    assert_eq!(log.append(denied).await.unwrap(), 2);
}

#[tokio::test]
async fn unseal_hands_over_the_key_with_a_counted_re_anchor() {
    let f = fixture();
    let log = f.open().unwrap();
    log.append(event(1)).await.unwrap();
    log.append(event(2)).await.unwrap();
    assert_eq!(log.unsealed(key(), anchor()).await.unwrap(), 3);
    assert_eq!(log.append(privileged(4)).await.unwrap(), 4);
    drop(log);
    // Dropping the log (shutdown) wrote a keyed checkpoint.
    let report = verify_file(&f.path, Some(&key()), Some(&f.head())).unwrap();
    assert_eq!((report.records, report.authenticated), (5, 3));
    assert_eq!(
        report.sealed_runs,
        vec![SealedRun {
            first: 1,
            last: 2,
            anchored_by: Some(3)
        }]
    );
    let tail = f.open().unwrap().tail(3).unwrap();
    let anchor: serde_json::Value = serde_json::from_str(&tail[0]).unwrap();
    assert_eq!(anchor["sealed_records"], 2);
    assert_eq!(
        anchor["event"]["reasons"][1],
        "2 records written while sealed precede this one (unauthenticated)"
    );
    let last: serde_json::Value = serde_json::from_str(&tail[2]).unwrap();
    assert_eq!(last["event"]["action"], CHECKPOINT_ACTION);
    assert_eq!(last["event"]["reasons"][0], "shutdown");
}

#[tokio::test]
async fn sealing_writes_a_keyed_checkpoint_and_drops_the_key() {
    let f = fixture();
    let log = f.open().unwrap();
    log.unsealed(key(), anchor()).await.unwrap();
    log.append(privileged(2)).await.unwrap();
    let checkpoint = Event::by_server(3, CHECKPOINT_ACTION, vec!["seal".into()]);
    log.sealing(checkpoint).await.unwrap();
    assert_eq!(
        log.append(privileged(4)).await.unwrap_err(),
        AuditError::SealedAllow
    );
    assert_eq!(log.append(event(5)).await.unwrap(), 4);
    drop(log);
    let report = verify_file(&f.path, Some(&key()), Some(&f.head())).unwrap();
    assert_eq!((report.records, report.authenticated), (4, 3));
    assert_eq!(report.pending_unauthenticated(), 1);
    // Every record carries the generation at its commit: never ahead of the store.
    assert!(report.generation <= f.heads.generation());
}

/// A head store whose saves wait until released, to hold the writer.
#[derive(Default)]
struct HeldHeads {
    inner: MemoryHeadStore,
    released: Mutex<bool>,
    wake: std::sync::Condvar,
    entered: std::sync::atomic::AtomicBool,
}

impl HeadStore for HeldHeads {
    fn load_head(&self) -> Result<Option<ChainHead>, String> {
        self.inner.load_head()
    }
    fn save_head(&self, head: &ChainHead) -> Result<(), String> {
        self.entered.store(true, Ordering::SeqCst);
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.wake.wait(released).unwrap();
        }
        self.inner.save_head(head)
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// A head store whose saves panic, so the syncer thread ends.
#[derive(Default)]
struct PanickingHeads {
    inner: MemoryHeadStore,
}

impl HeadStore for PanickingHeads {
    fn load_head(&self) -> Result<Option<ChainHead>, String> {
        self.inner.load_head()
    }
    fn save_head(&self, _head: &ChainHead) -> Result<(), String> {
        panic!("the head store broke");
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// If the syncer ends (a panic, which the lints rule out in the code it
/// runs), nobody waits forever: the append it was syncing fails, and so
/// does every later one, past the hand-off's backlog too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_instead_of_hanging_once_the_syncer_is_gone() {
    let f = fixture();
    let log = AuditLog::open(&f.path, Arc::new(PanickingHeads::default())).unwrap();
    let answered = |r: Result<Result<u64, AuditError>, tokio::time::error::Elapsed>| {
        r.expect("an append is answered, not left waiting")
    };
    let first = answered(tokio::time::timeout(Duration::from_secs(10), log.append(event(1))).await);
    assert!(matches!(first, Err(AuditError::Closed)), "{first:?}");
    for i in 2..(2 + 3 * super::writer::SYNC_BACKLOG as u64) {
        let later =
            answered(tokio::time::timeout(Duration::from_secs(10), log.append(event(i))).await);
        assert!(matches!(later, Err(AuditError::Failed)), "{later:?}");
    }
}

/// While the writer is stuck, appenders fill the queue up to its bound and
/// then wait; once it moves again every record is written, none dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_appenders_wait_and_drops_nothing() {
    let f = fixture();
    let heads = Arc::new(HeldHeads::default());
    let log = Arc::new(AuditLog::open(&f.path, heads.clone()).unwrap());
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(event(0)).await }
    });
    while !heads.entered.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // While the head save hangs, the writer still writes up to
    // SYNC_BACKLOG + 1 more groups (those waiting for the syncer, and one
    // it holds); then it stops and the queue fills.
    let extra = (super::writer::SYNC_BACKLOG + 1) * super::writer::MAX_GROUP + 16;
    let tasks: Vec<_> = (1..=(QUEUE_LEN + extra) as u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(event(i)).await })
        })
        .collect();
    let tx = log.tx.as_ref().unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while tx.capacity() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the queue fills while the writer is stuck");
    assert_eq!(tx.max_capacity(), QUEUE_LEN);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    // The queue holds its bound; the rest wait to get in, none has failed.
    assert_eq!(tx.capacity(), 0);
    assert!(tasks.iter().all(|t| !t.is_finished()));
    *heads.released.lock().unwrap() = true;
    heads.wake.notify_all();
    let mut seqs = vec![first.await.unwrap().unwrap()];
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    let total = (QUEUE_LEN + extra + 1) as u64;
    assert_eq!(seqs, (1..=total).collect::<Vec<u64>>());
    assert_eq!(verify_file(&f.path, None, None).unwrap().records, total);
}

/// While the syncer is stuck and the writer waits for room in the
/// hand-off, the writer has let go of the chain: a read's record is still
/// written and acknowledged at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_written_while_the_writer_waits_for_the_syncer() {
    let f = fixture();
    let heads = Arc::new(HeldHeads::default());
    let log = Arc::new(AuditLog::open(&f.path, heads.clone()).unwrap());
    let spawn_append = |i: u64| {
        let log = log.clone();
        tokio::spawn(async move { log.append(event(i)).await })
    };
    let mut durable = vec![spawn_append(0)];
    while !heads.entered.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // The syncer hangs in the head save. One group at a time fills the
    // hand-off, and the writer then waits with the next.
    let tx = log.tx.as_ref().unwrap();
    for i in 1..=(super::writer::SYNC_BACKLOG as u64 + 1) {
        durable.push(spawn_append(i));
        while tx.capacity() < QUEUE_LEN {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more stays in the queue: the writer is waiting.
    durable.push(spawn_append(100));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tx.capacity(), QUEUE_LEN - 1);
    assert!(durable.iter().all(|t| !t.is_finished()));
    let read = tokio::time::timeout(Duration::from_secs(10), log.append_written(event(200))).await;
    // Released before anything is asserted, so a failure ends the test
    // instead of leaving the syncer stuck.
    *heads.released.lock().unwrap() = true;
    heads.wake.notify_all();
    let read = read.expect("a read's record is written while the writer waits for the syncer");
    let mut seqs = vec![read.unwrap()];
    for t in durable {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    let total = super::writer::SYNC_BACKLOG as u64 + 4;
    assert_eq!(seqs, (1..=total).collect::<Vec<u64>>());
    assert_eq!(verify_file(&f.path, None, None).unwrap().records, total);
}

/// Captures what the log emits through `tracing`.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
    fn heads(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("audit chain head"))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_is_logged_every_thousand_records_at_seal_and_at_shutdown() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let f = fixture();
    let log = Arc::new(f.open().unwrap());
    log.unsealed(key(), anchor()).await.unwrap();
    let tasks: Vec<_> = (2..=1000)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(privileged(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let at_1000 = f.head();
    assert_eq!(at_1000.seq, 1000);
    let heads = captured.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let want = format!(
        "audit chain head seq=1000 hash={} reason=\"interval\"",
        hex::encode(at_1000.hash)
    );
    assert!(heads[0].contains(&want), "{heads:?}");
    assert!(heads[0].contains(HEAD_LOG_TARGET), "{heads:?}");

    let checkpoint = Event::by_server(3, CHECKPOINT_ACTION, vec!["seal".into()]);
    log.sealing(checkpoint).await.unwrap();
    let heads = captured.heads();
    assert!(
        heads[1].contains("seq=1001") && heads[1].contains("reason=\"seal\""),
        "{heads:?}"
    );
    log.append(event(1002)).await.unwrap();
    drop(Arc::into_inner(log).unwrap());
    let heads = captured.heads();
    assert!(
        heads[2].contains("seq=1002") && heads[2].contains("reason=\"shutdown\""),
        "{heads:?}"
    );
}

/// Appends 300-byte lines to a fresh file, each followed by fdatasync.
fn raw_fdatasync_rate(path: &Path) -> f64 {
    let mut raw = File::create(path).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        raw.write_all(&[b'x'; 300]).unwrap();
        raw.sync_data().unwrap();
    }
    1000.0 / start.elapsed().as_secs_f64()
}

/// Prints audit appends/s at concurrency 1 and 32 beside raw fdatasync/s.
/// `cargo test --release --lib store::audit_log::tests::append_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn append_throughput() {
    let f = fixture();
    let raw_rate = raw_fdatasync_rate(&f.path.with_extension("raw"));
    println!("raw fdatasync: {raw_rate:.0}/s");
    let log = Arc::new(f.open().unwrap());
    for conc in [1u64, 32] {
        let per = 2000 / conc;
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..conc)
            .map(|c| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        log.append(event(c * per + i)).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let rate = (per * conc) as f64 / start.elapsed().as_secs_f64();
        println!(
            "audit append, concurrency {conc}: {rate:.0}/s ({:.2}x raw fdatasync)",
            rate / raw_rate
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the test holds the chain, as a committing appender would, while reads queue behind it"
)]
async fn reads_that_find_the_chain_busy_are_committed_by_its_holder() {
    let f = fixture();
    let log = Arc::new(f.open().unwrap());
    log.unsealed(key(), anchor()).await.unwrap();
    let held = log.chain.lock();
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append_written(privileged(i)).await })
        })
        .collect();
    // Every appender gives up spinning and leaves its record for the holder.
    let deadline = clock::monotonic() + Duration::from_secs(10);
    while crate::sync::lock(&log.chain.waiting).len() < 8 && clock::monotonic() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(crate::sync::lock(&log.chain.waiting).len(), 8);
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "none is answered while the chain is held"
    );
    log.chain.release(held);
    let mut seqs = Vec::new();
    for t in tasks {
        let answer = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("letting the chain go commits the waiting reads");
        seqs.push(answer.unwrap().unwrap());
    }
    seqs.sort_unstable();
    // Sequence 1 is the re-anchor.
    assert_eq!(seqs, (2..=9).collect::<Vec<u64>>());
    assert!(crate::sync::lock(&log.chain.waiting).is_empty());
    let deadline = clock::monotonic() + Duration::from_secs(5);
    while f.head().seq < 9 && clock::monotonic() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = verify_file(&f.path, Some(&key()), Some(&f.head())).unwrap();
    assert_eq!(report.records, 9);
}

/// Syncs gather records only while the process keeps at least 85% of all
/// CPUs busy over the measured window, and go on gathering down to 70%.
#[test]
fn syncs_gather_only_while_the_cpus_are_busy() {
    use super::writer::busy;
    let ms = Duration::from_millis;
    // 34 ms of CPU over 20 ms on 2 cores is 85%; 33 ms is not.
    assert!(busy(ms(34), ms(20), 2, false));
    assert!(!busy(ms(33), ms(20), 2, false));
    // Once gathering, 70% keeps it on; less ends it.
    assert!(busy(ms(28), ms(20), 2, true));
    assert!(!busy(ms(27), ms(20), 2, true));
    // One busy thread of eight is not a busy machine.
    assert!(!busy(ms(20), ms(20), 8, false));
    assert!(busy(ms(160), ms(20), 8, false));
    // Nothing measured yet decides nothing.
    assert!(!busy(ms(5), Duration::ZERO, 2, true));
}
