//! Reading what `[federation]` names when the server opens (before anything binds):
//! bootstrap bundles, the `https_web` endpoint's certificate and key, and the roots that
//! `https_web` endpoints are checked against. A file that is missing, unsafe or unusable
//! stops the server with a reason naming it.

use super::foreign::{ForeignBundleError, check_foreign_bundle};
use crate::authority::Bundle;
use crate::config::{ConfigError, EndpointProfile, ForeignProfile, ForeignTrustDomain};
use crate::id::{SpiffeId, TrustDomain};
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the system's CA bundle is looked for, after `$SSL_CERT_FILE`: Debian and
/// Ubuntu, Fedora and RHEL, openSUSE, Alpine and others.
const SYSTEM_CA_FILES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why the files `[federation]` names could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A bootstrap bundle is not a usable bundle of the endpoint's trust domain.
    #[error("bootstrap_bundle {path}: {source}")]
    BadBootstrap {
        /// The file.
        path: PathBuf,
        /// The rule it breaks.
        source: ForeignBundleError,
    },
    /// A certificate or key file holds nothing usable, or the two do not match.
    #[error("{path}: {message}")]
    BadCredential {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The endpoint's key file is readable by others or belongs to another user.
    #[error(transparent)]
    UnsafeKeyFile(#[from] ConfigError),
    /// An `https_web` relationship names no `ca_file` and the system has no CA bundle.
    #[error(
        "no system CA bundle for the https_web endpoint of {trust_domain} ($SSL_CERT_FILE is unset and none of {} exists): set ca_file",
        SYSTEM_CA_FILES.join(", ")
    )]
    NoSystemRoots {
        /// The relationship.
        trust_domain: String,
    },
}

/// How this server's bundle endpoint presents itself.
#[derive(Clone)]
pub enum EndpointIdentity {
    /// `https_spiffe`: the server's current X509-SVID.
    ServerSvid,
    /// `https_web`: the operator's certificate and key.
    Web(Arc<CertifiedKey>),
}

impl std::fmt::Debug for EndpointIdentity {
    // The operator's key is a secret: only the number of certificates is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointIdentity::ServerSvid => f.write_str("ServerSvid"),
            EndpointIdentity::Web(k) => f
                .debug_struct("Web")
                .field("certificates", &k.cert.len())
                .finish_non_exhaustive(),
        }
    }
}

/// How one foreign bundle endpoint is authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `https_spiffe`: an X509-SVID for `endpoint_id`, verified against the latest bundle
    /// of the endpoint's trust domain, `bootstrap` until one is held.
    Spiffe {
        /// The SPIFFE ID the endpoint must present.
        endpoint_id: SpiffeId,
        /// The configured bundle of the endpoint's trust domain.
        bootstrap: Option<Arc<Bundle>>,
    },
    /// `https_web`: a certificate for the URL's host from one of `roots`.
    Web {
        /// The roots (the `ca_file`'s, or the system's).
        roots: Arc<RootCertStore>,
    },
}

/// One configured foreign trust domain, with its files read.
#[derive(Debug, Clone)]
pub struct Relationship {
    /// The configuration.
    pub config: ForeignTrustDomain,
    /// How its endpoint is authenticated.
    pub auth: Auth,
}

