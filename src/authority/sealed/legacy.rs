//! Format 1 of the sealed authority, written before keys rotated: the active CA first,
//! then any other CA still in the bundle, and likewise for JWT keys, with no lifecycle
//! records. It loads as one active key of each kind, created when the active CA was
//! (its NotBefore, undoing the backdate), and any other key as old, without its private
//! part.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::super::bundle::JwtAuthority;
use super::super::ca::{BACKDATE_SECS, CaCertInfo, CaKey};
use super::super::jwt::JwtKey;
use super::super::keys::{KeyKind, KeyRecord, KeyState, Ring, Slot};
use super::super::{Authority, AuthorityError, from_unix, later};
use super::{assemble, corrupt, decode_key};
use crate::id::TrustDomain;

/// The version this module reads.
pub(super) const FORMAT: u32 = 1;

#[derive(serde::Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SealedAuthority {
    format: u32,
    trust_domain: String,
    ca_keys: Vec<SealedCa>,
    jwt_keys: Vec<SealedJwt>,
    sequence: u64,
}

#[derive(serde::Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
struct SealedCa {
    cert_der: String,
    pkcs8: String,
}

#[derive(serde::Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
struct SealedJwt {
    kid: String,
    pkcs8: String,
    not_after: u64,
}

/// The record of a format-1 key: the first of its kind is active since `created`.
fn record(
    kind: KeyKind,
    id: String,
    first: bool,
    created: SystemTime,
    not_after: SystemTime,
) -> KeyRecord {
    let mut r = KeyRecord::new(kind, id, created, not_after);
    if first {
        // Signing since it was made, like the first key of any authority.
        r.state = KeyState::Active;
        r.activated_at = Some(r.created_at);
        r.forced_activation = true;
    } else {
        r.state = KeyState::Old;
    }
    r
}

/// Loads a format-1 document.
pub(super) fn load(bytes: &[u8]) -> Result<Authority, AuthorityError> {
    let sealed: SealedAuthority =
        serde_json::from_slice(bytes).map_err(|_| corrupt("not the sealed JSON layout"))?;
    let td = TrustDomain::parse(&sealed.trust_domain).map_err(|_| corrupt("trust domain"))?;
    let mut cas = Ring {
        kind: KeyKind::X509Ca,
        slots: Vec::with_capacity(sealed.ca_keys.len()),
    };
    let mut created = None;
    for (i, c) in sealed.ca_keys.iter().enumerate() {
        let cert = STANDARD
            .decode(&c.cert_der)
            .map_err(|_| corrupt("CA certificate encoding"))?;
        // The private key is checked against the certificate even for a key that is
        // about to be discarded: a mismatch means the document is not what was written.
        let key = CaKey::from_parts(&td, cert.clone(), decode_key(&c.pkcs8)?)?;
        let info = CaCertInfo::parse(&td, &cert)?;
        // Created when it was made: its NotBefore, undoing the backdate.
        let at = later(info.not_before, Duration::from_secs(BACKDATE_SECS));
        created.get_or_insert(at);
        cas.slots.push(Slot {
            record: record(KeyKind::X509Ca, info.id(), i == 0, at, info.not_after),
            public: cert,
            signer: (i == 0).then(|| key.into()),
        });
    }
    let created = created.ok_or(corrupt("no CA key"))?;
    let mut jwt_keys = Ring {
        kind: KeyKind::Jwt,
        slots: Vec::with_capacity(sealed.jwt_keys.len()),
    };
    for (i, k) in sealed.jwt_keys.iter().enumerate() {
        let not_after = from_unix(k.not_after);
        let key = JwtKey::from_parts(k.kid.clone(), decode_key(&k.pkcs8)?, not_after)?;
        let public: JwtAuthority = key.authority();
        jwt_keys.slots.push(Slot {
            record: record(KeyKind::Jwt, k.kid.clone(), i == 0, created, not_after),
            public,
            signer: (i == 0).then(|| key.into()),
        });
    }
    if jwt_keys.slots.is_empty() {
        return Err(corrupt("no JWT key"));
    }
    assemble(td, cas, jwt_keys, sealed.sequence)
}
