//! `verify`: each rule, in order, refused with its own variant.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::oidc_signer::{EC_KID, RSA_KID};
use super::*;

/// Verifies with GitHub's policy and the issuer's keys at [`NOW`].
fn check(issuer: &Issuer, token: &str) -> Result<VerifiedJwt, LoginError> {
    verify(token, &policy(), &jwks(issuer), NOW)
}

/// The refusal of `token`, after checking that its message quotes no part of the
/// token's signature (a bearer credential never appears in an error).
fn refusal(issuer: &Issuer, token: &str) -> LoginError {
    let err = check(issuer, token).unwrap_err();
    let signature = token.rsplit('.').next().unwrap();
    if signature.len() > 8 {
        assert!(!err.to_string().contains(signature), "{err}");
        assert!(!format!("{err:?}").contains(signature), "{err:?}");
    }
    err
}

fn rsa_header(alg: &str) -> Value {
    json!({"alg": alg, "kid": RSA_KID, "typ": "JWT"})
}

#[test]
fn rs256_token_verifies() {
    let issuer = Issuer::new();
    let token = issuer.sign_rs256(&github_claims(NOW));
    let verified = check(&issuer, &token).unwrap();
    assert_eq!(verified.kid, RSA_KID);
    assert_eq!(verified.expires_at, NOW + 300);
    assert_eq!(verified.claims, claim_map());
    let shown = format!("{verified:?}");
    assert!(!shown.contains(token.rsplit('.').next().unwrap()));
    assert!(!shown.contains(&token));
}

#[test]
fn es256_token_verifies() {
    let issuer = Issuer::new();
    let token = issuer.sign_es256(&github_claims(NOW));
    let verified = check(&issuer, &token).unwrap();
    assert_eq!(verified.kid, EC_KID);
    assert_eq!(verified.claims["repository"], "acme/app");
}

#[test]
fn expiry_honours_the_leeway() {
    let issuer = Issuer::new();
    // Expired 30 s ago: inside the 60 s leeway.
    let token = issuer.sign_rs256(&claims_with(json!({"exp": NOW - 30})));
    assert_eq!(check(&issuer, &token).unwrap().expires_at, NOW - 30);
    let strict = IssuerPolicy {
        leeway_secs: 0,
        ..policy()
    };
    assert_eq!(
        verify(&token, &strict, &jwks(&issuer), NOW),
        Err(LoginError::Expired)
    );
    // `now == exp + leeway` is expired; a second before is not.
    let edge = issuer.sign_rs256(&claims_with(json!({"exp": NOW - 60})));
    assert_eq!(refusal(&issuer, &edge), LoginError::Expired);
    let inside = issuer.sign_rs256(&claims_with(json!({"exp": NOW - 59})));
    assert!(check(&issuer, &inside).is_ok());
}

#[test]
fn not_yet_valid_and_issued_in_the_future_are_refused() {
    let issuer = Issuer::new();
    let early = issuer.sign_rs256(&claims_with(json!({"nbf": NOW + 61})));
    assert_eq!(refusal(&issuer, &early), LoginError::NotYetValid);
    let within = issuer.sign_rs256(&claims_with(json!({"nbf": NOW + 60, "iat": NOW + 60})));
    assert!(check(&issuer, &within).is_ok());
    let future = issuer.sign_rs256(&claims_with(json!({"iat": NOW + 61})));
    assert_eq!(refusal(&issuer, &future), LoginError::IssuedInFuture);
    // Both are optional.
    let bare = issuer.sign_rs256(&claims_with(json!({"iat": null, "nbf": null})));
    assert!(check(&issuer, &bare).is_ok());
}

#[test]
fn issuer_must_match_exactly() {
    let issuer = Issuer::new();
    for iss in [
        "https://gitlab.com",
        "https://token.actions.githubusercontent.com/",
    ] {
        let token = issuer.sign_rs256(&claims_with(json!({ "iss": iss })));
        assert_eq!(
            refusal(&issuer, &token),
            LoginError::WrongIssuer {
                got: iss.to_owned()
            }
        );
    }
    let err = refusal(
        &issuer,
        &issuer.sign_rs256(&claims_with(json!({"iss": "https://gitlab.com"}))),
    );
    assert_eq!(
        err.to_string(),
        r#"issuer "https://gitlab.com" is not the role's issuer"#
    );
}

