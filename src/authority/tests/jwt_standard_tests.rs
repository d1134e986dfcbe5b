//! The SPIFFE JWT-SVID standard, one test per rule, on the tokens sigil mints, and the
//! size limits that keep every token within what validators accept. Each test is named
//! after the section it checks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::*;

fn minted(audiences: &[&str]) -> (Authority, String) {
    let ca = authority();
    let auds: Vec<String> = audiences.iter().map(|a| (*a).to_owned()).collect();
    let svid = ca
        .mint_jwt_svid(&id("spiffe://example.org/ns/ci"), &auds, HOUR, t0())
        .unwrap();
    let token = svid.token_str().to_owned();
    (ca, token)
}

fn part(token: &str, i: usize) -> Map<String, Value> {
    let b64 = token.split('.').nth(i).unwrap();
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap() {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn jwt_svid_5_1_token_uses_jws_compact_serialization() {
    let (_, token) = minted(&["a"]);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    for p in &parts {
        assert!(!p.is_empty());
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{p}"
        );
    }
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
}

#[test]
fn jwt_svid_2_header_has_no_member_beyond_alg_kid_and_typ() {
    let (_, token) = minted(&["a"]);
    let mut names: Vec<String> = part(&token, 0).keys().cloned().collect();
    names.sort_unstable();
    assert_eq!(names, ["alg", "kid", "typ"]);
}

#[test]
fn jwt_svid_2_1_alg_is_es256() {
    let (_, token) = minted(&["a"]);
    assert_eq!(part(&token, 0)["alg"], json!("ES256"));
}

#[test]
fn jwt_svid_2_2_header_has_the_kid_of_a_bundle_key() {
    let (ca, token) = minted(&["a"]);
    let kid = part(&token, 0)["kid"].as_str().unwrap().to_owned();
    assert!(!kid.is_empty());
    let bundle = Bundle::from_spiffe_json(&td(), &ca.bundle().to_spiffe_json()).unwrap();
    assert!(bundle.jwt_bundle().get(&kid).is_some());
    // The spiffe crate reads the same kid.
    let parsed = spiffe::JwtSvid::parse_insecure(&token).unwrap();
    assert_eq!(parsed.key_id(), kid);
}

#[test]
fn jwt_svid_2_3_typ_is_jwt() {
    let (_, token) = minted(&["a"]);
    assert_eq!(part(&token, 0)["typ"], json!("JWT"));
}

#[test]
fn jwt_svid_3_1_sub_is_the_workload_spiffe_id() {
    let (_, token) = minted(&["a"]);
    assert_eq!(part(&token, 1)["sub"], json!("spiffe://example.org/ns/ci"));
    let parsed = spiffe::JwtSvid::parse_insecure(&token).unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), "spiffe://example.org/ns/ci");
}

#[test]
fn jwt_svid_3_1_no_token_names_the_trust_domain_itself() {
    let ca = authority();
    let err = ca
        .mint_jwt_svid(&id("spiffe://example.org"), &["a".into()], HOUR, t0())
        .unwrap_err();
    assert!(
        matches!(&err, AuthorityError::NoWorkloadPath { id } if id == "spiffe://example.org"),
        "{err:?}"
    );
    assert!(err.is_caller_error());
}

#[test]
fn jwt_svid_3_2_aud_is_exactly_the_requested_audiences() {
    let (_, token) = minted(&["vault", "db", "vault"]);
    assert_eq!(part(&token, 1)["aud"], json!(["vault", "db", "vault"]));
    let (_, token) = minted(&["one"]);
    assert_eq!(part(&token, 1)["aud"], json!(["one"]));
}

#[test]
fn jwt_svid_3_3_exp_is_set_with_iat() {
    let (_, token) = minted(&["a"]);
    let claims = part(&token, 1);
    let t = 1_800_000_000u64;
    assert_eq!(claims["exp"], json!(t + 3600));
    assert_eq!(claims["iat"], json!(t));
    let mut names: Vec<String> = claims.keys().cloned().collect();
    names.sort_unstable();
    assert_eq!(names, ["aud", "exp", "iat", "sub"]);
}

