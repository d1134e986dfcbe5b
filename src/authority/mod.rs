//! The certificate authority (SPEC §3.1, STYLE §8): the CA key and certificate, the JWT
//! signing keys, X.509-SVID issuance from CSRs, JWT-SVID minting, and the trust bundle.
//!
//! Everything here is pure: time arrives as `now`, nothing touches disk or network. The
//! caller persists [`Authority::to_sealed_bytes`] only inside the encrypted store.
//!
//! Every credential is checked with the same rules a client applies before it is handed
//! out ("build template → sign → validate what was issued", as in SPIRE).
//!
//! Keys rotate (SPEC §7, issue 8): each kind of key — X.509 CA keys and JWT signing keys —
//! is a ring of prepared, active and old keys, each described by a [`KeyRecord`]; a pure
//! [`plan`] says when to prepare, activate and drop them under a [`RotationPolicy`];
//! [`Authority::advance`] applies it, [`Authority::rotate`] and [`Authority::taint`] are
//! the operator's, and the sealed state keeps every record so that a restarted server
//! resumes the same plan.

mod bundle;
mod ca;
mod csr;
pub(crate) mod jws;
mod jwt;
mod jwt_limits;
mod keys;
mod plan;
mod policy;
mod rotation;
mod sealed;
mod x509;

use std::fmt;
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::id::{DnsNameError, SpiffeId, TrustDomain};

pub use bundle::{Bundle, BundleError, JwtAuthority, certs_to_pem};
pub use csr::{CsrError, check_csr, generate_key_and_csr};
pub use jwt::{
    JwtBundle, JwtClaims, JwtError, JwtSvid, SignedToken, jwt_key_id, validate_jwt_svid,
};
pub use jwt_limits::{
    AudienceError, MAX_AUDIENCE_LEN, MAX_AUDIENCES, MAX_MINTED_TOKEN_LEN, MAX_TOKEN_LEN,
    check_audiences,
};
pub use keys::{KeyKind, KeyRecord, KeyState};
pub use plan::{Action, Plan, plan};
pub use policy::{
    DEFAULT_CA_TTL, DEFAULT_JWT_SVID_TTL, DEFAULT_PUBLISH_WINDOW, DEFAULT_TAINT_GRACE,
    DEFAULT_X509_SVID_TTL, PolicyError, RotationPolicy,
};
pub use rotation::{Advance, KeyChange, KeyEvent};
pub use x509::{
    SvidError, X509Svid, ca_key_id, signing_ca_id, validate_x509_svid_leaf, verify_x509_svid,
};

use ca::CaKey;
use jwt::JwtKey;
use keys::{KeyRecord as Record, Ring};

/// How long a trust bundle consumer should wait before polling again (SPIFFE bundle
/// `spiffe_refresh_hint`). Consumers of the streaming Workload API get pushes anyway.
pub const DEFAULT_REFRESH_HINT_SECS: u64 = 300;

