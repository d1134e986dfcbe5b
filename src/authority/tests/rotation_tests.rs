//! Rotation applied to a real authority under [`short_policy`]: each phase of a rotation,
//! forced rotation, taint, the operator's errors, and resuming after a crash in any phase.

use ring::rand::SystemRandom;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

use KeyChange::{Activated, ActivationRequested, Dropped, Prepared, Retired, Tainted};
use KeyKind::{Jwt, X509Ca};

/// An authority whose first keys are created at `s(0)` and live 60 s.
pub(super) fn short_authority() -> Authority {
    Authority::generate(&td(), s(0), Duration::from_secs(60), &SystemRandom::new()).unwrap()
}

pub(super) fn advance(a: &mut Authority, now: u64) -> Advance {
    a.advance(s(now), &short_policy(), &SystemRandom::new())
        .unwrap()
}

/// The (kind, change) of each event, ids left out.
fn changes(events: &[KeyEvent]) -> Vec<(KeyKind, KeyChange)> {
    events.iter().map(|e| (e.kind, e.change)).collect()
}

/// The id of the active key of `kind`.
pub(super) fn active_id(a: &Authority, kind: KeyKind) -> String {
    a.keys()
        .into_iter()
        .find(|k| k.kind == kind && k.state == KeyState::Active)
        .unwrap()
        .id
}

pub(super) fn ids(a: &Authority, kind: KeyKind) -> Vec<String> {
    a.keys()
        .into_iter()
        .filter(|k| k.kind == kind)
        .map(|k| k.id)
        .collect()
}

/// An X.509-SVID issued at `now`, and the id of the CA key that signed it (the leaf's
/// AuthorityKeyIdentifier).
pub(super) fn issue(a: &Authority, now: SystemTime) -> Result<(X509Svid, String), AuthorityError> {
    let wid = id("spiffe://example.org/w");
    let (_key, csr) = generate_key_and_csr(&wid).unwrap();
    let svid = a.sign_x509_svid(&csr, &wid, Duration::from_secs(10), &[], now)?;
    let (_, cert) = X509Certificate::from_der(&svid.leaf_der).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .unwrap();
    let issuer = hex::encode(aki.0);
    Ok((svid, issuer))
}

