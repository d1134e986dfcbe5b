//! Authenticating a foreign `https_spiffe` bundle endpoint (Federation §5.2.2.4): the
//! certificate it presents "MUST be validated" as "a valid X509-SVID for the bundle
//! endpoint SPIFFE ID", against the latest bundle of that ID's trust domain.
//!
//! The chain is checked with the authority's own X509-SVID verifier, the one agents apply
//! to what the server issues them; the time is the TLS layer's (real time), as for every
//! certificate a handshake checks. Refusals travel through rustls as a typed
//! [`EndpointRejected`], so the fetcher can report which rule the endpoint broke.

use crate::authority::{SvidError, verify_x509_svid};
use crate::id::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, DigitallySignedStruct, Error as RustlsError, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why an `https_spiffe` endpoint's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRejected {
    /// The certificate is not an X509-SVID that chains to the bundle (expired, not
    /// valid yet, signed by another CA, a CA certificate as leaf, …).
    #[error("the endpoint's certificate is not a valid X509-SVID of the trust bundle: {0}")]
    NotSvid(SvidError),
    /// The X509-SVID is valid but names another SPIFFE ID than configured.
    #[error("the endpoint presented {found}, expected {expected}")]
    WrongId {
        /// The configured `endpoint_spiffe_id`.
        expected: String,
        /// The SPIFFE ID the endpoint presented.
        found: String,
    },
}

/// Verifies an `https_spiffe` endpoint against one bundle's roots and one SPIFFE ID.
#[derive(Debug)]
pub(super) struct SpiffeEndpointVerifier {
    roots: Vec<Vec<u8>>,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl SpiffeEndpointVerifier {
    /// Trusts `roots` (DER) for an endpoint that must present `expected`.
    pub(super) fn new(roots: Vec<Vec<u8>>, expected: SpiffeId) -> Self {
        Self {
            roots,
            expected,
            provider: crate::tls::provider(),
        }
    }
}

fn reject(r: EndpointRejected) -> RustlsError {
    RustlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(r))))
}

impl ServerCertVerifier for SpiffeEndpointVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        // The URL's host is not checked: under this profile the endpoint is who its
        // SPIFFE ID says, wherever it is reached (§5.2.2).
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let intermediates: Vec<Vec<u8>> = intermediates.iter().map(|c| c.to_vec()).collect();
        let id = verify_x509_svid(end_entity.as_ref(), &intermediates, &self.roots, now)
            .map_err(|e| reject(EndpointRejected::NotSvid(e)))?;
        if id != self.expected {
            return Err(reject(EndpointRejected::WrongId {
                expected: self.expected.to_string(),
                found: id.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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
