#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;
use crate::authority::{Authority, validate_jwt_svid, validate_x509_svid_leaf};
use crate::id::TrustDomain;
use crate::registry::{EntryDraft, EntryId};
use crate::secret::Secret;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A wall clock the test moves by hand.
pub(super) struct FakeClock(Mutex<SystemTime>);

impl FakeClock {
    pub(super) fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
    pub(super) fn advance(&self, secs: u64) {
        *self.0.lock().unwrap() += Duration::from_secs(secs);
    }
}

/// An issuer over an in-process authority that counts calls and can be
/// switched off to simulate a server outage.
pub(super) struct TestIssuer {
    /// Behind a lock so a test can rotate or taint its keys.
    pub(super) authority: Mutex<Authority>,
    clock: Arc<FakeClock>,
    x509_calls: AtomicUsize,
    jwt_calls: AtomicUsize,
    available: AtomicBool,
    delay: Duration,
    last_aud: Mutex<Vec<String>>,
}

#[tonic::async_trait]
impl Issuer for TestIssuer {
    async fn sign_x509(
        &self,
        entry: &Entry,
        csr_der: Vec<u8>,
    ) -> Result<(Vec<Vec<u8>>, SystemTime), AgentError> {
        self.x509_calls.fetch_add(1, Ordering::SeqCst);
        if !self.available.load(Ordering::SeqCst) {
            return Err(AgentError::ServerUnavailable("test outage".into()));
        }
        tokio::time::sleep(self.delay).await;
        let ttl = Duration::from_secs(entry.x509_ttl_secs.unwrap_or(3600));
        let svid = self
            .authority
            .lock()
            .unwrap()
            .sign_x509_svid(&csr_der, &entry.spiffe_id, ttl, &[], self.clock.now())
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        Ok((svid.chain_der, svid.expires_at))
    }

    async fn mint_jwt(
        &self,
        entry: &Entry,
        audiences: Vec<String>,
    ) -> Result<(Secret, SystemTime), AgentError> {
        self.jwt_calls.fetch_add(1, Ordering::SeqCst);
        if !self.available.load(Ordering::SeqCst) {
            return Err(AgentError::ServerUnavailable("test outage".into()));
        }
        *self.last_aud.lock().unwrap() = audiences.clone();
        let ttl = Duration::from_secs(entry.jwt_ttl_secs.unwrap_or(300));
        let svid = self
            .authority
            .lock()
            .unwrap()
            .mint_jwt_svid(&entry.spiffe_id, &audiences, ttl, self.clock.now())
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        Ok((svid.token, svid.expires_at))
    }
}

