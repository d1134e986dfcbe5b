//! JWT-SVIDs (SPEC §3.1, the JWT-SVID standard): the ES256 signing keys, minting, and
//! the validator clients use — which also checks every token we mint before it leaves.
//!
//! Tokens are compact JWS, base64url without padding, header exactly
//! `{"alg":"ES256","kid":…,"typ":"JWT"}`, claims `sub`, `aud` (array), `exp`, `iat`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::jws::Part;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Map, Value};

use super::bundle::JwtAuthority;
use super::jwt_limits::{ES256_SIG_LEN, KID_HEX_LEN, MAX_TOKEN_LEN, check_audiences};
use super::{Authority, AuthorityError, from_unix, unix};
use crate::id::{IdError, SpiffeId};
use crate::secret::Secret;

/// A minted JWT-SVID. The token is a bearer credential, so it lives in a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// The compact JWS.
    pub token: Secret,
    /// The `sub` claim.
    pub spiffe_id: SpiffeId,
    /// The `exp` claim.
    pub expires_at: SystemTime,
    /// The `iat` claim.
    pub issued_at: SystemTime,
}

impl JwtSvid {
    /// The token as text (a compact JWS is ASCII). Every call site handles a bearer
    /// credential: never log or format the result.
    pub fn token_str(&self) -> &str {
        std::str::from_utf8(self.token.expose()).unwrap_or_default()
    }
}

/// The claims of a token that passed [`validate_jwt_svid`].
#[derive(Debug, Clone, PartialEq)]
pub struct JwtClaims {
    /// The `sub` claim.
    pub spiffe_id: SpiffeId,
    /// The `aud` claim (a single-string `aud` becomes one element).
    pub audiences: Vec<String>,
    /// The `exp` claim.
    pub expires_at: SystemTime,
    /// The `iat` claim, when present.
    pub issued_at: Option<SystemTime>,
    /// Every claim as sent, for the Workload API's ValidateJWTSVID response.
    pub all: Map<String, Value>,
}

/// Why a token is not a valid JWT-SVID. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is not three base64url (unpadded) parts holding JSON objects, or is
    /// longer than 16 KiB.
    #[error("malformed token: {reason}")]
    MalformedToken {
        /// The broken encoding rule.
        reason: &'static str,
    },
    /// The header `alg` is not ES256.
    #[error("unsupported algorithm (only ES256 is accepted)")]
    UnsupportedAlgorithm,
    /// The header `typ` is present and neither `JWT` nor `JOSE`.
    #[error("header typ must be JWT or JOSE")]
    BadType,
    /// The header carries `crit`, whose extensions this validator does not understand.
    #[error("critical header extensions are not supported")]
    UnsupportedCriticalHeader,
    /// The header has no `kid`.
    #[error("header has no kid")]
    MissingKeyId,
    /// No key in the bundle has the header's `kid`.
    #[error("unknown key id")]
    UnknownKeyId,
    /// The signature does not verify with the bundle key.
    #[error("signature does not verify")]
    BadSignature,
    /// A required claim is missing or has the wrong JSON type.
    #[error("claim {name:?} is missing or has the wrong type")]
    MissingClaim {
        /// The claim name.
        name: &'static str,
    },
    /// `exp` is at or before `now`.
    #[error("token has expired")]
    Expired,
    /// `nbf` is after `now`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `aud` does not contain the expected audience.
    #[error("audience mismatch")]
    AudienceMismatch,
    /// `sub` is not a valid SPIFFE ID.
    #[error("sub is not a valid SPIFFE ID: {0}")]
    BadSubject(IdError),
    /// `sub` has no path: it names a trust domain, not the workload a JWT-SVID is
    /// issued to (JWT-SVID §3.1).
    #[error("sub names a trust domain, not a workload")]
    SubjectNotAWorkload,
    /// A token just minted carries other claims than were requested.
    #[error("minted claims differ from the request")]
    ClaimsDiffer,
}

/// Public keys of one trust domain by `kid`: what [`validate_jwt_svid`] trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtBundle {
    keys: BTreeMap<String, Vec<u8>>,
}

