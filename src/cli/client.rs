//! Connecting to the server: over the admin Unix socket (identified by the
//! kernel) or over TLS 1.3 on TCP (identified by an SVID).

use crate::api::pb;
use crate::secret::Secret;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint, Uri};

/// How the CLI reaches the server.
#[derive(Debug, Clone)]
pub enum Target {
    /// The admin socket at this path.
    Admin(PathBuf),
    /// TLS on TCP.
    Tls {
        /// `HOST:PORT`.
        addr: String,
        /// PEM bundle to trust.
        ca_bundle: PathBuf,
        /// Directory with `svid.pem` and `key.pem` to authenticate with.
        svid_dir: Option<PathBuf>,
    },
    /// TLS on TCP with the caller's own SVID from the Workload API.
    Workload {
        /// `HOST:PORT`.
        addr: String,
        /// PEM bundle to trust; the Workload API's bundle when absent.
        ca_bundle: Option<PathBuf>,
        /// The Workload API endpoint (`unix:///…`).
        endpoint: String,
    },
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither an admin socket nor a server address was given.
    #[error("no server given: set --admin-socket / SIGIL_ADMIN_SOCKET or --server / SIGIL_SERVER")]
    NoTarget,
    /// TCP needs a CA bundle.
    #[error("--server needs --ca-bundle / SIGIL_CA_BUNDLE to know whom to trust")]
    NoBundle,
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `SIGIL_TOKEN` is not a token.
    #[error("SIGIL_TOKEN does not hold a token (empty, or not printable ASCII)")]
    BadToken,
    /// A workload target is connected by the CLI, which fetches the SVID first.
    #[error("connecting with a Workload API identity needs the Workload API client")]
    NeedsWorkloadApi,
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The connection failed.
    #[error("cannot connect to {target}: {source}")]
    Transport {
        /// Where.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|e| ConnectError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Connects to `target`.
pub async fn connect(target: &Target) -> Result<Channel, ConnectError> {
    match target {
        Target::Admin(path) => connect_admin(path).await,
        Target::Tls {
            addr,
            ca_bundle,
            svid_dir,
        } => connect_tls(addr, ca_bundle, svid_dir.as_deref()).await,
        Target::Workload { .. } => Err(ConnectError::NeedsWorkloadApi),
    }
}

async fn connect_admin(path: &Path) -> Result<Channel, ConnectError> {
    let path = path.to_owned();
    let shown = path.display().to_string();
    // The URI is a placeholder: the connector ignores it and dials the socket.
    Endpoint::from_static("http://admin.sock")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|source| ConnectError::Transport {
            target: shown,
            source,
        })
}

/// The certificates of a PEM bundle file.
pub fn read_bundle(path: &Path) -> Result<Vec<Vec<u8>>, ConnectError> {
    Ok(crate::tls::certs_from_pem(
        &path.display().to_string(),
        &read(path)?,
    )?)
}

async fn connect_tls(
    addr: &str,
    ca_bundle: &Path,
    svid_dir: Option<&Path>,
) -> Result<Channel, ConnectError> {
    let roots = read_bundle(ca_bundle)?;
    let identity: Option<(Vec<Vec<u8>>, Secret)> = match svid_dir {
        Some(dir) => {
            let chain = crate::tls::certs_from_pem("svid.pem", &read(&dir.join("svid.pem"))?)?;
            let key = crate::tls::key_from_pem("key.pem", &read(&dir.join("key.pem"))?)?;
            Some((chain, key))
        }
        None => None,
    };
    connect_tls_with(
        addr,
        &roots,
        identity.as_ref().map(|(c, k)| (c.as_slice(), k)),
    )
    .await
}

/// Connects over TLS 1.3 trusting `roots`, presenting `identity` if given.
pub async fn connect_tls_with(
    addr: &str,
    roots: &[Vec<u8>],
    identity: Option<(&[Vec<u8>], &Secret)>,
) -> Result<Channel, ConnectError> {
    let server_id = crate::tls::server_id_from_roots(roots)?;
    let config = crate::tls::client_config(roots, server_id, identity)?;
    crate::tls::channel::connect(addr, Arc::new(config))
        .await
        .map_err(|source| ConnectError::Transport {
            target: addr.to_owned(),
            source,
        })
}

/// A sigil token sent with every call (`authorization: Bearer`), or none.
#[derive(Clone, Default)]
pub struct Credential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Credential(bearer ..)"
        } else {
            "Credential(none)"
        })
    }
}

impl Credential {
    /// Sends `token` as a bearer token. Refuses a token that cannot be a
    /// header value (without repeating it).
    pub fn bearer(token: &Secret) -> Result<Self, ConnectError> {
        let text = std::str::from_utf8(token.expose())
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ConnectError::BadToken)?;
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {text}")
                .parse()
                .map_err(|_| ConnectError::BadToken)?;
        // Kept out of HTTP/2 header compression tables and debug output.
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl tonic::service::Interceptor for Credential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel that adds the caller's [`Credential`] to each call.
pub type Conn = tonic::service::interceptor::InterceptedService<Channel, Credential>;

/// Typed clients over one channel.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Operator service.
    pub operator: pb::operator_client::OperatorClient<Conn>,
    /// Entries service.
    pub entries: pb::entries_client::EntriesClient<Conn>,
    /// Bundle service.
    pub bundle: pb::bundle_client::BundleClient<Conn>,
    /// Node service.
    pub node: pb::node_client::NodeClient<Conn>,
    /// Policy service.
    pub policy: pb::policy_client::PolicyClient<Conn>,
    /// Audit service.
    pub audit: pb::audit_client::AuditClient<Conn>,
    /// Agents service.
    pub agents: pb::agents_client::AgentsClient<Conn>,
    /// Secrets service.
    pub secrets: pb::secrets_client::SecretsClient<Conn>,
    /// Auth service (login, tokens).
    pub auth: pb::auth_client::AuthClient<Conn>,
    /// Jit service (elevation).
    pub jit: pb::jit_client::JitClient<Conn>,
    /// Quarantines.
    pub quarantine: pb::quarantine_client::QuarantineClient<Conn>,
}

impl Clients {
    /// Clients sharing `channel`, without a token.
    pub fn new(channel: Channel) -> Self {
        Self::with_credential(channel, Credential::default())
    }

    /// Clients sharing `channel`, sending `credential` with each call.
    pub fn with_credential(channel: Channel, credential: Credential) -> Self {
        let c = |ch: &Channel| {
            tonic::service::interceptor::InterceptedService::new(ch.clone(), credential.clone())
        };
        Self {
            operator: pb::operator_client::OperatorClient::new(c(&channel)),
            entries: pb::entries_client::EntriesClient::new(c(&channel)),
            bundle: pb::bundle_client::BundleClient::new(c(&channel)),
            node: pb::node_client::NodeClient::new(c(&channel)),
            policy: pb::policy_client::PolicyClient::new(c(&channel)),
            audit: pb::audit_client::AuditClient::new(c(&channel)),
            agents: pb::agents_client::AgentsClient::new(c(&channel)),
            secrets: pb::secrets_client::SecretsClient::new(c(&channel)),
            auth: pb::auth_client::AuthClient::new(c(&channel)),
            jit: pb::jit_client::JitClient::new(c(&channel)),
            quarantine: pb::quarantine_client::QuarantineClient::new(c(&channel)),
        }
    }

    /// Connects to `target`.
    pub async fn connect(target: &Target) -> Result<Self, ConnectError> {
        Ok(Self::new(connect(target).await?))
    }
}
