//! Trust bundles (SPEC §3.1, the SPIFFE Trust Domain and Bundle standard): the X.509 roots
//! and JWT keys of one trust domain, as PEM, as concatenated DER, and as the SPIFFE bundle
//! JWKS (`keys`, `spiffe_sequence`, `spiffe_refresh_hint`).
//!
//! Published JWKs follow the SVID standards to the letter: an `x509-svid` key has `use`,
//! `kty` and its key parameters, and `x5c` with exactly one CA certificate, and no `kid`
//! (X509-SVID §6.1: it "MUST NOT be set"); a `jwt-svid` key has `use`, `kid` (JWT-SVID
//! §6.1: it "MUST be set"), `kty`, `crv`, `x`, `y`. Parsing follows the consumer rules:
//! unknown `use` or key types are ignored (Trust Domain and Bundle §4.1.3, §4.2.1), an
//! `x509-svid` key without `x5c` is ignored and only the first `x5c` value is read
//! (X509-SVID §6.2), and members the standards do not use, such as a `kid` on an
//! `x509-svid` key, are ignored.

use std::collections::BTreeSet;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::jwt::JwtBundle;
use crate::id::TrustDomain;

/// Bundle documents larger than this are refused before parsing.
const MAX_BUNDLE_JSON_LEN: usize = 1024 * 1024;
/// Length of one P-256 coordinate.
const P256_COORD_LEN: usize = 32;

/// The trust bundle of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Whose bundle this is.
    pub trust_domain: TrustDomain,
    /// Root CA certificates, DER. Never empty for a bundle we publish.
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT signing public keys.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// `spiffe_sequence`: increases whenever the key set changes.
    pub sequence: u64,
    /// `spiffe_refresh_hint` in seconds.
    pub refresh_hint_secs: u64,
}

/// One JWT signing public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// The key id (`kid` in tokens and in the JWKS).
    pub kid: String,
    /// The P-256 public key as an uncompressed point (65 bytes, `04 ‖ x ‖ y`).
    pub public_key: Vec<u8>,
    /// When the key stops signing; unknown for bundles parsed from JSON.
    pub not_after: Option<SystemTime>,
}

/// Why a SPIFFE bundle document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The document is larger than 1 MiB.
    #[error("bundle document is larger than 1 MiB")]
    TooLarge,
    /// The document is not a JSON object.
    #[error("bundle is not a JSON object")]
    NotJsonObject,
    /// The `keys` member is missing or not an array of objects.
    #[error("bundle has no \"keys\" array of objects")]
    MissingKeys,
    /// `spiffe_sequence` or `spiffe_refresh_hint` is not a non-negative integer.
    #[error("{name} must be a non-negative integer")]
    BadNumber {
        /// The member name.
        name: &'static str,
    },
    /// An `x509-svid` key's first `x5c` value is not a base64 DER certificate.
    #[error("x509-svid key's x5c does not hold a base64 DER certificate")]
    BadX509Authority,
    /// A `jwt-svid` key has no non-empty `kid`.
    #[error("jwt-svid key has no kid")]
    MissingKeyId,
    /// Two `jwt-svid` keys share a `kid`.
    #[error("duplicate kid {kid:?}")]
    DuplicateKeyId {
        /// The repeated key id.
        kid: String,
    },
    /// A `jwt-svid` key has no `kty` (Trust Domain and Bundle §4.2.1: it "MUST be set").
    #[error("jwt-svid key has no kty")]
    MissingKeyType,
    /// A `jwt-svid` key's `x`/`y` are not 32-byte unpadded base64url values.
    #[error("jwt-svid key coordinates are malformed")]
    BadJwtKeyCoordinates,
}

