//! `Jwks::parse`: the keys kept, the keys skipped, the documents refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::oidc_signer::{EC_KID, RSA_KID};
use super::*;

fn parse(doc: &Value) -> Result<Jwks, JwksError> {
    Jwks::parse(doc.to_string().as_bytes())
}

/// `jwk` with `changes` applied (a null value removes a member).
fn with(mut jwk: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            jwk.as_object_mut().unwrap().remove(name);
        } else {
            jwk[name] = value.clone();
        }
    }
    jwk
}

fn one_key(jwk: Value) -> Result<Jwks, JwksError> {
    parse(&json!({ "keys": [jwk] }))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn both_key_types_are_kept_ready_for_ring() {
    let issuer = Issuer::new();
    let keys = jwks(&issuer);
    assert_eq!(keys.len(), 2);
    assert!(!keys.is_empty());
    let rsa = keys.get(RSA_KID).unwrap();
    assert_eq!(rsa.kid(), RSA_KID);
    assert_eq!(rsa.algorithm(), Algorithm::Rs256);
    assert_eq!(rsa.declared_alg(), Some(Algorithm::Rs256));
    let JwkKey::Rsa { n, e } = rsa.key() else {
        panic!("not RSA: {rsa:?}");
    };
    assert_eq!(n.len(), 256);
    assert_eq!(e.as_slice(), [1, 0, 1]);
    let ec = keys.get(EC_KID).unwrap();
    assert_eq!(ec.algorithm(), Algorithm::Es256);
    let JwkKey::EcP256 { point } = ec.key() else {
        panic!("not P-256: {ec:?}");
    };
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 0x04);
    assert_eq!(keys.get("rsa-2"), None);
}

#[test]
fn alg_and_use_are_optional() {
    let issuer = Issuer::new();
    let keys = one_key(with(issuer.rsa_jwk(), json!({"alg": null, "use": null}))).unwrap();
    assert_eq!(keys.get(RSA_KID).unwrap().declared_alg(), None);
    let token = issuer.sign_rs256(&github_claims(NOW));
    assert!(verify(&token, &policy(), &keys, NOW).is_ok());
}

#[test]
fn a_leading_zero_byte_in_the_modulus_is_dropped() {
    let issuer = Issuer::new();
    let JwkKey::Rsa { n, .. } = jwks(&issuer).get(RSA_KID).unwrap().key().clone() else {
        panic!("not RSA");
    };
    let mut padded = vec![0];
    padded.extend_from_slice(&n);
    let keys = one_key(with(issuer.rsa_jwk(), json!({"n": b64(&padded)}))).unwrap();
    assert_eq!(keys, one_key(issuer.rsa_jwk()).unwrap());
}

#[test]
fn keys_sigil_cannot_use_are_skipped() {
    let issuer = Issuer::new();
    let rsa = issuer.rsa_jwk();
    let ec = issuer.ec_jwk();
    let skipped = [
        (
            "another key type",
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AA"}),
        ),
        (
            "a symmetric key",
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        ),
        ("no key type", json!({"kid": "k"})),
        ("another curve", with(ec.clone(), json!({"crv": "P-384"}))),
        (
            "an encryption key",
            with(rsa.clone(), json!({"use": "enc"})),
        ),
        ("no kid", with(rsa.clone(), json!({"kid": null}))),
        ("an empty kid", with(ec.clone(), json!({"kid": ""}))),
        (
            "another algorithm",
            with(rsa.clone(), json!({"alg": "PS256"})),
        ),
        ("another algorithm", with(ec, json!({"alg": "ES384"}))),
        // Broken fields do not matter on a key that is skipped anyway.
        (
            "a broken unused key",
            json!({"kty": "OKP", "kid": 7, "alg": 1, "use": []}),
        ),
    ];
    for (what, jwk) in skipped {
        assert_eq!(one_key(jwk).unwrap().len(), 0, "{what}");
    }
    let both = parse(&json!({"keys": [with(rsa, json!({"use": "enc"})), issuer.ec_jwk()]}));
    assert_eq!(both.unwrap().len(), 1);
    assert!(parse(&json!({"keys": []})).unwrap().is_empty());
}

#[test]
fn documents_that_are_not_a_key_set_are_refused() {
    let big = vec![b' '; MAX_JWKS_LEN + 1];
    assert_eq!(
        Jwks::parse(&big),
        Err(JwksError::TooLarge {
            len: MAX_JWKS_LEN + 1
        })
    );
    assert_eq!(Jwks::parse(b"{\"keys\":"), Err(JwksError::NotJson));
    assert_eq!(Jwks::parse(b"<html>"), Err(JwksError::NotJson));
    for doc in [
        json!({}),
        json!([]),
        json!({"keys": {}}),
        json!({"Keys": []}),
    ] {
        assert_eq!(parse(&doc), Err(JwksError::NoKeysArray), "{doc}");
    }
    assert_eq!(
        parse(&json!({"keys": [{"kty": "OKP"}, "rsa"]})),
        Err(JwksError::KeyNotObject { index: 1 })
    );
}

