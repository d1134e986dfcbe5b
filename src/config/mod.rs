//! Strict TOML configuration (SPEC §3.4, STYLE §11): unknown keys are errors,
//! secrets are never inline (a config names a file or an environment
//! variable), key files must be mode 0600, and everything is checked before
//! anything binds.

use crate::authority::RotationPolicy;
use crate::id::{TrustDomain, Ttl};
use crate::net::Limits;
use crate::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod ca;
mod federation;
mod http;
mod jit;
mod limits;
mod oidc;
pub use federation::{
    BundleEndpointConfig, EndpointProfile, EndpointUrl, FederationConfig, ForeignProfile,
    ForeignTrustDomain,
};
pub use http::{HttpCert, HttpConfig};
pub use jit::JitConfig;
pub use limits::ServerLimits;
pub use oidc::{JwksSource, MAX_ROLE_TTL, OidcConfig, OidcIssuer, OidcRole};

/// Why a configuration was refused. Messages name the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the key and line).
        message: String,
    },
    /// A value parsed but breaks a rule.
    #[error("config {path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// The rule broken.
        message: String,
    },
    /// A secret file is readable by users other than its owner.
    #[error("{path} must have mode 0600 (it has {mode:o}): it holds a secret")]
    InsecureMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file belongs to another user, who could replace it with a
    /// secret of their choosing (or read it back later).
    #[error("{path} belongs to uid {owner}, not to you (uid {caller}) or root: it holds a secret")]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The reader's effective uid.
        caller: u32,
    },
    /// A secret file or variable could not be read or is empty.
    #[error("cannot read secret from {what}: {message}")]
    Secret {
        /// The file or variable.
        what: String,
        /// Why.
        message: String,
    },
}

/// `[unseal]`: where the passphrase that unseals the store at start comes from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UnsealConfig {
    /// A file holding the passphrase; must be mode 0600.
    pub passphrase_file: Option<PathBuf>,
    /// An environment variable holding the passphrase.
    pub passphrase_env: Option<String>,
}

/// `[policy]`: where the Rego policies live.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A directory of `*.rego` files.
    pub dir: PathBuf,
}

/// `[ca]`: the certificate authority and the rotation of its keys (SPEC §7).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Lifetime of each CA key and JWT signing key (default 24h, SPIRE's default).
    pub ttl: Option<String>,
    /// Default X.509-SVID lifetime (default 1h).
    pub x509_svid_ttl: Option<String>,
    /// Default JWT-SVID lifetime (default 5m).
    pub jwt_svid_ttl: Option<String>,
    /// Life left on the active key when its successor is prepared and published
    /// (default half of `ttl`).
    pub prepare_before: Option<String>,
    /// Life left on the active key when its successor starts signing (default a sixth
    /// of `ttl`).
    pub activate_before: Option<String>,
    /// Least time a key is published before it signs (default 5m).
    pub publish_window: Option<String>,
    /// How long a tainted key stays published while agents re-issue (default 10m).
    pub taint_grace: Option<String>,
}

/// `server.toml` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawServerConfig {
    trust_domain: String,
    data_dir: PathBuf,
    listen: String,
    admin_socket: PathBuf,
    #[serde(default)]
    admin_uids: Vec<u32>,
    unseal: Option<UnsealConfig>,
    policy: PolicyConfig,
    #[serde(default)]
    ca: CaConfig,
    #[serde(default)]
    limits: limits::RawServerLimits,
    #[serde(default)]
    federation: federation::RawFederation,
    #[serde(default)]
    oidc: oidc::RawOidc,
    http: Option<http::RawHttp>,
    #[serde(default)]
    jit: jit::RawJit,
}

/// A checked server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The trust domain this server is the authority for.
    pub trust_domain: TrustDomain,
    /// Where the store and audit log live.
    pub data_dir: PathBuf,
    /// gRPC over TLS listen address.
    pub listen: SocketAddr,
    /// The admin Unix socket path.
    pub admin_socket: PathBuf,
    /// Uids (besides root and the server's own) treated as operators on the admin socket.
    pub admin_uids: Vec<u32>,
    /// Unseal material, if the server should unseal itself at start.
    pub unseal: Option<UnsealConfig>,
    /// The policy directory.
    pub policy_dir: PathBuf,
    /// CA lifetime.
    pub ca_ttl: Ttl,
    /// Default X.509-SVID lifetime.
    pub x509_svid_ttl: Ttl,
    /// Default JWT-SVID lifetime.
    pub jwt_svid_ttl: Ttl,
    /// When CA and JWT keys are prepared, activated and dropped; its lifetimes are
    /// `ca_ttl`, `x509_svid_ttl` and `jwt_svid_ttl`.
    pub rotation: RotationPolicy,
    /// Argon2id cost for `init` (unseal uses the cost stored at init).
    pub kdf_cost: crate::keyring::KdfCost,
    /// Connection limits of the admin socket and the TLS listener.
    pub limits: ServerLimits,
    /// The bundle endpoint and the foreign trust domains (SPIFFE Federation).
    pub federation: FederationConfig,
    /// CI login: OIDC issuers and roles.
    pub oidc: OidcConfig,
    /// The Vault-compatible HTTP API, when configured.
    pub http: Option<HttpConfig>,
    /// Roles that may be requested just in time.
    pub jit: JitConfig,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Resolves a relative path against the config file's directory, so a config
