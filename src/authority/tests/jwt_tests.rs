//! JWT-SVID minting and validation.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use super::*;

fn token_str(svid: &JwtSvid) -> String {
    svid.token_str().to_owned()
}

fn decode_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn minted_token_round_trips_through_the_spiffe_bundle() {
    let ca = authority();
    let wid = id("spiffe://example.org/ns/ci/job");
    let auds = vec!["vault".to_owned(), "sigil".to_owned()];
    let svid = ca
        .mint_jwt_svid(&wid, &auds, 5 * 60 * Duration::from_secs(1), t0())
        .unwrap();
    assert_eq!(svid.spiffe_id, wid);
    assert_eq!(svid.issued_at, t0());
    assert_eq!(svid.expires_at, t0() + Duration::from_secs(300));
    let token = token_str(&svid);

    // Header is exactly alg, kid, typ; claims are sub, aud (array), exp, iat.
    let kid = ca.bundle().jwt_authorities[0].kid.clone();
    let header_json = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(header_json).unwrap(),
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT"}}"#)
    );
    let t = 1_800_000_000u64;
    assert_eq!(
        decode_part(&token, 1),
        json!({"sub": wid.as_str(), "aud": ["vault", "sigil"], "exp": t + 300, "iat": t})
    );
    assert!(!token.contains('='));

    let json = ca.bundle().to_spiffe_json();
    let parsed = Bundle::from_spiffe_json(&td(), &json).unwrap();
    let claims = validate_jwt_svid(&token, "sigil", &parsed.jwt_bundle(), t0()).unwrap();
    assert_eq!(claims.spiffe_id, wid);
    assert_eq!(claims.audiences, auds);
    assert_eq!(claims.expires_at, svid.expires_at);
    assert_eq!(claims.issued_at, Some(t0()));
    assert_eq!(claims.all["sub"], json!(wid.as_str()));
}

#[test]
fn minting_refusals_name_the_rule() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    let a = vec!["a".to_owned()];
    let err = ca.mint_jwt_svid(&wid, &[], HOUR, t0()).unwrap_err();
    assert!(
        matches!(err, AuthorityError::InvalidAudience(AudienceError::Missing)),
        "{err:?}"
    );
    let err = ca
        .mint_jwt_svid(&wid, &["a".into(), String::new()], HOUR, t0())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::InvalidAudience(AudienceError::Empty)),
        "{err:?}"
    );
    let err = ca
        .mint_jwt_svid(&wid, &a, Duration::ZERO, t0())
        .unwrap_err();
    assert!(matches!(err, AuthorityError::InvalidTtl), "{err:?}");
    let err = ca
        .mint_jwt_svid(&id("spiffe://other.org/w"), &a, HOUR, t0())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::TrustDomainMismatch { .. }),
        "{err:?}"
    );
    let err = ca.mint_jwt_svid(&wid, &a, HOUR, t0() + DAY).unwrap_err();
    assert!(matches!(err, AuthorityError::JwtKeyExpired), "{err:?}");
}

#[test]
fn exp_is_capped_at_the_key_expiry() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    let now = t0() + DAY - Duration::from_secs(60);
    let svid = ca.mint_jwt_svid(&wid, &["a".into()], HOUR, now).unwrap();
    assert_eq!(svid.expires_at, t0() + DAY);
    let exp = decode_part(&token_str(&svid), 1)["exp"].as_u64().unwrap();
    assert_eq!(exp, 1_800_000_000 + 24 * 3600);
}

/// Signs arbitrary header and claims with a test key `k1`, for the validator's negatives.
struct Signer {
    key: EcdsaKeyPair,
    bundle: JwtBundle,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng).unwrap();
        let mut bundle = JwtBundle::new();
        bundle.insert("k1".into(), key.public_key().as_ref().to_vec());
        Self { key, bundle }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let mut t = URL_SAFE_NO_PAD.encode(header.to_string());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.key.sign(&SystemRandom::new(), t.as_bytes()).unwrap();
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        t
    }
}

fn header() -> Value {
    json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})
}

fn claims() -> Value {
    json!({"sub": "spiffe://example.org/w", "aud": ["a"], "exp": 1_800_000_300u64, "iat": 1_800_000_000u64})
}

fn with(base: Value, key: &str, value: Value) -> Value {
    let mut v = base;
    if value.is_null() {
        v.as_object_mut().unwrap().remove(key);
    } else {
        v[key] = value;
    }
    v
}