impl Relationship {
    /// The foreign trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.name
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn bad(path: &Path, message: impl std::fmt::Display) -> SetupError {
    SetupError::BadCredential {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Loads the endpoint identity the profile names.
pub(super) fn endpoint_identity(profile: &EndpointProfile) -> Result<EndpointIdentity, SetupError> {
    let EndpointProfile::HttpsWeb {
        cert_file,
        key_file,
    } = profile
    else {
        return Ok(EndpointIdentity::ServerSvid);
    };
    let chain = crate::tls::certs_from_pem(&cert_file.display().to_string(), &read(cert_file)?)
        .map_err(|e| bad(cert_file, e))?;
    // The key is a secret: the same mode and owner rules as every secret file.
    let pem = crate::config::read_secret_file(key_file)?;
    let key = {
        use rustls_pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(pem.expose())
            .map_err(|e| bad(key_file, format!("no usable private key: {e}")))?
    };
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let certified = CertifiedKey::from_der(chain, key, &crate::tls::provider()).map_err(|e| {
        bad(
            key_file,
            format!("does not match {}: {e}", cert_file.display()),
        )
    })?;
    Ok(EndpointIdentity::Web(Arc::new(certified)))
}

/// Reads the files of every relationship; `system` roots are read once, when some
/// `https_web` relationship needs them.
pub(super) fn relationships(
    own: &TrustDomain,
    configs: &[ForeignTrustDomain],
) -> Result<Vec<Relationship>, SetupError> {
    let mut system: Option<Arc<RootCertStore>> = None;
    let mut out = Vec::with_capacity(configs.len());
    for config in configs {
        let auth = match &config.profile {
            ForeignProfile::HttpsSpiffe {
                endpoint_spiffe_id,
                bootstrap_bundle,
            } => Auth::Spiffe {
                endpoint_id: endpoint_spiffe_id.clone(),
                bootstrap: bootstrap_bundle
                    .as_deref()
                    .map(|p| bootstrap(own, &endpoint_spiffe_id.trust_domain(), p))
                    .transpose()?,
            },
            ForeignProfile::HttpsWeb { ca_file: Some(f) } => Auth::Web {
                roots: Arc::new(roots_from(f)?),
            },
            ForeignProfile::HttpsWeb { ca_file: None } => {
                let roots = match &system {
                    Some(r) => r.clone(),
                    None => {
                        let r = Arc::new(system_roots(&config.name)?);
                        system = Some(r.clone());
                        r
                    }
                };
                Auth::Web { roots }
            }
        };
        out.push(Relationship {
            config: config.clone(),
            auth,
        });
    }
    Ok(out)
}

/// A bootstrap bundle: a usable bundle of `td`, the endpoint's trust domain.
fn bootstrap(own: &TrustDomain, td: &TrustDomain, path: &Path) -> Result<Arc<Bundle>, SetupError> {
    let text = String::from_utf8(read(path)?).map_err(|_| SetupError::BadBootstrap {
        path: path.to_owned(),
        source: ForeignBundleError::Malformed(crate::authority::BundleError::NotJsonObject),
    })?;
    check_foreign_bundle(own, td, &text)
        .map(Arc::new)
        .map_err(|source| SetupError::BadBootstrap {
            path: path.to_owned(),
            source,
        })
}

pub(super) fn roots_from(path: &Path) -> Result<RootCertStore, SetupError> {
    let certs = crate::tls::certs_from_pem(&path.display().to_string(), &read(path)?)
        .map_err(|e| bad(path, e))?;
    let mut roots = RootCertStore::empty();
    // A system bundle may hold a certificate webpki cannot use as an anchor; the
    // others still count. A file with none usable is refused.
    let (added, _ignored) =
        roots.add_parsable_certificates(certs.into_iter().map(CertificateDer::from));
    if added == 0 {
        return Err(bad(path, "holds no usable CA certificate"));
    }
    Ok(roots)
}

/// The system's roots, for fetching from `host` (named in the error).
pub(super) fn system_roots_for(host: &str) -> Result<RootCertStore, SetupError> {
    system_roots_named(host)
}

fn system_roots(td: &TrustDomain) -> Result<RootCertStore, SetupError> {
    system_roots_named(&td.to_string())
}

fn system_roots_named(what: &str) -> Result<RootCertStore, SetupError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from));
    for path in candidates {
        if path.is_file() {
            return roots_from(&path);
        }
    }
    Err(SetupError::NoSystemRoots {
        trust_domain: what.to_owned(),
    })
}
