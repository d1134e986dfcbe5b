//! The client side: trust only the bundle's roots and only a server that
//! presents the expected SPIFFE ID.

use super::{TlsError, provider};
use crate::id::SpiffeId;
use crate::secret::Secret;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, Error as RustlsError, SignatureScheme};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, TrustAnchor, UnixTime,
};
use std::sync::Arc;

/// Verifies a server's chain against the trust bundle, then its SPIFFE ID.
/// Hostnames are not checked: SVIDs identify by SPIFFE ID, not DNS name.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Vec<TrustAnchor<'static>>,
    expected: SpiffeId,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// Trusts `roots` (DER) and expects the server to be `expected`.
    pub fn new(roots: &[Vec<u8>], expected: SpiffeId) -> Result<Self, TlsError> {
        let roots = roots
            .iter()
            .map(|r| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(r.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::BadBundle(format!("{e:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if roots.is_empty() {
            return Err(TlsError::BadBundle("no certificates".into()));
        }
        Ok(Self {
            roots,
            expected,
            provider: provider(),
        })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| RustlsError::General(format!("bad server certificate: {e:?}")))?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            RustlsError::General(format!(
                "server certificate does not chain to the trust bundle: {e:?}"
            ))
        })?;
        match super::peer_spiffe_id(end_entity.as_ref()) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            Some(id) => Err(RustlsError::General(format!(
                "server presented {id}, expected {}",
                self.expected
            ))),
            None => Err(RustlsError::General(
                "server certificate has no SPIFFE ID".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        // The client config only offers TLS 1.3.
        Err(RustlsError::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds a TLS 1.3-only client configuration trusting `roots` for a server
/// that must be `server_id`, presenting `identity` (chain, key) if given.
pub fn client_config(
    roots: &[Vec<u8>],
    server_id: SpiffeId,
    identity: Option<(&[Vec<u8>], &Secret)>,
) -> Result<ClientConfig, TlsError> {
    let verifier = SpiffeServerVerifier::new(roots, server_id)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::BadCredential(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some((chain, key)) => {
            let certs = chain
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.expose().to_vec()));
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::BadCredential(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