/// The `kid` of a JWT-SVID minted at `now`.
fn mint_kid(a: &Authority, now: SystemTime) -> String {
    let svid = a
        .mint_jwt_svid(&id("spiffe://example.org/w"), &["a".into()], HOUR, now)
        .unwrap();
    let header = svid.token_str().split('.').next().unwrap().to_owned();
    use base64::Engine as _;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[test]
fn a_scheduled_rotation_through_every_phase() {
    let mut a = short_authority();
    let (ca_a, jwt_a) = (active_id(&a, X509Ca), active_id(&a, Jwt));

    let step = advance(&mut a, 29);
    assert_eq!((step.events, step.next_deadline), (vec![], Some(s(30))));

    // Half life: successors are prepared and published; the active keys still sign.
    let step = advance(&mut a, 30);
    assert_eq!(changes(&step.events), [(X509Ca, Prepared), (Jwt, Prepared)]);
    assert!(step.bundle_changed());
    assert_eq!(a.bundle().sequence, 3);
    assert_eq!(a.bundle().x509_authorities.len(), 2);
    assert_eq!(a.bundle().jwt_authorities.len(), 2);
    assert_eq!(issue(&a, s(30)).unwrap().1, ca_a);
    assert_eq!(mint_kid(&a, s(30)), jwt_a);
    let published = a.bundle();

    // A sixth left: the successors sign; the bundle does not change at all.
    let step = advance(&mut a, 50);
    let (ca_b, jwt_b) = (active_id(&a, X509Ca), active_id(&a, Jwt));
    assert_eq!(
        step.events,
        [
            KeyEvent {
                kind: X509Ca,
                id: ca_b.clone(),
                change: Activated { forced: false }
            },
            KeyEvent {
                kind: X509Ca,
                id: ca_a.clone(),
                change: Retired
            },
            KeyEvent {
                kind: Jwt,
                id: jwt_b.clone(),
                change: Activated { forced: false }
            },
            KeyEvent {
                kind: Jwt,
                id: jwt_a.clone(),
                change: Retired
            },
        ]
    );
    assert!(!step.bundle_changed());
    assert_eq!(a.bundle(), published);
    assert_eq!(issue(&a, s(50)).unwrap().1, ca_b);
    assert_eq!(mint_kid(&a, s(50)), jwt_b);

    // The old keys stay while what they signed is valid; at the same time the new keys
    // reach half their life, so the bundle briefly holds old, active and prepared keys.
    let step = advance(&mut a, 60);
    assert_eq!(changes(&step.events), [(X509Ca, Prepared), (Jwt, Prepared)]);
    assert_eq!(a.bundle().x509_authorities.len(), 3);
    let step = advance(&mut a, 61);
    assert_eq!(changes(&step.events), [(X509Ca, Dropped), (Jwt, Dropped)]);
    assert_eq!(ids(&a, X509Ca)[0], ca_b);
    assert_eq!(ids(&a, Jwt)[0], jwt_b);
    assert_eq!(ids(&a, X509Ca).len(), 2);
    assert_eq!(a.bundle().sequence, 7);
}

#[test]
fn an_old_key_holds_no_private_key() {
    let mut a = short_authority();
    advance(&mut a, 30);
    advance(&mut a, 50);
    let doc: serde_json::Value = serde_json::from_slice(a.to_sealed_bytes().expose()).unwrap();
    for kind in ["ca_keys", "jwt_keys"] {
        let states: Vec<(&str, bool)> = doc[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["life"]["state"].as_str().unwrap(),
                    k.get("pkcs8").is_some(),
                )
            })
            .collect();
        assert_eq!(states, [("old", false), ("active", true)], "{kind}");
    }
}

#[test]
fn rotate_without_force_waits_for_the_publish_window() {
    let mut a = short_authority();
    let events = a
        .rotate(X509Ca, false, s(10), &short_policy(), &SystemRandom::new())
        .unwrap();
    assert_eq!(
        changes(&events),
        [(X509Ca, Prepared), (X509Ca, ActivationRequested)]
    );
    let next = events[0].id.clone();
    let early = Action::Activate {
        kind: X509Ca,
        id: next.clone(),
        forced: false,
    };
    let err = a
        .apply(&early, s(14), &short_policy(), &SystemRandom::new())
        .unwrap_err();
    assert!(
        matches!(&err, AuthorityError::PublishWindowOpen { kind: X509Ca, id } if *id == next),
        "{err:?}"
    );
    assert_eq!(advance(&mut a, 14).next_deadline, Some(s(15)));
    assert_eq!(
        changes(&advance(&mut a, 15).events),
        [(X509Ca, Activated { forced: false }), (X509Ca, Retired)]
    );
    assert_eq!(active_id(&a, X509Ca), next);

    // A JWT key waits one JWT-SVID lifetime, and a second request reuses the prepared key.
    a.rotate(Jwt, false, s(20), &short_policy(), &SystemRandom::new())
        .unwrap();
    let again = a
        .rotate(Jwt, false, s(21), &short_policy(), &SystemRandom::new())
        .unwrap();
    assert_eq!(changes(&again), [(Jwt, ActivationRequested)]);
    assert_eq!(advance(&mut a, 29).events, []);
    assert_eq!(
        changes(&advance(&mut a, 30).events),
        [(Jwt, Activated { forced: false }), (Jwt, Retired)]
    );
}

