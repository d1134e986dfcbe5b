//! `[http]` of `server.toml`: the Vault-compatible HTTP API (off unless
//! configured).
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8200"
//! names = ["localhost", "127.0.0.1"]   # in the certificate sigil's CA issues
//! # cert_file = "/etc/sigil/http.pem"  # or an operator-supplied certificate
//! # key_file = "/etc/sigil/http.key"   #   (mode 0600)
//! kv_mount = "secret"
//! ```

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[http]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: String,
    #[serde(default)]
    names: Vec<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    kv_mount: Option<String>,
}

/// The HTTP listener's serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCert {
    /// Issued by sigil's own CA for these DNS names and IP addresses; the
    /// listener opens at unseal.
    Issued(Vec<String>),
    /// Supplied by the operator; the listener also serves while sealed.
    Files {
        /// PEM chain, leaf first.
        cert_file: PathBuf,
        /// PEM private key (mode 0600).
        key_file: PathBuf,
    },
}

/// A checked `[http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The serving certificate.
    pub cert: HttpCert,
    /// The KV v2 mount (default `secret`): `/v1/<mount>/data/<path>`.
    pub kv_mount: String,
}

impl RawHttp {
    pub(super) fn check(
        self,
        path: &Path,
        resolve: impl Fn(PathBuf) -> PathBuf,
    ) -> Result<HttpConfig, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let listen = self
            .listen
            .parse()
            .map_err(|e| invalid("http.listen", format!("{e} (expected HOST:PORT)")))?;
        let cert = match (self.cert_file, self.key_file) {
            (Some(c), Some(k)) => {
                if !self.names.is_empty() {
                    return Err(invalid(
                        "http.names",
                        "names are for a certificate sigil issues; the cert_file names its own"
                            .into(),
                    ));
                }
                HttpCert::Files {
                    cert_file: resolve(c),
                    key_file: resolve(k),
                }
            }
            (None, None) => {
                if self.names.is_empty() {
                    return Err(invalid(
                        "http.names",
                        "list the DNS names or IP addresses clients use (or set cert_file and key_file)".into(),
                    ));
                }
                for n in &self.names {
                    if n.parse::<std::net::IpAddr>().is_err()
                        && crate::id::DnsName::parse(n).is_err()
                    {
                        return Err(invalid(
                            "http.names",
                            format!("{n:?} is neither an IP address nor a DNS name"),
                        ));
                    }
                }
                HttpCert::Issued(self.names)
            }
            _ => {
                return Err(invalid(
                    "http",
                    "set both cert_file and key_file, or neither".into(),
                ));
            }
        };
        let kv_mount = self.kv_mount.unwrap_or_else(|| "secret".to_owned());
        let ok = !kv_mount.is_empty()
            && kv_mount.len() <= 64
            && kv_mount
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ok {
            return Err(invalid(
                "http.kv_mount",
                format!("{kv_mount:?}: use 1 to 64 of A-Z a-z 0-9 _ -"),
            ));
        }
        Ok(HttpConfig {
            listen,
            cert,
            kv_mount,
        })
    }
}
