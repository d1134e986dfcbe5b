//! Certificate signing requests (SPEC §3.1, X.509-SVID issuance): parsing a CSR and
//! checking its self-signature, the signature-algorithm allowlist shared with chain
//! verification, and key + CSR generation for callers that make their own keys.
//!
//! Only the CSR's public key is used. Its subject and requested extensions are ignored on
//! purpose: the SPIFFE ID and every extension come from the authorized request, so a CSR
//! cannot ask for more than the caller was granted.

use ring::rand::SystemRandom;
use ring::signature::{
    self, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey, VerificationAlgorithm,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::AuthorityError;
use crate::id::SpiffeId;
use crate::secret::Secret;

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// The bytes are not a DER PKCS#10 certification request.
    #[error("CSR is not valid DER PKCS#10")]
    Malformed,
    /// Bytes follow the CSR.
    #[error("trailing data after the CSR")]
    TrailingData,
    /// The key or signature algorithm is not ECDSA P-256/P-384 or Ed25519.
    #[error("CSR key or signature algorithm is not allowed (ECDSA P-256/P-384 or Ed25519)")]
    UnsupportedAlgorithm,
    /// The CSR's self-signature does not verify with its own public key (proof of
    /// possession failed).
    #[error("CSR signature does not verify")]
    BadSignature,
}

/// The public key taken from a verified CSR, in the form rcgen writes into a certificate.
pub(super) struct CsrPublicKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// Parses `csr_der` and verifies its self-signature, returning the subject public key.
pub(super) fn parse_and_verify(csr_der: &[u8]) -> Result<CsrPublicKey, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|_| CsrError::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData);
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let alg = rcgen_key_algorithm(spki).ok_or(CsrError::UnsupportedAlgorithm)?;
    let verifier = verification_algorithm(spki, &csr.signature_algorithm, false)
        .ok_or(CsrError::UnsupportedAlgorithm)?;
    UnparsedPublicKey::new(verifier, spki.subject_public_key.data.as_ref())
        .verify(info.raw, csr.signature_value.data.as_ref())
        .map_err(|_| CsrError::BadSignature)?;
    Ok(CsrPublicKey {
        raw: spki.subject_public_key.data.to_vec(),
        alg,
    })
}

/// The rcgen algorithm whose key encoding matches `spki`, for the allowed key types.
fn rcgen_key_algorithm(
    spki: &SubjectPublicKeyInfo<'_>,
) -> Option<&'static rcgen::SignatureAlgorithm> {
    let key_oid = &spki.algorithm.algorithm;
    if *key_oid == OID_SIG_ED25519 {
        return Some(&rcgen::PKCS_ED25519);
    }
    if *key_oid != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    if curve == OID_EC_P256 {
        Some(&rcgen::PKCS_ECDSA_P256_SHA256)
    } else if curve == OID_NIST_EC_P384 {
        Some(&rcgen::PKCS_ECDSA_P384_SHA384)
    } else {
        None
    }
}

/// The ring verifier for a signature made with `sig_alg` by the key in `spki`, if the pair
/// is on the allowlist: ECDSA (P-256/P-384 with SHA-256/384) and Ed25519 always, RSA
/// PKCS#1 v1.5 with SHA-256/384/512 (≥ 2048 bits) only when `allow_rsa` (federated roots
/// may be RSA; workload keys may not). SHA-1 is never accepted.
pub(super) fn verification_algorithm(
    spki: &SubjectPublicKeyInfo<'_>,
    sig_alg: &AlgorithmIdentifier<'_>,
    allow_rsa: bool,
) -> Option<&'static dyn VerificationAlgorithm> {
    let key_oid = &spki.algorithm.algorithm;
    let sig_oid = &sig_alg.algorithm;
    if *key_oid == OID_SIG_ED25519 {
        return (*sig_oid == OID_SIG_ED25519).then_some(&signature::ED25519);
    }
    if *key_oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        let sha256 = *sig_oid == OID_SIG_ECDSA_WITH_SHA256;
        let sha384 = *sig_oid == OID_SIG_ECDSA_WITH_SHA384;
        return match (curve == OID_EC_P256, curve == OID_NIST_EC_P384) {
            (true, _) if sha256 => Some(&signature::ECDSA_P256_SHA256_ASN1),
            (true, _) if sha384 => Some(&signature::ECDSA_P256_SHA384_ASN1),
            (_, true) if sha256 => Some(&signature::ECDSA_P384_SHA256_ASN1),
            (_, true) if sha384 => Some(&signature::ECDSA_P384_SHA384_ASN1),
            _ => None,
        };
    }
    if allow_rsa && *key_oid == OID_PKCS1_RSAENCRYPTION {
        if *sig_oid == OID_PKCS1_SHA256WITHRSA {
            return Some(&signature::RSA_PKCS1_2048_8192_SHA256);
        } else if *sig_oid == OID_PKCS1_SHA384WITHRSA {
            return Some(&signature::RSA_PKCS1_2048_8192_SHA384);
        } else if *sig_oid == OID_PKCS1_SHA512WITHRSA {
            return Some(&signature::RSA_PKCS1_2048_8192_SHA512);
        }
    }
    None
}

/// Checks that `csr_der` is a well-formed CSR whose self-signature verifies
/// with an accepted algorithm, without signing anything.
pub fn check_csr(csr_der: &[u8]) -> Result<(), AuthorityError> {
    parse_and_verify(csr_der)
        .map(|_| ())
        .map_err(AuthorityError::Csr)
}

/// Generates a P-256 key with ring and a CSR for it carrying `spiffe_id` as URI SAN.
/// Returns the unencrypted PKCS#8 DER key (the form the Workload API hands out) and the
/// CSR DER.
pub fn generate_key_and_csr(spiffe_id: &SpiffeId) -> Result<(Secret, Vec<u8>), AuthorityError> {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| AuthorityError::Key)?;
    let pkcs8 = Secret::from_slice(doc.as_ref());
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.expose()),
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )
    .map_err(|_| AuthorityError::Key)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "sigil");
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe_id.as_str().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((pkcs8, csr.der().to_vec()))
}