#[test]
fn forced_rotation_signs_with_a_new_key_at_once() {
    let mut a = short_authority();
    let first = active_id(&a, X509Ca);
    advance(&mut a, 30);
    let prepared = ids(&a, X509Ca)[1].clone();
    let events = a
        .rotate(X509Ca, true, s(31), &short_policy(), &SystemRandom::new())
        .unwrap();
    let new = active_id(&a, X509Ca);
    assert_eq!(
        events,
        [
            KeyEvent {
                kind: X509Ca,
                id: prepared,
                change: Dropped
            },
            KeyEvent {
                kind: X509Ca,
                id: new.clone(),
                change: Prepared
            },
            KeyEvent {
                kind: X509Ca,
                id: new.clone(),
                change: Activated { forced: true }
            },
            KeyEvent {
                kind: X509Ca,
                id: first.clone(),
                change: Retired
            },
        ]
    );
    assert_eq!(issue(&a, s(31)).unwrap().1, new);
    assert_eq!(ids(&a, X509Ca), [first, new.clone()]);
    let record = a.keys().into_iter().find(|k| k.id == new).unwrap();
    assert!(record.forced_activation);
    assert_eq!(record.activated_at, Some(s(31)));
    assert_eq!(advance(&mut a, 31).events, []);
}

#[test]
fn taint_of_the_active_key_stops_it_signing_at_once() {
    let mut a = short_authority();
    let bad = active_id(&a, X509Ca);
    let event = a.taint(X509Ca, &bad, s(20)).unwrap();
    assert_eq!(changes(&[event]), [(X509Ca, Tainted)]);
    let err = issue(&a, s(20)).unwrap_err();
    assert!(
        matches!(err, AuthorityError::ActiveKeyTainted { kind: X509Ca }),
        "{err:?}"
    );
    assert_eq!(a.tainted_ids(X509Ca), std::slice::from_ref(&bad));
    // JWT keys are not affected.
    mint_kid(&a, s(20));

    let step = advance(&mut a, 20);
    let new = active_id(&a, X509Ca);
    assert_eq!(
        changes(&step.events),
        [
            (X509Ca, Prepared),
            (X509Ca, Activated { forced: true }),
            (X509Ca, Retired)
        ]
    );
    assert_eq!(issue(&a, s(20)).unwrap().1, new);
    // Published through the grace (8 s) for agents to re-issue, then gone.
    assert_eq!(step.next_deadline, Some(s(28)));
    assert_eq!(advance(&mut a, 27).events, []);
    assert_eq!(changes(&advance(&mut a, 28).events), [(X509Ca, Dropped)]);
    assert_eq!(ids(&a, X509Ca), [new]);
    assert_eq!(a.tainted_ids(X509Ca), Vec::<String>::new());
}

#[test]
fn taint_of_a_prepared_key_drops_it_and_prepares_another() {
    let mut a = short_authority();
    advance(&mut a, 30);
    let bad = ids(&a, Jwt)[1].clone();
    a.taint(Jwt, &bad, s(35)).unwrap();
    let step = advance(&mut a, 35);
    assert_eq!(changes(&step.events), [(Jwt, Dropped), (Jwt, Prepared)]);
    assert!(!ids(&a, Jwt).contains(&bad));
}

#[test]
fn rotate_right_after_a_taint_replaces_the_tainted_prepared_key() {
    let mut a = short_authority();
    advance(&mut a, 30);
    let bad = ids(&a, X509Ca)[1].clone();
    a.taint(X509Ca, &bad, s(31)).unwrap();
    let events = a
        .rotate(X509Ca, false, s(31), &short_policy(), &SystemRandom::new())
        .unwrap();
    assert_eq!(
        changes(&events),
        [
            (X509Ca, Dropped),
            (X509Ca, Prepared),
            (X509Ca, ActivationRequested)
        ]
    );
    assert_eq!(events[0].id, bad);
    assert_eq!(
        changes(&advance(&mut a, 36).events),
        [(X509Ca, Activated { forced: false }), (X509Ca, Retired)]
    );
}

