//! The sealed state across versions: format 1 (before rotation) loads as one active key
//! of each kind, and a format-2 document that breaks a key rule is refused with the rule.

use ring::rand::SystemRandom;
use serde_json::{Value, json};

use super::rotation_tests::{advance, short_authority};
use super::*;

fn sealed_doc(a: &Authority) -> Value {
    serde_json::from_slice(a.to_sealed_bytes().expose()).unwrap()
}

fn load(doc: &Value) -> Result<Authority, AuthorityError> {
    Authority::from_sealed_bytes(doc.to_string().as_bytes())
}

/// The format-1 document of an authority with `cas` (active first) and its JWT key.
fn format_1(cas: &[&Value], jwt: &Value, sequence: u64) -> Value {
    json!({
        "format": 1,
        "trust_domain": "example.org",
        "ca_keys": cas.iter().map(|c| json!({"cert_der": c["cert_der"], "pkcs8": c["pkcs8"]})).collect::<Vec<_>>(),
        "jwt_keys": [{"kid": jwt["kid"], "pkcs8": jwt["pkcs8"], "not_after": jwt["not_after"]}],
        "sequence": sequence,
    })
}

#[test]
fn format_1_loads_as_one_active_key_of_each_kind() {
    let a = authority();
    let other = Authority::generate(&td(), t0(), DAY, &SystemRandom::new()).unwrap();
    let (doc, other_doc) = (sealed_doc(&a), sealed_doc(&other));
    let v1 = format_1(
        &[&doc["ca_keys"][0], &other_doc["ca_keys"][0]],
        &doc["jwt_keys"][0],
        7,
    );
    let loaded = load(&v1).unwrap();
    let keys = loaded.keys();
    let states: Vec<(KeyKind, KeyState)> = keys.iter().map(|k| (k.kind, k.state)).collect();
    assert_eq!(
        states,
        [
            (KeyKind::X509Ca, KeyState::Active),
            (KeyKind::X509Ca, KeyState::Old),
            (KeyKind::Jwt, KeyState::Active),
        ]
    );
    // Created when the CA was (its NotBefore, undoing the 10 s backdate).
    assert_eq!(keys[0], a.keys()[0]);
    assert_eq!(keys[2].created_at, t0());
    assert_eq!(keys[2].not_after, t0() + DAY);
    assert_eq!(loaded.bundle().sequence, 7);
    // The other CA is kept for the bundle, without its private key.
    let rewritten = sealed_doc(&loaded);
    assert_eq!(rewritten["format"], 2);
    assert!(rewritten["ca_keys"][1].get("pkcs8").is_none());
    // And the plan runs on it: successors at half life; the other CA stays until what
    // it signed has expired.
    let plan = loaded.plan(t0() + 12 * HOUR, &RotationPolicy::default());
    assert_eq!(
        plan.actions,
        [
            Action::Prepare {
                kind: KeyKind::X509Ca
            },
            Action::Prepare { kind: KeyKind::Jwt },
        ]
    );
}

#[test]
fn format_1_without_a_key_is_refused() {
    let doc = sealed_doc(&authority());
    let mut v1 = format_1(&[&doc["ca_keys"][0]], &doc["jwt_keys"][0], 1);
    v1["jwt_keys"] = json!([]);
    let err = load(&v1).unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityError::SealedStateCorrupt {
                reason: "no JWT key"
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_document_breaking_a_key_rule_is_refused() {
    let mut a = short_authority();
    advance(&mut a, 30);
    let base = sealed_doc(&a);
    let other = sealed_doc(&short_authority());
    type Edit = Box<dyn Fn(&mut Value)>;
    let rows: Vec<(&str, Edit)> = vec![
        (
            "exactly one key of each kind must be active",
            Box::new(|d| d["ca_keys"][1]["life"]["state"] = json!("active")),
        ),
        (
            "an old or tainted key still holds its private key",
            Box::new(|d| {
                d["ca_keys"][0]["life"]["state"] = json!("old");
                d["ca_keys"][1]["life"]["state"] = json!("active");
            }),
        ),
        (
            "an old or tainted key still holds its private key",
            Box::new(|d| d["jwt_keys"][0]["life"]["tainted_at"] = json!(1)),
        ),
        (
            "a prepared or active key has no private key",
            Box::new(|d| {
                d["ca_keys"][0].as_object_mut().unwrap().remove("pkcs8");
            }),
        ),
        (
            "two keys share an id",
            Box::new(|d| {
                let mut copy = d["ca_keys"][0].clone();
                copy.as_object_mut().unwrap().remove("pkcs8");
                copy["life"]["state"] = json!("old");
                d["ca_keys"].as_array_mut().unwrap().push(copy);
            }),
        ),
        (
            "JWT private key does not match its public key",
            Box::new(move |d| {
                d["jwt_keys"][0]["public_key"] = other["jwt_keys"][0]["public_key"].clone()
            }),
        ),
        (
            "JWT public key encoding",
            Box::new(|d| d["jwt_keys"][0]["public_key"] = json!("AAAA")),
        ),
        (
            "not the sealed JSON layout",
            Box::new(|d| d["ca_keys"][0]["life"]["signed"] = json!(true)),
        ),
        (
            "not the sealed JSON layout",
            Box::new(|d| d["ca_keys"][0]["life"]["state"] = json!("retired")),
        ),
    ];
    for (want, edit) in rows {
        let mut doc = base.clone();
        edit(&mut doc);
        let err = load(&doc).unwrap_err();
        assert!(
            matches!(err, AuthorityError::SealedStateCorrupt { reason } if reason == want),
            "{want}: {err:?}"
        );
    }
}

#[test]
fn a_stored_time_out_of_range_saturates() {
    let mut doc = sealed_doc(&authority());
    doc["jwt_keys"][0]["not_after"] = json!(u64::MAX);
    doc["jwt_keys"][0]["life"]["tainted_at"] = json!(u64::MAX);
    doc["jwt_keys"][0].as_object_mut().unwrap().remove("pkcs8");
    let a = load(&doc).unwrap();
    let jwt = &a.keys()[1];
    let last = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    assert_eq!((jwt.not_after, jwt.tainted_at), (last, Some(last)));
    // Planning with such times does not overflow either.
    a.plan(last, &RotationPolicy::default());
}