impl JwtBundle {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the P-256 key `kid`, as an uncompressed point (65 bytes).
    pub fn insert(&mut self, kid: String, public_key: Vec<u8>) {
        self.keys.insert(kid, public_key);
    }

    /// The key with `kid`.
    pub fn get(&self, kid: &str) -> Option<&[u8]> {
        self.keys.get(kid).map(Vec::as_slice)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the bundle has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One JWT signing key. Holds a private key, so it has no `Debug`.
pub(super) struct JwtKey {
    pub(super) kid: String,
    pub(super) pkcs8: Secret,
    key_pair: EcdsaKeyPair,
    pub(super) not_after: SystemTime,
}

impl JwtKey {
    /// A fresh P-256 key with a random 128-bit hex `kid`.
    pub(super) fn generate(
        not_after: SystemTime,
        rng: &dyn SecureRandom,
    ) -> Result<Self, AuthorityError> {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            .map_err(|_| AuthorityError::Key)?;
        let mut kid = [0u8; KID_HEX_LEN / 2];
        rng.fill(&mut kid).map_err(|_| AuthorityError::Random)?;
        Self::from_parts(
            hex::encode(kid),
            Secret::from_slice(doc.as_ref()),
            not_after,
        )
    }

    /// Loads a key from its PKCS#8 form.
    pub(super) fn from_parts(
        kid: String,
        pkcs8: Secret,
        not_after: SystemTime,
    ) -> Result<Self, AuthorityError> {
        let key_pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.expose(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|_| AuthorityError::Key)?;
        Ok(Self {
            kid,
            pkcs8,
            key_pair,
            not_after,
        })
    }

    /// The bundle entry for this key.
    pub(super) fn authority(&self) -> JwtAuthority {
        JwtAuthority {
            kid: self.kid.clone(),
            public_key: self.key_pair.public_key().as_ref().to_vec(),
            not_after: Some(self.not_after),
        }
    }
}

/// The `typ` of a sigil token (RFC 8725 §3.11, explicit typing). It is
/// signed with the JWT-SVID keys so that it verifies against the bundle, and
/// a JWT-SVID validator accepts only `JWT` or `JOSE` (JWT-SVID §2.3): no
/// relying party that follows the standard takes a sigil token, which may
/// be bound to a certificate, for a JWT-SVID, which is not.
pub const TOKEN_TYP: &str = "sigil+jwt";

#[derive(serde::Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a [String],
    exp: u64,
    iat: u64,
}

impl Authority {
    /// Mints a JWT-SVID for `spiffe_id` with `aud` exactly `audiences`. `exp` is
    /// `now + ttl`, capped at the signing key's expiry.
    ///
    /// The request is checked before signing: a workload ID of this trust domain and
    /// audiences within the limits of [`super::jwt_limits`], which guarantee the token
    /// fits what validators accept.
    pub fn mint_jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<JwtSvid, AuthorityError> {
        let (key, iat, exp) = self.jwt_window(spiffe_id, audiences, ttl, now)?;
        let claims = Claims {
            sub: spiffe_id.as_str(),
            aud: audiences,
            exp,
            iat,
        };
        let token = self.sign_compact(key, "JWT", &claims)?;

        let checked = check_minted(&token, &key.kid, audiences, spiffe_id, now)?;
        Ok(JwtSvid {
            token: Secret::from(token),
            spiffe_id: checked.spiffe_id,
            expires_at: from_unix(exp),
            issued_at: from_unix(iat),
        })
    }
}

/// A sigil token's claims: the four every token has, then the token's own,
/// written straight from the caller's value (no intermediate JSON map).
#[derive(serde::Serialize)]
struct TokenClaims<'a, T> {
    sub: &'a str,
    aud: &'a [String],
    iat: u64,
    exp: u64,
    #[serde(flatten)]
    rest: &'a T,
}

