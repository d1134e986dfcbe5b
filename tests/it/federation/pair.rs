//! Two sigil servers, `example.org` (A) and `other.org` (B), each serving its bundle on
//! an `https_spiffe` bundle endpoint and federating with the other, with an agent each.

use super::fixture::*;
use crate::agent::client;
use crate::common::*;
use futures::StreamExt;
use sigil::api::pb;
use sigil::clock::{Clock, ManualClock, SystemClock};
use sigil::config::{BundleEndpointConfig, EndpointProfile, FederationConfig};
use sigil::federation::{FetchError, Source};
use std::sync::Arc;

const A: &str = "example.org";
const B: &str = "other.org";
const CLIENT: &str = "spiffe://example.org/client";
const SERVER: &str = "spiffe://other.org/server";
/// How long B publishes a new CA before it signs with it.
const B_PUBLISH_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

struct Pair {
    _tmp: tempfile::TempDir,
    a: Side,
    b: Side,
    /// A's clock, moved to its next fetch of B's bundle when a test needs one.
    a_clock: Arc<ManualClock>,
    agent_a: TestAgent,
    agent_b: TestAgent,
}

impl Pair {
    /// Both servers running and holding each other's bundle as fetched from its
    /// endpoint, an agent each, and an entry for this process in each trust domain
    /// that federates with the other.
    async fn start() -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let (a_dir, b_dir) = (sub(tmp.path(), "a"), sub(tmp.path(), "b"));
        let (a_boot, b_boot) = (sub(tmp.path(), "a.json"), sub(tmp.path(), "b.json"));
        let a_clock = behind_the_wall();
        initialize_at(&a_dir, A, &a_boot, a_clock.clone()).await;
        initialize(&b_dir, B, &b_boot).await;
        let ((a_grpc, _), (a_ep, a_ep_addr)) = (listener().await, listener().await);
        let ((b_grpc, _), (b_ep, b_ep_addr)) = (listener().await, listener().await);
        let federation = |listen, peer, endpoint, boot: &std::path::Path| FederationConfig {
            bundle_endpoint: Some(BundleEndpointConfig {
                listen,
                profile: EndpointProfile::HttpsSpiffe,
            }),
            trust_domains: vec![spiffe_relationship(peer, endpoint, boot)],
        };
        let mut a_cfg = config_for(&a_dir, A);
        a_cfg.federation = federation(a_ep_addr, B, b_ep_addr, &b_boot);
        let mut b_cfg = config_for(&b_dir, B);
        b_cfg.federation = federation(b_ep_addr, A, a_ep_addr, &a_boot);
        // B's rotations wait this long between publishing a CA and signing with it:
        // long enough for A to fetch and push it on a loaded machine, short enough
        // for a test to watch B's own rotation task activate it.
        b_cfg.rotation.publish_window = B_PUBLISH_WINDOW;
        b_cfg.rotation.validate().unwrap();

        // A first: its first fetch finds B down and is retried a minute later on A's
        // clock. B, started next, fetches A's bundle at once.
        let a = Side::start(a_cfg, a_clock.clone(), a_grpc, a_ep).await;
        settled(a.inner(), B).await;
        let b = Side::start(b_cfg, Arc::new(SystemClock), b_grpc, b_ep).await;
        let from_a = settled(b.inner(), A).await;
        assert!(from_a.last_success.is_some(), "{from_a:?}");
        let from_b = fetch_again(a.inner(), &a_clock, B).await;
        assert!(from_b.last_success.is_some(), "{from_b:?}");
        for (side, peer) in [(&a, B), (&b, A)] {
            let kept = side.inner().federation().bundle(&td(peer)).unwrap();
            assert_eq!(kept.source, Source::Endpoint, "{peer}");
        }

        let agent_a = TestAgent::start(&a.server, &sub(tmp.path(), "agent-a"), "node-a").await;
        let agent_b = TestAgent::start(&b.server, &sub(tmp.path(), "agent-b"), "node-b").await;
        create_entry(&a.server, workload_entry(CLIENT, &agent_a.id, &[B])).await;
        let mut server_entry = workload_entry(SERVER, &agent_b.id, &[A]);
        server_entry.hint = "server".into();
        create_entry(&b.server, server_entry).await;
        Pair {
            _tmp: tmp,
            a,
            b,
            a_clock,
            agent_a,
            agent_b,
        }
    }

    async fn stop(self) {
        self.agent_a.stop().await;
        self.agent_b.stop().await;
        self.a.server.stop().await;
        self.b.server.stop().await;
    }
}

