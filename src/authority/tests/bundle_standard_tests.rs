//! The SPIFFE Trust Domain and Bundle standard, and the bundle sections of the X509-SVID
//! and JWT-SVID standards (§6 of each), one test per rule, on what sigil publishes and on
//! how it reads bundles from elsewhere. Each test is named after the section it checks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use serde_json::{Map, Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

/// The published bundle document of `ca`.
fn doc(ca: &Authority) -> Value {
    serde_json::from_str(&ca.bundle().to_spiffe_json()).unwrap()
}

fn keys(doc: &Value) -> &Vec<Value> {
    doc["keys"].as_array().unwrap()
}

fn keys_with_use<'a>(doc: &'a Value, use_: &str) -> Vec<&'a Map<String, Value>> {
    keys(doc)
        .iter()
        .filter(|k| k["use"] == use_)
        .map(|k| k.as_object().unwrap())
        .collect()
}

fn member_names(jwk: &Map<String, Value>) -> Vec<&str> {
    let mut names: Vec<&str> = jwk.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

fn parse(v: &Value) -> Result<Bundle, BundleError> {
    Bundle::from_spiffe_json(&td(), &v.to_string())
}

/// The published `x509-svid` key, to build consumer inputs from.
fn x509_key(ca: &Authority) -> Map<String, Value> {
    keys_with_use(&doc(ca), "x509-svid")[0].clone()
}

#[test]
fn bundle_4_1_1_sequence_is_set_and_kept_in_sealed_state() {
    let ca = authority();
    assert_eq!(doc(&ca)["spiffe_sequence"], json!(1));
    let next = ca.replacement(t0(), DAY, &SystemRandom::new()).unwrap();
    let restored = Authority::from_sealed_bytes(next.to_sealed_bytes().expose()).unwrap();
    assert_eq!(doc(&restored)["spiffe_sequence"], json!(2));
}

#[test]
fn bundle_4_1_1_sequence_increases_whenever_the_contents_change() {
    // A replacement (a server that stayed down past its CA's life) moves the sequence
    // forward, never back to 1; rotation moves it on every change of the key set
    // (rotation_props checks that for any sequence of rotations and taints).
    let mut ca = authority();
    let mut last = ca.bundle();
    for _ in 0..3 {
        ca = ca
            .replacement(t0() + HOUR, DAY, &SystemRandom::new())
            .unwrap();
        let now = ca.bundle();
        assert_ne!(now.x509_authorities, last.x509_authorities);
        assert_ne!(now.jwt_authorities, last.jwt_authorities);
        assert!(
            now.sequence > last.sequence,
            "{} !> {}",
            now.sequence,
            last.sequence
        );
        assert_eq!(doc(&ca)["spiffe_sequence"], json!(now.sequence));
        last = now;
    }
    assert_eq!(last.sequence, 4);
    // An unchanged authority publishes an unchanged sequence.
    assert_eq!(ca.bundle().sequence, last.sequence);
}

#[test]
fn bundle_4_1_2_refresh_hint_is_an_integer_number_of_seconds() {
    let d = doc(&authority());
    assert_eq!(d["spiffe_refresh_hint"], json!(DEFAULT_REFRESH_HINT_SECS));
    assert!(d["spiffe_refresh_hint"].is_u64());
}

#[test]
fn bundle_4_1_3_keys_is_present_with_one_jwk_per_key() {
    let ca = authority();
    let d = doc(&ca);
    let bundle = ca.bundle();
    assert_eq!(
        keys(&d).len(),
        bundle.x509_authorities.len() + bundle.jwt_authorities.len()
    );
    // The document has exactly the three members the standard defines.
    let mut members: Vec<&String> = d.as_object().unwrap().keys().collect();
    members.sort_unstable();
    assert_eq!(members, ["keys", "spiffe_refresh_hint", "spiffe_sequence"]);
}

#[test]
fn bundle_4_1_3_keys_with_unknown_use_are_ignored() {
    let ca = authority();
    let d = json!({"keys": [
        {"use": "wit-svid", "kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {"use": "X509-SVID", "x5c": ["!!"]},
        {"kty": "EC"},
        x509_key(&ca),
    ]});
    let b = parse(&d).unwrap();
    assert_eq!(b.x509_authorities, vec![ca.ca_cert_der().to_vec()]);
    assert!(b.jwt_authorities.is_empty());
}

#[test]
fn bundle_4_2_1_every_published_jwk_has_kty() {
    for k in keys(&doc(&authority())) {
        assert_eq!(k["kty"], json!("EC"), "{k}");
    }
}

#[test]
fn bundle_4_2_1_jwt_keys_of_unknown_type_are_ignored() {
    let rsa = json!({"use": "jwt-svid", "kid": "r", "kty": "RSA", "n": "AQAB", "e": "AQAB"});
    let p384 = json!({"use": "jwt-svid", "kid": "p", "kty": "EC", "crv": "P-384",
                      "x": "AAAA", "y": "AAAA"});
    let ca = authority();
    let mine = keys_with_use(&doc(&ca), "jwt-svid")[0].clone();
    let b = parse(&json!({"keys": [rsa, p384, mine]})).unwrap();
    assert_eq!(b.jwt_bundle(), ca.bundle().jwt_bundle());
    // A jwt-svid key without kty is malformed rather than of unknown type.
    let mut no_kty = keys_with_use(&doc(&ca), "jwt-svid")[0].clone();
    no_kty.remove("kty");
    assert_eq!(
        parse(&json!({"keys": [no_kty]})),
        Err(BundleError::MissingKeyType)
    );
}

#[test]
fn bundle_4_2_2_every_published_jwk_has_a_known_use() {
    for k in keys(&doc(&authority())) {
        assert!(k["use"] == "x509-svid" || k["use"] == "jwt-svid", "{k}");
    }
}

#[test]
fn bundle_4_2_published_jwks_carry_only_defined_parameters() {
    let d = doc(&authority());
    for k in keys_with_use(&d, "x509-svid") {
        assert_eq!(member_names(k), ["crv", "kty", "use", "x", "x5c", "y"]);
    }
    for k in keys_with_use(&d, "jwt-svid") {
        assert_eq!(member_names(k), ["crv", "kid", "kty", "use", "x", "y"]);
    }
}

#[test]
fn x509_svid_6_1_one_x509_svid_key_per_ca_certificate() {
    let ca = authority();
    let d = doc(&ca);
    let x509 = keys_with_use(&d, "x509-svid");
    assert_eq!(x509.len(), ca.bundle().x509_authorities.len());
}

#[test]
fn x509_svid_6_1_x509_svid_key_has_no_kid() {
    for k in keys_with_use(&doc(&authority()), "x509-svid") {
        assert!(!k.contains_key("kid"), "{k:?}");
    }
}

#[test]
fn x509_svid_6_1_x5c_holds_exactly_the_one_self_signed_ca_certificate() {
    let ca = authority();
    let d = doc(&ca);
    let k = keys_with_use(&d, "x509-svid")[0];
    let x5c = k["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let der = STANDARD.decode(x5c[0].as_str().unwrap()).unwrap();
    assert_eq!(der, ca.ca_cert_der());
    let (rest, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(rest.is_empty());
    assert!(cert.is_ca());
    assert_eq!(
        cert.subject().as_raw(),
        cert.issuer().as_raw(),
        "self-signed"
    );
}

#[test]
fn x509_svid_6_2_key_without_x5c_is_ignored() {
    let ca = authority();
    for x5c in [None, Some(json!([])), Some(Value::Null)] {
        let mut k = x509_key(&ca);
        match x5c {
            None => {
                k.remove("x5c");
            }
            Some(v) => {
                k.insert("x5c".into(), v);
            }
        }
        let b = parse(&json!({"keys": [k, x509_key(&ca)]})).unwrap();
        assert_eq!(b.x509_authorities, vec![ca.ca_cert_der().to_vec()]);
    }
}

#[test]
fn x509_svid_6_2_only_the_first_x5c_value_is_read() {
    let ca = authority();
    let other = authority();
    let mut k = x509_key(&ca);
    k.insert(
        "x5c".into(),
        json!([
            STANDARD.encode(ca.ca_cert_der()),
            STANDARD.encode(other.ca_cert_der()),
            "not even base64!"
        ]),
    );
    let b = parse(&json!({ "keys": [k] })).unwrap();
    assert_eq!(b.x509_authorities, vec![ca.ca_cert_der().to_vec()]);
}

#[test]
fn x509_svid_6_2_kid_on_an_x509_svid_key_from_elsewhere_is_ignored() {
    // Publishers must not set it, but one that does (as sigil once did) still has its
    // roots read; the kid plays no part in X.509 validation.
    let ca = authority();
    let mut k = x509_key(&ca);
    k.insert("kid".into(), json!("0123abcd"));
    let b = parse(&json!({ "keys": [k] })).unwrap();
    assert_eq!(b.x509_authorities, vec![ca.ca_cert_der().to_vec()]);
    assert!(b.jwt_authorities.is_empty());
    // Re-published, it loses the kid.
    let again: Value = serde_json::from_str(&b.to_spiffe_json()).unwrap();
    assert!(keys(&again)[0].get("kid").is_none(), "{again}");
}

#[test]
fn jwt_svid_6_1_jwt_svid_key_has_use_and_kid() {
    let ca = authority();
    let d = doc(&ca);
    let jwt = keys_with_use(&d, "jwt-svid");
    let bundle = ca.bundle();
    assert_eq!(jwt.len(), bundle.jwt_authorities.len());
    for (k, a) in jwt.iter().zip(&bundle.jwt_authorities) {
        assert_eq!(k["kid"], json!(a.kid));
        assert!(!a.kid.is_empty());
    }
}

#[test]
fn jwt_svid_6_2_only_jwt_svid_keys_are_used_for_tokens() {
    let ca = authority();
    let b = parse(&doc(&ca)).unwrap();
    let jwt = b.jwt_bundle();
    assert_eq!(jwt.len(), 1);
    assert!(jwt.get(&ca.bundle().jwt_authorities[0].kid).is_some());
}

#[test]
fn workload_api_jwt_bundle_is_read_by_the_spiffe_crate() {
    // SPEC §3.1: JWT bundles are JWKS with kid on every key; the Rust spiffe crate, as
    // a workload would, finds each key by kid.
    let ca = authority();
    let bundle = ca.bundle();
    let jwks = bundle.to_jwt_jwks_json();
    let parsed = spiffe::JwtBundle::from_jwt_authorities(
        spiffe::TrustDomain::new("example.org").unwrap(),
        jwks.as_bytes(),
    )
    .unwrap();
    for a in &bundle.jwt_authorities {
        assert!(parsed.find_jwt_authority(&a.kid).is_some(), "{}", a.kid);
    }
}
