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
use crate::server::testing::{PausingStore, WAIT, assert_off, at, td, unsealed_store};
use crate::store::Table;
use std::sync::mpsc::{Receiver, Sender};

struct Fixture {
    _dir: tempfile::TempDir,
    raw: Arc<PausingStore>,
    sealed: Arc<SealedStore>,
    agents: Arc<Agents>,
}

fn fixture() -> Fixture {
    let (dir, raw, sealed) = unsealed_store();
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

/// Holds the next agent-record read once it has read, before the reader
/// writes; returns (reached, resume).
fn arm_after_read(f: &Fixture) -> (Receiver<()>, Sender<()>) {
    f.raw.arm_after_read(Table::AGENTS)
}

#[test]
fn a_ban_during_a_renewal_holds() {
    let f = fixture();
    let id = td().agent_id("n1").unwrap();
    f.agents
        .shared
        .record_svid(&id, "ab".into(), at(2_000), at(1_000))
        .unwrap();
    assert!(f.agents.is_active(&id));

    // The renewal reads the record (not banned), then stops before writing.
    let (reached, resume) = arm_after_read(&f);
    let renewal = std::thread::spawn({
        let agents = f.agents.shared.clone();
        let id = id.clone();
        move || agents.record_svid(&id, "ab".into(), at(3_000), at(1_500))
    });
    reached.recv_timeout(WAIT).unwrap();
    // The ban lands while the renewal is between its read and its write.
    f.agents.shared.ban(&id).unwrap();
    resume.send(()).unwrap();
    let renewed = renewal.join().unwrap();

    // The renewal lost: it read the record before the ban.
    assert!(
        matches!(&renewed, Err(AgentsError::AgentBanned(a)) if a == &id),
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
    f.agents
        .shared
        .record_svid(&id, "ab".into(), at(2_000), at(1_000))
        .unwrap();

    // A last-seen update, due a minute later, reads the record and stops.
    let (reached, resume) = arm_after_read(&f);
    let touch = std::thread::spawn({
        let agents = f.agents.shared.clone();
        let id = id.clone();
        move || agents.touch(&id, at(1_100))
    });
    reached.recv_timeout(WAIT).unwrap();
    f.agents.shared.ban(&id).unwrap();
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
    f.agents
        .shared
        .record_svid(&id, "ab".into(), at(2_000), at(1_000))
        .unwrap();
    f.agents
        .shared
        .record_svid(&id, "ab".into(), at(3_000), at(1_500))
        .unwrap();
    let record = stored(&f, &id);
    assert_eq!(
        (record.attested_at, record.last_seen, record.svid_expires_at),
        (1_000, 1_500, 3_000)
    );
    assert_eq!(f.agents.list(), vec![record]);
    let other = td().agent_id("n2").unwrap();
    let err = f.agents.shared.ban(&other).unwrap_err();
    assert!(
        matches!(&err, AgentsError::AgentNotFound(a) if a == &other),
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
        .shared
        .create_join_token(ttl, Some("n1"), false, at(1_000))
        .unwrap();
    f.agents
        .shared
        .record_svid(&id, "ab".into(), at(9_000), at(1_000))
        .unwrap();

    let err = f
        .agents
        .shared
        .create_join_token(ttl, Some("n1"), false, at(1_001))
        .unwrap_err();
    assert!(
        matches!(&err, AgentsError::NameTaken(a) if a == &id),
        "{err:?}"
    );
    let t = f
        .agents
        .shared
        .create_join_token(ttl, Some("n1"), true, at(1_002))
        .unwrap();
    assert_eq!(t.agent_id, id);

    // Replace names the agent it hands over.
    let err = f
        .agents
        .shared
        .create_join_token(ttl, None, true, at(1_003))
        .unwrap_err();
    assert!(matches!(err, AgentsError::ReplaceNeedsName), "{err:?}");
    // A banned agent is not active: its name is not protected by this rule
    // (its tokens are refused at attestation instead).
    f.agents.shared.ban(&id).unwrap();
    f.agents
        .shared
        .create_join_token(ttl, Some("n1"), false, at(1_004))
        .unwrap();
}

fn token_text(t: &JoinToken) -> String {
    String::from_utf8(t.token.expose().to_vec()).unwrap()
}

#[test]
fn join_tokens_are_refused_by_the_rule_they_break() {
    let f = fixture();
    let ttl = Duration::from_secs(600);
    let t = f
        .agents
        .shared
        .create_join_token(ttl, Some("n1"), false, at(1_000))
        .unwrap();
    let token = token_text(&t);
    let unknown = f.agents.shared.redeem("not-a-token", at(1_001));
    assert!(
        matches!(unknown, Err(AgentsError::TokenUnknown)),
        "{unknown:?}"
    );
    let late = f.agents.shared.redeem(&token, at(1_600));
    assert!(matches!(late, Err(AgentsError::TokenExpired)), "{late:?}");
    assert_eq!(
        f.agents.shared.redeem(&token, at(1_599)).unwrap(),
        t.agent_id
    );
    let again = f.agents.shared.redeem(&token, at(1_599));
    assert!(matches!(again, Err(AgentsError::TokenUsed)), "{again:?}");

    let bad = f
        .agents
        .shared
        .create_join_token(ttl, Some("a/b"), false, at(1_002));
    assert!(matches!(bad, Err(AgentsError::NameInvalid(_))), "{bad:?}");

    // A banned agent's name can get a token, but redeeming it is refused.
    f.agents
        .shared
        .record_svid(&t.agent_id, "ab".into(), at(9_000), at(1_003))
        .unwrap();
    f.agents.shared.ban(&t.agent_id).unwrap();
    let after_ban = f
        .agents
        .shared
        .create_join_token(ttl, Some("n1"), false, at(1_004))
        .unwrap();
    let refused = f.agents.shared.redeem(&token_text(&after_ban), at(1_005));
    assert!(
        matches!(&refused, Err(AgentsError::AgentBanned(a)) if a == &t.agent_id),
        "{refused:?}"
    );
}

#[tokio::test]
async fn store_work_runs_off_the_async_worker() {
    // A current-thread runtime: its only worker is this thread.
    let f = fixture();
    let worker = std::thread::current().id();
    let ttl = Duration::from_secs(600);
    let t = f
        .agents
        .create_join_token(ttl, Some("n1"), false, at(1_000))
        .await
        .unwrap();
    assert_off(&f.raw, worker, "create_join_token");
    let id = f.agents.redeem(&token_text(&t), at(1_001)).await.unwrap();
    assert_off(&f.raw, worker, "redeem");
    f.agents
        .record_svid(&id, b"leaf", at(9_000), at(1_001))
        .await
        .unwrap();
    assert_off(&f.raw, worker, "record_svid");
    f.agents.ban(&id).await.unwrap();
    assert_off(&f.raw, worker, "ban");
}

#[tokio::test]
async fn touch_returns_before_its_write_lands() {
    let f = fixture();
    let worker = std::thread::current().id();
    let id = td().agent_id("n1").unwrap();
    f.agents
        .record_svid(&id, b"leaf", at(2_000), at(1_000))
        .await
        .unwrap();
    f.raw.take_threads();

    // The last-seen write (due a minute later) is held in the store, and
    // still every touch returns: the request never waits for it.
    let (reached, resume) = f.raw.arm(Table::AGENTS);
    f.agents.touch(&id, at(1_100));
    f.agents.touch(&id, at(1_101));
    reached.recv_timeout(WAIT).unwrap();
    resume.send(()).unwrap();

    // The write lands in the background, and the cache follows it.
    for _ in 0..WAIT.as_millis() / 10 {
        if f.agents.list()[0].last_seen == 1_100 && lock(&f.agents.shared.touching).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_off(&f.raw, worker, "touch");
    assert_eq!(f.agents.list()[0].last_seen, 1_100);
    assert_eq!(stored(&f, &id).last_seen, 1_100);
    assert!(lock(&f.agents.shared.touching).is_empty());
}

#[tokio::test]
async fn only_the_last_issued_svid_is_the_agents() {
    let f = fixture();
    let id = td().agent_id("n1").unwrap();
    // Before any SVID is recorded, no certificate is the agent's.
    assert!(!f.agents.holds_issued_svid(&id, b"first"));
    f.agents
        .record_svid(&id, b"first", at(2_000), at(1_000))
        .await
        .unwrap();
    assert!(f.agents.holds_issued_svid(&id, b"first"));
    assert!(!f.agents.holds_issued_svid(&id, b"forged"));
    // A renewal replaces it.
    f.agents
        .record_svid(&id, b"second", at(3_000), at(1_500))
        .await
        .unwrap();
    assert!(!f.agents.holds_issued_svid(&id, b"first"));
    assert!(f.agents.holds_issued_svid(&id, b"second"));
    f.agents.ban(&id).await.unwrap();
    assert!(!f.agents.holds_issued_svid(&id, b"second"));
}
