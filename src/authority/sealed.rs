//! The persisted form of an [`Authority`] (SPEC §3.1 keys, §5 storage, issue 8 §1): JSON
//! holding every published key — CA certificates, JWT public keys — with its lifecycle
//! record, the private keys of the keys that may still sign, and the bundle sequence.
//!
//! Format 2 is written. Format 1 (one CA and one JWT key, no records) is still read, as
//! one active key of each kind created at the CA's NotBefore, so stores made before
//! rotation keep working.
//!
//! These bytes hold private keys in the clear. They are returned as a [`Secret`] and the
//! caller stores them only inside the encrypted store. Intermediate copies live in
//! structures that zeroize on drop. An old or tainted key is written without its private
//! part, so it is gone from the store at the next write.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::bundle::JwtAuthority;
use super::ca::{CaCertInfo, CaKey};
use super::jwt::JwtKey;
use super::keys::{KeyKind, KeyRecord, KeyState, Ring, Slot};
use super::{Authority, AuthorityError, from_unix, unix};
use crate::id::TrustDomain;
use crate::secret::Secret;

mod legacy;

/// Version of the persisted layout; bumped on incompatible change.
const FORMAT: u32 = 2;

/// Length of an uncompressed P-256 point.
const P256_POINT_LEN: usize = 65;

/// Reads only the version, to pick the layout.
#[derive(serde::Deserialize)]
struct Probe {
    format: u32,
}

#[derive(serde::Serialize, serde::Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SealedAuthority {
    format: u32,
    trust_domain: String,
    /// In bundle order.
    ca_keys: Vec<SealedCa>,
    /// In bundle order.
    jwt_keys: Vec<SealedJwt>,
    sequence: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
struct SealedCa {
    /// Base64 DER certificate.
    cert_der: String,
    /// Base64 PKCS#8 private key, only while the key may sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs8: Option<String>,
    #[zeroize(skip)]
    life: SealedLife,
}

#[derive(serde::Serialize, serde::Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
struct SealedJwt {
    kid: String,
    /// Base64 uncompressed P-256 point.
    public_key: String,
    /// Base64 PKCS#8 private key, only while the key may sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs8: Option<String>,
    /// Unix seconds.
    not_after: u64,
    #[zeroize(skip)]
    life: SealedLife,
}

/// A [`KeyRecord`] without what the key itself says (kind, id, `not_after`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedLife {
    state: SealedState,
    /// Unix seconds, like every time here.
    created_at: u64,
    published_at: u64,
    activated_at: Option<u64>,
    forced_activation: bool,
    retired_at: Option<u64>,
    tainted_at: Option<u64>,
    activate_early: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum SealedState {
    Prepared,
    Active,
    Old,
}

impl SealedLife {
    fn of(r: &KeyRecord) -> Self {
        Self {
            state: match r.state {
                KeyState::Prepared => SealedState::Prepared,
                KeyState::Active => SealedState::Active,
                KeyState::Old => SealedState::Old,
            },
            created_at: unix(r.created_at),
            published_at: unix(r.published_at),
            activated_at: r.activated_at.map(unix),
            forced_activation: r.forced_activation,
            retired_at: r.retired_at.map(unix),
            tainted_at: r.tainted_at.map(unix),
            activate_early: r.activate_early,
        }
    }

    fn record(&self, kind: KeyKind, id: String, not_after: u64) -> KeyRecord {
        KeyRecord {
            kind,
            id,
            state: match self.state {
                SealedState::Prepared => KeyState::Prepared,
                SealedState::Active => KeyState::Active,
                SealedState::Old => KeyState::Old,
            },
            created_at: from_unix(self.created_at),
            published_at: from_unix(self.published_at),
            activated_at: self.activated_at.map(from_unix),
            forced_activation: self.forced_activation,
            retired_at: self.retired_at.map(from_unix),
            not_after: from_unix(not_after),
            tainted_at: self.tainted_at.map(from_unix),
            activate_early: self.activate_early,
        }
    }
}

fn corrupt(reason: &'static str) -> AuthorityError {
    AuthorityError::SealedStateCorrupt { reason }
}

