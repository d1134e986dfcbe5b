//! The server side: present our SVID, accept client SVIDs that chain to the
//! bundle, and also accept clients without a certificate (they authenticate
//! with a bearer token, or are refused by the chokepoint).

use super::{TlsError, provider};
use crate::secret::Secret;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// Builds a TLS 1.3-only server configuration presenting `chain` (leaf
/// first) with `key`, verifying client certificates against `roots`.
pub fn server_config(
    chain: &[Vec<u8>],
    key: &Secret,
    roots: &[Vec<u8>],
) -> Result<ServerConfig, TlsError> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(CertificateDer::from(r.clone()))
            .map_err(|e| TlsError::BadBundle(e.to_string()))?;
    }
    // Client certificates are optional at the TLS layer: a caller may instead
    // present a bearer token. Whatever the TLS layer admits, the chokepoint
    // authenticates and the PDP authorizes on every request.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::BadBundle(e.to_string()))?;
    let certs = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.expose().to_vec()));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::BadCredential(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::BadCredential(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
