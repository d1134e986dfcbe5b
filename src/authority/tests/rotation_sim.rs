//! A simulation of the server's rotation loop over three CA generations with the short
//! lifetimes of the end-to-end tests (keys 60 s, SVIDs 10 s), second by second.
//!
//! The loop advances only at the deadlines the plan gave it, and after an operator's
//! request (a `rotate-ca` and `rotate-jwt-key` without `--force` at 92 s, two seconds
//! after the fourth keys were prepared); in between, the plan must have nothing to do.
//! The server is also killed and restarted from its sealed state in the middle of two
//! rotations (with a key prepared, and with an old key kept), planning again at once as
//! it does after unseal. Every second a workload is issued an X.509-SVID and a JWT-SVID.
//! Every second, every credential still valid verifies against
//! - the bundle of that moment,
//! - the bundle of the moment it was issued (a peer that fetched nothing since), and
//! - the bundle of one publish window ago (a peer whose push is as late as the server
//!   allows), which holds only if no key signed before it was published for its window.
//!
//! The bundle never holds more than an old, the active and a prepared key of each kind.

use ring::rand::SystemRandom;

use super::rotation_tests::{active_id, short_authority};
use super::*;

/// Seconds simulated: activations at 50 and 80 s, and the requested one (95 s for the
/// CA, 100 s for the JWT key), make generations 2, 3 and 4 sign.
const END: u64 = 130;
/// When the operator asks for an early rotation.
const ROTATE_AT: u64 = 92;
/// When the server restarts from its sealed state.
const RESTARTS: [u64; 2] = [40, 55];

struct Issued {
    at: u64,
    svid: X509Svid,
    token: JwtSvid,
}

fn x509_ok(c: &Issued, bundle: &Bundle, now: SystemTime) -> Result<SpiffeId, SvidError> {
    verify_x509_svid(&c.svid.leaf_der, &[], &bundle.x509_authorities, now)
}

fn jwt_ok(c: &Issued, bundle: &Bundle, now: SystemTime) -> Result<SpiffeId, JwtError> {
    validate_jwt_svid(c.token.token_str(), "peer", &bundle.jwt_bundle(), now).map(|c| c.spiffe_id)
}

#[test]
fn three_ca_generations_without_a_gap() {
    let (policy, rng) = (short_policy(), SystemRandom::new());
    let wid = id("spiffe://example.org/workload");
    let mut a = short_authority();
    let mut bundles: Vec<Bundle> = Vec::new();
    let mut issued: Vec<Issued> = Vec::new();
    let mut signers = Vec::new();
    let mut wake = Some(s(0));
    for t in 0..=END {
        let now = s(t);
        if RESTARTS.contains(&t) {
            a = Authority::from_sealed_bytes(a.to_sealed_bytes().expose()).unwrap();
            wake = Some(now);
        }
        if t == ROTATE_AT {
            for kind in KeyKind::ALL {
                a.rotate(kind, false, now, &policy, &rng).unwrap();
            }
            wake = Some(now);
        }
        if wake.is_some_and(|w| now >= w) {
            wake = a.advance(now, &policy, &rng).unwrap().next_deadline;
        } else {
            assert_eq!(
                a.plan(now, &policy).actions,
                [],
                "{t}s: due before the deadline"
            );
        }
        let bundle = a.bundle();
        assert!(bundle.x509_authorities.len() <= 3, "{t}s: {:?}", a.keys());
        assert!(bundle.jwt_authorities.len() <= 3, "{t}s: {:?}", a.keys());
        bundles.push(bundle);

        let (_key, csr) = generate_key_and_csr(&wid).unwrap();
        let ttl = policy.x509_svid_ttl;
        issued.push(Issued {
            at: t,
            svid: a.sign_x509_svid(&csr, &wid, ttl, &[], now).unwrap(),
            token: a
                .mint_jwt_svid(&wid, &["peer".into()], policy.jwt_svid_ttl, now)
                .unwrap(),
        });
        let signer = active_id(&a, KeyKind::X509Ca);
        if signers.last() != Some(&signer) {
            signers.push(signer);
        }

        let x509_lag = t.saturating_sub(policy.publish_wait(KeyKind::X509Ca).as_secs());
        let jwt_lag = t.saturating_sub(policy.publish_wait(KeyKind::Jwt).as_secs());
        for c in issued.iter().filter(|c| now <= c.svid.expires_at) {
            for (name, b) in [
                ("now", t),
                ("issued", c.at),
                ("a publish window ago", x509_lag),
            ] {
                let got = x509_ok(c, &bundles[b as usize], now);
                assert_eq!(
                    got,
                    Ok(wid.clone()),
                    "{t}s: X.509-SVID of {}s, bundle {name}",
                    c.at
                );
            }
        }
        for c in issued.iter().filter(|c| now < c.token.expires_at) {
            for (name, b) in [
                ("now", t),
                ("issued", c.at),
                ("a JWT publish wait ago", jwt_lag),
            ] {
                let got = jwt_ok(c, &bundles[b as usize], now);
                assert_eq!(
                    got,
                    Ok(wid.clone()),
                    "{t}s: JWT-SVID of {}s, bundle {name}",
                    c.at
                );
            }
        }
        issued.retain(|c| now <= c.svid.expires_at);
    }
    assert_eq!(signers.len(), 4, "four CA keys signed in turn: {signers:?}");
    let activations: Vec<(KeyKind, SystemTime)> = a
        .keys()
        .into_iter()
        .filter_map(|k| k.activated_at.map(|at| (k.kind, at)))
        .collect();
    assert_eq!(
        activations,
        [(KeyKind::X509Ca, s(95)), (KeyKind::Jwt, s(100))]
    );
}
