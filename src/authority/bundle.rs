//! Trust bundles (SPEC §3.1, the SPIFFE Trust Domain and Bundle standard): the X.509 roots
//! and JWT keys of one trust domain, as PEM, as concatenated DER, and as the SPIFFE bundle
//! JWKS (`keys`, `spiffe_sequence`, `spiffe_refresh_hint`), where every key has a `kid`.

use std::collections::BTreeSet;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
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
    /// An `x509-svid` key's `x5c` is not exactly one base64 DER certificate.
    #[error("x509-svid key must have x5c with exactly one certificate")]
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
    /// A `jwt-svid` key is not an EC P-256 key (the only kind ES256 tokens use).
    #[error("jwt-svid key must be kty EC, crv P-256")]
    UnsupportedJwtKey,
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

    /// The SPIFFE bundle JWKS. Roots carry `use: x509-svid`, `x5c` and their public key
    /// parameters with a `kid` derived from the SubjectKeyIdentifier; JWT keys carry
    /// `use: jwt-svid`, `kid`, `kty: EC`, `crv: P-256`, `x`, `y`.
    pub fn to_spiffe_json(&self) -> String {
        let mut keys: Vec<Value> = self.x509_authorities.iter().map(|d| x509_jwk(d)).collect();
        for a in &self.jwt_authorities {
            let mut jwk = Map::new();
            jwk.insert("use".into(), "jwt-svid".into());
            jwk.insert("kid".into(), a.kid.clone().into());
            insert_ec_point(&mut jwk, "P-256", &a.public_key);
            keys.push(Value::Object(jwk));
        }
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
        let keys: Vec<Value> = self
            .jwt_authorities
            .iter()
            .map(|a| {
                let mut jwk = Map::new();
                jwk.insert("use".into(), "jwt-svid".into());
                jwk.insert("kid".into(), a.kid.clone().into());
                insert_ec_point(&mut jwk, "P-256", &a.public_key);
                Value::Object(jwk)
            })
            .collect();
        // Serializing a `Value` with string keys cannot fail.
        serde_json::to_string(&json!({ "keys": keys })).unwrap_or_default()
    }

    /// Parses a SPIFFE bundle JWKS for `td`. Keys with an unknown `use` are ignored, as
    /// the bundle standard requires; known ones must be well formed.
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
                Some("x509-svid") => bundle.x509_authorities.push(parse_x5c(jwk)?),
                Some("jwt-svid") => {
                    let a = parse_jwt_key(jwk)?;
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

fn parse_x5c(jwk: &Map<String, Value>) -> Result<Vec<u8>, BundleError> {
    let Some(Value::Array(x5c)) = jwk.get("x5c") else {
        return Err(BundleError::BadX509Authority);
    };
    let [Value::String(b64)] = x5c.as_slice() else {
        return Err(BundleError::BadX509Authority);
    };
    let der = STANDARD
        .decode(b64)
        .map_err(|_| BundleError::BadX509Authority)?;
    match X509Certificate::from_der(&der) {
        Ok(([], _)) => Ok(der),
        _ => Err(BundleError::BadX509Authority),
    }
}

fn parse_jwt_key(jwk: &Map<String, Value>) -> Result<JwtAuthority, BundleError> {
    let kid = match jwk.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(BundleError::MissingKeyId),
    };
    let kty = jwk.get("kty").and_then(Value::as_str);
    let crv = jwk.get("crv").and_then(Value::as_str);
    if kty != Some("EC") || crv != Some("P-256") {
        return Err(BundleError::UnsupportedJwtKey);
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
    Ok(JwtAuthority {
        kid,
        public_key,
        not_after: None,
    })
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

/// The JWK of a root: `use`, `kid`, `x5c`, and the key parameters of its public key when
/// the key type is one JWK can describe here (EC P-256/P-384, Ed25519, RSA). Consumers
/// read `x5c`; the rest is informative.
fn x509_jwk(der: &[u8]) -> Value {
    let mut jwk = Map::new();
    jwk.insert("use".into(), "x509-svid".into());
    jwk.insert("x5c".into(), json!([STANDARD.encode(der)]));
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Value::Object(jwk);
    };
    jwk.insert("kid".into(), x509_kid(&cert).into());
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

/// A root's `kid`: its SubjectKeyIdentifier in hex, or (without one) the hex of the first
/// 20 bytes of the SHA-256 of its SubjectPublicKeyInfo.
fn x509_kid(cert: &X509Certificate<'_>) -> String {
    let ski = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    match ski {
        Some(ski) => hex::encode(ski),
        None => {
            let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
            hex::encode(digest.as_ref().get(..20).unwrap_or_default())
        }
    }
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