#[test]
fn operator_errors_name_the_key() {
    let mut a = short_authority();
    let err = a.taint(X509Ca, "00ff", s(1)).unwrap_err();
    assert!(
        matches!(&err, AuthorityError::UnknownKey { kind: X509Ca, id } if id == "00ff"),
        "{err:?}"
    );
    assert!(err.is_caller_error());
    // A JWT kid is not a CA key id.
    let kid = active_id(&a, Jwt);
    let err = a.taint(X509Ca, &kid, s(1)).unwrap_err();
    assert!(matches!(err, AuthorityError::UnknownKey { .. }), "{err:?}");
    a.taint(Jwt, &kid, s(1)).unwrap();
    let err = a.taint(Jwt, &kid, s(2)).unwrap_err();
    assert!(
        matches!(&err, AuthorityError::KeyAlreadyTainted { kind: Jwt, id } if *id == kid),
        "{err:?}"
    );
    assert!(err.is_caller_error());
    let active = active_id(&a, X509Ca);
    let err = a
        .apply(
            &Action::Drop {
                kind: X509Ca,
                id: active,
            },
            s(2),
            &short_policy(),
            &SystemRandom::new(),
        )
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::KeyIsActive { kind: X509Ca, .. }),
        "{err:?}"
    );
}

#[test]
fn a_failed_advance_changes_nothing() {
    let mut a = short_authority();
    advance(&mut a, 30);
    advance(&mut a, 50);
    let before = (a.keys(), a.bundle());
    // At 61 the old keys are dropped, then a successor is prepared, which fails: no
    // certificate can be valid past 9999.
    let policy = RotationPolicy {
        ca_ttl: Duration::from_secs(20_000 * 365 * 24 * 3600),
        ..short_policy()
    };
    let err = a.advance(s(61), &policy, &SystemRandom::new()).unwrap_err();
    assert!(
        matches!(err, AuthorityError::CertificateEncoding { .. }),
        "{err:?}"
    );
    assert_eq!((a.keys(), a.bundle()), before);

    // A forced rotation drops the prepared key before it makes the new one; when making
    // it fails, the prepared key is still there.
    advance(&mut a, 61);
    let before = (a.keys(), a.bundle());
    assert_eq!(before.0.len(), 4, "{:?}", before.0);
    let err = a
        .rotate(X509Ca, true, s(62), &policy, &SystemRandom::new())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::CertificateEncoding { .. }),
        "{err:?}"
    );
    assert_eq!((a.keys(), a.bundle()), before);
}

/// Authorities in each phase of a rotation, named, with the time they were left at.
fn phases() -> Vec<(&'static str, Authority, u64)> {
    let policy = short_policy();
    let rng = SystemRandom::new();
    let mut out = vec![("steady", short_authority(), 10)];
    let mut a = short_authority();
    advance(&mut a, 30);
    out.push(("prepared", a.clone(), 30));
    let mut b = short_authority();
    b.rotate(X509Ca, false, s(12), &policy, &rng).unwrap();
    out.push(("early rotation requested", b, 12));
    advance(&mut a, 50);
    out.push(("activated, old kept", a.clone(), 50));
    let mut c = a.clone();
    c.taint(X509Ca, &active_id(&c, X509Ca), s(55)).unwrap();
    out.push(("active tainted, not yet replaced", c, 55));
    let old = ids(&a, Jwt)[0].clone();
    a.taint(Jwt, &old, s(52)).unwrap();
    out.push(("old key tainted", a, 52));
    out
}

#[test]
fn resume_after_a_crash_in_each_phase() {
    let policy = short_policy();
    for (phase, a, at) in phases() {
        let restored = Authority::from_sealed_bytes(a.to_sealed_bytes().expose()).unwrap();
        assert_eq!(restored.keys(), a.keys(), "{phase}");
        assert_eq!(restored.bundle(), a.bundle(), "{phase}");
        for later in [0, 1, 5, 10, 20, 40, 80] {
            let now = s(at + later);
            assert_eq!(
                restored.plan(now, &policy),
                a.plan(now, &policy),
                "{phase} +{later}s"
            );
        }
    }
}
