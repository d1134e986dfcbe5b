//! X.509-SVIDs (SPEC §3.1, the X509-SVID standard): the leaf template, issuance from a
//! verified CSR, the leaf checks every client applies (also run on each certificate we
//! issue), and full chain verification against bundle roots.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};
use ring::signature::UnparsedPublicKey;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::ca::{BACKDATE_SECS, offset, random_serial};
use super::csr::{parse_and_verify, verification_algorithm};
use super::{Authority, AuthorityError, from_unix, unix};
use crate::id::{DnsName, IdError, SpiffeId};

/// An issued X.509-SVID. Holds no private key: the workload keeps its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Svid {
    /// The leaf certificate, DER.
    pub leaf_der: Vec<u8>,
    /// The chain, leaf first, then intermediates (none while the CA is a root).
    pub chain_der: Vec<Vec<u8>>,
    /// The leaf's NotAfter.
    pub expires_at: SystemTime,
    /// The SPIFFE ID in the leaf's URI SAN.
    pub spiffe_id: SpiffeId,
}

impl X509Svid {
    /// The chain as concatenated DER, leaf first (the Workload API wire form).
    pub fn chain_concat_der(&self) -> Vec<u8> {
        self.chain_der.concat()
    }
}

/// The id of the CA key that signed `leaf_der`: its AuthorityKeyIdentifier in hex,
/// which is the signing CA's [`super::KeyRecord`] id (the template sets it on every
/// leaf). `None` when the certificate or the extension cannot be read. Agents use it to
/// find what a tainted CA signed, the server to recognize callers a tainted CA signed.
pub fn signing_ca_id(leaf_der: &[u8]) -> Option<String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .map(|id| hex::encode(id.0))
}

/// The id of the CA key whose certificate is `ca_der`: its SubjectKeyIdentifier in
/// hex, the same id [`signing_ca_id`] reads from the leaves it signed. `None` when the
/// certificate or the extension cannot be read.
pub fn ca_key_id(ca_der: &[u8]) -> Option<String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = X509Certificate::from_der(ca_der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(hex::encode(ski.0)),
            _ => None,
        })
}

/// Why a certificate is not a valid X.509-SVID. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate")]
    Malformed,
    /// Bytes follow the certificate.
    #[error("trailing data after the certificate")]
    TrailingData,
    /// An extension is duplicated or cannot be parsed.
    #[error("duplicate or malformed extension")]
    BadExtensions,
    /// The leaf has no URI SAN.
    #[error("leaf has no URI SAN")]
    MissingUriSan,
    /// The leaf has more than one URI SAN; an X.509-SVID has exactly one.
    #[error("leaf has more than one URI SAN")]
    MultipleUriSans,
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(#[from] IdError),
    /// The leaf's SPIFFE ID has no path; leaf SPIFFE IDs "MUST have a non-root path
    /// component" (X509-SVID §3.1, §5.2).
    #[error("leaf SPIFFE ID has no path: it names a trust domain, not a workload")]
    LeafIdHasNoPath,
    /// The leaf's basicConstraints says cA=true.
    #[error("leaf must have basicConstraints cA=false")]
    LeafIsCa,
    /// The leaf has no keyUsage extension.
    #[error("leaf has no keyUsage")]
    MissingKeyUsage,
    /// The leaf's keyUsage is not marked critical.
    #[error("leaf keyUsage must be critical")]
    KeyUsageNotCritical,
    /// The leaf's keyUsage lacks digitalSignature.
    #[error("leaf keyUsage must include digitalSignature")]
    MissingDigitalSignature,
    /// The leaf's keyUsage includes keyCertSign or cRLSign.
    #[error("leaf keyUsage must not include keyCertSign or cRLSign")]
    ForbiddenKeyUsage,
    /// The leaf has an extendedKeyUsage without both serverAuth and clientAuth
    /// (X509-SVID §4.4). Checked on what the CA issues.
    #[error("leaf extendedKeyUsage must include serverAuth and clientAuth")]
    MissingServerOrClientAuth,
    /// `now` is before NotBefore.
    #[error("certificate is not valid yet")]
    NotYetValid,
    /// `now` is after NotAfter.
    #[error("certificate has expired")]
    Expired,
    /// The certificate names another SPIFFE ID than the one it was issued for.
    #[error("certificate names another SPIFFE ID than requested")]
    UnexpectedSpiffeId,
    /// An intermediate is not a CA (cA=true with keyCertSign).
    #[error("intermediate certificate is not a signing CA")]
    IntermediateNotCa,
    /// An intermediate or root on the path is outside its validity period at `now`.
    #[error("a signing certificate in the chain is not valid at this time")]
    SignerNotValid,
    /// No chain from the leaf to one of the given roots verifies.
    #[error("no chain to a trusted root verifies")]
    UntrustedChain,
}