#[test]
fn a_usable_key_with_broken_fields_fails_the_document() {
    let issuer = Issuer::new();
    let rsa = issuer.rsa_jwk();
    let ec = issuer.ec_jwk();
    let kid = |k: &str| k.to_owned();
    let cases = [
        (
            with(rsa.clone(), json!({"n": null})),
            JwksError::MissingField {
                kid: kid(RSA_KID),
                field: "n",
            },
        ),
        (
            with(rsa.clone(), json!({"e": 65537})),
            JwksError::NotAString {
                index: 0,
                field: "e",
            },
        ),
        (
            with(rsa.clone(), json!({"n": "AQAB="})),
            JwksError::BadBase64 {
                kid: kid(RSA_KID),
                field: "n",
            },
        ),
        (
            with(rsa.clone(), json!({"n": b64(&[0xff; 128])})),
            JwksError::RsaKeySize {
                kid: kid(RSA_KID),
                bits: 1024,
            },
        ),
        (
            // 2047 bits: one short.
            with(
                rsa.clone(),
                json!({"n": b64(&[[0x7f].as_slice(), [0xff; 255].as_slice()].concat())}),
            ),
            JwksError::RsaKeySize {
                kid: kid(RSA_KID),
                bits: 2047,
            },
        ),
        (
            with(rsa.clone(), json!({"n": b64(&[0xff; 1025])})),
            JwksError::RsaKeySize {
                kid: kid(RSA_KID),
                bits: 8200,
            },
        ),
        (
            with(rsa.clone(), json!({"e": b64(&[1])})),
            JwksError::RsaExponent { kid: kid(RSA_KID) },
        ),
        (
            with(rsa.clone(), json!({"e": b64(&[1, 0, 0])})),
            JwksError::RsaExponent { kid: kid(RSA_KID) },
        ),
        (
            with(rsa.clone(), json!({"e": b64(&[3, 0, 0, 0, 1])})),
            JwksError::RsaExponent { kid: kid(RSA_KID) },
        ),
        (
            with(rsa.clone(), json!({"e": ""})),
            JwksError::RsaExponent { kid: kid(RSA_KID) },
        ),
        (
            with(rsa.clone(), json!({"kid": 1})),
            JwksError::NotAString {
                index: 0,
                field: "kid",
            },
        ),
        (
            with(rsa.clone(), json!({"use": true})),
            JwksError::NotAString {
                index: 0,
                field: "use",
            },
        ),
        (
            with(rsa, json!({"alg": ["RS256"]})),
            JwksError::NotAString {
                index: 0,
                field: "alg",
            },
        ),
        (
            json!({"kty": 1, "kid": "x"}),
            JwksError::NotAString {
                index: 0,
                field: "kty",
            },
        ),
        (
            with(ec.clone(), json!({"crv": null})),
            JwksError::MissingField {
                kid: kid(EC_KID),
                field: "crv",
            },
        ),
        (
            with(ec.clone(), json!({"y": null})),
            JwksError::MissingField {
                kid: kid(EC_KID),
                field: "y",
            },
        ),
        (
            with(ec.clone(), json!({"x": b64(&[7; 31])})),
            JwksError::EcCoordinateLength {
                kid: kid(EC_KID),
                field: "x",
                len: 31,
            },
        ),
        (
            with(ec, json!({"y": b64(&[7; 33])})),
            JwksError::EcCoordinateLength {
                kid: kid(EC_KID),
                field: "y",
                len: 33,
            },
        ),
    ];
    for (jwk, err) in cases {
        assert_eq!(one_key(jwk.clone()), Err(err), "{jwk}");
    }
}

#[test]
fn duplicate_key_ids_are_refused() {
    let issuer = Issuer::new();
    let ec_as_rsa_1 = with(issuer.ec_jwk(), json!({"kid": RSA_KID}));
    assert_eq!(
        parse(&json!({"keys": [issuer.rsa_jwk(), ec_as_rsa_1]})),
        Err(JwksError::DuplicateKeyId {
            kid: RSA_KID.to_owned()
        })
    );
    // A skipped key does not count.
    let enc = with(issuer.ec_jwk(), json!({"kid": RSA_KID, "use": "enc"}));
    assert_eq!(
        parse(&json!({"keys": [issuer.rsa_jwk(), enc]}))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn refusals_name_what_was_wrong() {
    assert_eq!(
        JwksError::RsaKeySize {
            kid: "k".to_owned(),
            bits: 1024
        }
        .to_string(),
        r#"JWKS key "k" is an RSA key of 1024 bits; 2048 to 8192 bits are accepted"#
    );
    assert_eq!(
        JwksError::NoKeysArray.to_string(),
        r#"JWKS document has no "keys" array"#
    );
}

proptest! {
    #[test]
    fn arbitrary_documents_do_not_panic(doc in "\\PC{0,200}") {
        let _ = Jwks::parse(doc.as_bytes());
    }

    #[test]
    fn arbitrary_key_members_do_not_panic(
        kty in prop::sample::select(vec!["RSA", "EC", "OKP"]),
        crv in prop::sample::select(vec!["P-256", "P-384"]),
        n in "[A-Za-z0-9_-]{0,400}",
        x in "[A-Za-z0-9_-]{0,50}",
    ) {
        let doc = json!({"keys": [{"kty": kty, "crv": crv, "kid": "k", "n": n, "e": "AQAB", "x": x, "y": x}]});
        let _ = parse(&doc);
    }
}