impl Authority {
    /// The authority's full state, private keys included, for the encrypted store.
    pub fn to_sealed_bytes(&self) -> Secret {
        let b64 = |k: &Secret| STANDARD.encode(k.expose());
        let sealed = SealedAuthority {
            format: FORMAT,
            trust_domain: self.trust_domain.as_str().to_owned(),
            ca_keys: self
                .cas
                .slots
                .iter()
                .map(|s| SealedCa {
                    cert_der: STANDARD.encode(&s.public),
                    pkcs8: s.signer.as_ref().map(|k| b64(&k.pkcs8)),
                    life: SealedLife::of(&s.record),
                })
                .collect(),
            jwt_keys: self
                .jwt_keys
                .slots
                .iter()
                .map(|s| SealedJwt {
                    kid: s.record.id.clone(),
                    public_key: STANDARD.encode(&s.public.public_key),
                    pkcs8: s.signer.as_ref().map(|k| b64(&k.pkcs8)),
                    not_after: unix(s.record.not_after),
                    life: SealedLife::of(&s.record),
                })
                .collect(),
            sequence: self.sequence,
        };
        // Sized up front so the buffer holding keys is not reallocated (which would leave
        // unzeroized copies behind). 512 bytes per key covers its record and JSON names.
        let key_len = |k: &Option<String>| k.as_ref().map_or(0, String::len);
        let estimate = 1024
            + sealed
                .ca_keys
                .iter()
                .map(|c| c.cert_der.len() + key_len(&c.pkcs8) + 512)
                .chain(
                    sealed
                        .jwt_keys
                        .iter()
                        .map(|k| k.kid.len() + k.public_key.len() + key_len(&k.pkcs8) + 512),
                )
                .sum::<usize>();
        let mut out = Zeroizing::new(Vec::with_capacity(estimate));
        // Writing plain structs of strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &sealed);
        Secret::new(std::mem::take(&mut *out))
    }

    /// Restores an authority from [`Authority::to_sealed_bytes`] (format 2) or from the
    /// format before rotation (1), re-checking every CA certificate, that each private
    /// key matches its public key, and the key-state invariants.
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, AuthorityError> {
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|_| corrupt("not the sealed JSON layout"))?;
        match probe.format {
            FORMAT => Self::from_format_2(bytes),
            legacy::FORMAT => legacy::load(bytes),
            _ => Err(corrupt("unknown format version")),
        }
    }

    fn from_format_2(bytes: &[u8]) -> Result<Self, AuthorityError> {
        let sealed: SealedAuthority =
            serde_json::from_slice(bytes).map_err(|_| corrupt("not the sealed JSON layout"))?;
        let td = TrustDomain::parse(&sealed.trust_domain).map_err(|_| corrupt("trust domain"))?;
        let mut cas = Ring {
            kind: KeyKind::X509Ca,
            slots: Vec::with_capacity(sealed.ca_keys.len()),
        };
        for c in &sealed.ca_keys {
            cas.slots.push(ca_slot(&td, c)?);
        }
        let mut jwt_keys = Ring {
            kind: KeyKind::Jwt,
            slots: Vec::with_capacity(sealed.jwt_keys.len()),
        };
        for k in &sealed.jwt_keys {
            jwt_keys.slots.push(jwt_slot(k)?);
        }
        assemble(td, cas, jwt_keys, sealed.sequence)
    }
}

/// Checks the rings' invariants and builds the authority.
fn assemble(
    trust_domain: TrustDomain,
    cas: Ring<Vec<u8>, CaKey>,
    jwt_keys: Ring<JwtAuthority, JwtKey>,
    sequence: u64,
) -> Result<Authority, AuthorityError> {
    cas.check().map_err(corrupt)?;
    jwt_keys.check().map_err(corrupt)?;
    Ok(Authority {
        trust_domain,
        cas,
        jwt_keys,
        sequence,
        rng: SystemRandom::new(),
    })
}

fn ca_slot(td: &TrustDomain, c: &SealedCa) -> Result<Slot<Vec<u8>, CaKey>, AuthorityError> {
    let cert = STANDARD
        .decode(&c.cert_der)
        .map_err(|_| corrupt("CA certificate encoding"))?;
    let info = CaCertInfo::parse(td, &cert)?;
    let record = c
        .life
        .record(KeyKind::X509Ca, info.id(), unix(info.not_after));
    let signer = match &c.pkcs8 {
        Some(k) => Some(CaKey::from_parts(td, cert.clone(), decode_key(k)?)?.into()),
        None => None,
    };
    Ok(Slot {
        record,
        public: cert,
        signer,
    })
}

fn jwt_slot(k: &SealedJwt) -> Result<Slot<JwtAuthority, JwtKey>, AuthorityError> {
    if k.kid.is_empty() {
        return Err(corrupt("empty JWT key id"));
    }
    let public_key = STANDARD
        .decode(&k.public_key)
        .ok()
        .filter(|p| p.len() == P256_POINT_LEN && p.first() == Some(&0x04))
        .ok_or(corrupt("JWT public key encoding"))?;
    let record = k.life.record(KeyKind::Jwt, k.kid.clone(), k.not_after);
    let public = JwtAuthority {
        kid: k.kid.clone(),
        public_key,
        not_after: Some(record.not_after),
    };
    let signer = match &k.pkcs8 {
        Some(p) => {
            let key = JwtKey::from_parts(k.kid.clone(), decode_key(p)?, record.not_after)?;
            if key.authority().public_key != public.public_key {
                return Err(corrupt("JWT private key does not match its public key"));
            }
            Some(key.into())
        }
        None => None,
    };
    Ok(Slot {
        record,
        public,
        signer,
    })
}

fn decode_key(b64: &str) -> Result<Secret, AuthorityError> {
    STANDARD
        .decode(b64)
        .map(Secret::new)
        .map_err(|_| corrupt("private key encoding"))
}
