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

/// Typed clients over one channel.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Operator service.
    pub operator: pb::operator_client::OperatorClient<Channel>,
    /// Entries service.
    pub entries: pb::entries_client::EntriesClient<Channel>,
    /// Bundle service.
    pub bundle: pb::bundle_client::BundleClient<Channel>,
    /// Node service.
    pub node: pb::node_client::NodeClient<Channel>,
    /// Policy service.
    pub policy: pb::policy_client::PolicyClient<Channel>,
    /// Audit service.
    pub audit: pb::audit_client::AuditClient<Channel>,
    /// Agents service.
    pub agents: pb::agents_client::AgentsClient<Channel>,
    /// Secrets service.
    pub secrets: pb::secrets_client::SecretsClient<Channel>,
}

impl Clients {
    /// Clients sharing `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            operator: pb::operator_client::OperatorClient::new(channel.clone()),
            entries: pb::entries_client::EntriesClient::new(channel.clone()),
            bundle: pb::bundle_client::BundleClient::new(channel.clone()),
            node: pb::node_client::NodeClient::new(channel.clone()),
            policy: pb::policy_client::PolicyClient::new(channel.clone()),
            audit: pb::audit_client::AuditClient::new(channel.clone()),
            agents: pb::agents_client::AgentsClient::new(channel.clone()),
            secrets: pb::secrets_client::SecretsClient::new(channel),
        }
    }

    /// Connects to `target`.
    pub async fn connect(target: &Target) -> Result<Self, ConnectError> {
        Ok(Self::new(connect(target).await?))
    }
}