impl Authority {
    /// Issues an X.509-SVID for `spiffe_id` to the key in `csr_der`.
    ///
    /// The caller has already authorized `spiffe_id`, which must name a workload (have
    /// a path); the CSR only proves possession of its key, and its subject and
    /// extensions are ignored. DNS names follow [`DnsName`]'s rules, the same that
    /// entries are checked with. NotAfter is `now + ttl`, capped at the CA's NotAfter.
    pub fn sign_x509_svid(
        &self,
        csr_der: &[u8],
        spiffe_id: &SpiffeId,
        ttl: Duration,
        dns_names: &[String],
        now: SystemTime,
    ) -> Result<X509Svid, AuthorityError> {
        self.sign_leaf(csr_der, spiffe_id, ttl, dns_names, &[], now)
    }

    /// An X.509-SVID that also serves HTTPS to clients that check names: as
    /// [`Authority::sign_x509_svid`], plus IP address SANs, for a listener
    /// clients reach by address (`https://127.0.0.1:8200`).
    pub fn sign_serving_svid(
        &self,
        csr_der: &[u8],
        spiffe_id: &SpiffeId,
        ttl: Duration,
        dns_names: &[String],
        ips: &[core::net::IpAddr],
        now: SystemTime,
    ) -> Result<X509Svid, AuthorityError> {
        self.sign_leaf(csr_der, spiffe_id, ttl, dns_names, ips, now)
    }

