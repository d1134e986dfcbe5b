//! An OIDC issuer's signing keys: the JSON Web Key Set (RFC 7517 §5) it publishes at its
//! `jwks_uri`, parsed into keys ready for ring.
//!
//! Two kinds of key are kept: RSA (RFC 7518 §6.3.1, for RS256) and EC P-256 (§6.2.1, for
//! ES256). Keys that cannot sign tokens sigil accepts are skipped, not refused, so an
//! issuer adding an Ed25519 or encryption key does not break logins: another `kty` or
//! `crv`, a `use` other than `sig`, an `alg` sigil does not verify, or no `kid` (a token
//! names its key by `kid`, so a key without one is never chosen). A key sigil would use
//! but whose fields are broken fails the whole document: the issuer is misconfigured or
//! the document is not what it claims to be.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::verify::Algorithm;

/// Largest JWKS document accepted, in bytes. Real ones are a few KiB; the bound caps the
/// work a hostile or broken endpoint can cause.
pub const MAX_JWKS_LEN: usize = 1024 * 1024;
/// Smallest RSA modulus accepted, in bits (RFC 7518 §3.3 requires 2048 for RS256).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits: ring verifies up to 8192.
pub const MAX_RSA_BITS: usize = 8192;
/// Length of a P-256 coordinate in bytes (RFC 7518 §6.2.1.2).
const P256_COORDINATE_LEN: usize = 32;
/// Longest RSA public exponent ring accepts, in bits.
const MAX_RSA_EXPONENT_BITS: usize = 33;

/// Why a JWKS document was refused. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is larger than [`MAX_JWKS_LEN`].
    #[error("JWKS document is {len} bytes; at most {MAX_JWKS_LEN} bytes are accepted")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// The document is not JSON.
    #[error("JWKS document is not JSON")]
    NotJson,
    /// The document is not a JSON object with a `keys` array (RFC 7517 §5.1).
    #[error("JWKS document has no \"keys\" array")]
    NoKeysArray,
    /// An element of `keys` is not a JSON object.
    #[error("JWKS key number {index} is not a JSON object")]
    KeyNotObject {
        /// Its position in `keys`, from 0.
        index: usize,
    },
    /// A member that must be a string (`kid`, `kty`, `use`, `alg`, `crv`, `n`, `e`, `x`,
    /// `y`) is another JSON type.
    #[error("JWKS key number {index}: {field:?} is not a string")]
    NotAString {
        /// The key's position in `keys`, from 0.
        index: usize,
        /// The member.
        field: &'static str,
    },
    /// A key sigil would use lacks a member its type requires.
    #[error("JWKS key {kid:?} has no {field:?}")]
    MissingField {
        /// The key's `kid`.
        kid: String,
        /// The missing member.
        field: &'static str,
    },
    /// A member holding key material is not unpadded base64url (RFC 7518 §6).
    #[error("JWKS key {kid:?}: {field:?} is not unpadded base64url")]
    BadBase64 {
        /// The key's `kid`.
        kid: String,
        /// The member.
        field: &'static str,
    },
    /// An RSA modulus outside [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`].
    #[error(
        "JWKS key {kid:?} is an RSA key of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits \
         are accepted"
    )]
    RsaKeySize {
        /// The key's `kid`.
        kid: String,
        /// The modulus length in bits.
        bits: usize,
    },
    /// An RSA public exponent that is even (zero included), 1, or longer than 33 bits,
    /// which ring could not verify with.
    #[error("JWKS key {kid:?} has an invalid RSA exponent")]
    RsaExponent {
        /// The key's `kid`.
        kid: String,
    },
    /// A P-256 coordinate that is not 32 bytes (RFC 7518 §6.2.1.2).
    #[error("JWKS key {kid:?}: {field:?} is {len} bytes; a P-256 coordinate is 32")]
    EcCoordinateLength {
        /// The key's `kid`.
        kid: String,
        /// `x` or `y`.
        field: &'static str,
        /// Its decoded length.
        len: usize,
    },
    /// Two usable keys have the same `kid`, so a token could not name one of them.
    #[error("JWKS has two keys with the id {kid:?}")]
    DuplicateKeyId {
        /// The repeated `kid`.
        kid: String,
    },
}

/// The public part of a signing key, in the form ring verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkKey {
    /// An RSA key: for `ring::signature::RsaPublicKeyComponents`.
    Rsa {
        /// The modulus, big-endian, without leading zero bytes.
        n: Vec<u8>,
        /// The public exponent, big-endian, without leading zero bytes.
        e: Vec<u8>,
    },
    /// A P-256 key: for `UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, ..)`.
    EcP256 {
        /// The uncompressed point `0x04 ‖ x ‖ y` (65 bytes).
        point: Vec<u8>,
    },
}