#[test]
fn audience_limits_refuse_oversized_requests_before_signing() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    let many: Vec<String> = (0..10_000).map(|i| format!("a{i}")).collect();
    let huge = vec!["x".repeat(4 * 1024 * 1024)];
    let cases = [
        (many, AudienceError::TooMany { count: 10_000 }),
        (
            huge,
            AudienceError::TooLong {
                len: 4 * 1024 * 1024,
            },
        ),
        (
            vec!["x".repeat(MAX_AUDIENCE_LEN + 1)],
            AudienceError::TooLong {
                len: MAX_AUDIENCE_LEN + 1,
            },
        ),
        (vec!["a\nb".into()], AudienceError::ControlCharacter),
    ];
    for (auds, want) in cases {
        assert_eq!(check_audiences(&auds), Err(want.clone()));
        let err = ca.mint_jwt_svid(&wid, &auds, HOUR, t0()).unwrap_err();
        assert!(
            matches!(&err, AuthorityError::InvalidAudience(e) if *e == want),
            "{err:?}"
        );
        assert!(err.is_caller_error());
    }
    assert_eq!(
        AudienceError::TooMany { count: 10_000 }.to_string(),
        "10000 audiences given; at most 8 are allowed"
    );
    assert_eq!(
        AudienceError::TooLong { len: 4_194_304 }.to_string(),
        "an audience is 4194304 bytes long; at most 512 bytes are allowed"
    );
}

#[test]
fn audience_limits_keep_the_largest_token_within_the_validator_limit() {
    // The worst case the limits allow: the longest SPIFFE ID and the most, longest
    // audiences, made of the characters JSON escapes.
    let ca = authority();
    let path = "a".repeat(crate::id::MAX_ID_LEN - "spiffe://example.org/".len());
    let wid = id(&format!("spiffe://example.org/{path}"));
    assert_eq!(wid.as_str().len(), crate::id::MAX_ID_LEN);
    let auds: Vec<String> = (0..MAX_AUDIENCES)
        .map(|i| if i % 2 == 0 { "\"" } else { "\\" }.repeat(MAX_AUDIENCE_LEN))
        .collect();
    let svid = ca.mint_jwt_svid(&wid, &auds, HOUR, t0()).unwrap();
    let token = svid.token_str();
    // MAX_MINTED_TOKEN_LEN <= MAX_TOKEN_LEN is asserted at compile time.
    assert!(token.len() <= MAX_MINTED_TOKEN_LEN, "{}", token.len());
    let claims = validate_jwt_svid(token, &auds[1], &ca.bundle().jwt_bundle(), t0()).unwrap();
    assert_eq!(claims.audiences, auds);
    // One audience more, or one byte more, is refused up front.
    let mut more = auds.clone();
    more.push("a".into());
    assert!(matches!(
        ca.mint_jwt_svid(&wid, &more, HOUR, t0()),
        Err(AuthorityError::InvalidAudience(AudienceError::TooMany {
            count: 9
        }))
    ));
}

#[test]
fn validators_refuse_a_sub_without_a_path() {
    // A token from elsewhere whose sub is a trust domain ID names no workload.
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    let rng = ring::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng).unwrap();
    let mut bundle = JwtBundle::new();
    bundle.insert("k".into(), key.public_key().as_ref().to_vec());
    let header = json!({"alg": "ES256", "kid": "k", "typ": "JWT"});
    let claims = json!({"sub": "spiffe://example.org", "aud": ["a"], "exp": 1_800_000_300u64});
    let mut t = URL_SAFE_NO_PAD.encode(header.to_string());
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = key.sign(&rng, t.as_bytes()).unwrap();
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    assert_eq!(
        validate_jwt_svid(&t, "a", &bundle, t0()).map(|c| c.spiffe_id),
        Err(JwtError::SubjectNotAWorkload)
    );
}