/// Why the authority could not create, load or use its keys, or refused to issue.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The random number generator failed; nothing was issued.
    #[error("random number generator failed")]
    Random,
    /// Generating or loading a private key failed.
    #[error("key generation or loading failed")]
    Key,
    /// Encoding a certificate or CSR failed (the reason names no key material).
    #[error("certificate encoding failed: {reason}")]
    CertificateEncoding {
        /// What the encoder reported.
        reason: String,
    },
    /// The CSR could not be accepted.
    #[error("certificate signing request refused: {0}")]
    Csr(#[from] CsrError),
    /// The SPIFFE ID belongs to another trust domain than this CA's.
    #[error("SPIFFE ID is in trust domain {found:?}, this CA serves {expected:?}")]
    TrustDomainMismatch {
        /// The CA's trust domain.
        expected: String,
        /// The requested ID's trust domain.
        found: String,
    },
    /// The SPIFFE ID has no path: it names the trust domain, and SVIDs are issued only
    /// to workloads (X509-SVID §3.1, JWT-SVID §3.1).
    #[error("spiffe_id: {id} has no path: it names the trust domain itself, not a workload")]
    NoWorkloadPath {
        /// The requested ID.
        id: String,
    },
    /// A requested DNS SAN is not a valid DNS name.
    #[error("dns_names: {0}")]
    InvalidDnsName(#[from] DnsNameError),
    /// The requested TTL is shorter than one second.
    #[error("TTL must be at least one second")]
    InvalidTtl,
    /// The requested audiences break a rule or a size limit.
    #[error("audience: {0}")]
    InvalidAudience(#[from] AudienceError),
    /// The active CA certificate has expired at `now`.
    #[error("the CA certificate has expired")]
    CaExpired,
    /// The active CA certificate is not valid yet at `now`.
    #[error("the CA certificate is not valid yet")]
    CaNotYetValid,
    /// The active JWT signing key has expired at `now`.
    #[error("the JWT signing key has expired")]
    JwtKeyExpired,
    /// The CA certificate generated or loaded breaks a CA rule.
    #[error("CA certificate is invalid: {reason}")]
    InvalidCaCertificate {
        /// The broken rule.
        reason: &'static str,
    },
    /// An X.509-SVID just issued failed the client-side checks; it was not handed out.
    #[error("issued X.509-SVID failed validation: {0}")]
    IssuedSvidInvalid(#[from] SvidError),
    /// A JWT-SVID just minted failed the client-side checks; it was not handed out.
    #[error("issued JWT-SVID failed validation: {0}")]
    IssuedJwtInvalid(#[from] JwtError),
    /// No key of this kind is active (the authority's state is inconsistent).
    #[error("no active {} key", kind.as_str())]
    NoActiveKey {
        /// The kind.
        kind: KeyKind,
    },
    /// The active key of this kind was tainted and its replacement is not active yet;
    /// nothing was signed with it.
    #[error("the active {} key is tainted and awaits its replacement", kind.as_str())]
    ActiveKeyTainted {
        /// The kind.
        kind: KeyKind,
    },
    /// No key of this kind has this id (it never existed, or has left the bundle).
    #[error("no {} key has id {id:?}", kind.as_str())]
    UnknownKey {
        /// The kind.
        kind: KeyKind,
        /// The id asked for.
        id: String,
    },
    /// The key is already tainted.
    #[error("the {} key {id:?} is already tainted", kind.as_str())]
    KeyAlreadyTainted {
        /// The kind.
        kind: KeyKind,
        /// The key.
        id: String,
    },
    /// Only an untainted prepared key can be activated or marked for early activation.
    #[error("the {} key {id:?} is not an untainted prepared key", kind.as_str())]
    KeyNotPrepared {
        /// The kind.
        kind: KeyKind,
        /// The key.
        id: String,
    },
    /// The active key cannot leave the bundle; a successor must be activated first.
    #[error("the {} key {id:?} is active and cannot be dropped", kind.as_str())]
    KeyIsActive {
        /// The kind.
        kind: KeyKind,
        /// The key.
        id: String,
    },
    /// A key may not sign before it has been published for its window unless the
    /// activation is forced; the unforced activation was refused.
    #[error("the {} key {id:?} has not been published long enough to sign", kind.as_str())]
    PublishWindowOpen {
        /// The kind.
        kind: KeyKind,
        /// The key.
        id: String,
    },
    /// The bundle's `spiffe_sequence` cannot increase any further.
    #[error("the bundle sequence number is exhausted")]
    SequenceExhausted,
    /// Sealed authority state could not be decoded (the message names no key material).
    #[error("sealed authority state is corrupt: {reason}")]
    SealedStateCorrupt {
        /// The part that could not be decoded.
        reason: &'static str,
    },
}

impl AuthorityError {
    /// True when the request was at fault (a bad CSR, ID, DNS name, TTL or
    /// audience) rather than the authority's own state.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            AuthorityError::Csr(_)
                | AuthorityError::TrustDomainMismatch { .. }
                | AuthorityError::NoWorkloadPath { .. }
                | AuthorityError::InvalidDnsName(_)
                | AuthorityError::InvalidTtl
                | AuthorityError::InvalidAudience(_)
                | AuthorityError::UnknownKey { .. }
                | AuthorityError::KeyAlreadyTainted { .. }
        )
    }
}

impl From<rcgen::Error> for AuthorityError {
    fn from(e: rcgen::Error) -> Self {
        // rcgen errors describe encodings and algorithms, never key bytes.
        Self::CertificateEncoding {
            reason: e.to_string(),
        }
    }
}

/// The CA of one trust domain: its X.509 CA keys and JWT signing keys.
///
/// `Authority` is `Send + Sync`; issuance takes `&self`, so one instance can serve many
/// threads. Cloning is cheap (private keys are shared, not copied): a rotation is made on
/// a clone, persisted, then swapped in. Its `Debug` shows key identifiers only, never key
/// bytes.
#[derive(Clone)]
pub struct Authority {
    trust_domain: TrustDomain,
    /// CA keys with their certificates; the active one signs X.509-SVIDs.
    cas: Ring<Vec<u8>, CaKey>,
    /// JWT keys with their bundle entries; the active one signs JWT-SVIDs.
    jwt_keys: Ring<JwtAuthority, JwtKey>,
    /// The trust bundle's `spiffe_sequence`; bumped whenever the key set changes.
    sequence: u64,
    rng: SystemRandom,
}

impl Authority {
    /// Creates a new CA for `td`: a self-signed P-256 root valid for `ca_ttl` from `now`
    /// (slightly backdated) and one P-256 JWT signing key that expires with it.
    pub fn generate(
        td: &TrustDomain,
        now: SystemTime,
        ca_ttl: Duration,
        rng: &dyn SecureRandom,
    ) -> Result<Self, AuthorityError> {
        if ca_ttl.as_secs() == 0 {
            return Err(AuthorityError::InvalidTtl);
        }
        let ca = CaKey::generate(td, now, ca_ttl, rng)?;
        let jwt = JwtKey::generate(ca.not_after, rng)?;
        let ca_record = Record::new(KeyKind::X509Ca, ca.id(), now, ca.not_after);
        let jwt_record = Record::new(KeyKind::Jwt, jwt.kid.clone(), now, jwt.not_after);
        Ok(Self {
            trust_domain: td.clone(),
            cas: Ring::with_active(ca_record, ca.cert_der.clone(), ca),
            jwt_keys: Ring::with_active(jwt_record, jwt.authority(), jwt),
            sequence: 1,
            rng: SystemRandom::new(),
        })
    }

    /// The authority that succeeds this one when it can no longer sign: a new CA and
    /// JWT key for the same trust domain, created like [`Authority::generate`].
    ///
    /// Its bundle's `spiffe_sequence` is this one's plus one: the sequence "MUST be a
    /// monotonically increasing integer, and MUST be changed whenever the contents of
    /// the bundle are updated" (Trust Domain and Bundle §4.1.1), and consumers that
    /// order bundles by it would otherwise keep the old keys.
    pub fn replacement(
        &self,
        now: SystemTime,
        ca_ttl: Duration,
        rng: &dyn SecureRandom,
    ) -> Result<Self, AuthorityError> {
        let sequence = self
            .sequence
            .checked_add(1)
            .ok_or(AuthorityError::SequenceExhausted)?;
        let mut next = Self::generate(&self.trust_domain, now, ca_ttl, rng)?;
        next.sequence = sequence;
        Ok(next)
    }

    /// The trust domain this authority serves.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The NotAfter of the active CA certificate.
    pub fn ca_not_after(&self) -> SystemTime {
        self.cas
            .active()
            .map_or(SystemTime::UNIX_EPOCH, |s| s.record.not_after)
    }

    /// The DER of the active CA certificate.
    pub fn ca_cert_der(&self) -> &[u8] {
        self.cas.active().map_or(&[], |s| s.public.as_slice())
    }

    /// The current trust bundle: every published CA certificate and JWT public key, in
    /// the order the keys were created (so an activation changes no published byte).
    pub fn bundle(&self) -> Bundle {
        Bundle {
            trust_domain: self.trust_domain.clone(),
            x509_authorities: self.cas.slots.iter().map(|s| s.public.clone()).collect(),
            jwt_authorities: self
                .jwt_keys
                .slots
                .iter()
                .map(|s| s.public.clone())
                .collect(),
            sequence: self.sequence,
            refresh_hint_secs: DEFAULT_REFRESH_HINT_SECS,
        }
    }

    /// The subject of any SVID: a workload (an ID with a path) in this trust domain.
    fn check_workload_id(&self, id: &SpiffeId) -> Result<(), AuthorityError> {
        if id.trust_domain_str() != self.trust_domain.as_str() {
            return Err(AuthorityError::TrustDomainMismatch {
                expected: self.trust_domain.as_str().to_owned(),
                found: id.trust_domain_str().to_owned(),
            });
        }
        id.check_workload()
            .map_err(|_| AuthorityError::NoWorkloadPath { id: id.to_string() })
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |r: &Record| format!("{} {}", r.id, r.state.as_str());
        let cas: Vec<String> = self.cas.records().map(show).collect();
        let jwt: Vec<String> = self.jwt_keys.records().map(show).collect();
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("ca_keys", &cas)
            .field("jwt_keys", &jwt)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch; times before it count as zero.
fn unix(t: SystemTime) -> u64 {
    crate::unix_time::seconds(t)
}

/// The last second an X.509 GeneralizedTime can name (9999-12-31T23:59:59Z): nothing
/// this authority signs or keeps can be valid later, so times saturate here.
const LAST_SECOND: u64 = 253_402_300_799;

/// The time `secs` seconds after the Unix epoch, at most [`LAST_SECOND`] (so that a
/// corrupt stored time cannot overflow).
fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.min(LAST_SECOND))
}

/// `t + d`, saturating at [`LAST_SECOND`], for deadlines computed from policy timings.
fn later(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).map_or(from_unix(LAST_SECOND), |sum| {
        sum.min(from_unix(LAST_SECOND))
    })
}

#[cfg(test)]
mod tests;
