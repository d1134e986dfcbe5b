//! Taints pushed by the server: what a tainted key signed is re-issued or forgotten at
//! once, and nothing else is touched.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::super::tests::{Fixture, entry, fixture, jwt_calls, x509_calls};
use crate::agent::IdentityProvider;
use crate::authority::{KeyKind, KeyState, RotationPolicy, jwt_key_id};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use std::sync::Arc;

/// The id of the active key of `kind` in the fixture's authority.
fn active(f: &Fixture, kind: KeyKind) -> String {
    f.issuer
        .authority
        .lock()
        .unwrap()
        .keys()
        .into_iter()
        .find(|k| k.kind == kind && k.state == KeyState::Active)
        .unwrap()
        .id
}

/// The fixture's authority after a forced rotation of `kind` and a taint of the key
/// that was active: what the server does on `rotate-ca --force` then `taint-ca`.
fn rotate_and_taint(f: &Fixture, kind: KeyKind) -> (String, String) {
    let old = active(f, kind);
    let (now, policy, rng) = (
        f.clock.now(),
        RotationPolicy::default(),
        SystemRandom::new(),
    );
    {
        let mut a = f.issuer.authority.lock().unwrap();
        a.rotate(kind, true, now, &policy, &rng).unwrap();
        a.taint(kind, &old, now).unwrap();
    }
    (old, active(f, kind))
}

fn issuer_of(svid: &crate::agent::X509Identity) -> String {
    crate::authority::signing_ca_id(&svid.chain_der[0]).unwrap()
}

#[tokio::test]
async fn svids_a_tainted_ca_signed_are_reissued_at_once() {
    let f = fixture();
    let (web, db) = (
        entry("web", &["unix:uid:1"], 1, 1),
        entry("db", &["unix:uid:2"], 2, 1),
    );
    f.cache.set_entries(vec![web.clone(), db.clone()]);
    let before = [
        f.cache.x509_svid(&web).await.unwrap(),
        f.cache.x509_svid(&db).await.unwrap(),
    ];
    let (old, new) = rotate_and_taint(&f, KeyKind::X509Ca);
    assert!(before.iter().all(|s| issuer_of(s) == old));
    let mut changes = f.cache.changes();
    changes.borrow_and_update();

    // Hours before half-life: only the taint makes them due.
    assert_eq!(f.cache.set_taints(vec![old.clone()], Vec::new()), 2);
    assert!(!f.cache.rotate_once().await, "no renewal failed");
    assert_eq!(x509_calls(&f), 4);
    for e in [&web, &db] {
        let now = f.cache.x509_svid(e).await.unwrap();
        assert_eq!(issuer_of(&now), new, "{}", e.spiffe_id);
    }
    assert!(changes.has_changed().unwrap(), "open streams are told");

    // Hearing the same taints again (a reconnect) re-issues nothing.
    assert_eq!(f.cache.set_taints(vec![old], Vec::new()), 0);
    assert!(!f.cache.rotate_once().await);
    assert_eq!(x509_calls(&f), 4);
}

#[tokio::test]
async fn a_taint_of_another_ca_touches_nothing() {
    let f = fixture();
    let web = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![web.clone()]);
    let first = f.cache.x509_svid(&web).await.unwrap();
    f.cache.jwt_svid(&web, &["a".into()]).await.unwrap();
    assert_eq!(
        f.cache
            .set_taints(vec!["00aa".into()], vec!["other".into()]),
        0
    );
    f.cache.rotate_once().await;
    assert!(Arc::ptr_eq(&first, &f.cache.x509_svid(&web).await.unwrap()));
    assert_eq!(f.cache.cached_jwt_count(), 1);
    assert_eq!((x509_calls(&f), jwt_calls(&f)), (1, 1));
}

#[tokio::test]
async fn an_svid_a_tainted_ca_signs_after_the_taint_is_due_at_once() {
    // The server signed with the CA before it heard of the taint; the agent
    // heard first. The SVID is served (it is valid) but renewed at once.
    let f = fixture();
    let web = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![web.clone()]);
    let ca = active(&f, KeyKind::X509Ca);
    f.cache.set_taints(vec![ca.clone()], Vec::new());
    let svid = f.cache.x509_svid(&web).await.unwrap();
    assert_eq!(issuer_of(&svid), ca);
    let states = f.cache.rotation_states();
    assert_eq!(states[0].renew_at, svid.issued_at, "due at once");

    // Once the server has replaced it, the renewal brings an untainted one.
    let policy = RotationPolicy::default();
    let now = f.clock.now();
    let rng = SystemRandom::new();
    {
        let mut a = f.issuer.authority.lock().unwrap();
        a.taint(KeyKind::X509Ca, &ca, now).unwrap();
        a.advance(now, &policy, &rng).unwrap();
    }
    f.cache.rotate_once().await;
    let renewed = f.cache.x509_svid(&web).await.unwrap();
    assert_ne!(issuer_of(&renewed), ca);
    assert!(f.cache.rotation_states()[0].renew_at > renewed.issued_at);
}

#[tokio::test]
async fn jwt_svids_a_tainted_key_signed_are_forgotten() {
    let f = fixture();
    let web = entry("web", &["unix:uid:1"], 1, 1);
    f.cache.set_entries(vec![web.clone()]);
    let aud = vec!["a".to_owned()];
    let first = f.cache.jwt_svid(&web, &aud).await.unwrap();
    let (old, new) = rotate_and_taint(&f, KeyKind::Jwt);
    assert_eq!(jwt_key_id(first.token.expose()), Some(old.clone()));

    f.cache.set_taints(Vec::new(), vec![old]);
    assert_eq!(f.cache.cached_jwt_count(), 0);
    let next = f.cache.jwt_svid(&web, &aud).await.unwrap();
    assert_eq!(jwt_key_id(next.token.expose()), Some(new));
    assert_eq!(jwt_calls(&f), 2);
}

#[test]
fn key_ids_are_read_from_the_credentials() {
    assert_eq!(crate::authority::signing_ca_id(b"not a certificate"), None);
    assert_eq!(jwt_key_id(b"e30.e30.sig"), None, "a header without kid");
    assert_eq!(
        jwt_key_id(b"!!.e30.sig"),
        None,
        "a header that is not base64url"
    );
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1"}"#);
    assert_eq!(
        jwt_key_id(format!("{header}.e30.sig").as_bytes()),
        Some("k1".to_owned())
    );
    let oversized = format!("{header}.{}.sig", "A".repeat(16 * 1024));
    assert_eq!(
        jwt_key_id(oversized.as_bytes()),
        None,
        "over the size limit"
    );
}