#[test]
fn audience_is_a_string_or_an_array() {
    let issuer = Issuer::new();
    let listed = issuer.sign_rs256(&claims_with(json!({"aud": ["vault", "sigil"]})));
    assert!(check(&issuer, &listed).is_ok());
    for aud in [json!("vault"), json!(["vault"]), json!([])] {
        let token = issuer.sign_rs256(&claims_with(json!({ "aud": aud })));
        assert_eq!(refusal(&issuer, &token), LoginError::WrongAudience, "{aud}");
    }
    for aud in [json!(null), json!(7), json!(["sigil", 7])] {
        let token = issuer.sign_rs256(&claims_with(json!({ "aud": aud })));
        assert_eq!(
            refusal(&issuer, &token),
            LoginError::MissingClaim("aud"),
            "{aud}"
        );
    }
}

#[test]
fn required_claims_must_be_present_with_their_type() {
    let issuer = Issuer::new();
    let cases = [
        (json!({"iss": null}), "iss"),
        (json!({"iss": 1}), "iss"),
        (json!({"exp": null}), "exp"),
        (json!({"exp": "1800000300"}), "exp"),
        (json!({"exp": -1}), "exp"),
        (json!({"nbf": "now"}), "nbf"),
        (json!({"iat": true}), "iat"),
    ];
    for (changes, name) in cases {
        let token = issuer.sign_rs256(&claims_with(changes));
        assert_eq!(refusal(&issuer, &token), LoginError::MissingClaim(name));
    }
    // A fractional NumericDate is truncated.
    let fraction = issuer.sign_rs256(&claims_with(json!({"exp": (NOW + 10) as f64 + 0.5})));
    assert_eq!(check(&issuer, &fraction).unwrap().expires_at, NOW + 10);
}

#[test]
fn unknown_and_missing_key_ids_are_refused() {
    let issuer = Issuer::new();
    let unknown = issuer.sign_with_header(
        &json!({"alg": "RS256", "kid": "rsa-2"}),
        &github_claims(NOW),
    );
    assert_eq!(
        refusal(&issuer, &unknown),
        LoginError::UnknownKeyId("rsa-2".to_owned())
    );
    assert_eq!(unverified_kid(&unknown).as_deref(), Some("rsa-2"));
    for header in [
        json!({"alg": "RS256"}),
        json!({"alg": "RS256", "kid": ""}),
        json!({"alg": "RS256", "kid": 1}),
    ] {
        let token = issuer.sign_with_header(&header, &github_claims(NOW));
        assert_eq!(refusal(&issuer, &token), LoginError::MissingKeyId);
        assert_eq!(unverified_kid(&token), None);
    }
    // A long kid is quoted cut short.
    let long = "k".repeat(1000);
    let token = issuer.sign_with_header(&json!({"alg": "RS256", "kid": long}), &json!({}));
    assert_eq!(
        refusal(&issuer, &token),
        LoginError::UnknownKeyId("k".repeat(MAX_QUOTED_LEN))
    );
}

#[test]
fn alg_none_is_refused_in_any_case() {
    let issuer = Issuer::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = issuer.sign_with_header(&rsa_header(alg), &github_claims(NOW));
        assert_eq!(refusal(&issuer, &token), LoginError::AlgNone);
        // The classic form: an empty signature.
        let (unsigned, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            refusal(&issuer, &format!("{unsigned}.")),
            LoginError::AlgNone
        );
    }
}

