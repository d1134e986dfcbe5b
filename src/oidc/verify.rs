//! Verifying a CI platform's OIDC ID token (a JWT, RFC 7519, signed as a compact JWS,
//! RFC 7515) against its issuer's JWKS and the issuer's policy, following the JWT Best
//! Current Practices (RFC 8725): the algorithm comes from the policy, never from the
//! token alone; `none` and HMAC are refused by name; the key must be of the token's
//! algorithm; claims are checked only after the signature.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde_json::{Map, Value};

use super::error::{LoginError, quoted};
use super::jwks::{JwkKey, Jwks};

/// Tokens longer than this are refused before any decoding. CI ID tokens are 1–2 KiB;
/// the bound matches what sigil accepts for its own JWT-SVIDs, but is a separate limit:
/// these tokens come from another issuer.
pub const MAX_JWT_LEN: usize = 16 * 1024;
/// The clock skew tolerated between sigil and an issuer, unless its policy says
/// otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// Length of an ES256 signature (r ‖ s, RFC 7518 §3.4).
const ES256_SIG_LEN: usize = 64;

/// A JWS signature algorithm sigil verifies (RFC 7518 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (GitHub Actions, GitLab).
    Rs256,
    /// ECDSA with P-256 and SHA-256.
    Es256,
}

impl Algorithm {
    /// The name a JWS header uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an algorithm sigil verifies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported algorithm {0:?}; supported are RS256 and ES256")]
pub struct UnsupportedAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;

    /// Parses a JWS `alg` name; names are case-sensitive (RFC 7515 §4.1.1).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "RS256" => Ok(Algorithm::Rs256),
            "ES256" => Ok(Algorithm::Es256),
            _ => Err(UnsupportedAlgorithm(quoted(name))),
        }
    }
}

/// What a trusted issuer's tokens must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerPolicy {
    /// The exact `iss` (e.g. `https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// `aud` must name at least one of these.
    pub audiences: Vec<String>,
    /// The algorithms accepted from this issuer.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// A token that passed [`verify`]. It holds the claims, never the token, which is a
/// bearer credential.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    /// Every claim as sent; none is secret.
    pub claims: Map<String, Value>,
    /// The `exp` claim, in Unix seconds (without leeway).
    pub expires_at: u64,
    /// The `kid` of the key that signed it.
    pub kid: String,
}

/// Verifies `token` from the issuer of `policy` with its keys `jwks` at `now` (Unix
/// seconds). The checks run in this order, and the first that fails is returned: size;
/// encoding; header `alg` (`none`, HMAC, then the policy's list); `crit`; `kid` and its
/// key; signature; `iss`; `aud`; `exp`; `nbf`; `iat`.
pub fn verify(
    token: &str,
    policy: &IssuerPolicy,
    jwks: &Jwks,
    now: u64,
) -> Result<VerifiedJwt, LoginError> {
    let parts = decode(token)?;
    let alg = check_alg(&parts.header, policy)?;
    if parts.header.contains_key("crit") {
        return Err(LoginError::CriticalHeader);
    }
    let kid = match parts.header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid,
        _ => return Err(LoginError::MissingKeyId),
    };
    let jwk = jwks
        .get(kid)
        .ok_or_else(|| LoginError::UnknownKeyId(quoted(kid)))?;
    if jwk.algorithm() != alg || jwk.declared_alg().is_some_and(|a| a != alg) {
        return Err(LoginError::KeyAlgorithmMismatch);
    }
    check_signature(jwk.key(), parts.signing_input, &parts.signature)?;
    let expires_at = check_claims(&parts.claims, policy, now)?;
    Ok(VerifiedJwt {
        kid: kid.clone(),
        claims: parts.claims,
        expires_at,
    })
}