    fn sign_leaf(
        &self,
        csr_der: &[u8],
        spiffe_id: &SpiffeId,
        ttl: Duration,
        dns_names: &[String],
        ips: &[core::net::IpAddr],
        now: SystemTime,
    ) -> Result<X509Svid, AuthorityError> {
        self.check_workload_id(spiffe_id)?;
        if ttl.as_secs() == 0 {
            return Err(AuthorityError::InvalidTtl);
        }
        let dns_names = dns_names
            .iter()
            .map(|n| DnsName::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        let ca = self.cas.signer()?;
        ca.check_valid_at(now)?;
        let public_key = parse_and_verify(csr_der)?;

        let now_s = unix(now);
        let not_before = now_s.saturating_sub(BACKDATE_SECS).max(unix(ca.not_before));
        let not_after = now_s.saturating_add(ttl.as_secs()).min(unix(ca.not_after));
        let serial = random_serial(&self.rng)?;
        let mut params = leaf_template(spiffe_id, &dns_names, not_before, not_after, serial)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let leaf_der = params.signed_by(&public_key, &ca.issuer)?.der().to_vec();

        // Validate what we issue with the client's rules, plus the issuer-side EKU rule.
        // The signature is not verified again: we made it a moment ago with a key loaded
        // and checked against the CA certificate, and re-verifying would roughly double
        // the cost of issuance.
        let issued = check_issued_leaf(&leaf_der, now)?;
        if issued != *spiffe_id {
            return Err(SvidError::UnexpectedSpiffeId.into());
        }
        Ok(X509Svid {
            chain_der: vec![leaf_der.clone()],
            leaf_der,
            expires_at: from_unix(not_after),
            spiffe_id: issued,
        })
    }
}

/// The X509-SVID leaf template: one URI SAN (the SPIFFE ID) plus DNS SANs, cA=false,
/// critical keyUsage, EKU serverAuth + clientAuth, AuthorityKeyIdentifier.
fn leaf_template(
    spiffe_id: &SpiffeId,
    dns_names: &[DnsName],
    not_before: u64,
    not_after: u64,
    serial: rcgen::SerialNumber,
) -> Result<CertificateParams, AuthorityError> {
    let mut params = CertificateParams::default();
    params.not_before = offset(not_before)?;
    params.not_after = offset(not_after)?;
    params.serial_number = Some(serial);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "sigil");
    let mut sans = Vec::with_capacity(1 + dns_names.len());
    sans.push(SanType::URI(spiffe_id.as_str().try_into()?));
    for name in dns_names {
        sans.push(SanType::DnsName(name.as_str().try_into()?));
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    // keyEncipherment/keyAgreement as SPIRE sets them, for RSA and ECDH peers; never
    // keyCertSign/cRLSign: an SVID must not be able to act as a CA.
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Checks a leaf against the X509-SVID rules a client applies, without verifying its
/// signature: exactly one URI SAN that is a SPIFFE ID with a path, cA=false, a critical
/// keyUsage with digitalSignature and without keyCertSign/cRLSign, and validity covering
/// `now`.
pub fn validate_x509_svid_leaf(leaf_der: &[u8], now: SystemTime) -> Result<SpiffeId, SvidError> {
    check_leaf(&parse_cert(leaf_der)?, now)
}

/// The checks on a leaf the CA has just made: the client's rules, and an
/// extendedKeyUsage, when present, with both serverAuth and clientAuth (X509-SVID §4.4
/// puts that on issuers; clients do not check EKU, so a leaf without it would pass
/// them and then fail in one direction of mTLS).
pub(super) fn check_issued_leaf(leaf_der: &[u8], now: SystemTime) -> Result<SpiffeId, SvidError> {
    let cert = parse_cert(leaf_der)?;
    let id = check_leaf(&cert, now)?;
    let eku = cert
        .extended_key_usage()
        .map_err(|_| SvidError::BadExtensions)?;
    if eku.is_some_and(|e| !(e.value.server_auth && e.value.client_auth)) {
        return Err(SvidError::MissingServerOrClientAuth);
    }
    Ok(id)
}

/// Verifies an X.509-SVID completely: the leaf rules, then a signature chain from the leaf
/// through `intermediates` to one of `roots_der`, every signer valid at `now`.
///
/// The caller picks `roots_der` from the bundle of the trust domain it expects; the
/// returned SPIFFE ID's trust domain should be compared with that choice.
pub fn verify_x509_svid(
    leaf_der: &[u8],
    intermediates: &[Vec<u8>],
    roots_der: &[Vec<u8>],
    now: SystemTime,
) -> Result<SpiffeId, SvidError> {
    let leaf = parse_cert(leaf_der)?;
    let id = check_leaf(&leaf, now)?;
    let inters = intermediates
        .iter()
        .map(|d| parse_cert(d))
        .collect::<Result<Vec<_>, _>>()?;
    let roots = roots_der
        .iter()
        .map(|d| parse_cert(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut current = &leaf;
    // Each step consumes one intermediate at most, so a cycle cannot loop forever.
    for _ in 0..=inters.len() {
        let trusted = roots
            .iter()
            .filter(|r| issued_by(current, r))
            .collect::<Vec<_>>();
        if !trusted.is_empty() {
            return if trusted.iter().any(|r| valid_at(r, now)) {
                Ok(id)
            } else {
                Err(SvidError::SignerNotValid)
            };
        }
        let next = inters
            .iter()
            .find(|i| issued_by(current, i))
            .ok_or(SvidError::UntrustedChain)?;
        check_intermediate(next, now)?;
        current = next;
    }
    Err(SvidError::UntrustedChain)
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| SvidError::Malformed)?;
    if rest.is_empty() {
        Ok(cert)
    } else {
        Err(SvidError::TrailingData)
    }
}

fn check_leaf(cert: &X509Certificate<'_>, now: SystemTime) -> Result<SpiffeId, SvidError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| SvidError::BadExtensions)?
        .ok_or(SvidError::MissingUriSan)?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let uri = uris.next().ok_or(SvidError::MissingUriSan)?;
    if uris.next().is_some() {
        return Err(SvidError::MultipleUriSans);
    }
    let id = SpiffeId::parse(uri)?;
    if id.check_workload().is_err() {
        return Err(SvidError::LeafIdHasNoPath);
    }
    let bc = cert
        .basic_constraints()
        .map_err(|_| SvidError::BadExtensions)?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|_| SvidError::BadExtensions)?
        .ok_or(SvidError::MissingKeyUsage)?;
    if !ku.critical {
        return Err(SvidError::KeyUsageNotCritical);
    }
    if !ku.value.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(SvidError::ForbiddenKeyUsage);
    }
    check_validity(cert, now)?;
    Ok(id)
}

fn check_validity(cert: &X509Certificate<'_>, now: SystemTime) -> Result<(), SvidError> {
    let now_s = i64::try_from(unix(now)).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now_s < validity.not_before.timestamp() {
        Err(SvidError::NotYetValid)
    } else if now_s > validity.not_after.timestamp() {
        Err(SvidError::Expired)
    } else {
        Ok(())
    }
}

fn valid_at(cert: &X509Certificate<'_>, now: SystemTime) -> bool {
    check_validity(cert, now).is_ok()
}

fn check_intermediate(cert: &X509Certificate<'_>, now: SystemTime) -> Result<(), SvidError> {
    let is_ca = cert
        .basic_constraints()
        .map_err(|_| SvidError::BadExtensions)?
        .is_some_and(|bc| bc.value.ca);
    let can_sign = cert
        .key_usage()
        .map_err(|_| SvidError::BadExtensions)?
        .is_some_and(|ku| ku.value.key_cert_sign());
    if !(is_ca && can_sign) {
        return Err(SvidError::IntermediateNotCa);
    }
    if !valid_at(cert, now) {
        return Err(SvidError::SignerNotValid);
    }
    Ok(())
}

/// True when `parent`'s subject is `child`'s issuer and `parent`'s key verifies `child`'s
/// signature with an allowed algorithm.
fn issued_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    if child.issuer().as_raw() != parent.subject().as_raw() {
        return false;
    }
    let spki = parent.public_key();
    let Some(alg) = verification_algorithm(spki, &child.signature_algorithm, true) else {
        return false;
    };
    UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(
            child.tbs_certificate.as_ref(),
            child.signature_value.data.as_ref(),
        )
        .is_ok()
}