/// and the files it names can move together.
fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

impl ServerConfig {
    /// Loads and checks `server.toml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &read(path)?)
    }

    /// Checks `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned() + &location(text, e.span()),
        })?;
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let trust_domain = TrustDomain::parse(&raw.trust_domain)
            .map_err(|e| invalid("trust_domain", e.to_string()))?;
        let listen = raw
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("{e} (expected HOST:PORT)")))?;
        if let Some(u) = &raw.unseal
            && u.passphrase_file.is_some() == u.passphrase_env.is_some()
        {
            return Err(invalid(
                "unseal",
                "set exactly one of passphrase_file or passphrase_env".into(),
            ));
        }
        let unseal = raw.unseal.map(|u| UnsealConfig {
            passphrase_file: u.passphrase_file.map(|p| resolve(path, p)),
            passphrase_env: u.passphrase_env,
        });
        let ca = ca::CaSection::parse(path, &raw.ca)?;
        let federation = raw.federation.check(path, &trust_domain)?;
        let oidc = raw.oidc.check(path, &trust_domain, |p| resolve(path, p))?;
        let http = raw
            .http
            .map(|h| h.check(path, |p| resolve(path, p)))
            .transpose()?;
        let jit = raw.jit.check(path)?;
        Ok(Self {
            trust_domain,
            data_dir: resolve(path, raw.data_dir),
            listen,
            admin_socket: resolve(path, raw.admin_socket),
            admin_uids: raw.admin_uids,
            unseal,
            policy_dir: resolve(path, raw.policy.dir),
            ca_ttl: ca.ttl,
            x509_svid_ttl: ca.x509_svid_ttl,
            jwt_svid_ttl: ca.jwt_svid_ttl,
            rotation: ca.rotation,
            kdf_cost: crate::keyring::KdfCost::default(),
            limits: raw.limits.check(path)?,
            federation,
            oidc,
            http,
            jit,
        })
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text.get(..r.start).map_or(0, |t| t.matches('\n').count()) + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// `agent.toml` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawAgentConfig {
    server: String,
    trust_bundle: PathBuf,
    data_dir: PathBuf,
    socket: PathBuf,
    #[serde(default)]
    max_exe_bytes: Option<u64>,
    #[serde(default)]
    limits: limits::RawWorkloadLimits,
}

/// A checked agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The server's gRPC address.
    pub server: String,
    /// PEM bundle trusted for the first connection to the server.
    pub trust_bundle: PathBuf,
    /// Where the agent keeps its SVID and cache.
    pub data_dir: PathBuf,
    /// The Workload API socket.
    pub socket: PathBuf,
    /// Executables larger than this many bytes are not hashed for the
    /// `unix:sha256` selector (default 256 MiB).
    pub max_exe_bytes: Option<u64>,
    /// Connection limits of the Workload API socket.
    pub limits: Limits,
}

impl AgentConfig {
    /// Loads and checks `agent.toml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &read(path)?)
    }

    /// Checks `text` as the contents of `path`. Relative paths are resolved
    /// against the file's directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawAgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned() + &location(text, e.span()),
        })?;
        Ok(Self {
            server: raw.server,
            trust_bundle: resolve(path, raw.trust_bundle),
            data_dir: resolve(path, raw.data_dir),
            socket: resolve(path, raw.socket),
            max_exe_bytes: raw.max_exe_bytes,
            limits: raw.limits.check(path)?,
        })
    }
}

