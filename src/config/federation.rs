//! `[federation.bundle_endpoint]` and `[[federation.trust_domain]]` of `server.toml`
//! (SPEC §3.4, issue 8 §4, the SPIFFE Federation standard): where this server serves its
//! bundle, and which foreign trust domains' bundles it fetches.
//!
//! Parsing checks the shape of every key (profiles, URLs, SPIFFE IDs, which keys go with
//! which profile) and names the key it refuses. The files the section names (bootstrap
//! bundles, certificates, keys) are read when the server opens, as the unseal
//! passphrase is, so that a configuration can be checked where those files do not exist.

use super::{ConfigError, resolve};
use crate::id::{SpiffeId, TrustDomain};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The checked `[federation]` section; empty when the file has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationConfig {
    /// Where this server serves its own bundle, if it does.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// The foreign trust domains whose bundles this server fetches.
    pub trust_domains: Vec<ForeignTrustDomain>,
}

/// `[federation.bundle_endpoint]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// The HTTPS listen address.
    pub listen: SocketAddr,
    /// How the endpoint authenticates itself.
    pub profile: EndpointProfile,
}

/// How this server's bundle endpoint authenticates itself (Federation §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
    /// `https_spiffe`: the server's own X509-SVID, followed as it renews.
    HttpsSpiffe,
    /// `https_web`: a certificate the operator supplies (Web PKI).
    HttpsWeb {
        /// PEM certificate chain, leaf first.
        cert_file: PathBuf,
        /// PEM private key; must be mode 0600.
        key_file: PathBuf,
    },
}

/// One `[[federation.trust_domain]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignTrustDomain {
    /// The foreign trust domain: the name its bundle is kept and handed out under.
    pub name: TrustDomain,
    /// Its bundle endpoint.
    pub url: EndpointUrl,
    /// How its bundle endpoint is authenticated.
    pub profile: ForeignProfile,
}

/// How a foreign bundle endpoint is authenticated (Federation §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignProfile {
    /// `https_spiffe`: the endpoint presents an X509-SVID for `endpoint_spiffe_id`.
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint must present.
        endpoint_spiffe_id: SpiffeId,
        /// The bundle (SPIFFE format) of the endpoint's trust domain, used until a
        /// bundle of that trust domain is held.
        bootstrap_bundle: Option<PathBuf>,
    },
    /// `https_web`: the endpoint presents a certificate for the URL's host.
    HttpsWeb {
        /// PEM roots to trust instead of the system's (a private CA, tests).
        ca_file: Option<PathBuf>,
    },
}

impl ForeignProfile {
    /// The profile's name as the standard and the configuration write it.
    pub fn name(&self) -> &'static str {
        match self {
            ForeignProfile::HttpsSpiffe { .. } => HTTPS_SPIFFE,
            ForeignProfile::HttpsWeb { .. } => HTTPS_WEB,
        }
    }
}

const HTTPS_SPIFFE: &str = "https_spiffe";
const HTTPS_WEB: &str = "https_web";

/// A bundle endpoint URL: `https`, no userinfo (Federation §5.2.1.1, §5.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: String,
    host: String,
    port: u16,
    path: String,
}

