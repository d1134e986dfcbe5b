//! TLS 1.3 configurations that authenticate peers by SPIFFE ID (SPEC §3.2).
//!
//! SVIDs carry no DNS names, so the usual hostname check does not apply:
//! servers accept any client certificate that chains to the trust bundle and
//! read its SPIFFE ID per request; clients check the chain and then that the
//! server presents exactly the SPIFFE ID they expect. Bundle endpoints (SPIFFE
//! Federation) speak plain HTTPS with their own configurations (`https`).

pub mod channel;
mod client;
mod conn;
mod https;
mod server;

pub use client::{SpiffeServerVerifier, client_config};
pub use conn::{PeerLeaf, TlsConn, TlsConnInfo, peer_spiffe_id};
pub use https::{https_client_config, https_server_config, https_single_cert_config};
pub use server::server_config;

use rustls::crypto::CryptoProvider;
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The trust bundle holds no usable root certificate.
    #[error("trust bundle has no usable certificate: {0}")]
    BadBundle(String),
    /// The certificate or key could not be loaded into rustls.
    #[error("certificate or key rejected: {0}")]
    BadCredential(String),
    /// A PEM file could not be parsed.
    #[error("cannot parse PEM from {what}: {message}")]
    Pem {
        /// What was being read.
        what: String,
        /// Why it failed.
        message: String,
    },
}

/// The one crypto provider: ring. Passing it explicitly keeps rustls from
/// guessing when more than one provider is linked.
pub fn provider() -> Arc<CryptoProvider> {
    // Built once: every TLS configuration and verifier shares it.
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Parses PEM text into DER certificates.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<Vec<u8>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.to_owned(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Parses a PEM PKCS#8 private key.
pub fn key_from_pem(what: &str, pem: &[u8]) -> Result<crate::secret::Secret, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let key =
        rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
            what: what.to_owned(),
            // The error names the PEM problem, never the key bytes.
            message: e.to_string(),
        })?;
    Ok(crate::secret::Secret::from_slice(key.secret_pkcs8_der()))
}

/// The server's expected SPIFFE ID, `spiffe://<td>/sigil/server`, for the
/// trust domain named by the first root's URI SAN.
pub fn server_id_from_roots(roots: &[Vec<u8>]) -> Result<crate::id::SpiffeId, TlsError> {
    let bad = || TlsError::BadBundle("root has no spiffe://<trust domain> URI SAN".into());
    let td_id = roots
        .first()
        .and_then(|r| peer_spiffe_id(r))
        .ok_or_else(bad)?;
    let td = crate::id::TrustDomain::parse(td_id.trust_domain_str()).map_err(|_| bad())?;
    Ok(td.server_id())
}

/// Encodes DER certificates as PEM CERTIFICATE blocks.
pub fn certs_to_pem(certs: &[Vec<u8>]) -> String {
    crate::authority::certs_to_pem(certs)
}

/// Encodes a PKCS#8 private key as PEM; the result is itself secret.
pub fn key_to_pem(pkcs8: &crate::secret::Secret) -> crate::secret::Secret {
    use base64::Engine;
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    let b64 =
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pkcs8.expose()));
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    crate::secret::Secret::from(out)
}