#[test]
fn hmac_algorithms_are_refused() {
    let issuer = Issuer::new();
    for alg in ["HS256", "HS384", "HS512", "hs256"] {
        let token = issuer.sign_with_header(&rsa_header(alg), &github_claims(NOW));
        assert_eq!(
            refusal(&issuer, &token),
            LoginError::HmacAlgorithm(alg.to_owned())
        );
    }
    let err = LoginError::HmacAlgorithm("HS256".to_owned());
    assert_eq!(err.to_string(), r#"HMAC algorithm "HS256" is refused"#);
}

#[test]
fn algorithms_outside_the_policy_are_refused() {
    let issuer = Issuer::new();
    let rs_only = IssuerPolicy {
        algorithms: vec![Algorithm::Rs256],
        ..policy()
    };
    let token = issuer.sign_es256(&github_claims(NOW));
    assert_eq!(
        verify(&token, &rs_only, &jwks(&issuer), NOW),
        Err(LoginError::AlgorithmNotAllowed("ES256".to_owned()))
    );
    // Unsupported names, and the case-sensitive spelling of a supported one.
    for alg in ["RS512", "PS256", "EdDSA", "rs256", ""] {
        let token = issuer.sign_with_header(&rsa_header(alg), &github_claims(NOW));
        assert_eq!(
            refusal(&issuer, &token),
            LoginError::AlgorithmNotAllowed(alg.to_owned())
        );
    }
    let no_alg = issuer.sign_with_header(&json!({"kid": RSA_KID}), &github_claims(NOW));
    assert!(matches!(
        refusal(&issuer, &no_alg),
        LoginError::Malformed { .. }
    ));
}

#[test]
fn critical_headers_are_refused() {
    let issuer = Issuer::new();
    let header = json!({"alg": "RS256", "kid": RSA_KID, "crit": ["exp"], "exp": 1});
    let token = issuer.sign_with_header(&header, &github_claims(NOW));
    assert_eq!(refusal(&issuer, &token), LoginError::CriticalHeader);
}

#[test]
fn the_key_must_be_of_the_tokens_algorithm() {
    let issuer = Issuer::new();
    // An ES256 header naming the RSA key.
    let token = issuer.sign_with_header(
        &json!({"alg": "ES256", "kid": RSA_KID}),
        &github_claims(NOW),
    );
    assert_eq!(refusal(&issuer, &token), LoginError::KeyAlgorithmMismatch);
    // An RSA key whose own alg says ES256 verifies nothing.
    let mut rsa = issuer.rsa_jwk();
    rsa["alg"] = json!("ES256");
    let keys = Jwks::parse(json!({ "keys": [rsa] }).to_string().as_bytes()).unwrap();
    let token = issuer.sign_rs256(&github_claims(NOW));
    assert_eq!(
        verify(&token, &policy(), &keys, NOW),
        Err(LoginError::KeyAlgorithmMismatch)
    );
}

#[test]
fn tampered_tokens_fail_the_signature() {
    let issuer = Issuer::new();
    for token in [
        issuer.sign_rs256(&github_claims(NOW)),
        issuer.sign_es256(&github_claims(NOW)),
    ] {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let evil = claims_with(json!({"repository": "evil/app"}));
        parts[1] = URL_SAFE_NO_PAD.encode(evil.to_string());
        assert_eq!(refusal(&issuer, &parts.join(".")), LoginError::BadSignature);
        // A signature one byte short.
        let mut signature = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
        signature.pop();
        parts[1] = token.split('.').nth(1).unwrap().to_owned();
        parts[2] = URL_SAFE_NO_PAD.encode(signature);
        assert_eq!(refusal(&issuer, &parts.join(".")), LoginError::BadSignature);
    }
    // Signed by another issuer's key with the same kid.
    let other = Issuer::new();
    let forged = other.sign_es256(&github_claims(NOW));
    assert_eq!(refusal(&issuer, &forged), LoginError::BadSignature);
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let issuer = Issuer::new();
    // Not even a token: the size is checked before the encoding.
    assert_eq!(
        refusal(&issuer, &"!".repeat(MAX_JWT_LEN + 1)),
        LoginError::TooLarge
    );
    assert!(matches!(
        refusal(&issuer, &"!".repeat(MAX_JWT_LEN)),
        LoginError::Malformed { .. }
    ));
    let padded = claims_with(json!({"padding": "p".repeat(MAX_JWT_LEN)}));
    let token = issuer.sign_rs256(&padded);
    assert_eq!(refusal(&issuer, &token), LoginError::TooLarge);
    assert_eq!(unverified_kid(&token), None);
    assert_eq!(
        LoginError::TooLarge.to_string(),
        "token is larger than 16384 bytes"
    );
}

#[test]
fn malformed_tokens_name_the_encoding_rule() {
    let issuer = Issuer::new();
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let header = b64(r#"{"alg":"RS256","kid":"rsa-1"}"#);
    let claims = b64(&github_claims(NOW).to_string());
    let cases = [
        (String::new(), "token is not three dot-separated parts"),
        ("abc".to_owned(), "token is not three dot-separated parts"),
        (
            format!("{header}.{claims}"),
            "token is not three dot-separated parts",
        ),
        (
            format!("{header}.{claims}.c.d"),
            "token is not three dot-separated parts",
        ),
        (
            format!("{header}=.{claims}.c"),
            "header is not unpadded base64url",
        ),
        (
            format!("{}.{claims}.c", b64("[1]")),
            "header is not a JSON object",
        ),
        (
            format!("{}.{claims}.c", b64("{")),
            "header is not a JSON object",
        ),
        (format!("{header}.*.c"), "claims are not unpadded base64url"),
        (
            format!("{header}.{}.c", b64("\"x\"")),
            "claims are not a JSON object",
        ),
        (
            format!("{header}.{claims}.c+/"),
            "signature is not unpadded base64url",
        ),
    ];
    for (token, reason) in cases {
        assert_eq!(
            refusal(&issuer, &token),
            LoginError::Malformed { reason },
            "{token}"
        );
    }
}

#[test]
fn algorithm_names_round_trip() {
    for alg in [Algorithm::Rs256, Algorithm::Es256] {
        assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        assert_eq!(alg.to_string(), alg.as_str());
    }
    let err = "HS256".parse::<Algorithm>().unwrap_err();
    assert_eq!(err, UnsupportedAlgorithm("HS256".to_owned()));
    assert_eq!(
        err.to_string(),
        r#"unsupported algorithm "HS256"; supported are RS256 and ES256"#
    );
}

#[test]
fn every_refusal_has_its_own_message() {
    let s = String::new;
    let all = [
        LoginError::TooLarge,
        LoginError::Malformed { reason: "r" },
        LoginError::AlgNone,
        LoginError::HmacAlgorithm(s()),
        LoginError::AlgorithmNotAllowed(s()),
        LoginError::CriticalHeader,
        LoginError::MissingKeyId,
        LoginError::UnknownKeyId(s()),
        LoginError::KeyAlgorithmMismatch,
        LoginError::BadSignature,
        LoginError::WrongIssuer { got: s() },
        LoginError::WrongAudience,
        LoginError::Expired,
        LoginError::NotYetValid,
        LoginError::IssuedInFuture,
        LoginError::MissingClaim(""),
        LoginError::ClaimMissing { claim: s() },
        LoginError::ClaimMismatch {
            claim: s(),
            bound: s(),
        },
        LoginError::ClaimGlobMismatch {
            claim: s(),
            pattern: s(),
        },
        LoginError::ClaimNotInterpolable { claim: s() },
        LoginError::Template(TemplateError::Reserved),
        LoginError::BadSpiffeId(crate::id::IdError::TooLong),
        LoginError::ReservedSpiffeId,
    ];
    let mut messages: Vec<String> = all.iter().map(ToString::to_string).collect();
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), all.len());
    assert_eq!(LoginError::Expired.to_string(), "token has expired");
    assert_eq!(
        LoginError::NotYetValid.to_string(),
        "token is not valid yet (nbf)"
    );
    assert_eq!(LoginError::AlgNone.to_string(), "alg none is refused");
    assert_eq!(
        LoginError::WrongAudience.to_string(),
        "audience does not include any of the issuer's audiences"
    );
}

/// One issuer for the property tests, whose cases would otherwise each load a key.
static ISSUER: LazyLock<Issuer> = LazyLock::new(Issuer::new);

proptest! {
    #[test]
    fn arbitrary_input_is_refused_without_panicking(token in "\\PC{0,300}") {
        prop_assert!(check(&ISSUER, &token).is_err());
        let _ = unverified_kid(&token);
    }

    #[test]
    fn arbitrary_header_and_claims_are_refused_without_panicking(
        header in "[ -~]{0,80}",
        claims in "[ -~]{0,80}",
        signature in "[A-Za-z0-9_-]{0,100}",
    ) {
        let token = format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        prop_assert!(check(&ISSUER, &token).is_err());
    }
}