impl EndpointUrl {
    /// Parses and checks `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("{e} (expected https://HOST[:PORT][/PATH])"))?;
        if uri.scheme_str() != Some("https") {
            return Err("the scheme must be https".into());
        }
        let authority = uri
            .authority()
            .ok_or_else(|| "the URL has no host".to_owned())?;
        // Federation §5.2.1.1: "MUST NOT include userinfo in the authority component".
        if authority.as_str().contains('@') {
            return Err("the URL must not carry user information".into());
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Self {
            url: text.to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(443),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host (a DNS name or an IP address, without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query to request (`/` when the URL has none).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// `[federation]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFederation {
    bundle_endpoint: Option<RawEndpoint>,
    #[serde(default)]
    trust_domain: Vec<RawForeign>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    listen: String,
    profile: String,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawForeign {
    name: String,
    url: String,
    profile: String,
    endpoint_spiffe_id: Option<String>,
    bootstrap_bundle: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// Checks one section's values; every error names its key.
struct Check<'a> {
    path: &'a Path,
    own: &'a TrustDomain,
}

impl Check<'_> {
    fn invalid(&self, key: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key,
            message: message.into(),
        }
    }

    /// A key that only one profile takes.
    fn only_with<T>(
        &self,
        key: &'static str,
        v: &Option<T>,
        profile: &str,
    ) -> Result<(), ConfigError> {
        match v {
            Some(_) => Err(self.invalid(key, format!("is only used with profile = \"{profile}\""))),
            None => Ok(()),
        }
    }

    fn endpoint(&self, raw: &RawEndpoint) -> Result<BundleEndpointConfig, ConfigError> {
        let listen = raw.listen.parse().map_err(|e| {
            self.invalid(
                "federation.bundle_endpoint.listen",
                format!("{e} (expected HOST:PORT)"),
            )
        })?;
        let profile = match raw.profile.as_str() {
            HTTPS_SPIFFE => {
                self.only_with(
                    "federation.bundle_endpoint.cert_file",
                    &raw.cert_file,
                    HTTPS_WEB,
                )?;
                self.only_with(
                    "federation.bundle_endpoint.key_file",
                    &raw.key_file,
                    HTTPS_WEB,
                )?;
                EndpointProfile::HttpsSpiffe
            }
            HTTPS_WEB => {
                let need = |key, v: &Option<PathBuf>| {
                    v.clone().map(|p| resolve(self.path, p)).ok_or_else(|| {
                        self.invalid(key, "is required with profile = \"https_web\"")
                    })
                };
                EndpointProfile::HttpsWeb {
                    cert_file: need("federation.bundle_endpoint.cert_file", &raw.cert_file)?,
                    key_file: need("federation.bundle_endpoint.key_file", &raw.key_file)?,
                }
            }
            other => return Err(self.bad_profile("federation.bundle_endpoint.profile", other)),
        };
        Ok(BundleEndpointConfig { listen, profile })
    }

    fn bad_profile(&self, key: &'static str, found: &str) -> ConfigError {
        self.invalid(
            key,
            format!("{found:?} is not a profile: use \"https_spiffe\" or \"https_web\""),
        )
    }

    fn foreign(&self, raw: &RawForeign) -> Result<ForeignTrustDomain, ConfigError> {
        let name = TrustDomain::parse(&raw.name)
            .map_err(|e| self.invalid("federation.trust_domain.name", e.to_string()))?;
        if &name == self.own {
            return Err(self.invalid(
                "federation.trust_domain.name",
                format!("{name} is this server's own trust domain"),
            ));
        }
        let url = EndpointUrl::parse(&raw.url)
            .map_err(|e| self.invalid("federation.trust_domain.url", e))?;
        let profile = match raw.profile.as_str() {
            HTTPS_SPIFFE => {
                self.only_with("federation.trust_domain.ca_file", &raw.ca_file, HTTPS_WEB)?;
                let id = raw.endpoint_spiffe_id.as_deref().ok_or_else(|| {
                    self.invalid(
                        "federation.trust_domain.endpoint_spiffe_id",
                        "is required with profile = \"https_spiffe\"",
                    )
                })?;
                let endpoint_spiffe_id = SpiffeId::parse(id).map_err(|e| {
                    self.invalid("federation.trust_domain.endpoint_spiffe_id", e.to_string())
                })?;
                ForeignProfile::HttpsSpiffe {
                    endpoint_spiffe_id,
                    bootstrap_bundle: raw.bootstrap_bundle.clone().map(|p| resolve(self.path, p)),
                }
            }
            HTTPS_WEB => {
                self.only_with(
                    "federation.trust_domain.endpoint_spiffe_id",
                    &raw.endpoint_spiffe_id,
                    HTTPS_SPIFFE,
                )?;
                self.only_with(
                    "federation.trust_domain.bootstrap_bundle",
                    &raw.bootstrap_bundle,
                    HTTPS_SPIFFE,
                )?;
                ForeignProfile::HttpsWeb {
                    ca_file: raw.ca_file.clone().map(|p| resolve(self.path, p)),
                }
            }
            other => return Err(self.bad_profile("federation.trust_domain.profile", other)),
        };
        Ok(ForeignTrustDomain { name, url, profile })
    }
}

impl RawFederation {
    /// Checks the section for a server of trust domain `own`.
    pub(super) fn check(
        &self,
        path: &Path,
        own: &TrustDomain,
    ) -> Result<FederationConfig, ConfigError> {
        let c = Check { path, own };
        let bundle_endpoint = self
            .bundle_endpoint
            .as_ref()
            .map(|e| c.endpoint(e))
            .transpose()?;
        let mut seen = BTreeSet::new();
        let mut trust_domains = Vec::with_capacity(self.trust_domain.len());
        for raw in &self.trust_domain {
            let td = c.foreign(raw)?;
            // One relationship per name: two would race to replace each other's bundle.
            if !seen.insert(td.name.clone()) {
                return Err(c.invalid(
                    "federation.trust_domain.name",
                    format!("{} is configured twice", td.name),
                ));
            }
            trust_domains.push(td);
        }
        Ok(FederationConfig {
            bundle_endpoint,
            trust_domains,
        })
    }
}

#[cfg(test)]
mod tests;