impl Bundle {
    /// The roots as PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.x509_authorities)
    }

    /// The roots as concatenated DER (the Workload API bundle value).
    pub fn x509_concat_der(&self) -> Vec<u8> {
        self.x509_authorities.concat()
    }

    /// The JWT keys by `kid`, for [`super::validate_jwt_svid`].
    pub fn jwt_bundle(&self) -> JwtBundle {
        let mut b = JwtBundle::new();
        for a in &self.jwt_authorities {
            b.insert(a.kid.clone(), a.public_key.clone());
        }
        b
    }

    /// The SPIFFE bundle JWKS. Roots carry `use: x509-svid`, `x5c` (exactly the one
    /// certificate) and their public key parameters, and no `kid`; JWT keys carry
    /// `use: jwt-svid`, `kid`, `kty: EC`, `crv: P-256`, `x`, `y`.
    pub fn to_spiffe_json(&self) -> String {
        let keys: Vec<Value> = self
            .x509_authorities
            .iter()
            .map(|d| x509_jwk(d))
            .chain(self.jwt_authorities.iter().map(jwt_jwk))
            .collect();
        let doc = json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint_secs,
        });
        // Serializing a `Value` with string keys cannot fail.
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// The JWT bundle as the Workload API serves it: a JWKS of the JWT keys
    /// only, each with its `kid`.
    pub fn to_jwt_jwks_json(&self) -> String {
        let keys: Vec<Value> = self.jwt_authorities.iter().map(jwt_jwk).collect();
        // Serializing a `Value` with string keys cannot fail.
        serde_json::to_string(&json!({ "keys": keys })).unwrap_or_default()
    }

    /// Parses a SPIFFE bundle JWKS for `td` by the consumer rules in this module's
    /// documentation; keys that are not ignored must be well formed.
    pub fn from_spiffe_json(td: &TrustDomain, json: &str) -> Result<Self, BundleError> {
        if json.len() > MAX_BUNDLE_JSON_LEN {
            return Err(BundleError::TooLarge);
        }
        let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(json) else {
            return Err(BundleError::NotJsonObject);
        };
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err(BundleError::MissingKeys);
        };
        let mut bundle = Self {
            trust_domain: td.clone(),
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: optional_u64(&doc, "spiffe_sequence")?,
            refresh_hint_secs: optional_u64(&doc, "spiffe_refresh_hint")?,
        };
        let mut kids = BTreeSet::new();
        for key in keys {
            let Value::Object(jwk) = key else {
                return Err(BundleError::MissingKeys);
            };
            match jwk.get("use").and_then(Value::as_str) {
                Some("x509-svid") => {
                    if let Some(der) = parse_x5c(jwk)? {
                        bundle.x509_authorities.push(der);
                    }
                }
                Some("jwt-svid") => {
                    let Some(a) = parse_jwt_key(jwk)? else {
                        continue;
                    };
                    if !kids.insert(a.kid.clone()) {
                        return Err(BundleError::DuplicateKeyId { kid: a.kid });
                    }
                    bundle.jwt_authorities.push(a);
                }
                _ => {}
            }
        }
        Ok(bundle)
    }
}

fn optional_u64(doc: &Map<String, Value>, name: &'static str) -> Result<u64, BundleError> {
    match doc.get(name) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or(BundleError::BadNumber { name }),
    }
}

/// The CA certificate of an `x509-svid` key, or `None` when the key must be ignored.
///
/// X509-SVID §6.2: "If `x5c` is not set, or is empty, then the entry MUST be ignored",
/// and "all but the first MUST be ignored". A first value that is not a certificate is
/// an error: the publisher meant a root and sent something broken.
fn parse_x5c(jwk: &Map<String, Value>) -> Result<Option<Vec<u8>>, BundleError> {
    let first = match jwk.get("x5c") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(x5c)) => match x5c.first() {
            None => return Ok(None),
            Some(first) => first,
        },
        Some(_) => return Err(BundleError::BadX509Authority),
    };
    let Value::String(b64) = first else {
        return Err(BundleError::BadX509Authority);
    };
    let der = STANDARD
        .decode(b64)
        .map_err(|_| BundleError::BadX509Authority)?;
    match X509Certificate::from_der(&der) {
        Ok(([], _)) => Ok(Some(der)),
        _ => Err(BundleError::BadX509Authority),
    }
}

