//! Trust bundle encodings.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

#[test]
fn spiffe_json_has_the_bundle_shape() {
    let ca = authority();
    let bundle = ca.bundle();
    assert_eq!(bundle.sequence, 1);
    assert_eq!(bundle.x509_authorities, vec![ca.ca_cert_der().to_vec()]);
    let doc: Value = serde_json::from_str(&bundle.to_spiffe_json()).unwrap();
    assert_eq!(doc["spiffe_sequence"], json!(1));
    assert_eq!(doc["spiffe_refresh_hint"], json!(DEFAULT_REFRESH_HINT_SECS));
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for k in keys {
        assert_eq!(k["kty"], json!("EC"));
        assert_eq!(k["crv"], json!("P-256"));
    }
    let x509 = &keys[0];
    assert_eq!(x509["use"], json!("x509-svid"));
    let der = STANDARD.decode(x509["x5c"][0].as_str().unwrap()).unwrap();
    assert_eq!(der, ca.ca_cert_der());
    // x and y are the certificate's key.
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let point = cert.public_key().subject_public_key.data.to_vec();
    let x = URL_SAFE_NO_PAD.decode(x509["x"].as_str().unwrap()).unwrap();
    let y = URL_SAFE_NO_PAD.decode(x509["y"].as_str().unwrap()).unwrap();
    assert_eq!([&[4u8][..], &x, &y].concat(), point);

    let jwt = &keys[1];
    assert_eq!(jwt["use"], json!("jwt-svid"));
    assert_eq!(jwt["kid"], json!(bundle.jwt_authorities[0].kid));

    let parsed = Bundle::from_spiffe_json(&td(), &bundle.to_spiffe_json()).unwrap();
    assert_eq!(parsed.x509_authorities, bundle.x509_authorities);
    assert_eq!(parsed.sequence, 1);
    assert_eq!(parsed.refresh_hint_secs, DEFAULT_REFRESH_HINT_SECS);
    assert_eq!(parsed.jwt_authorities[0].kid, bundle.jwt_authorities[0].kid);
    assert_eq!(
        parsed.jwt_authorities[0].public_key,
        bundle.jwt_authorities[0].public_key
    );
    assert_eq!(parsed.jwt_bundle(), bundle.jwt_bundle());
    assert_eq!(parsed.to_spiffe_json(), bundle.to_spiffe_json());
}

#[test]
fn pem_and_concatenated_der() {
    let ca = authority();
    let bundle = ca.bundle();
    let pem = bundle.to_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
    assert!(pem.lines().all(|l| l.len() <= 64));
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(STANDARD.decode(body).unwrap(), ca.ca_cert_der());
    assert_eq!(bundle.x509_concat_der(), ca.ca_cert_der());
}

fn jwt_key(kid: &str) -> Value {
    json!({"use": "jwt-svid", "kid": kid, "kty": "EC", "crv": "P-256",
           "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])})
}

#[test]
fn bundle_parse_errors_name_the_rule() {
    let parse = |v: Value| Bundle::from_spiffe_json(&td(), &v.to_string());
    assert_eq!(
        Bundle::from_spiffe_json(&td(), "nope"),
        Err(BundleError::NotJsonObject)
    );
    assert_eq!(parse(json!([])), Err(BundleError::NotJsonObject));
    assert_eq!(parse(json!({})), Err(BundleError::MissingKeys));
    assert_eq!(parse(json!({"keys": [1]})), Err(BundleError::MissingKeys));
    assert_eq!(
        parse(json!({"keys": [], "spiffe_sequence": -1})),
        Err(BundleError::BadNumber {
            name: "spiffe_sequence"
        })
    );
    assert_eq!(
        parse(json!({"keys": [], "spiffe_refresh_hint": "5m"})),
        Err(BundleError::BadNumber {
            name: "spiffe_refresh_hint"
        })
    );
    let cases = [
        (
            json!({"use": "x509-svid", "x5c": "not an array"}),
            BundleError::BadX509Authority,
        ),
        (
            json!({"use": "x509-svid", "x5c": [7]}),
            BundleError::BadX509Authority,
        ),
        (
            json!({"use": "x509-svid", "x5c": ["!!"]}),
            BundleError::BadX509Authority,
        ),
        (
            json!({"use": "x509-svid", "x5c": [STANDARD.encode(b"junk")]}),
            BundleError::BadX509Authority,
        ),
        (
            with(jwt_key("k"), "kid", json!("")),
            BundleError::MissingKeyId,
        ),
        (without(jwt_key("k"), "kty"), BundleError::MissingKeyType),
        (
            with(jwt_key("k"), "x", json!(URL_SAFE_NO_PAD.encode([1u8; 31]))),
            BundleError::BadJwtKeyCoordinates,
        ),
        (
            with(jwt_key("k"), "y", json!(STANDARD.encode([2u8; 32]))),
            BundleError::BadJwtKeyCoordinates,
        ),
    ];
    for (key, want) in cases {
        assert_eq!(parse(json!({"keys": [key]})), Err(want));
    }
    assert_eq!(
        parse(json!({"keys": [jwt_key("k"), jwt_key("k")]})),
        Err(BundleError::DuplicateKeyId { kid: "k".into() })
    );
    assert_eq!(
        Bundle::from_spiffe_json(&td(), &" ".repeat(1024 * 1024 + 1)),
        Err(BundleError::TooLarge)
    );
    // Unknown uses are ignored; sequence and hint default to zero.
    let b = parse(json!({"keys": [{"use": "wit-svid"}, {"kty": "EC"}, jwt_key("k")]})).unwrap();
    assert!(b.x509_authorities.is_empty());
    assert_eq!(b.jwt_authorities.len(), 1);
    assert_eq!((b.sequence, b.refresh_hint_secs), (0, 0));
}

fn with(base: Value, key: &str, value: Value) -> Value {
    let mut v = base;
    v[key] = value;
    v
}

fn without(base: Value, key: &str) -> Value {
    let mut v = base;
    v.as_object_mut().unwrap().remove(key);
    v
}

proptest! {
    #[test]
    fn bundle_parser_never_panics_on_arbitrary_strings(s in ".{0,400}") {
        let _ = Bundle::from_spiffe_json(&td(), &s);
    }

    #[test]
    fn bundle_parser_never_panics_on_jwk_shaped_input(
        use_ in prop_oneof![Just("x509-svid".to_owned()), Just("jwt-svid".to_owned()), ".{0,8}"],
        kid in ".{0,8}",
        kty in prop_oneof![Just("EC".to_owned()), ".{0,4}"],
        x in "[A-Za-z0-9_=+/-]{0,50}",
        y in "[A-Za-z0-9_=+/-]{0,50}",
        x5c in "[A-Za-z0-9=+/]{0,200}",
        seq in any::<i64>(),
    ) {
        let doc = json!({"keys": [{"use": use_, "kid": kid, "kty": kty, "crv": "P-256",
                         "x": x, "y": y, "x5c": [x5c]}], "spiffe_sequence": seq});
        if let Ok(b) = Bundle::from_spiffe_json(&td(), &doc.to_string()) {
            // Whatever parses re-encodes and parses to the same bundle.
            let again = Bundle::from_spiffe_json(&td(), &b.to_spiffe_json()).unwrap();
            prop_assert_eq!(again.jwt_bundle(), b.jwt_bundle());
            prop_assert_eq!(again.x509_authorities, b.x509_authorities);
        }
    }
}
