//! Tests for the audit log writer: group commit, reopen, tamper and
//! truncation detection, fail-closed appends, and append throughput.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;
use crate::audit::Verdict;

fn event(i: u64) -> Event {
    Event {
        time: 1_700_000_000 + i,
        subject: "uid:0".to_string(),
        authn: "admin_socket".to_string(),
        action: "entry.create".to_string(),
        resource: format!("entry:{i}"),
        decision: Verdict::Allow,
        reasons: vec![],
        source: "unix:uid=0".to_string(),
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
    let report = verify_file(&f.path, Some(&f.head())).unwrap();
    assert_eq!((report.records, report.unanchored), (32, 0));
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
    assert_eq!(verify_file(&f.path, Some(&f.head())).unwrap().records, 4);
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
    bytes[starts[2] + 80] ^= 0x01;
    std::fs::write(&f.path, &bytes).unwrap();
    let want = AuditError::Tampered(VerifyError::BadHash { record: 3 });
    assert_eq!(verify_file(&f.path, Some(&f.head())).unwrap_err(), want);
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
    assert_eq!(verify_file(&f.path, Some(&f.head())).unwrap_err(), want);
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
        verify_file(&f.path, None).unwrap_err(),
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