/// The key of a `jwt-svid` JWK, or `None` for a key type this validator cannot use.
///
/// Trust Domain and Bundle §4.2.1: "Clients encountering an unknown key type MUST ignore
/// the entire JWK element". ES256 is the only algorithm accepted, so any key that is not
/// EC P-256 is unknown here; ignoring it (rather than refusing the bundle) keeps the
/// rest of a federated bundle usable, and tokens signed by it fail as unknown `kid`.
fn parse_jwt_key(jwk: &Map<String, Value>) -> Result<Option<JwtAuthority>, BundleError> {
    let kid = match jwk.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(BundleError::MissingKeyId),
    };
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(BundleError::MissingKeyType)?;
    let crv = jwk.get("crv").and_then(Value::as_str);
    if kty != "EC" || crv != Some("P-256") {
        return Ok(None);
    }
    let coord = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .filter(|c| c.len() == P256_COORD_LEN)
            .ok_or(BundleError::BadJwtKeyCoordinates)
    };
    let mut public_key = Vec::with_capacity(1 + 2 * P256_COORD_LEN);
    public_key.push(0x04);
    public_key.extend(coord("x")?);
    public_key.extend(coord("y")?);
    Ok(Some(JwtAuthority {
        kid,
        public_key,
        not_after: None,
    }))
}

/// The JWK of a JWT signing key: `use`, `kid`, and its EC point.
fn jwt_jwk(a: &JwtAuthority) -> Value {
    let mut jwk = Map::new();
    jwk.insert("use".into(), "jwt-svid".into());
    jwk.insert("kid".into(), a.kid.clone().into());
    insert_ec_point(&mut jwk, "P-256", &a.public_key);
    Value::Object(jwk)
}

/// Adds `kty`, `crv`, `x`, `y` for an uncompressed EC point.
fn insert_ec_point(jwk: &mut Map<String, Value>, crv: &str, point: &[u8]) {
    let coords = point.strip_prefix(&[0x04]).unwrap_or_default();
    let (x, y) = coords.split_at(coords.len() / 2);
    jwk.insert("kty".into(), "EC".into());
    jwk.insert("crv".into(), crv.into());
    jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
    jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
}

/// The JWK of a root: `use`, `x5c`, and the key parameters of its public key when the
/// key type is one JWK can describe here (EC P-256/P-384, Ed25519, RSA). Consumers read
/// `x5c`; the rest is informative. No `kid`: X509-SVID §6.1 says it "MUST NOT be set".
fn x509_jwk(der: &[u8]) -> Value {
    let mut jwk = Map::new();
    jwk.insert("use".into(), "x509-svid".into());
    jwk.insert("x5c".into(), json!([STANDARD.encode(der)]));
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Value::Object(jwk);
    };
    let spki = cert.public_key();
    let key_oid = &spki.algorithm.algorithm;
    let point = spki.subject_public_key.data.as_ref();
    if *key_oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve == Some(OID_EC_P256) {
            insert_ec_point(&mut jwk, "P-256", point);
        } else if curve == Some(OID_NIST_EC_P384) {
            insert_ec_point(&mut jwk, "P-384", point);
        }
    } else if *key_oid == OID_SIG_ED25519 {
        jwk.insert("kty".into(), "OKP".into());
        jwk.insert("crv".into(), "Ed25519".into());
        jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(point).into());
    } else if let Ok(PublicKey::RSA(rsa)) = spki.parsed() {
        jwk.insert("kty".into(), "RSA".into());
        jwk.insert(
            "n".into(),
            URL_SAFE_NO_PAD.encode(strip_zeros(rsa.modulus)).into(),
        );
        jwk.insert(
            "e".into(),
            URL_SAFE_NO_PAD.encode(strip_zeros(rsa.exponent)).into(),
        );
    }
    Value::Object(jwk)
}

fn strip_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// DER certificates as PEM `CERTIFICATE` blocks, in order.
pub fn certs_to_pem(certs: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