#[test]
fn validator_errors_name_the_broken_rule() {
    let s = Signer::new();
    let check = |token: &str| validate_jwt_svid(token, "a", &s.bundle, t0());
    assert!(check(&s.sign(&header(), &claims())).is_ok());
    // typ may be absent or JOSE; aud may be a single string.
    assert!(check(&s.sign(&with(header(), "typ", Value::Null), &claims())).is_ok());
    assert!(check(&s.sign(&with(header(), "typ", json!("JOSE")), &claims())).is_ok());
    assert!(check(&s.sign(&header(), &with(claims(), "aud", json!("a")))).is_ok());

    let good = s.sign(&header(), &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(String, JwtError)> = vec![
        (
            "a.b".into(),
            JwtError::MalformedToken {
                reason: "token is not three dot-separated parts",
            },
        ),
        (
            format!("{good}.x"),
            JwtError::MalformedToken {
                reason: "token is not three dot-separated parts",
            },
        ),
        (
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            JwtError::MalformedToken {
                reason: "header is not unpadded base64url",
            },
        ),
        (
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("[1]"),
                parts[1],
                parts[2]
            ),
            JwtError::MalformedToken {
                reason: "header is not a JSON object",
            },
        ),
        (
            format!("{}.!!.{}", parts[0], parts[2]),
            JwtError::MalformedToken {
                reason: "claims are not unpadded base64url",
            },
        ),
        (
            "x".repeat(20_000),
            JwtError::MalformedToken {
                reason: "token longer than 16 KiB",
            },
        ),
        (
            s.sign(&with(header(), "alg", json!("HS256")), &claims()),
            JwtError::UnsupportedAlgorithm,
        ),
        (
            s.sign(&with(header(), "alg", json!("none")), &claims()),
            JwtError::UnsupportedAlgorithm,
        ),
        (
            s.sign(&with(header(), "typ", json!("at+jwt")), &claims()),
            JwtError::BadType,
        ),
        (
            s.sign(&with(header(), "crit", json!(["exp"])), &claims()),
            JwtError::UnsupportedCriticalHeader,
        ),
        (
            s.sign(&with(header(), "kid", Value::Null), &claims()),
            JwtError::MissingKeyId,
        ),
        (
            s.sign(&with(header(), "kid", json!("k2")), &claims()),
            JwtError::UnknownKeyId,
        ),
        (
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(with(claims(), "aud", json!(["b", "a"])).to_string()),
                parts[2]
            ),
            JwtError::BadSignature,
        ),
        (
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode([0u8; 64])
            ),
            JwtError::BadSignature,
        ),
        (
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode([1u8; 10])
            ),
            JwtError::BadSignature,
        ),
        (
            s.sign(&header(), &with(claims(), "exp", Value::Null)),
            JwtError::MissingClaim { name: "exp" },
        ),
        (
            s.sign(&header(), &with(claims(), "exp", json!("soon"))),
            JwtError::MissingClaim { name: "exp" },
        ),
        (
            s.sign(&header(), &with(claims(), "exp", json!(1_800_000_000u64))),
            JwtError::Expired,
        ),
        (
            s.sign(&header(), &with(claims(), "nbf", json!(1_800_000_100u64))),
            JwtError::NotYetValid,
        ),
        (
            s.sign(&header(), &with(claims(), "aud", Value::Null)),
            JwtError::MissingClaim { name: "aud" },
        ),
        (
            s.sign(&header(), &with(claims(), "aud", json!(["b"]))),
            JwtError::AudienceMismatch,
        ),
        (
            s.sign(&header(), &with(claims(), "aud", json!([1]))),
            JwtError::MissingClaim { name: "aud" },
        ),
        (
            s.sign(&header(), &with(claims(), "sub", Value::Null)),
            JwtError::MissingClaim { name: "sub" },
        ),
        (
            s.sign(
                &header(),
                &with(claims(), "sub", json!("spiffe://Example.org/w")),
            ),
            JwtError::BadSubject(crate::id::IdError::BadTrustDomainChar { found: 'E' }),
        ),
    ];
    for (token, want) in cases {
        assert_eq!(check(&token), Err(want), "{token}");
    }
    assert_eq!(
        validate_jwt_svid(&good, "", &s.bundle, t0()),
        Err(JwtError::AudienceMismatch)
    );
}

#[test]
fn token_of_another_authority_has_unknown_kid() {
    let ca = authority();
    let other = authority();
    let svid = ca
        .mint_jwt_svid(&id("spiffe://example.org/w"), &["a".into()], HOUR, t0())
        .unwrap();
    let got = validate_jwt_svid(&token_str(&svid), "a", &other.bundle().jwt_bundle(), t0());
    assert_eq!(got, Err(JwtError::UnknownKeyId));
    // Same kid but another key: the signature is what fails.
    let mut forged = JwtBundle::new();
    let kid = ca.bundle().jwt_authorities[0].kid.clone();
    forged.insert(kid, other.bundle().jwt_authorities[0].public_key.clone());
    let got = validate_jwt_svid(&token_str(&svid), "a", &forged, t0());
    assert_eq!(got, Err(JwtError::BadSignature));
}

proptest! {
    #[test]
    fn validator_never_panics_on_arbitrary_strings(token in ".{0,300}") {
        let _ = validate_jwt_svid(&token, "a", &JwtBundle::new(), t0());
    }

    #[test]
    fn validator_never_panics_on_arbitrary_parts(
        h in proptest::collection::vec(any::<u8>(), 0..80),
        c in proptest::collection::vec(any::<u8>(), 0..80),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let s = Signer::new();
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c),
            URL_SAFE_NO_PAD.encode(sig)
        );
        prop_assert!(validate_jwt_svid(&token, "a", &s.bundle, t0()).is_err());
    }
}
