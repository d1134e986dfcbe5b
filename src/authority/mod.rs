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
mod sealed;
mod x509;

use std::fmt;
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::id::{SpiffeId, TrustDomain};

pub use bundle::{Bundle, BundleError, JwtAuthority, certs_to_pem};
pub use csr::{CsrError, check_csr, generate_key_and_csr};
pub use jwt::{JwtBundle, JwtClaims, JwtError, JwtSvid, validate_jwt_svid};
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
    /// A requested DNS SAN is not a valid DNS name.
    #[error("invalid DNS name {name:?}")]
    InvalidDnsName {
        /// The rejected name.
        name: String,
    },
    /// The requested TTL is shorter than one second.
    #[error("TTL must be at least one second")]
    InvalidTtl,
    /// The requested audience list is empty or holds an empty audience.
    #[error("at least one non-empty audience is required")]
    InvalidAudience,
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
                | AuthorityError::InvalidDnsName { .. }
                | AuthorityError::InvalidTtl
                | AuthorityError::InvalidAudience
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

    fn check_trust_domain(&self, id: &SpiffeId) -> Result<(), AuthorityError> {
        if id.trust_domain_str() == self.trust_domain.as_str() {
            Ok(())
        } else {
            Err(AuthorityError::TrustDomainMismatch {
                expected: self.trust_domain.as_str().to_owned(),
                found: id.trust_domain_str().to_owned(),
            })
        }
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
