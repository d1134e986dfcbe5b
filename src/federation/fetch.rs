//! One fetch of a foreign trust domain's bundle (Federation §5.2): connect, authenticate
//! the endpoint by its profile, `GET` the URL's path over HTTP/1.1, and return the body.
//! Whether the body is a bundle worth keeping is `super::foreign`'s to decide.
//!
//! Bounds: the whole fetch finishes within [`FETCH_TIMEOUT`], the body holds at most
//! 1 MiB (the bundle parser's own limit), and redirects are not followed. The standard
//! lets clients follow temporary redirects but also lets operators turn that off
//! (§7.5.1); an endpoint that moved is better reconfigured than followed without anyone
//! noticing, so a redirect is reported as the failure it is here.

use super::setup::Auth;
use super::verify::{EndpointRejected, SpiffeEndpointVerifier};
use crate::config::EndpointUrl;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{CertificateError, Error as RustlsError};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

/// How long one fetch may take, from connecting to the last byte of the bundle.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest bundle accepted, as the bundle parser's limit.
const MAX_BODY: usize = 1024 * 1024;

/// Why a fetch failed or its bundle was refused. Each variant names what went wrong;
/// the Display text is what `operator status` and `bundle list` report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// `https_spiffe`: no bundle of the endpoint's trust domain is held yet.
    #[error(
        "no bundle of {trust_domain} to authenticate the endpoint with: set bootstrap_bundle, or run `sigil bundle set`"
    )]
    NoAuthenticationBundle {
        /// The endpoint SPIFFE ID's trust domain.
        trust_domain: String,
    },
    /// The endpoint could not be reached.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The endpoint URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The fetch did not finish in time.
    #[error("no bundle within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// The `https_spiffe` endpoint's certificate broke an X509-SVID rule or named
    /// another SPIFFE ID.
    #[error(transparent)]
    EndpointRejected(EndpointRejected),
    /// The `https_web` endpoint's certificate was refused by Web PKI validation
    /// (expired, unknown issuer, not for the URL's host, …).
    #[error("the endpoint's certificate is not trusted: {reason}")]
    EndpointUntrusted {
        /// What the validator said.
        reason: String,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake failed: {message}")]
    Tls {
        /// What rustls said.
        message: String,
    },
    /// The endpoint answered with another status than 200 (redirects included).
    #[error("the endpoint answered HTTP {status}{}", if (300..400).contains(status) { " (redirects are not followed)" } else { "" })]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed: {message}")]
    Http {
        /// What hyper said.
        message: String,
    },
    /// The body is larger than 1 MiB.
    #[error("the answer is larger than 1 MiB")]
    TooLarge,
    /// The body is not UTF-8 text.
    #[error("the answer is not UTF-8 text, so not a SPIFFE bundle")]
    NotUtf8,
    /// The body is not a usable bundle of the trust domain.
    #[error("bundle refused: {0}")]
    Refused(#[from] super::ForeignBundleError),
    /// The accepted bundle could not be recorded or stored.
    #[error("the bundle could not be kept: {message}")]
    Keep {
        /// Why.
        message: String,
    },
}

/// The verifier for an endpoint: `roots` are the latest bundle's of the endpoint's
/// trust domain (`https_spiffe` only; `None` when none is held).
pub(super) fn verifier(
    auth: &Auth,
    roots: Option<Vec<Vec<u8>>>,
) -> Result<Arc<dyn ServerCertVerifier>, FetchError> {
    match auth {
        Auth::Spiffe { endpoint_id, .. } => {
            let roots = roots.filter(|r| !r.is_empty()).ok_or_else(|| {
                FetchError::NoAuthenticationBundle {
                    trust_domain: endpoint_id.trust_domain().to_string(),
                }
            })?;
            Ok(Arc::new(SpiffeEndpointVerifier::new(
                roots,
                endpoint_id.clone(),
            )))
        }
        Auth::Web { roots } => {
            let v: Arc<dyn ServerCertVerifier> =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), crate::tls::provider())
                    .build()
                    .map_err(|e| FetchError::Tls {
                        message: e.to_string(),
                    })?;
            Ok(v)
        }
    }
}

/// Fetches the body at `url` from an endpoint `verifier` authenticates.
pub(super) async fn fetch(
    url: &EndpointUrl,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<String, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, exchange(url, verifier))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn exchange(
    url: &EndpointUrl,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<String, FetchError> {
    let config = crate::tls::https_client_config(verifier).map_err(|e| FetchError::Tls {
        message: e.to_string(),
    })?;
    let connect_err = |message: String| FetchError::Connect {
        url: url.as_str().to_owned(),
        message,
    };
    let tcp = tokio::net::TcpStream::connect((url.host(), url.port()))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    // Under https_spiffe the name is not checked, but it is sent as SNI all the same,
    // as any HTTPS client would.
    let name =
        ServerName::try_from(url.host().to_owned()).map_err(|e| connect_err(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| handshake_error(&e))?;
    let http = |e: hyper::Error| FetchError::Http {
        message: e.to_string(),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(http)?;
    // The connection is driven beside the request and closed when this fetch ends.
    let driver = tokio::spawn(connection);
    let result = get(&mut sender, url).await;
    driver.abort();
    result
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    url: &EndpointUrl,
) -> Result<String, FetchError> {
    let request = http::Request::get(url.path())
        .header(http::header::HOST, host_header(url))
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http {
            message: e.to_string(),
        })?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Http {
            message: e.to_string(),
        })?;
    if response.status() != http::StatusCode::OK {
        return Err(FetchError::HttpStatus {
            status: response.status().as_u16(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge
            } else {
                FetchError::Http {
                    message: e.to_string(),
                }
            }
        })?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| FetchError::NotUtf8)
}

/// The `Host` header: the URL's host (bracketed when it is an IPv6 address) and its
/// port when it is not 443.
fn host_header(url: &EndpointUrl) -> String {
    let host = if url.host().contains(':') {
        format!("[{}]", url.host())
    } else {
        url.host().to_owned()
    };
    match url.port() {
        443 => host,
        port => format!("{host}:{port}"),
    }
}

/// Names what a failed handshake refused: a rule the endpoint's SVID broke, a Web PKI
/// refusal, or some other TLS failure.
fn handshake_error(e: &std::io::Error) -> FetchError {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<RustlsError>()) else {
        return FetchError::Tls {
            message: e.to_string(),
        };
    };
    match tls {
        RustlsError::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<EndpointRejected>() {
                Some(r) => FetchError::EndpointRejected(r.clone()),
                None => FetchError::EndpointUntrusted {
                    reason: tls.to_string(),
                },
            }
        }
        RustlsError::InvalidCertificate(_) => FetchError::EndpointUntrusted {
            reason: tls.to_string(),
        },
        other => FetchError::Tls {
            message: other.to_string(),
        },
    }
}

/// Fetches `url` (https) as any Web PKI client would: the system's roots
/// (`$SSL_CERT_FILE` first), or `ca_file`'s. For documents other than
/// bundles that live on the public web, such as a CI platform's JWKS.
pub async fn fetch_web(
    url: &EndpointUrl,
    ca_file: Option<&std::path::Path>,
) -> Result<String, String> {
    let roots = match ca_file {
        Some(path) => super::setup::roots_from(path),
        None => super::setup::system_roots_for(url.host()),
    }
    .map_err(|e| e.to_string())?;
    let auth = Auth::Web {
        roots: Arc::new(roots),
    };
    let verifier = verifier(&auth, None).map_err(|e| e.to_string())?;
    fetch(url, verifier).await.map_err(|e| e.to_string())
}