/// Reads a secret from a file that must be mode 0600 (no group or other bits)
/// and belong to the reader or root. Trailing newlines are stripped so
/// `echo pass > file` works.
pub fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let unreadable = |e: std::io::Error| ConfigError::Secret {
        what: path.display().to_string(),
        message: e.to_string(),
    };
    // The checks look at the file that was opened, not at the path again,
    // so the file cannot be swapped between the check and the read.
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    // A secret readable by group or others is already disclosed; refusing it
    // makes the operator notice instead of silently trusting it.
    if mode & 0o077 != 0 {
        return Err(ConfigError::InsecureMode {
            path: path.to_owned(),
            mode,
        });
    }
    let caller = rustix::process::geteuid().as_raw();
    if meta.uid() != caller && meta.uid() != 0 {
        return Err(ConfigError::ForeignOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            caller,
        });
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(unreadable)?;
    non_empty(trim_newlines(bytes), &path.display().to_string())
}

/// Reads a secret from standard input (to its end).
pub fn read_secret_stdin() -> Result<Secret, ConfigError> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(|e| {
        ConfigError::Secret {
            what: "standard input".into(),
            message: e.to_string(),
        }
    })?;
    non_empty(trim_newlines(bytes), "standard input")
}

/// Reads a secret from an environment variable.
pub fn read_secret_env(name: &str) -> Result<Secret, ConfigError> {
    let value = std::env::var(name).map_err(|_| ConfigError::Secret {
        what: format!("${name}"),
        message: "not set or not UTF-8".into(),
    })?;
    non_empty(trim_newlines(value.into_bytes()), &format!("${name}"))
}

fn trim_newlines(mut bytes: Vec<u8>) -> Secret {
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    Secret::new(bytes)
}

fn non_empty(s: Secret, what: &str) -> Result<Secret, ConfigError> {
    if s.is_empty() {
        Err(ConfigError::Secret {
            what: what.to_owned(),
            message: "empty".into(),
        })
    } else {
        Ok(s)
    }
}

impl UnsealConfig {
    /// Reads the passphrase this section names.
    pub fn passphrase(&self) -> Result<Secret, ConfigError> {
        match (&self.passphrase_file, &self.passphrase_env) {
            (Some(f), _) => read_secret_file(f),
            (None, Some(v)) => read_secret_env(v),
            (None, None) => Err(ConfigError::Secret {
                what: "[unseal]".into(),
                message: "names neither passphrase_file nor passphrase_env".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const EXAMPLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

    #[test]
    fn example_files_parse() {
        let dir = Path::new(EXAMPLE_DIR);
        let s = ServerConfig::load(&dir.join("server.example.toml")).unwrap();
        assert_eq!(s.trust_domain.as_str(), "example.org");
        assert_eq!(s.x509_svid_ttl.as_secs(), 3600);
        // The example spells out the defaults, which are SPEC §7's.
        assert_eq!(s.rotation, crate::authority::RotationPolicy::default());
        AgentConfig::load(&dir.join("agent.example.toml")).unwrap();
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text =
            std::fs::read_to_string(Path::new(EXAMPLE_DIR).join("server.example.toml")).unwrap();
        let bad = format!("{text}\nlisten_port = 5\n");
        let err = ServerConfig::parse(Path::new("s.toml"), &bad).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = "trust_domain = \"Example.org\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"a.sock\"\n[policy]\ndir = \"p\"\n";
        let err = ServerConfig::parse(Path::new("s.toml"), base).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "trust_domain",
                    ..
                }
            ),
            "{err}"
        );
        let fixed = base
            .replace("Example", "example")
            .replace("127.0.0.1:0", "nowhere");
        let err = ServerConfig::parse(Path::new("s.toml"), &fixed).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "listen", .. }),
            "{err}"
        );
    }

    #[test]
    fn ca_must_outlive_its_svids() {
        let text =
            std::fs::read_to_string(Path::new(EXAMPLE_DIR).join("server.example.toml")).unwrap();
        let bad = text.replace("ttl = \"24h\"", "ttl = \"30m\"");
        let err = ServerConfig::parse(Path::new("s.toml"), &bad).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "ca.ttl", .. }),
            "{err}"
        );
    }

    #[test]
    fn secret_file_mode_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pass");
        std::fs::write(&f, "correct horse\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_secret_file(&f),
            Err(ConfigError::InsecureMode { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&f).unwrap().expose(), b"correct horse");
    }

    #[test]
    fn secret_file_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pass");
        std::fs::write(&f, "planted\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
        let err = read_secret_file(&f).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::ForeignOwner {
                    owner: 65534,
                    caller: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} belongs to uid 65534, not to you (uid 0) or root: it holds a secret",
                f.display()
            )
        );
    }
}