/// The caller's X.509 context once it holds `peer`'s bundle.
async fn context_with(agent: &TestAgent, peer: &str) -> spiffe::X509Context {
    let c = client(agent).await;
    eventually(10, || {
        let c = c.clone();
        async move {
            c.fetch_x509_context()
                .await
                .ok()
                .filter(|ctx| !roots_for(ctx, peer).is_empty())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_in_two_trust_domains_authenticate_each_other_with_their_workload_apis() {
    let pair = Pair::start().await;
    let ctx_a = context_with(&pair.agent_a, B).await;
    let ctx_b = context_with(&pair.agent_b, A).await;
    let b_ca = pair.b.inner().authority().unwrap().ca_cert_der().to_vec();
    let a_ca = pair.a.inner().authority().unwrap().ca_cert_der().to_vec();
    assert_eq!(roots_for(&ctx_a, B), std::slice::from_ref(&b_ca));
    assert_eq!(roots_for(&ctx_b, A), [a_ca]);

    let (seen_by_b, seen_by_a) = mtls(&ctx_a, &ctx_b).await.unwrap();
    assert_eq!((seen_by_b.as_str(), seen_by_a.as_str()), (CLIENT, SERVER));

    // Every bundle RPC hands out both trust domains, keyed spiffe://<td>.
    let ca = client(&pair.agent_a).await;
    let x509 = ca.fetch_x509_bundles().await.unwrap();
    let other = spiffe::TrustDomain::new(B).unwrap();
    assert_eq!(ders(x509.get(&other).unwrap().authorities()), [b_ca]);
    assert_eq!(x509.len(), 2);
    let jwt = ca.fetch_jwt_bundles().await.unwrap();
    assert_eq!(jwt.len(), 2);
    assert!(jwt.get(&other).is_some());

    // A JWT-SVID from B validates at A's agent.
    let cb = client(&pair.agent_b).await;
    let token = cb.fetch_jwt_token(["a-service"], None).await.unwrap();
    let validated = ca.validate_jwt_token("a-service", &token).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), SERVER);
    let wrong = ca.validate_jwt_token("another", &token).await;
    assert!(
        wrong.as_ref().is_err_and(|e| e.is_invalid_argument()),
        "{wrong:?}"
    );

    // Operator status reports B's endpoint: fetched, nothing failing, next at the hint.
    let st = pair
        .a
        .server
        .clients()
        .await
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let [f] = st.federation.as_slice() else {
        panic!("{:?}", st.federation);
    };
    assert_eq!(f.trust_domain, B);
    assert_eq!(f.profile, "https_spiffe");
    assert_eq!(f.url, format!("https://{}", pair.b.endpoint));
    assert_eq!(f.failures, 0);
    assert!(
        f.last_error.is_empty() || f.last_error_at < f.last_success,
        "{f:?}"
    );
    // B advertises a third of its publish window as its refresh hint, here raised to
    // the one-minute floor.
    assert_eq!(f.next_attempt, f.last_success + 60, "B's refresh hint");

    // Sealed, B has no SVID to present: its endpoint refuses the handshake, and A
    // keeps B's bundle.
    let kept = pair.a.inner().federation().bundle(&td(B)).unwrap();
    pair.b
        .server
        .clients()
        .await
        .operator
        .seal(pb::SealRequest {})
        .await
        .unwrap();
    let st = fetch_again(pair.a.inner(), &pair.a_clock, B).await;
    assert!(
        matches!(&st.last_error, Some((_, FetchError::Tls { .. }))),
        "{st:?}"
    );
    assert_eq!(pair.a.inner().federation().bundle(&td(B)), Some(kept));
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ca_of_b_reaches_a_s_workloads_before_b_signs_with_it() {
    let pair = Pair::start().await;
    let ca = client(&pair.agent_a).await;
    let mut bundles = ca.stream_x509_bundles().await.unwrap();
    let other = spiffe::TrustDomain::new(B).unwrap();
    let first = bundles.next().await.unwrap().unwrap();
    let ca1 = pair.b.inner().authority().unwrap().ca_cert_der().to_vec();
    assert_eq!(
        ders(first.get(&other).unwrap().authorities()),
        std::slice::from_ref(&ca1)
    );

    // An operator of B rotates its CA the safe way: the new CA is published in B's
    // bundle at once, and B's rotation task activates it once it has been
    // published for B's publish window.
    let mut ops = pair.b.server.clients().await;
    let rotated = ops
        .operator
        .rotate_signing_key(pb::RotateSigningKeyRequest {
            kind: pb::SigningKeyKind::X509Ca as i32,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    let changes: Vec<&str> = rotated.changes.iter().map(|c| c.change.as_str()).collect();
    assert_eq!(changes, ["prepared", "activation-requested"], "{rotated:?}");
    let b_bundle = pair.b.inner().authority().unwrap().bundle();
    let [old, ca2] = b_bundle.x509_authorities.as_slice() else {
        panic!("{b_bundle:?}");
    };
    assert_eq!(old, &ca1);
    let ca2 = ca2.clone();
    let signs_with = |side: &Side| side.inner().authority().unwrap().ca_cert_der().to_vec();
    assert_eq!(signs_with(&pair.b), ca1, "B still signs with its first CA");

    // A fetches at B's refresh hint; the new CA reaches A's open stream by push, while
    // B still signs with the first.
    let before = status(pair.a.inner(), B);
    let fetched = fetch_again(pair.a.inner(), &pair.a_clock, B).await;
    assert!(fetched.last_success > before.last_success, "{fetched:?}");
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let set = bundles.next().await.unwrap().unwrap();
            let roots = ders(set.get(&other).unwrap().authorities());
            if roots.len() == 2 {
                return roots;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pushed, [ca1.clone(), ca2.clone()]);
    assert_eq!(
        signs_with(&pair.b),
        ca1,
        "B has not signed with the new CA yet"
    );

    // Only once its publish window has passed does B's own task make the new CA sign.
    eventually(B_PUBLISH_WINDOW.as_secs() + 20, || async {
        (signs_with(&pair.b) == ca2).then_some(())
    })
    .await;
    let last = status(pair.a.inner(), B).last_success;

    // B's workload gets an SVID from the new CA (its entry changed, so it is
    // re-issued) ...
    let mut c = pair.b.server.clients().await;
    let mut entry = list_entries(&mut c).await.entries.remove(0);
    entry.hint = "server-2".into();
    c.entries
        .update(pb::UpdateEntryRequest {
            entry: Some(entry),
            expected_revision: 0,
        })
        .await
        .unwrap();
    let cb = client(&pair.agent_b).await;
    let ctx_b = eventually(20, || {
        let cb = cb.clone();
        let ca2 = ca2.clone();
        async move {
            let ctx = cb.fetch_x509_context().await.ok()?;
            let leaf = ctx.default_svid()?.cert_chain()[0].as_bytes().to_vec();
            sigil::authority::verify_x509_svid(&leaf, &[], &[ca2], sigil::clock::now())
                .ok()
                .map(|_| ctx)
        }
    })
    .await;

    // ... and A's workload, with nothing fetched since, accepts it.
    let ctx_a = ca.fetch_x509_context().await.unwrap();
    let (seen_by_b, seen_by_a) = mtls(&ctx_a, &ctx_b).await.unwrap();
    assert_eq!((seen_by_b.as_str(), seen_by_a.as_str()), (CLIENT, SERVER));
    assert_eq!(status(pair.a.inner(), B).last_success, last);

    // A's next fetch authenticates B's endpoint, which now presents an SVID from the
    // new CA, with the bundle it fetched last: the bootstrap bundle knows only the
    // first CA.
    let again = fetch_again(pair.a.inner(), &pair.a_clock, B).await;
    assert!(again.last_success > last, "{again:?}");
    assert_eq!(again.failures, 0);
    assert!(pair.a_clock.now() > last.unwrap());
    pair.stop().await;
}
