//! Tests for the authority: CA, X.509-SVIDs, JWT-SVIDs, bundles and sealed state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod bundle_standard_tests;
mod bundle_tests;
mod jwt_standard_tests;
mod jwt_tests;
mod plan_tests;
mod policy_tests;
mod rotation_props;
mod rotation_sim;
mod rotation_tests;
mod sealed_tests;
mod x509_standard_tests;
mod x509_tests;

use std::time::{Duration, SystemTime};

use ring::rand::SystemRandom;

use super::*;
use crate::id::{SpiffeId, TrustDomain};

/// A fixed instant (2027-01-15) so that tests never read the wall clock.
pub(super) fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

/// `n` seconds after [`t0`].
pub(super) fn s(n: u64) -> SystemTime {
    t0() + Duration::from_secs(n)
}

/// The short lifetimes of the end-to-end tests: keys live 60 s and are prepared at 30 s
/// left and activated at 10 s left; SVIDs live 10 s; keys are published 5 s before they
/// sign (JWT keys 10 s, one JWT-SVID lifetime); a tainted key stays 8 s.
pub(super) fn short_policy() -> RotationPolicy {
    let secs = Duration::from_secs;
    let policy = RotationPolicy {
        publish_window: secs(5),
        taint_grace: secs(8),
        ..RotationPolicy::for_ttls(secs(60), secs(10), secs(10))
    };
    policy.validate().unwrap();
    policy
}

pub(super) fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

pub(super) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub(super) fn authority() -> Authority {
    Authority::generate(&td(), t0(), DAY, &SystemRandom::new()).unwrap()
}

#[test]
fn authority_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authority>();
}

#[test]
fn zero_ca_ttl_is_refused() {
    let err = Authority::generate(&td(), t0(), Duration::ZERO, &SystemRandom::new()).unwrap_err();
    assert!(matches!(err, AuthorityError::InvalidTtl), "{err:?}");
}

#[test]
fn debug_shows_no_key_material() {
    let ca = authority();
    let sealed = ca.to_sealed_bytes();
    let doc: serde_json::Value = serde_json::from_slice(sealed.expose()).unwrap();
    let shown = format!("{ca:?} {ca:#?}");
    assert!(shown.contains("example.org"), "{shown}");
    let mut secrets = vec![doc["ca_keys"][0]["pkcs8"].as_str().unwrap().to_owned()];
    secrets.push(doc["jwt_keys"][0]["pkcs8"].as_str().unwrap().to_owned());
    for b64 in secrets {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .unwrap();
        // The private scalar sits inside the PKCS#8; no 16-byte window of it may show,
        // in hex, base64 or as Rust's byte-list Debug form.
        for window in der.windows(16).step_by(8) {
            assert!(!shown.contains(&hex::encode(window)), "{shown}");
            assert!(!shown.contains(format!("{window:?}").trim_matches(['[', ']'])));
        }
        assert!(!shown.contains(&b64[..24]));
    }
    let svid = ca
        .mint_jwt_svid(&id("spiffe://example.org/w"), &["a".into()], HOUR, t0())
        .unwrap();
    let token = String::from_utf8(svid.token.expose().to_vec()).unwrap();
    assert!(!format!("{svid:?}").contains(&token[..20]));
}

#[test]
fn sealed_bytes_round_trip() {
    let ca = authority();
    let restored = Authority::from_sealed_bytes(ca.to_sealed_bytes().expose()).unwrap();
    assert_eq!(restored.bundle(), ca.bundle());
    assert_eq!(restored.ca_not_after(), ca.ca_not_after());

    // The restored CA issues certificates and tokens the original bundle accepts.
    let wid = id("spiffe://example.org/restored");
    let (_key, csr) = generate_key_and_csr(&wid).unwrap();
    let svid = restored
        .sign_x509_svid(&csr, &wid, HOUR, &[], t0())
        .unwrap();
    let got = verify_x509_svid(&svid.leaf_der, &[], &ca.bundle().x509_authorities, t0());
    assert_eq!(got, Ok(wid.clone()));
    let jwt = restored
        .mint_jwt_svid(&wid, &["aud".into()], HOUR, t0())
        .unwrap();
    let token = std::str::from_utf8(jwt.token.expose()).unwrap();
    let claims = validate_jwt_svid(token, "aud", &ca.bundle().jwt_bundle(), t0()).unwrap();
    assert_eq!(claims.spiffe_id, wid);
}

#[test]
fn corrupt_sealed_bytes_are_refused() {
    let err = Authority::from_sealed_bytes(b"not json").unwrap_err();
    assert!(
        matches!(err, AuthorityError::SealedStateCorrupt { .. }),
        "{err:?}"
    );

    let ca = authority();
    let mut doc: serde_json::Value = serde_json::from_slice(ca.to_sealed_bytes().expose()).unwrap();
    doc["format"] = 3.into();
    let err = Authority::from_sealed_bytes(doc.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityError::SealedStateCorrupt {
                reason: "unknown format version"
            }
        ),
        "{err:?}"
    );

    // A CA key that does not belong to the certificate is caught on load.
    let other = Authority::generate(&td(), t0(), DAY, &SystemRandom::new()).unwrap();
    let other_doc: serde_json::Value =
        serde_json::from_slice(other.to_sealed_bytes().expose()).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(ca.to_sealed_bytes().expose()).unwrap();
    doc["ca_keys"][0]["pkcs8"] = other_doc["ca_keys"][0]["pkcs8"].clone();
    let err = Authority::from_sealed_bytes(doc.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityError::InvalidCaCertificate {
                reason: "private key does not match the certificate"
            }
        ),
        "{err:?}"
    );

    let mut doc: serde_json::Value = serde_json::from_slice(ca.to_sealed_bytes().expose()).unwrap();
    doc["jwt_keys"] = serde_json::json!([]);
    let err = Authority::from_sealed_bytes(doc.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityError::SealedStateCorrupt {
                reason: "exactly one key of each kind must be active"
            }
        ),
        "{err:?}"
    );
}
