//! Agent records under concurrent changes, over a store that can hold one
//! write back until the test lets it go.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;
use crate::keyring::KdfCost;
use crate::store::{
    BatchConflict, CasConflict, Expect, Records, SledStore, Store, StoreError, WriteOp,
};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

/// How long a test waits for the other side before failing (a guard against
/// a hang, not a speed requirement).
const WAIT: Duration = Duration::from_secs(30);

/// The next write to the agents table stops here until `resume` says go.
struct Pause {
    reached: Sender<()>,
    resume: Receiver<()>,
}

/// A sled store whose next agent-record write can be paused.
struct PausingStore {
    inner: SledStore,
    armed: Mutex<Option<Pause>>,
}

impl PausingStore {
    fn hold_if_armed(&self, table: Table) {
        if table != Table::AGENTS {
            return;
        }
        let pause = self.armed.lock().unwrap().take();
        if let Some(p) = pause {
            p.reached.send(()).unwrap();
            p.resume
                .recv_timeout(WAIT)
                .expect("the test resumes the write");
        }
    }
}

impl Store for PausingStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }

    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.hold_if_armed(table);
        self.inner.put(table, key, value)
    }

    fn delete(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
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
        self.inner.batch(ops)
    }

    fn batch_if(
        &self,
        expect: &[Expect<'_>],
        ops: &[WriteOp<'_>],
    ) -> Result<Result<(), BatchConflict>, StoreError> {
        // Sealed writes arrive here with the table digest: pause the one
        // that changes an agent record.
        let agents = ops.iter().any(|op| match *op {
            WriteOp::Put { table, .. } | WriteOp::Delete { table, .. } => table == Table::AGENTS,
        });
        if agents {
            self.hold_if_armed(Table::AGENTS);
        }
        self.inner.batch_if(expect, ops)
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Records, StoreError> {
        self.inner.scan_prefix(table, prefix)
    }
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

struct Fixture {
    _dir: tempfile::TempDir,
    raw: Arc<PausingStore>,
    sealed: Arc<SealedStore>,
    agents: Arc<Agents>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(PausingStore {
        inner: SledStore::open(dir.path()).unwrap(),
        armed: Mutex::new(None),
    });
    let sealed = Arc::new(SealedStore::new(raw.clone(), KdfCost::FAST_FOR_TESTS));
    sealed
        .init(&Secret::from_slice(b"agents test passphrase"), &td(), at(1))
        .unwrap();
    let agents = Arc::new(Agents::new(sealed.clone(), td()));
    Fixture {
        _dir: dir,
        raw,
        sealed,
        agents,
    }
}

fn stored(f: &Fixture, id: &SpiffeId) -> AgentRecord {
    let v = f
        .sealed
        .get(Table::AGENTS, id.as_str().as_bytes())
        .unwrap()
        .unwrap();
    serde_json::from_slice(v.expose()).unwrap()
}

/// Arms the pause; returns (reached, resume).
fn arm(f: &Fixture) -> (Receiver<()>, Sender<()>) {
    let (reached_tx, reached_rx) = channel();
    let (resume_tx, resume_rx) = channel();
    *f.raw.armed.lock().unwrap() = Some(Pause {
        reached: reached_tx,
        resume: resume_rx,
    });
    (reached_rx, resume_tx)
}

#[test]
fn a_ban_during_a_renewal_holds() {
    let f = fixture();
    let id = td().agent_id("n1").unwrap();
    f.agents.record_svid(&id, at(2_000), at(1_000)).unwrap();
    assert!(f.agents.is_active(&id));

    // The renewal reads the record (not banned), then its write stops.
    let (reached, resume) = arm(&f);
    let renewal = std::thread::spawn({
        let agents = f.agents.clone();
        let id = id.clone();
        move || agents.record_svid(&id, at(3_000), at(1_500))
    });
    reached.recv_timeout(WAIT).unwrap();
    // The ban lands while the renewal is between its read and its write.
    f.agents.ban(&id).unwrap();
    resume.send(()).unwrap();
    let renewed = renewal.join().unwrap();

    // The renewal lost: it read the record before the ban.
    assert!(
        matches!(&renewed, Err(ApiError::Denied(m)) if m == "agent spiffe://example.org/sigil/agent/n1 is banned"),
        "{renewed:?}"
    );
    // Banned in memory…
    assert!(!f.agents.is_active(&id));
    assert!(f.agents.list()[0].banned);
    // …and in the store, also as a restarted server reads it.
    let record = stored(&f, &id);
    assert!(record.banned);
    assert_eq!(record.svid_expires_at, 2_000, "the renewal wrote nothing");
    let reloaded = Agents::new(f.sealed.clone(), td());
    assert_eq!(reloaded.load().unwrap(), 1);
    assert!(!reloaded.is_active(&id));
}

#[test]
fn a_touch_during_a_ban_does_not_unban() {
    let f = fixture();
    let id = td().agent_id("n1").unwrap();
    f.agents.record_svid(&id, at(2_000), at(1_000)).unwrap();

    // A last-seen update, due a minute later, reads the record and stops.
    let (reached, resume) = arm(&f);
    let touch = std::thread::spawn({
        let agents = f.agents.clone();
        let id = id.clone();
        move || agents.touch(&id, at(1_100))
    });
    reached.recv_timeout(WAIT).unwrap();
    f.agents.ban(&id).unwrap();
    resume.send(()).unwrap();
    touch.join().unwrap();

    assert!(!f.agents.is_active(&id));
    let record = stored(&f, &id);
    assert!(record.banned);
    assert_eq!(
        record.last_seen, 1_000,
        "a banned agent's last-seen is not written"
    );
}

#[test]
fn a_renewal_records_the_new_expiry_and_an_unknown_ban_is_not_found() {
    let f = fixture();
    let id = td().agent_id("n1").unwrap();
    f.agents.record_svid(&id, at(2_000), at(1_000)).unwrap();
    f.agents.record_svid(&id, at(3_000), at(1_500)).unwrap();
    let record = stored(&f, &id);
    assert_eq!(
        (record.attested_at, record.last_seen, record.svid_expires_at),
        (1_000, 1_500, 3_000)
    );
    assert_eq!(f.agents.list(), vec![record]);
    let other = td().agent_id("n2").unwrap();
    let err = f.agents.ban(&other).unwrap_err();
    assert!(
        matches!(&err, ApiError::NotFound(m) if m == "agent spiffe://example.org/sigil/agent/n2"),
        "{err:?}"
    );
}

#[test]
fn a_name_an_active_agent_holds_needs_replace() {
    let f = fixture();
    let ttl = Duration::from_secs(600);
    let id = td().agent_id("n1").unwrap();
    // Before the agent attests, the name is free (tokens may be reissued).
    f.agents
        .create_join_token(ttl, Some("n1"), false, at(1_000))
        .unwrap();
    f.agents.record_svid(&id, at(9_000), at(1_000)).unwrap();

    let err = f
        .agents
        .create_join_token(ttl, Some("n1"), false, at(1_001))
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::AlreadyExists(m) if m == "agent spiffe://example.org/sigil/agent/n1 is active: a new token would hand its identity to another node (replace it explicitly with --replace)"),
        "{err:?}"
    );
    let t = f
        .agents
        .create_join_token(ttl, Some("n1"), true, at(1_002))
        .unwrap();
    assert_eq!(t.agent_id, id);

    // Replace names the agent it hands over.
    let err = f
        .agents
        .create_join_token(ttl, None, true, at(1_003))
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::InvalidArgument(m) if m == "replace: needs agent_name (the agent whose name is handed over)"),
        "{err:?}"
    );
    // A banned agent is not active: its name is not protected by this rule
    // (its tokens are refused at attestation instead).
    f.agents.ban(&id).unwrap();
    f.agents
        .create_join_token(ttl, Some("n1"), false, at(1_004))
        .unwrap();
}
