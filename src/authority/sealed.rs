//! The persisted form of an [`Authority`] (SPEC §3.1 keys, §5 storage): JSON holding the
//! CA certificates and PKCS#8 keys, the JWT keys and the bundle sequence number.
//!
//! These bytes hold private keys in the clear. They are returned as a [`Secret`] and the
//! caller stores them only inside the encrypted store. Intermediate copies live in
//! structures that zeroize on drop.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::ca::CaKey;
use super::jwt::JwtKey;
use super::{Authority, AuthorityError, from_unix, unix};
use crate::id::TrustDomain;
use crate::secret::Secret;

/// Version of the persisted layout; bumped on incompatible change.
const FORMAT: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SealedAuthority {
    format: u32,
    trust_domain: String,
    /// The active CA first, then any other CA still in the bundle.
    ca_keys: Vec<SealedCa>,
    /// The active JWT key first, then any other JWT key still in the bundle.
    jwt_keys: Vec<SealedJwt>,
    sequence: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
struct SealedCa {
    /// Base64 DER certificate.
    cert_der: String,
    /// Base64 PKCS#8 private key.
    pkcs8: String,
}

#[derive(serde::Serialize, serde::Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
struct SealedJwt {
    kid: String,
    /// Base64 PKCS#8 private key.
    pkcs8: String,
    /// Unix seconds.
    not_after: u64,
}

impl Authority {
    /// The authority's full state, private keys included, for the encrypted store.
    pub fn to_sealed_bytes(&self) -> Secret {
        let sealed = SealedAuthority {
            format: FORMAT,
            trust_domain: self.trust_domain.as_str().to_owned(),
            ca_keys: self
                .cas()
                .map(|c| SealedCa {
                    cert_der: STANDARD.encode(&c.cert_der),
                    pkcs8: STANDARD.encode(c.pkcs8.expose()),
                })
                .collect(),
            jwt_keys: self
                .jwt_keys()
                .map(|k| SealedJwt {
                    kid: k.kid.clone(),
                    pkcs8: STANDARD.encode(k.pkcs8.expose()),
                    not_after: unix(k.not_after),
                })
                .collect(),
            sequence: self.sequence,
        };
        // Sized up front so the buffer holding keys is not reallocated (which would leave
        // unzeroized copies behind).
        let estimate = 1024
            + sealed
                .ca_keys
                .iter()
                .map(|c| c.cert_der.len() + c.pkcs8.len() + 64)
                .chain(
                    sealed
                        .jwt_keys
                        .iter()
                        .map(|k| k.kid.len() + k.pkcs8.len() + 96),
                )
                .sum::<usize>();
        let mut out = Zeroizing::new(Vec::with_capacity(estimate));
        // Writing plain structs of strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &sealed);
        Secret::new(std::mem::take(&mut *out))
    }

    /// Restores an authority from [`Authority::to_sealed_bytes`], re-checking every CA
    /// certificate and that each private key matches.
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, AuthorityError> {
        let corrupt = |reason| AuthorityError::SealedStateCorrupt { reason };
        let sealed: SealedAuthority =
            serde_json::from_slice(bytes).map_err(|_| corrupt("not the sealed JSON layout"))?;
        if sealed.format != FORMAT {
            return Err(corrupt("unknown format version"));
        }
        let td = TrustDomain::parse(&sealed.trust_domain).map_err(|_| corrupt("trust domain"))?;
        let mut cas = Vec::with_capacity(sealed.ca_keys.len());
        for c in &sealed.ca_keys {
            let cert = STANDARD
                .decode(&c.cert_der)
                .map_err(|_| corrupt("CA certificate encoding"))?;
            cas.push(CaKey::from_parts(&td, cert, decode_key(&c.pkcs8)?)?);
        }
        let mut jwt_keys = Vec::with_capacity(sealed.jwt_keys.len());
        for k in &sealed.jwt_keys {
            let key = decode_key(&k.pkcs8)?;
            jwt_keys.push(JwtKey::from_parts(
                k.kid.clone(),
                key,
                from_unix(k.not_after),
            )?);
        }
        let mut cas = cas.into_iter();
        let mut jwt_keys = jwt_keys.into_iter();
        let ca = cas.next().ok_or(corrupt("no CA key"))?;
        let jwt = jwt_keys.next().ok_or(corrupt("no JWT key"))?;
        Ok(Self {
            trust_domain: td,
            ca,
            other_cas: cas.collect(),
            jwt,
            other_jwt_keys: jwt_keys.collect(),
            sequence: sealed.sequence,
            rng: SystemRandom::new(),
        })
    }
}

fn decode_key(b64: &str) -> Result<Secret, AuthorityError> {
    STANDARD
        .decode(b64)
        .map(Secret::new)
        .map_err(|_| AuthorityError::SealedStateCorrupt {
            reason: "private key encoding",
        })
}
