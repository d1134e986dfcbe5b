//! A test OIDC issuer shaped like GitHub Actions: the committed RSA 2048 fixture key
//! (kid `rsa-1`) and a P-256 key generated per issuer (kid `ec-1`), their JWKS, and
//! tokens signed with them. The unit tests of `sigil::oidc` include this file too, so
//! both sign tokens the same way.
#![allow(
    dead_code,
    reason = "a shared helper: each test module uses the part it needs"
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};

/// GitHub Actions' issuer.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The audience [`github_claims`] names.
pub const AUDIENCE: &str = "sigil";
/// The kid of the RSA key.
pub const RSA_KID: &str = "rsa-1";
/// The kid of the P-256 key.
pub const EC_KID: &str = "ec-1";

/// The RSA 2048 test key, PKCS#8 DER (how it was made: tests/fixtures/oidc/README.md).
/// It signs test tokens only.
const RSA_PKCS8: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/oidc/rsa2048.pk8.der"
));

/// A test issuer. Holds private keys, so it has no `Debug`.
pub struct Issuer {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Default for Issuer {
    fn default() -> Self {
        Self::new()
    }
}

impl Issuer {
    /// The fixture RSA key and a fresh P-256 key.
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let rsa = RsaKeyPair::from_pkcs8(RSA_PKCS8).expect("RSA fixture key");
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate P-256 key");
        let ec =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
                .expect("load P-256 key");
        Self { rsa, ec, rng }
    }

    /// The RSA key as a JWK, as GitHub publishes it.
    pub fn rsa_jwk(&self) -> Value {
        let public: PublicKeyComponents<Vec<u8>> = self.rsa.public().into();
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": RSA_KID,
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        })
    }

    /// The P-256 key as a JWK.
    pub fn ec_jwk(&self) -> Value {
        let point = self.ec.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": EC_KID,
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    /// The issuer's JWKS document with both keys.
    pub fn jwks_json(&self) -> String {
        json!({ "keys": [self.rsa_jwk(), self.ec_jwk()] }).to_string()
    }

    /// A token signed RS256 with the RSA key.
    pub fn sign_rs256(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "kid": RSA_KID, "typ": "JWT"}),
            claims,
        )
    }

    /// A token signed ES256 with the P-256 key.
    pub fn sign_es256(&self, claims: &Value) -> String {
        let input = signing_input(
            &json!({"alg": "ES256", "kid": EC_KID, "typ": "JWT"}),
            claims,
        );
        let signature = self
            .ec
            .sign(&self.rng, input.as_bytes())
            .expect("ES256 sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// A token with exactly `header`, signed RS256 with the RSA key whatever the header
    /// says: for crafted headers (`alg: none`, `HS256`, another `kid`).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let mut signature = vec![0; self.rsa.public().modulus_len()];
        self.rsa
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                input.as_bytes(),
                &mut signature,
            )
            .expect("RS256 sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Claims shaped like a GitHub Actions ID token for a push to `main` of `acme/app`,
/// issued at `now`, valid for five minutes, for the audience `sigil`.
pub fn github_claims(now: u64) -> Value {
    json!({
        "iss": GITHUB_ISSUER,
        "aud": AUDIENCE,
        "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app",
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "environment": "prod",
        "run_id": "123",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    })
}