/// The `kid` in a token's header, read without verifying anything: to tell whether an
/// issuer's JWKS should be fetched again before [`verify`] runs. `None` for a token over
/// the size limit, a header that does not decode, or one without a string `kid`.
pub fn unverified_kid(token: &str) -> Option<String> {
    if token.len() > MAX_JWT_LEN {
        return None;
    }
    let (header_b64, _) = token.split_once('.')?;
    let header =
        crate::authority::jws::json_object(header_b64, crate::authority::jws::Part::Header).ok()?;
    match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => Some(kid.clone()),
        _ => None,
    }
}

/// A token split and decoded, nothing checked yet.
struct Parts<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn malformed(reason: &'static str) -> LoginError {
    LoginError::Malformed { reason }
}

fn decode(token: &str) -> Result<Parts<'_>, LoginError> {
    if token.len() > MAX_JWT_LEN {
        return Err(LoginError::TooLarge);
    }
    use crate::authority::jws::{self, Part};
    let parts = jws::split(token).ok_or(malformed("token is not three dot-separated parts"))?;
    let header = jws::json_object(parts.header_b64, Part::Header).map_err(malformed)?;
    let claims = jws::json_object(parts.claims_b64, Part::Claims).map_err(malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(parts.sig_b64)
        .map_err(|_| malformed("signature is not unpadded base64url"))?;
    Ok(Parts {
        header,
        claims,
        signing_input: parts.signing_input,
        signature,
    })
}

/// The header's `alg`, if the policy allows it. `none` and HMAC get their own refusals,
/// whatever the policy says, so a log shows an attack for what it is.
fn check_alg(header: &Map<String, Value>, policy: &IssuerPolicy) -> Result<Algorithm, LoginError> {
    let Some(Value::String(name)) = header.get("alg") else {
        return Err(malformed("header alg is missing or not a string"));
    };
    if name.eq_ignore_ascii_case("none") {
        return Err(LoginError::AlgNone);
    }
    if name
        .get(..2)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("HS"))
    {
        return Err(LoginError::HmacAlgorithm(quoted(name)));
    }
    match name.parse::<Algorithm>() {
        Ok(alg) if policy.algorithms.contains(&alg) => Ok(alg),
        _ => Err(LoginError::AlgorithmNotAllowed(quoted(name))),
    }
}

fn check_signature(key: &JwkKey, signing_input: &str, signature: &[u8]) -> Result<(), LoginError> {
    let message = signing_input.as_bytes();
    let verified = match key {
        JwkKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
            .is_ok(),
        JwkKey::EcP256 { point } => {
            signature.len() == ES256_SIG_LEN
                && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
        }
    };
    if verified {
        Ok(())
    } else {
        Err(LoginError::BadSignature)
    }
}

/// Checks the registered claims; returns `exp`.
fn check_claims(
    claims: &Map<String, Value>,
    policy: &IssuerPolicy,
    now: u64,
) -> Result<u64, LoginError> {
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(LoginError::MissingClaim("iss"))?;
    if iss != policy.issuer {
        return Err(LoginError::WrongIssuer { got: quoted(iss) });
    }
    let named = |aud: &str| policy.audiences.iter().any(|a| a == aud);
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => named(aud),
        Some(Value::Array(list)) => {
            let mut any = false;
            for aud in list {
                any |= named(aud.as_str().ok_or(LoginError::MissingClaim("aud"))?);
            }
            any
        }
        _ => return Err(LoginError::MissingClaim("aud")),
    };
    if !audience_ok {
        return Err(LoginError::WrongAudience);
    }
    let leeway = policy.leeway_secs;
    let exp = numeric_claim(claims, "exp")?.ok_or(LoginError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(LoginError::Expired);
    }
    if numeric_claim(claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(LoginError::NotYetValid);
    }
    if numeric_claim(claims, "iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(LoginError::IssuedInFuture);
    }
    Ok(exp)
}

/// A NumericDate claim (RFC 7519 §2) as whole seconds: `None` when absent; fractions
/// are truncated; negative or non-numeric values are [`LoginError::MissingClaim`].
fn numeric_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, LoginError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    });
    seconds.map(Some).ok_or(LoginError::MissingClaim(name))
}
