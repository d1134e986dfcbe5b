//! The certificate authority (SPEC §3.1, STYLE §8): the CA key and certificate, the JWT
//! signing keys, X.509-SVID issuance from CSRs, JWT-SVID minting, and the trust bundle.
//!
//! Everything here is pure: time arrives as `now`, nothing touches disk or network. The
//! caller persists [`Authority::to_sealed_bytes`] only inside the encrypted store.
//!
//! Every credential is checked with the same rules a client applies before it is handed
//! out ("build template → sign → validate what was issued", as in SPIRE).
//!
//! Keys are held in `Vec`s so that rotation (a prepared CA at ½ of life, old keys kept in
//! the bundle until they expire) can be added without changing the persisted format; for
//! now exactly one CA key and one JWT key are active.

mod bundle;
mod ca;
mod csr;
mod jwt;
mod jwt_limits;
mod sealed;
mod x509;

use std::fmt;
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::id::{DnsNameError, SpiffeId, TrustDomain};

pub use bundle::{Bundle, BundleError, JwtAuthority, certs_to_pem};
pub use csr::{CsrError, check_csr, generate_key_and_csr};
pub use jwt::{JwtBundle, JwtClaims, JwtError, JwtSvid, validate_jwt_svid};
pub use jwt_limits::{
    AudienceError, MAX_AUDIENCE_LEN, MAX_AUDIENCES, MAX_MINTED_TOKEN_LEN, MAX_TOKEN_LEN,
    check_audiences,
};
pub use x509::{SvidError, X509Svid, validate_x509_svid_leaf, verify_x509_svid};

use ca::CaKey;
use jwt::JwtKey;

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
/// threads. Its `Debug` shows key identifiers only, never key bytes.
pub struct Authority {
    trust_domain: TrustDomain,
    /// The CA key that signs X.509-SVIDs.
    ca: CaKey,
    /// Other CA keys still published in the bundle (prepared or retired; empty until
    /// rotation exists).
    other_cas: Vec<CaKey>,
    /// The key that signs JWT-SVIDs.
    jwt: JwtKey,
    /// Other JWT keys still published in the bundle (empty until rotation exists).
    other_jwt_keys: Vec<JwtKey>,
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
        let jwt_not_after = ca.not_after;
        let jwt = JwtKey::generate(jwt_not_after, rng)?;
        Ok(Self {
            trust_domain: td.clone(),
            ca,
            other_cas: Vec::new(),
            jwt,
            other_jwt_keys: Vec::new(),
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
        self.ca.not_after
    }

    /// The DER of the active CA certificate.
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca.cert_der
    }

    /// The current trust bundle: every CA certificate and JWT public key still held.
    pub fn bundle(&self) -> Bundle {
        Bundle {
            trust_domain: self.trust_domain.clone(),
            x509_authorities: self.cas().map(|c| c.cert_der.clone()).collect(),
            jwt_authorities: self.jwt_keys().map(JwtKey::authority).collect(),
            sequence: self.sequence,
            refresh_hint_secs: DEFAULT_REFRESH_HINT_SECS,
        }
    }

    /// All CA keys, the active one first.
    fn cas(&self) -> impl Iterator<Item = &CaKey> {
        std::iter::once(&self.ca).chain(&self.other_cas)
    }

    /// All JWT keys, the active one first.
    fn jwt_keys(&self) -> impl Iterator<Item = &JwtKey> {
        std::iter::once(&self.jwt).chain(&self.other_jwt_keys)
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
        let ca_ids: Vec<String> = self.cas().map(|c| hex::encode(&c.key_id)).collect();
        let kids: Vec<&str> = self.jwt_keys().map(|k| k.kid.as_str()).collect();
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("ca_key_ids (active first)", &ca_ids)
            .field("jwt_kids (active first)", &kids)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch; times before it count as zero.
fn unix(t: SystemTime) -> u64 {
    crate::unix_time::seconds(t)
}

/// The time `secs` seconds after the Unix epoch.
fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests;