/// A sigil token as signed: the compact JWS and its final `exp`.
#[derive(Debug)]
pub struct SignedToken {
    /// The compact JWS: a bearer credential.
    pub token: Secret,
    /// The `exp` claim as signed (capped at the signing key's expiry).
    pub expires_at: u64,
}

impl Authority {
    /// Signs a sigil token (an ES256 JWT with the key of a JWT-SVID, so it
    /// verifies against the trust bundle, and its own `typ`, [`TOKEN_TYP`],
    /// so it is never taken for one): `claims` plus
    /// `sub`, `aud`, `iat` and `exp` (`now + ttl`, capped at the signing
    /// key's expiry). `claims` must not set those four.
    pub fn sign_token(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
        claims: &impl serde::Serialize,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<SignedToken, AuthorityError> {
        let (key, iat, exp) = self.jwt_window(spiffe_id, audiences, ttl, now)?;
        let all = TokenClaims {
            sub: spiffe_id.as_str(),
            aud: audiences,
            iat,
            exp,
            rest: claims,
        };
        let token = self.sign_compact(key, TOKEN_TYP, &all)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthorityError::CertificateEncoding {
                reason: format!("token would be longer than {MAX_TOKEN_LEN} bytes"),
            });
        }
        Ok(SignedToken {
            token: Secret::from(token),
            expires_at: exp,
        })
    }
}

impl Authority {
    /// The checks every JWT this authority signs passes first, and the key,
    /// `iat` and `exp` (`now + ttl`, capped at the key's expiry) to sign with.
    fn jwt_window(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(&JwtKey, u64, u64), AuthorityError> {
        self.check_workload_id(spiffe_id)?;
        check_audiences(audiences)?;
        if ttl.as_secs() == 0 {
            return Err(AuthorityError::InvalidTtl);
        }
        let key = self.jwt_keys.signer()?;
        let iat = unix(now);
        let exp = iat.saturating_add(ttl.as_secs()).min(unix(key.not_after));
        if exp <= iat {
            return Err(AuthorityError::JwtKeyExpired);
        }
        Ok((key, iat, exp))
    }

    /// `claims` as a compact JWS signed by `key` (ES256, header `kid` and
    /// `typ`).
    fn sign_compact(
        &self,
        key: &JwtKey,
        typ: &'static str,
        claims: &impl serde::Serialize,
    ) -> Result<String, AuthorityError> {
        let header = Header {
            alg: "ES256",
            kid: &key.kid,
            typ,
        };
        let header = json_bytes(&header, 128)?;
        let claims = json_bytes(claims, 512)?;
        // The whole token is built in one buffer of its final size: both
        // parts in base64url, the dots, and the 64-byte signature's 86.
        let b64 = |n: usize| n.div_ceil(3) * 4;
        let mut token = String::with_capacity(b64(header.len()) + b64(claims.len()) + 2 + 88);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let sig = key
            .key_pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| AuthorityError::Random)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut token);
        Ok(token)
    }
}

/// Validates what we issue with the client's checks (header, kid, claims), before the
/// token leaves. The signature is not verified again: we made it a moment ago with our
/// own key, and a verify would cost about three times the sign.
fn check_minted(
    token: &str,
    kid: &str,
    audiences: &[String],
    spiffe_id: &SpiffeId,
    now: SystemTime,
) -> Result<JwtClaims, JwtError> {
    let decoded = decode(token)?;
    if decoded.kid != kid {
        return Err(JwtError::UnknownKeyId);
    }
    let first_audience = audiences.first().map(String::as_str).unwrap_or_default();
    let checked = check_claims(decoded.claims, first_audience, now)?;
    if checked.audiences != audiences || checked.spiffe_id != *spiffe_id {
        return Err(JwtError::ClaimsDiffer);
    }
    Ok(checked)
}

/// `value` as JSON, in a buffer of `room` bytes to begin with (it grows if
/// need be).
fn json_bytes<T: serde::Serialize + ?Sized>(
    value: &T,
    room: usize,
) -> Result<Vec<u8>, AuthorityError> {
    let mut json = Vec::with_capacity(room);
    serde_json::to_writer(&mut json, value).map_err(|_| AuthorityError::CertificateEncoding {
        reason: "JSON encoding failed".to_owned(),
    })?;
    Ok(json)
}

