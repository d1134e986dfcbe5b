//! Properties of rotation: for any sequence of time advances (including long gaps, as
//! after downtime), rotations with and without force, and taints, once the authority has
//! advanced:
//!
//! - each kind has exactly one active key and at most one prepared key;
//! - the bundle holds the key that signs, and what it signs verifies against the bundle;
//! - no key started signing before it was published for its window, unless the
//!   activation is recorded as forced;
//! - the bundle holds exactly the prepared, active and still-needed old keys: no expired
//!   key, no tainted key past its grace;
//! - `spiffe_sequence` moves on exactly when the bundle's keys change.

use proptest::prelude::*;
use ring::rand::SystemRandom;

use super::rotation_tests::{active_id, ids, issue, short_authority};
use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Time passes (the loop may have been late: up to 40 s in one step).
    Wait(u64),
    /// `rotate-ca` / `rotate-jwt-key`, with or without `--force`.
    Rotate(KeyKind, bool),
    /// Taint the key at this position among the keys of the kind (modulo their number).
    Taint(KeyKind, usize),
}

fn kind() -> impl Strategy<Value = KeyKind> {
    prop_oneof![Just(KeyKind::X509Ca), Just(KeyKind::Jwt)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..=40).prop_map(Op::Wait),
        1 => (kind(), any::<bool>()).prop_map(|(k, f)| Op::Rotate(k, f)),
        1 => (kind(), 0usize..4).prop_map(|(k, i)| Op::Taint(k, i)),
    ]
}

/// Applies `op` at `now` (moved on by a wait); operator errors (a key tainted twice)
/// are part of the game and change nothing.
fn run(a: &mut Authority, op: &Op, now: &mut u64) {
    let (policy, rng) = (short_policy(), SystemRandom::new());
    match op {
        Op::Wait(d) => *now += d,
        Op::Rotate(kind, force) => {
            a.rotate(*kind, *force, s(*now), &policy, &rng).unwrap();
        }
        Op::Taint(kind, i) => {
            let ids = ids(a, *kind);
            let id = &ids[i % ids.len()];
            match a.taint(*kind, id, s(*now)) {
                Ok(_) | Err(AuthorityError::KeyAlreadyTainted { .. }) => {}
                Err(e) => panic!("taint {id}: {e:?}"),
            }
        }
    }
}

fn check_invariants(a: &Authority, now: SystemTime) -> Result<(), TestCaseError> {
    let policy = short_policy();
    let keys = a.keys();
    let bundle = a.bundle();
    for kind in KeyKind::ALL {
        let of_kind: Vec<&KeyRecord> = keys.iter().filter(|k| k.kind == kind).collect();
        let count = |state| of_kind.iter().filter(|k| k.state == state).count();
        prop_assert_eq!(count(KeyState::Active), 1, "{:?} active keys", kind);
        prop_assert!(count(KeyState::Prepared) <= 1, "{:?} prepared keys", kind);
        let published = match kind {
            KeyKind::X509Ca => bundle.x509_authorities.len(),
            KeyKind::Jwt => bundle.jwt_authorities.len(),
        };
        prop_assert_eq!(published, of_kind.len(), "bundle holds exactly the keys");
    }
    prop_assert!(bundle.x509_authorities.iter().any(|c| c == a.ca_cert_der()));
    let kid = active_id(a, KeyKind::Jwt);
    prop_assert!(bundle.jwt_authorities.iter().any(|j| j.kid == kid));
    for k in &keys {
        if let Some(at) = k.activated_at
            && !k.forced_activation
        {
            let wait = policy.publish_wait(k.kind);
            prop_assert!(at >= k.published_at + wait, "{:?} signed early", k);
        }
        match k.state {
            KeyState::Active => {
                prop_assert!(!k.is_tainted() && now < k.not_after, "{:?} cannot sign", k)
            }
            _ => {
                let leaves = k.leaves_bundle_at(&policy).unwrap();
                prop_assert!(now < leaves, "{:?} should have left at {:?}", k, leaves);
                prop_assert!(now <= k.not_after, "{:?} expired", k);
            }
        }
    }
    // What the active keys sign verifies against the bundle of this moment.
    let (svid, _) = issue(a, now).unwrap();
    let verified = verify_x509_svid(&svid.leaf_der, &[], &bundle.x509_authorities, now);
    prop_assert_eq!(verified, Ok(svid.spiffe_id.clone()));
    let jwt = a
        .mint_jwt_svid(&svid.spiffe_id, &["aud".into()], HOUR, now)
        .unwrap();
    let claims = validate_jwt_svid(jwt.token_str(), "aud", &bundle.jwt_bundle(), now);
    prop_assert_eq!(claims.map(|c| c.spiffe_id), Ok(svid.spiffe_id));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn prop_rotation_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..30)) {
        let (policy, rng) = (short_policy(), SystemRandom::new());
        let mut a = short_authority();
        let mut now = 0;
        let mut last = a.bundle();
        for op in &ops {
            run(&mut a, op, &mut now);
            a.advance(s(now), &policy, &rng).unwrap();
            check_invariants(&a, s(now))?;
            let bundle = a.bundle();
            let same_keys = bundle.x509_authorities == last.x509_authorities
                && bundle.jwt_authorities == last.jwt_authorities;
            if same_keys {
                prop_assert_eq!(bundle.sequence, last.sequence, "sequence moved without a change");
            } else {
                prop_assert!(bundle.sequence > last.sequence, "bundle changed, sequence did not");
            }
            last = bundle;
        }
    }
}