impl JwkKey {
    /// The one algorithm this kind of key verifies among those sigil accepts.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            JwkKey::Rsa { .. } => Algorithm::Rs256,
            JwkKey::EcP256 { .. } => Algorithm::Es256,
        }
    }
}

/// One signing key of an issuer. Built only by [`Jwks::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    kid: String,
    declared_alg: Option<Algorithm>,
    key: JwkKey,
}

impl Jwk {
    /// The key id tokens name it by.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm the key verifies: RS256 for RSA, ES256 for P-256.
    pub fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    /// The key's own `alg` member, when it has one. It may disagree with the key type,
    /// in which case the key verifies nothing.
    pub fn declared_alg(&self) -> Option<Algorithm> {
        self.declared_alg
    }

    /// The public key material.
    pub fn key(&self) -> &JwkKey {
        &self.key
    }
}

/// An issuer's usable signing keys by `kid`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: BTreeMap<String, Jwk>,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys":[...]}`), keeping the keys sigil can verify
    /// with and skipping the others (see the module documentation).
    pub fn parse(json: &[u8]) -> Result<Jwks, JwksError> {
        if json.len() > MAX_JWKS_LEN {
            return Err(JwksError::TooLarge { len: json.len() });
        }
        let doc: Value = serde_json::from_slice(json).map_err(|_| JwksError::NotJson)?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeysArray)?;
        let mut keys = BTreeMap::new();
        for (index, entry) in list.iter().enumerate() {
            let member = entry.as_object().ok_or(JwksError::KeyNotObject { index })?;
            if let Some(jwk) = parse_key(index, member)? {
                if keys.contains_key(&jwk.kid) {
                    return Err(JwksError::DuplicateKeyId { kid: jwk.kid });
                }
                keys.insert(jwk.kid.clone(), jwk);
            }
        }
        Ok(Jwks { keys })
    }

    /// The key with `kid`.
    pub fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.get(kid)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key types sigil verifies with.
enum KeyType {
    Rsa,
    P256,
}

/// One `keys` element: `Ok(None)` for a key sigil skips.
fn parse_key(index: usize, member: &Map<String, Value>) -> Result<Option<Jwk>, JwksError> {
    let text = |field: &'static str| match member.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(JwksError::NotAString { index, field }),
    };
    // The key type first: a key sigil does not use is skipped whatever else it holds.
    // An EC key without `crv` is kept for now, to be refused once its kid is known.
    let key_type = match (text("kty")?, text("crv")?) {
        (Some("RSA"), _) => KeyType::Rsa,
        (Some("EC"), Some("P-256") | None) => KeyType::P256,
        _ => return Ok(None),
    };
    let Some(kid) = text("kid")?.filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let declared_alg = match text("alg")? {
        None => None,
        Some(name) => match name.parse::<Algorithm>() {
            Ok(alg) => Some(alg),
            Err(_) => return Ok(None),
        },
    };
    let missing = |field: &'static str| JwksError::MissingField {
        kid: kid.to_owned(),
        field,
    };
    let key_bytes = |field: &'static str| -> Result<Vec<u8>, JwksError> {
        let b64 = text(field)?.ok_or_else(|| missing(field))?;
        URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| JwksError::BadBase64 {
                kid: kid.to_owned(),
                field,
            })
    };
    let key = match key_type {
        KeyType::Rsa => rsa_key(kid, key_bytes("n")?, key_bytes("e")?)?,
        KeyType::P256 => {
            text("crv")?.ok_or_else(|| missing("crv"))?;
            p256_key(kid, &key_bytes("x")?, &key_bytes("y")?)?
        }
    };
    Ok(Some(Jwk {
        kid: kid.to_owned(),
        declared_alg,
        key,
    }))
}

fn rsa_key(kid: &str, n: Vec<u8>, e: Vec<u8>) -> Result<JwkKey, JwksError> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = bit_length(&n);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JwksError::RsaKeySize {
            kid: kid.to_owned(),
            bits,
        });
    }
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if !odd || e.as_slice() == [1] || bit_length(&e) > MAX_RSA_EXPONENT_BITS {
        return Err(JwksError::RsaExponent {
            kid: kid.to_owned(),
        });
    }
    Ok(JwkKey::Rsa { n, e })
}

fn p256_key(kid: &str, x: &[u8], y: &[u8]) -> Result<JwkKey, JwksError> {
    for (field, c) in [("x", x), ("y", y)] {
        if c.len() != P256_COORDINATE_LEN {
            return Err(JwksError::EcCoordinateLength {
                kid: kid.to_owned(),
                field,
                len: c.len(),
            });
        }
    }
    // Whether the point is on the curve is checked by ring when it verifies.
    let mut point = Vec::with_capacity(1 + 2 * P256_COORDINATE_LEN);
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Ok(JwkKey::EcP256 { point })
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Bits in a big-endian number without leading zero bytes.
fn bit_length(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}