/// Validates a JWT-SVID for `audience` against `bundle` at `now`: header (alg ES256, typ
/// JWT/JOSE or absent, no crit, kid known), signature, then claims (`exp` after `now`,
/// `nbf` if present not after `now`, `aud` contains `audience`, `sub` a SPIFFE ID).
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    bundle: &JwtBundle,
    now: SystemTime,
) -> Result<JwtClaims, JwtError> {
    let decoded = decode(token)?;
    let public_key = bundle.get(&decoded.kid).ok_or(JwtError::UnknownKeyId)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
        .verify(decoded.signing_input.as_bytes(), &decoded.signature)
        .map_err(|_| JwtError::BadSignature)?;
    check_claims(decoded.claims, audience, now)
}

/// A token split and decoded, header checked, signature not yet verified.
struct Decoded<'a> {
    kid: String,
    signing_input: &'a str,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

/// The `kid` in the header of a compact JWS, read without verifying anything
/// (to find which key signed a token already verified, or one the caller holds);
/// `None` for a token over the size limit, a header that does not decode, or one
/// without a `kid`.
pub fn jwt_key_id(token: &[u8]) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let header = token.split(|b| *b == b'.').next()?;
    let json = URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: Value = serde_json::from_slice(&json).ok()?;
    value.get("kid")?.as_str().map(str::to_owned)
}

fn malformed(reason: &'static str) -> JwtError {
    JwtError::MalformedToken { reason }
}

fn decode(token: &str) -> Result<Decoded<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token longer than 16 KiB"));
    }
    let parts =
        super::jws::split(token).ok_or(malformed("token is not three dot-separated parts"))?;
    let header = super::jws::json_object(parts.header_b64, Part::Header).map_err(malformed)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "ES256" => {}
        Some(_) => return Err(JwtError::UnsupportedAlgorithm),
        None => return Err(malformed("header has no alg")),
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
        Some(_) => return Err(JwtError::BadType),
    }
    if header.contains_key("crit") {
        return Err(JwtError::UnsupportedCriticalHeader);
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        _ => return Err(JwtError::MissingKeyId),
    };
    let claims = super::jws::json_object(parts.claims_b64, Part::Claims).map_err(malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(parts.sig_b64)
        .map_err(|_| malformed("signature is not unpadded base64url"))?;
    if signature.len() != ES256_SIG_LEN {
        return Err(JwtError::BadSignature);
    }
    Ok(Decoded {
        kid,
        signing_input: parts.signing_input,
        signature,
        claims,
    })
}

fn check_claims(
    claims: Map<String, Value>,
    audience: &str,
    now: SystemTime,
) -> Result<JwtClaims, JwtError> {
    let now_s = unix(now);
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(JwtError::MissingClaim { name: "exp" })?;
    if exp <= now_s {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(JwtError::MissingClaim { name: "nbf" })?;
        if nbf > now_s {
            return Err(JwtError::NotYetValid);
        }
    }
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or(JwtError::MissingClaim { name: "aud" })?,
        _ => return Err(JwtError::MissingClaim { name: "aud" }),
    };
    if audience.is_empty() || !audiences.iter().any(|a| a == audience) {
        return Err(JwtError::AudienceMismatch);
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingClaim { name: "sub" })?;
    let spiffe_id = SpiffeId::parse(sub).map_err(JwtError::BadSubject)?;
    // A trust domain ID in `sub` would let a token speak for the authority itself.
    if spiffe_id.check_workload().is_err() {
        return Err(JwtError::SubjectNotAWorkload);
    }
    let issued_at = claims.get("iat").and_then(numeric_date).map(from_unix);
    Ok(JwtClaims {
        spiffe_id,
        audiences,
        expires_at: from_unix(exp),
        issued_at,
        all: claims,
    })
}

/// A JWT NumericDate as whole seconds; fractions are truncated, negatives refused.
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}
