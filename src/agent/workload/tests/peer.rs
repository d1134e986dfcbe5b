//! The real attestor behind the socket: every connection carries its
//! caller's credentials and pidfd to the handlers, and repeat calls are
//! answered from a cached attestation checked in place.

use super::fixture::{Harness, with_header};
use crate::agent::workload::Attest;
use crate::api::workload as wpb;
use crate::attest::{AttestConfig, AttestError, Attestor, PeerCred, PeerPin};
use crate::id::Selector;
use crate::registry::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::unix::UCred;

/// The real attestor, counting which path answered and what it was given.
struct Recording {
    inner: Attestor,
    full: AtomicUsize,
    cached: AtomicUsize,
    seen: Mutex<Vec<(i32, bool)>>,
}

impl Recording {
    fn record(&self, cred: &UCred, pin: &PeerPin) {
        let pid = cred.pid().unwrap_or(0);
        let pinned = matches!(pin, PeerPin::Pidfd(_));
        self.seen.lock().unwrap().push((pid, pinned));
    }
}

impl Attest for Recording {
    fn attest(&self, cred: &UCred, pin: &PeerPin) -> Result<Arc<[Selector]>, AttestError> {
        self.record(cred, pin);
        self.full.fetch_add(1, Ordering::SeqCst);
        self.inner.attest(&PeerCred::try_from(*cred)?, pin)
    }

    fn attest_cached(&self, cred: &UCred, pin: &PeerPin) -> Option<Arc<[Selector]>> {
        self.record(cred, pin);
        let hit = self
            .inner
            .attest_cached(&PeerCred::try_from(*cred).ok()?, pin)?;
        self.cached.fetch_add(1, Ordering::SeqCst);
        Some(hit)
    }
}

/// An entry for this test process's own uid.
fn own_entry() -> Entry {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    let mut e = super::fixture::entry(1, "/me", "");
    e.selectors = vec![Selector::parse(&format!("unix:uid:{uid}")).unwrap()];
    e
}

fn jwt_request() -> tonic::Request<wpb::JwtsvidRequest> {
    with_header(wpb::JwtsvidRequest {
        audience: vec!["aud".into()],
        spiffe_id: String::new(),
    })
}

#[tokio::test]
async fn each_call_is_attested_from_the_connections_pidfd_and_repeats_hit_the_cache() {
    let attest = Arc::new(Recording {
        inner: Attestor::new(AttestConfig::default()),
        full: AtomicUsize::new(0),
        cached: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let h = Harness::start_attested(vec![own_entry()], attest.clone()).await;
    let mut c = h.raw_client().await;
    for _ in 0..3 {
        let r = c.fetch_jwtsvid(jwt_request()).await.unwrap().into_inner();
        assert_eq!(r.svids[0].spiffe_id, "spiffe://example.org/me");
    }
    // A second connection from the same process hits the same entry.
    let mut other = h.raw_client().await;
    other.fetch_jwtsvid(jwt_request()).await.unwrap();

    // The first call attested in full; every later one was a cached hit.
    assert_eq!(attest.full.load(Ordering::SeqCst), 1);
    assert_eq!(attest.cached.load(Ordering::SeqCst), 3);
    let me = i32::try_from(std::process::id()).unwrap();
    let seen = attest.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|&s| s == (me, true)), "{seen:?}");
}
