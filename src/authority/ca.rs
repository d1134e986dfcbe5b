//! The CA key and its self-signed root certificate (SPEC §3.1: CA certificates carry
//! `spiffe://<td>` and a unique subject per CA key), and the checks a CA certificate must
//! pass whether it was just generated or loaded from sealed state.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::{AuthorityError, from_unix, unix};
use crate::id::TrustDomain;
use crate::secret::Secret;

/// How far NotBefore is set before `now`, so that peers with a slightly slow clock accept
/// a fresh certificate (SPIRE uses the same 10 s).
pub(super) const BACKDATE_SECS: u64 = 10;
/// X.520 upper bound for a commonName.
const MAX_CN_LEN: usize = 64;

/// One CA key with its certificate. Holds a private key, so it has no `Debug`.
pub(super) struct CaKey {
    pub(super) cert_der: Vec<u8>,
    pub(super) pkcs8: Secret,
    /// rcgen's issuer (subject DN, key identifier, signing key), built once so that the
    /// issuing hot path does not re-parse the CA certificate or reload the key.
    pub(super) issuer: rcgen::Issuer<'static, KeyPair>,
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
    /// The SubjectKeyIdentifier, which names this CA key in logs and `Debug`.
    pub(super) key_id: Vec<u8>,
}

impl CaKey {
    /// Generates a P-256 key and a self-signed root for `td` valid from `now` (backdated)
    /// for `ttl`.
    pub(super) fn generate(
        td: &TrustDomain,
        now: SystemTime,
        ttl: Duration,
        rng: &dyn SecureRandom,
    ) -> Result<Self, AuthorityError> {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
            .map_err(|_| AuthorityError::Key)?;
        let pkcs8 = Secret::from_slice(doc.as_ref());
        let key = load_key(&pkcs8)?;

        let mut params = CertificateParams::default();
        let key_id = params.key_identifier(&key);
        // The subject names the key so that every CA key has a distinct subject: chain
        // builders that match issuer to subject must never confuse an old and a new CA.
        let short_id = hex::encode(key_id.get(..8).unwrap_or(&key_id));
        let with_td = format!("sigil CA {td} {short_id}");
        let cn = if with_td.len() <= MAX_CN_LEN {
            with_td
        } else {
            format!("sigil CA {short_id}")
        };
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "sigil");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_id);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(td.id_string().try_into()?)];
        params.serial_number = Some(random_serial(rng)?);
        let now_s = unix(now);
        params.not_before = offset(now_s.saturating_sub(BACKDATE_SECS))?;
        params.not_after = offset(now_s.saturating_add(ttl.as_secs()))?;

        let cert = params.self_signed(&key)?;
        Self::from_parts(td, cert.der().to_vec(), pkcs8)
    }

    /// Loads a CA from its certificate and PKCS#8 key, checking the certificate is a valid
    /// CA for `td` and that the key belongs to it.
    pub(super) fn from_parts(
        td: &TrustDomain,
        cert_der: Vec<u8>,
        pkcs8: Secret,
    ) -> Result<Self, AuthorityError> {
        let info = CaCertInfo::parse(td, &cert_der)?;
        let key = load_key(&pkcs8)?;
        if key.public_key_raw() != info.public_key.as_slice() {
            return Err(AuthorityError::InvalidCaCertificate {
                reason: "private key does not match the certificate",
            });
        }
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), key)?;
        Ok(Self {
            cert_der,
            pkcs8,
            issuer,
            not_before: info.not_before,
            not_after: info.not_after,
            key_id: info.key_id,
        })
    }

    /// The key's stable id: its SubjectKeyIdentifier in hex, which every leaf it signs
    /// carries as its AuthorityKeyIdentifier.
    pub(super) fn id(&self) -> String {
        hex::encode(&self.key_id)
    }

    /// Whether the CA may sign at `now`.
    pub(super) fn check_valid_at(&self, now: SystemTime) -> Result<(), AuthorityError> {
        if now < self.not_before {
            Err(AuthorityError::CaNotYetValid)
        } else if now >= self.not_after {
            Err(AuthorityError::CaExpired)
        } else {
            Ok(())
        }
    }
}

/// What a checked CA certificate tells about its key; all an old CA key keeps.
pub(super) struct CaCertInfo {
    /// The SubjectKeyIdentifier.
    pub(super) key_id: Vec<u8>,
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
    /// The subject public key (an uncompressed point for P-256).
    public_key: Vec<u8>,
}

impl CaCertInfo {
    /// Checks that `cert_der` is one DER certificate following the CA rules for `td`.
    pub(super) fn parse(td: &TrustDomain, cert_der: &[u8]) -> Result<Self, AuthorityError> {
        let invalid = |reason| AuthorityError::InvalidCaCertificate { reason };
        let (rest, cert) =
            X509Certificate::from_der(cert_der).map_err(|_| invalid("not a DER certificate"))?;
        if !rest.is_empty() {
            return Err(invalid("trailing data after certificate"));
        }
        let key_id = check_ca_cert(&cert, td).map_err(invalid)?;
        let time = |t: i64| from_unix(u64::try_from(t).unwrap_or(0));
        Ok(Self {
            key_id,
            not_before: time(cert.validity().not_before.timestamp()),
            not_after: time(cert.validity().not_after.timestamp()),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }

    /// The key's stable id (see [`CaKey::id`]).
    pub(super) fn id(&self) -> String {
        hex::encode(&self.key_id)
    }
}

/// The rules a CA certificate of this trust domain follows: basicConstraints cA=true
/// (critical), keyUsage keyCertSign (critical), exactly one URI SAN `spiffe://<td>`, and
/// a SubjectKeyIdentifier (returned).
fn check_ca_cert(cert: &X509Certificate<'_>, td: &TrustDomain) -> Result<Vec<u8>, &'static str> {
    let bc = cert
        .basic_constraints()
        .map_err(|_| "duplicate basicConstraints")?
        .ok_or("basicConstraints missing")?;
    if !bc.critical || !bc.value.ca {
        return Err("basicConstraints must be critical with cA=true");
    }
    let ku = cert
        .key_usage()
        .map_err(|_| "bad keyUsage")?
        .ok_or("keyUsage missing")?;
    if !ku.critical || !ku.value.key_cert_sign() {
        return Err("keyUsage must be critical with keyCertSign");
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| "bad subjectAltName")?
        .ok_or("subjectAltName missing")?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    if uris != [td.id_string().as_str()] {
        return Err("CA must carry exactly one URI SAN, spiffe://<trust domain>");
    }
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .ok_or("subjectKeyIdentifier missing")
}

/// Loads a P-256 PKCS#8 key for rcgen.
pub(super) fn load_key(pkcs8: &Secret) -> Result<KeyPair, AuthorityError> {
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.expose()),
        &PKCS_ECDSA_P256_SHA256,
    )
    .map_err(|_| AuthorityError::Key)
}

/// A 128-bit random serial number. It is encoded as a positive INTEGER (a leading zero
/// byte is added when the top bit is set), and zero is impossible in practice but
/// excluded anyway because RFC 5280 requires a positive serial.
pub(super) fn random_serial(rng: &dyn SecureRandom) -> Result<SerialNumber, AuthorityError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| AuthorityError::Random)?;
    if bytes.iter().all(|b| *b == 0) {
        bytes[15] = 1;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

/// `secs` since the epoch as rcgen's time type.
pub(super) fn offset(secs: u64) -> Result<OffsetDateTime, AuthorityError> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(AuthorityError::CertificateEncoding {
            reason: "time out of range".to_owned(),
        })
}