pub(super) struct Fixture {
    pub(super) cache: Arc<IdentityCache>,
    pub(super) issuer: Arc<TestIssuer>,
    pub(super) clock: Arc<FakeClock>,
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn fixture_with(delay: Duration, jwt_capacity: usize) -> Fixture {
    // Whole seconds, as certificates and tokens carry them.
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(clock::unix_seconds(clock::now()));
    let clock = Arc::new(FakeClock(Mutex::new(start)));
    let authority = Authority::generate(
        &td(),
        start,
        Duration::from_secs(86400),
        &SystemRandom::new(),
    )
    .unwrap();
    let issuer = Arc::new(TestIssuer {
        authority: Mutex::new(authority),
        clock: Arc::clone(&clock),
        x509_calls: AtomicUsize::new(0),
        jwt_calls: AtomicUsize::new(0),
        available: AtomicBool::new(true),
        delay,
        last_aud: Mutex::new(Vec::new()),
    });
    let c = Arc::clone(&clock);
    let cache = IdentityCache::with_clock(
        Arc::clone(&issuer) as Arc<dyn Issuer>,
        Arc::new(move || c.now()),
        jwt_capacity,
    );
    Fixture {
        cache,
        issuer,
        clock,
    }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(Duration::ZERO, jwt::MAX_JWT_ENTRIES)
}

pub(super) fn entry(path: &str, selectors: &[&str], id: u8, revision: u64) -> Entry {
    EntryDraft {
        spiffe_id: format!("spiffe://example.org/{path}"),
        parent_id: "spiffe://example.org/node".into(),
        selectors: selectors.iter().map(|s| (*s).to_owned()).collect(),
        x509_ttl_seconds: 3600,
        jwt_ttl_seconds: 10,
        ..EntryDraft::default()
    }
    .validate(&td(), EntryId::from_random([id; 16]), revision, 0)
    .unwrap()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

pub(super) fn x509_calls(f: &Fixture) -> usize {
    f.issuer.x509_calls.load(Ordering::SeqCst)
}

pub(super) fn jwt_calls(f: &Fixture) -> usize {
    f.issuer.jwt_calls.load(Ordering::SeqCst)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_lazily_and_once_for_concurrent_requests() {
    let f = fixture_with(Duration::from_millis(100), jwt::MAX_JWT_ENTRIES);
    let e = entry("web", &["unix:uid:1000"], 1, 1);
    f.cache
        .set_entries(vec![e.clone(), entry("db", &["unix:uid:2"], 2, 1)]);
    assert_eq!(x509_calls(&f), 0, "nothing is pre-minted");
    assert_eq!(f.cache.cached_x509_count(), 0);

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, e) = (Arc::clone(&f.cache), e.clone());
            tokio::spawn(async move { cache.x509_svid(&e).await })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    assert_eq!(x509_calls(&f), 1);
    assert_eq!(f.cache.cached_x509_count(), 1);
    assert!(got.iter().all(|g| Arc::ptr_eq(g, &got[0])));
    let svid = &got[0];
    assert_eq!(svid.spiffe_id, e.spiffe_id);
    assert_eq!(svid.entry_id, e.id.as_str());
    assert_eq!(
        validate_x509_svid_leaf(&svid.chain_der[0], f.clock.now()).unwrap(),
        e.spiffe_id
    );
}

#[tokio::test]
async fn matching_through_the_selector_index_agrees_with_testing_every_entry() {
    let f = fixture();
    let pool = [
        "unix:uid:1",
        "unix:uid:2",
        "unix:gid:5",
        "unix:gid:6",
        "unix:user:a",
    ];
    // Every entry of one or two selectors from the pool, under a few IDs.
    let mut entries = Vec::new();
    let mut n = 0u8;
    for (i, a) in pool.iter().enumerate() {
        for b in pool.iter().skip(i) {
            n += 1;
            let sels: Vec<&str> = if a == b { vec![*a] } else { vec![*a, *b] };
            entries.push(entry(&format!("w{}", n % 4), &sels, n, 1));
        }
    }
    f.cache.set_entries(entries.clone());
    let callers: [&[&str]; 5] = [
        &["unix:uid:1"],
        &["unix:uid:1", "unix:gid:5"],
        &["unix:gid:6", "unix:user:a", "unix:uid:2"],
        &pool,
        &["unix:uid:9"],
    ];
    for caller in callers {
        let sels: Vec<Selector> = caller.iter().map(|s| sel(s)).collect();
        let mut want: Vec<Entry> = entries
            .iter()
            .filter(|e| e.matches(&sels))
            .cloned()
            .collect();
        want.sort_by(|a, b| (&a.spiffe_id, &a.id).cmp(&(&b.spiffe_id, &b.id)));
        let got: Vec<Entry> = f
            .cache
            .matching(&sels)
            .iter()
            .map(|e| (**e).clone())
            .collect();
        assert_eq!(got, want, "caller {caller:?}");
    }
}

#[tokio::test]
async fn a_new_cache_is_synced_only_once_marked() {
    let f = fixture();
    assert!(!f.cache.synced());
    // Entries alone do not make it synced: a push may come in several parts.
    f.cache.set_entries(vec![entry("a", &["unix:uid:1"], 1, 1)]);
    assert!(!f.cache.synced());
    let waiter = tokio::spawn({
        let cache = Arc::clone(&f.cache);
        async move { cache.wait_synced().await }
    });
    f.cache.mark_synced();
    assert!(f.cache.synced());
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn matching_is_filtered_and_in_stable_default_order() {
    let f = fixture();
    let b = entry("b", &["unix:uid:1"], 1, 1);
    let a2 = entry("a", &["unix:uid:1"], 9, 1);
    let a1 = entry("a", &["unix:uid:1"], 3, 1);
    let c = entry("c", &["unix:uid:1", "unix:gid:5"], 4, 1);
    f.cache
        .set_entries(vec![b.clone(), c.clone(), a2.clone(), a1.clone()]);
    let ids = |sels: &[Selector]| -> Vec<String> {
        f.cache
            .matching(sels)
            .iter()
            .map(|e| e.id.as_str().to_owned())
            .collect()
    };
    let want_uid = [&a1, &a2, &b].map(|e| e.id.as_str().to_owned());
    assert_eq!(ids(&[sel("unix:uid:1")]), want_uid);
    assert_eq!(ids(&[sel("unix:uid:1")]), want_uid, "stable across calls");
    let all = [&a1, &a2, &b, &c].map(|e| e.id.as_str().to_owned());
    assert_eq!(ids(&[sel("unix:gid:5"), sel("unix:uid:1")]), all);
    assert!(ids(&[sel("unix:gid:5")]).is_empty());
    assert!(ids(&[]).is_empty());
    assert_eq!(f.cache.entries().len(), 4);
}

#[tokio::test]
async fn removing_an_entry_drops_its_svid_and_bumps() {
    let f = fixture();
    let e = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![e.clone()]);
    f.cache.x509_svid(&e).await.unwrap();
    let mut rx = f.cache.changes();
    rx.borrow_and_update();

    assert!(!f.cache.set_entries(vec![e.clone()]), "same set: no change");
    assert!(!rx.has_changed().unwrap());
    assert_eq!(f.cache.cached_x509_count(), 1);

    assert!(f.cache.set_entries(vec![]));
    assert!(rx.has_changed().unwrap());
    assert_eq!(f.cache.cached_x509_count(), 0);
    assert_eq!(
        f.cache.x509_svid(&e).await.unwrap_err(),
        AgentError::Denied(format!("entry {} is not assigned", e.id.as_str()))
    );
}

#[tokio::test]
async fn revision_change_reissues_on_next_request() {
    let f = fixture();
    let e1 = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![e1.clone()]);
    let first = f.cache.x509_svid(&e1).await.unwrap();
    let e2 = entry("web", &["unix:uid:1"], 1, 2);
    assert!(f.cache.upsert_entries(vec![e2.clone()], &[]));
    assert_eq!(f.cache.cached_x509_count(), 0);
    assert_eq!(x509_calls(&f), 1, "re-issue is lazy");
    // Even a caller holding the old entry gets the current revision's SVID.
    let second = f.cache.x509_svid(&e1).await.unwrap();
    assert_eq!(x509_calls(&f), 2);
    assert_ne!(first.chain_der[0], second.chain_der[0]);
}

#[tokio::test]
async fn upserts_deletes_and_known_revisions() {
    let f = fixture();
    let a = entry("a", &["unix:uid:1"], 1, 3);
    let b = entry("b", &["unix:uid:1"], 2, 7);
    f.cache.set_entries(vec![a.clone()]);
    f.cache
        .upsert_entries(vec![b.clone()], &[a.id.as_str().to_owned()]);
    let want: HashMap<String, u64> = [(b.id.as_str().to_owned(), 7)].into();
    assert_eq!(f.cache.known_revisions(), want);
    assert!(!f.cache.upsert_entries(vec![], &["unknown".to_owned()]));
}

#[tokio::test]
async fn rotation_replaces_the_svid_after_half_life() {
    let f = fixture();
    let mut e = entry("web", &["unix:uid:1"], 1, 1);
    e.x509_ttl_secs = Some(4);
    f.cache.set_entries(vec![e.clone()]);
    let old = f.cache.x509_svid(&e).await.unwrap();
    let mut rx = f.cache.changes();
    rx.borrow_and_update();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(Arc::clone(&f.cache).run_rotation(stop_rx));

    // Past the latest possible renewal time (½ + 10% of 4 s), before expiry.
    f.clock.advance(3);
    // The loop sleeps on tokio's clock; wake it as a wall-clock jump would
    // at its next re-plan.
    f.cache.reschedule.notify_one();
    tokio::time::timeout(Duration::from_secs(30), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let new = f.cache.x509_svid(&e).await.unwrap();
    assert_eq!(x509_calls(&f), 2);
    assert_ne!(old.chain_der[0], new.chain_der[0]);
    assert_ne!(old.key_pkcs8.expose(), new.key_pkcs8.expose(), "new key");
    assert!(new.expires_at > old.expires_at);

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn rotation_loop_survives_failures_and_retries() {
    let f = fixture();
    let mut e = entry("web", &["unix:uid:1"], 1, 1);
    e.x509_ttl_secs = Some(100);
    f.cache.set_entries(vec![e.clone()]);
    let old = f.cache.x509_svid(&e).await.unwrap();
    f.issuer.available.store(false, Ordering::SeqCst);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(Arc::clone(&f.cache).run_rotation(stop_rx));

    f.clock.advance(70);
    for _ in 0..3 {
        f.cache.reschedule.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(x509_calls(&f) >= 2, "renewal was attempted");
    assert!(!task.is_finished(), "a failure does not end the loop");
    assert!(Arc::ptr_eq(&f.cache.x509_svid(&e).await.unwrap(), &old));

    let mut rx = f.cache.changes();
    rx.borrow_and_update();
    f.issuer.available.store(true, Ordering::SeqCst);
    f.cache.reschedule.notify_one();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(!Arc::ptr_eq(&f.cache.x509_svid(&e).await.unwrap(), &old));

    drop(stop_tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn outage_serves_cached_until_expiry() {
    let f = fixture();
    let mut e = entry("web", &["unix:uid:1"], 1, 1);
    e.x509_ttl_secs = Some(100);
    let other = entry("new", &["unix:uid:2"], 2, 1);
    f.cache.set_entries(vec![e.clone(), other.clone()]);
    let cached = f.cache.x509_svid(&e).await.unwrap();
    f.issuer.available.store(false, Ordering::SeqCst);

    assert!(matches!(
        f.cache.x509_svid(&other).await,
        Err(AgentError::ServerUnavailable(_))
    ));
    // Due for renewal, the server is down: the pass fails, the SVID stays.
    f.clock.advance(70);
    assert!(f.cache.rotate_once().await, "renewal failed");
    let served = f.cache.x509_svid(&e).await.unwrap();
    assert!(Arc::ptr_eq(&served, &cached));

    // Once expired it is dropped, and re-issuance reports the outage.
    f.clock.advance(40);
    let mut rx = f.cache.changes();
    rx.borrow_and_update();
    assert!(!f.cache.rotate_once().await, "nothing left to renew");
    assert!(rx.has_changed().unwrap());
    assert_eq!(f.cache.cached_x509_count(), 0);
    assert_eq!(
        f.cache.x509_svid(&e).await.unwrap_err(),
        AgentError::ServerUnavailable("test outage".into())
    );
}

#[tokio::test]
async fn jwt_is_cached_per_audience_list_with_exact_aud() {
    let f = fixture();
    let e = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![e.clone()]);
    let first = f
        .cache
        .jwt_svid(&e, &strings(&["b", "a", "b"]))
        .await
        .unwrap();
    assert_eq!(jwt_calls(&f), 1);
    assert_eq!(*f.issuer.last_aud.lock().unwrap(), strings(&["b", "a"]));
    let bundle = f.issuer.authority.lock().unwrap().bundle().jwt_bundle();
    let token = std::str::from_utf8(first.token.expose()).unwrap();
    let claims = validate_jwt_svid(token, "a", &bundle, f.clock.now()).unwrap();
    assert_eq!(claims.audiences, strings(&["b", "a"]));

    // The same list hits the cache; the same set in another order is a
    // different request, because `aud` must be exactly what was asked.
    let again = f.cache.jwt_svid(&e, &strings(&["b", "a"])).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(jwt_calls(&f), 1);
    let reordered = f.cache.jwt_svid(&e, &strings(&["a", "b"])).await.unwrap();
    assert_eq!(jwt_calls(&f), 2);
    let token = std::str::from_utf8(reordered.token.expose()).unwrap();
    let claims = validate_jwt_svid(token, "a", &bundle, f.clock.now()).unwrap();
    assert_eq!(claims.audiences, strings(&["a", "b"]));
    f.cache.jwt_svid(&e, &strings(&["c"])).await.unwrap();
    assert_eq!(jwt_calls(&f), 3);
    assert_eq!(f.cache.cached_jwt_count(), 3);
    assert!(matches!(
        f.cache.jwt_svid(&e, &[]).await,
        Err(AgentError::Invalid(_))
    ));
    assert!(matches!(
        f.cache.jwt_svid(&e, &strings(&["a", ""])).await,
        Err(AgentError::Invalid(_))
    ));
}

#[tokio::test]
async fn jwt_past_half_life_serves_cached_and_refreshes_once() {
    let f = fixture();
    let e = entry("web", &["unix:uid:1"], 1, 1); // JWT TTL 10 s
    f.cache.set_entries(vec![e.clone()]);
    let aud = strings(&["svc"]);
    let first = f.cache.jwt_svid(&e, &aud).await.unwrap();
    f.clock.advance(6);
    for _ in 0..5 {
        let got = f.cache.jwt_svid(&e, &aud).await.unwrap();
        assert!(Arc::ptr_eq(&got, &first), "stale-but-valid is served");
    }
    for _ in 0..100 {
        if jwt_calls(&f) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(jwt_calls(&f), 2, "one background refresh");
    let next = f.cache.jwt_svid(&e, &aud).await.unwrap();
    assert_ne!(next.token.expose(), first.token.expose());
    assert_eq!(jwt_calls(&f), 2);

    // Expired: minted synchronously.
    f.clock.advance(20);
    f.cache.jwt_svid(&e, &aud).await.unwrap();
    assert_eq!(jwt_calls(&f), 3);
}

#[tokio::test]
async fn jwt_cache_is_bounded_and_follows_entries() {
    let f = fixture_with(Duration::ZERO, 3);
    let e = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![e.clone()]);
    for aud in ["a", "b", "c", "d", "e"] {
        f.cache.jwt_svid(&e, &strings(&[aud])).await.unwrap();
    }
    assert_eq!(f.cache.cached_jwt_count(), 3);
    f.cache
        .set_entries(vec![entry("other", &["unix:uid:1"], 2, 1)]);
    assert_eq!(f.cache.cached_jwt_count(), 0);
}

#[tokio::test]
async fn bundle_changes_are_detected_by_content() {
    let f = fixture();
    let mut rx = f.cache.changes();
    rx.borrow_and_update();
    assert!(f.cache.bundle().is_none());
    let bundle = f.issuer.authority.lock().unwrap().bundle();
    assert!(f.cache.set_bundle(bundle.clone()));
    assert!(rx.has_changed().unwrap());
    rx.borrow_and_update();

    let mut hint_only = bundle.clone();
    hint_only.refresh_hint_secs += 1;
    assert!(!f.cache.set_bundle(hint_only));
    assert!(!rx.has_changed().unwrap());

    let mut next = bundle.clone();
    next.sequence += 1;
    assert!(f.cache.set_bundle(next));
    assert!(rx.has_changed().unwrap());
    assert_eq!(f.cache.bundle().unwrap().sequence, bundle.sequence + 1);
}

#[tokio::test]
async fn debug_output_shows_no_key_or_token() {
    let f = fixture();
    let e = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![e.clone()]);
    let x = f.cache.x509_svid(&e).await.unwrap();
    let j = f.cache.jwt_svid(&e, &strings(&["a"])).await.unwrap();
    let token = std::str::from_utf8(j.token.expose()).unwrap().to_owned();
    let key_hex = hex::encode(x.key_pkcs8.expose());
    for text in [
        format!("{x:?}"),
        format!("{x:#?}"),
        format!("{j:?}"),
        format!("{:?}", f.cache),
    ] {
        assert!(!text.contains(&token), "{text}");
        assert!(!text.contains(&key_hex), "{text}");
        assert!(!text.contains("key_pkcs8"), "{text}");
        assert!(!text.contains(&format!("{:?}", x.key_pkcs8.expose())));
    }
}
