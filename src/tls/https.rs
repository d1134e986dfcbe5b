//! Plain HTTPS for SPIFFE bundle endpoints (issue 8 §4): the server configuration this
//! server's endpoint presents, and the client configuration it fetches foreign bundles
//! with.
//!
//! Unlike every other sigil configuration these accept TLS 1.2 as well as 1.3: bundle
//! endpoint servers "MUST adhere to the Mozilla intermediate compatibility requirements"
//! (Federation §5), which include TLS 1.2, and a client must reach endpoints built to
//! them. rustls offers only AEAD suites with forward secrecy under 1.2. The endpoint
//! asks for no client certificate: servers "MUST NOT require client authentication"
//! (§5.2.1.3, §5.2.2.3). Who the peer is matters only to the client, and the verifier
//! passed in decides it.

use super::{TlsError, provider};
use rustls::client::danger::ServerCertVerifier;
use rustls::server::ResolvesServerCert;
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;

/// The protocol versions of bundle endpoints and their clients.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// HTTP/1.1, the protocol bundle endpoints are spoken to with.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A bundle endpoint's server configuration: the certificate comes from `certs` (the
/// server's current SVID, or an operator's certificate), no client certificate is asked.
pub fn https_server_config(certs: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::BadCredential(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// A client configuration for fetching from a bundle endpoint that `verifier`
/// authenticates; no client certificate is presented.
pub fn https_client_config(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::BadCredential(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// The HTTP API's server configuration: TLS 1.2 or 1.3 (the Vault clients CI
/// systems run include TLS 1.2 ones), one certificate chain and key, no
/// client certificate asked (callers present tokens), HTTP/1.1.
pub fn https_single_cert_config(
    chain: &[Vec<u8>],
    key: &crate::secret::Secret,
) -> Result<ServerConfig, TlsError> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let certs = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.expose().to_vec()));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::BadCredential(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::BadCredential(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}
