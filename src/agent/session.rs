//! The agent's session with the server: its own identity (join-token
//! attestation first, then renewal at half-life), the mTLS channel built
//! from it, the entry push stream, and the [`Issuer`] that signs workload
//! credentials through the server.
//!
//! The agent SVID and the trust bundle are kept in the data directory (key
//! mode 0600) so a restart needs no new join token.

use super::{AgentError, Issuer};
use crate::api::pb::{self, node_client::NodeClient};
use crate::authority::Bundle;
use crate::clock;
use crate::files::{Access, FileError, OutDir};
use crate::id::{SpiffeId, TrustDomain};
use crate::registry::{Entry, EntryId};
use crate::secret::Secret;
use crate::sync::{read, write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tonic::transport::Channel;

/// How long one call to the server may take before the agent gives up on it
/// (and serves from its cache instead).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not start its session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// There is no usable stored SVID and no join token was given.
    #[error(
        "no usable agent SVID in {0}: start the agent with --join-token-file (or $SIGIL_JOIN_TOKEN)"
    )]
    NeedJoinToken(PathBuf),
    /// A file could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The data directory is unsafe or a file in it could not be written.
    #[error(transparent)]
    Write(#[from] FileError),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The server refused or could not be reached during attestation.
    #[error("attestation failed: {0}")]
    Attestation(String),
    /// The server's answer could not be used.
    #[error("bad answer from the server: {0}")]
    BadAnswer(String),
}

/// The agent's own credentials.
struct Identity {
    id: SpiffeId,
    chain: Vec<Vec<u8>>,
    key: Secret,
    issued: SystemTime,
    expires: SystemTime,
    roots: Vec<Vec<u8>>,
}

/// The session: identity, channel and data directory.
pub struct Session {
    addr: String,
    dir: PathBuf,
    trust_domain: TrustDomain,
    identity: RwLock<Arc<Identity>>,
    channel: RwLock<Channel>,
    /// The last full bundle received (also kept as bundle.json).
    bundle: RwLock<Option<Arc<Bundle>>>,
    /// CA keys the server says are compromised: an agent SVID one of them signed
    /// is renewed at once.
    tainted_cas: RwLock<Vec<String>>,
    /// Wakes the renewal task when the agent SVID became due early.
    renew_now: tokio::sync::Notify,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("addr", &self.addr)
            .field("agent", &self.agent_id())
            .finish_non_exhaustive()
    }
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> SessionError {
    SessionError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn leaf_validity(leaf: &[u8]) -> Option<(SystemTime, SystemTime)> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let to = |t: ASN1Time| {
        u64::try_from(t.timestamp())
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    };
    Some((
        to(cert.validity().not_before)?,
        to(cert.validity().not_after)?,
    ))
}

fn status_error(s: &tonic::Status) -> AgentError {
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            AgentError::Denied(s.message().to_owned())
        }
        tonic::Code::InvalidArgument => AgentError::Invalid(s.message().to_owned()),
        _ => AgentError::ServerUnavailable(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn from_wire_time(t: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Session {
    /// Starts the session: loads the stored agent SVID if it is still valid,
    /// otherwise attests with `join_token`.
    pub async fn start(
        addr: &str,
        dir: &Path,
        bootstrap_bundle: &Path,
        join_token: Option<&Secret>,
    ) -> Result<Arc<Self>, SessionError> {
        let pem = std::fs::read(bootstrap_bundle).map_err(|e| file_err(bootstrap_bundle, e))?;
        let bootstrap_roots =
            crate::tls::certs_from_pem(&bootstrap_bundle.display().to_string(), &pem)?;
        let server_id = crate::tls::server_id_from_roots(&bootstrap_roots)?;
        let trust_domain = server_id.trust_domain();
        // The directory will hold the agent's key: refuse one that other
        // users could tamper with before reading or attesting anything.
        OutDir::create(dir, Access::Private)?;
        let (identity, bundle) = match Self::load(dir, clock::now()) {
            Some(id) => {
                let bundle = std::fs::read_to_string(dir.join("bundle.json"))
                    .ok()
                    .and_then(|j| Bundle::from_spiffe_json(&trust_domain, &j).ok());
                (id, bundle)
            }
            None => {
                let token =
                    join_token.ok_or_else(|| SessionError::NeedJoinToken(dir.to_owned()))?;
                let (id, bundle) =
                    Self::attest(addr, &bootstrap_roots, &trust_domain, token).await?;
                (id, Some(bundle))
            }
        };
        let channel = Self::channel(addr, &identity)?;
        let session = Arc::new(Self {
            addr: addr.to_owned(),
            dir: dir.to_owned(),
            trust_domain,
            identity: RwLock::new(Arc::new(identity)),
            channel: RwLock::new(channel),
            bundle: RwLock::new(None),
            tainted_cas: RwLock::default(),
            renew_now: tokio::sync::Notify::new(),
        });
        session.persist()?;
        if let Some(b) = bundle {
            session.set_bundle(&b);
        }
        Ok(session)
    }

    fn load(dir: &Path, now: SystemTime) -> Option<Identity> {
        let chain = crate::tls::certs_from_pem(
            "agent_svid.pem",
            &std::fs::read(dir.join("agent_svid.pem")).ok()?,
        )
        .ok()?;
        let key = crate::tls::key_from_pem(
            "agent_key.pem",
            &std::fs::read(dir.join("agent_key.pem")).ok()?,
        )
        .ok()?;
        let roots =
            crate::tls::certs_from_pem("bundle.pem", &std::fs::read(dir.join("bundle.pem")).ok()?)
                .ok()?;
        let leaf = chain.first()?;
        let id = crate::tls::peer_spiffe_id(leaf)?;
        let (issued, expires) = leaf_validity(leaf)?;
        if expires <= now {
            tracing::warn!(agent = %id, "stored agent SVID has expired; a join token is needed");
            return None;
        }
        Some(Identity {
            id,
            chain,
            key,
            issued,
            expires,
            roots,
        })
    }

    async fn attest(
        addr: &str,
        roots: &[Vec<u8>],
        td: &TrustDomain,
        token: &Secret,
    ) -> Result<(Identity, Bundle), SessionError> {
        let server_id = td.server_id();
        // No client certificate yet: the join token in the request is the proof.
        let config = crate::tls::client_config(roots, server_id, None)?;
        let channel = crate::tls::channel::connect(addr, Arc::new(config))
            .await
            .map_err(|e| SessionError::Attestation(format!("cannot reach {addr}: {e}")))?;
        // The agent's key is made here and never leaves the node.
        let placeholder = td
            .agent_id("pending")
            .map_err(|e| SessionError::BadAnswer(e.to_string()))?;
        let (key, csr) = crate::authority::generate_key_and_csr(&placeholder)
            .map_err(|e| SessionError::Attestation(e.to_string()))?;
        let token = String::from_utf8(token.expose().to_vec())
            .map_err(|_| SessionError::Attestation("join token is not text".into()))?;
        let resp = NodeClient::new(channel)
            .attest_agent(pb::AttestAgentRequest {
                join_token: token,
                csr,
            })
            .await
            .map_err(|s| SessionError::Attestation(s.message().to_owned()))?
            .into_inner();
        let (identity, bundle) = Self::identity_from(resp, key, td)?;
        tracing::info!(agent = %identity.id, "attested with a join token");
        Ok((identity, bundle))
    }

    fn identity_from(
        resp: pb::AgentSvidResponse,
        key: Secret,
        td: &TrustDomain,
    ) -> Result<(Identity, Bundle), SessionError> {
        let bundle = Bundle::from_spiffe_json(td, &resp.bundle_json)
            .map_err(|e| SessionError::BadAnswer(e.to_string()))?;
        let leaf = resp
            .chain
            .first()
            .ok_or_else(|| SessionError::BadAnswer("empty chain".into()))?;
        // Check the new SVID the way a peer will before relying on it.
        let id = crate::authority::verify_x509_svid(
            leaf,
            resp.chain.get(1..).unwrap_or_default(),
            &bundle.x509_authorities,
            clock::now(),
        )
        .map_err(|e| SessionError::BadAnswer(format!("agent SVID: {e}")))?;
        let (_, expires) = leaf_validity(leaf)
            .ok_or_else(|| SessionError::BadAnswer("agent SVID validity".into()))?;
        // Its life counts from now, not from NotBefore: the server backdates that for
        // peers with slow clocks, and half-life from there would come too early (at
        // once, for an SVID that lives twice the backdating).
        let issued = clock::now();
        let roots = bundle.x509_authorities.clone();
        let identity = Identity {
            id,
            chain: resp.chain,
            key,
            issued,
            expires,
            roots,
        };
        Ok((identity, bundle))
    }

    fn channel(addr: &str, identity: &Identity) -> Result<Channel, SessionError> {
        let server_id = identity.id.trust_domain().server_id();
        let config = crate::tls::client_config(
            &identity.roots,
            server_id,
            Some((&identity.chain, &identity.key)),
        )?;
        crate::tls::channel::connect_lazy(addr, Arc::new(config), REQUEST_TIMEOUT)
            .map_err(|e| SessionError::Attestation(e.to_string()))
    }

    /// Keeps the identity in the data directory (each file replaced
    /// atomically; see [`crate::files`] for why nothing there is reused).
    fn persist(&self) -> Result<(), SessionError> {
        let id = self.current();
        let out = OutDir::create(&self.dir, Access::Private)?;
        out.write(
            "agent_key.pem",
            crate::tls::key_to_pem(&id.key).expose(),
            Access::Private,
        )?;
        out.write(
            "agent_svid.pem",
            crate::tls::certs_to_pem(&id.chain).as_bytes(),
            Access::Public,
        )?;
        out.write(
            "bundle.pem",
            crate::tls::certs_to_pem(&id.roots).as_bytes(),
            Access::Public,
        )?;
        Ok(())
    }

    fn current(&self) -> Arc<Identity> {
        read(&self.identity).clone()
    }

    /// The agent's SPIFFE ID.
    pub fn agent_id(&self) -> SpiffeId {
        self.current().id.clone()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// When the agent SVID should be renewed: half its life, or at once when the CA
    /// that signed it is tainted.
    pub fn renew_at(&self) -> SystemTime {
        let id = self.current();
        if self.signed_by_tainted(&id) {
            return id.issued;
        }
        id.issued + id.expires.duration_since(id.issued).unwrap_or_default() / 2
    }

    fn signed_by_tainted(&self, id: &Identity) -> bool {
        let issuer = id
            .chain
            .first()
            .and_then(|leaf| crate::authority::signing_ca_id(leaf));
        issuer.is_some_and(|i| read(&self.tainted_cas).contains(&i))
    }

    /// Applies the server's list of tainted CA keys: when one of them signed the agent
    /// SVID, the renewal task is woken to renew it now.
    pub fn set_tainted_cas(&self, ids: Vec<String>) {
        *write(&self.tainted_cas) = ids;
        // The server is trusted through the bundle without the tainted CAs.
        if let Some(bundle) = self.bundle() {
            self.set_roots(bundle.x509_authorities.clone());
        }
        if self.signed_by_tainted(&self.current()) {
            tracing::info!("the agent SVID was signed by a tainted CA; renewing it now");
            self.renew_now.notify_one();
        }
    }

    /// Completes when the agent SVID became due before its scheduled time.
    pub async fn renewal_requested(&self) {
        self.renew_now.notified().await;
    }

    /// A client for the Node service over the current channel.
    pub fn node(&self) -> NodeClient<Channel> {
        let ch = read(&self.channel).clone();
        NodeClient::new(ch)
    }

    /// Renews the agent SVID with a fresh key and switches the channel to it.
    pub async fn renew(&self) -> Result<(), AgentError> {
        let id = self.agent_id();
        let (key, csr) = crate::authority::generate_key_and_csr(&id)
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        let resp = self
            .node()
            .renew_agent(pb::RenewAgentRequest { csr })
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        let (mut identity, bundle) = Self::identity_from(resp, key, &self.trust_domain)
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        identity.roots = self.server_roots(std::mem::take(&mut identity.roots));
        let channel = Self::channel(&self.addr, &identity)
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        *write(&self.identity) = Arc::new(identity);
        *write(&self.channel) = channel;
        self.persist()
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        self.set_bundle(&bundle);
        tracing::info!(agent = %id, "agent SVID renewed");
        Ok(())
    }

    /// The last bundle received from the server, if any.
    pub fn bundle(&self) -> Option<Arc<Bundle>> {
        read(&self.bundle).clone()
    }

    /// Applies a new bundle: trusted for the next connections and kept on
    /// disk, so a restart while the server is away still has it.
    pub fn set_bundle(&self, bundle: &Bundle) {
        *write(&self.bundle) = Some(Arc::new(bundle.clone()));
        let written = OutDir::create(&self.dir, Access::Private).and_then(|out| {
            out.write(
                "bundle.json",
                bundle.to_spiffe_json().as_bytes(),
                Access::Public,
            )
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not store the bundle");
        }
        self.set_roots(bundle.x509_authorities.clone());
    }

    /// `roots` less any CA marked compromised: whoever stole its key could mint
    /// a `/sigil/server` SVID and stand in for the server, so it vouches for no
    /// server. The server's own SVID moves to a new CA before a taint is
    /// pushed, so the real server still verifies.
    fn server_roots(&self, roots: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let tainted = read(&self.tainted_cas);
        roots
            .into_iter()
            .filter(|r| !crate::authority::ca_key_id(r).is_some_and(|id| tainted.contains(&id)))
            .collect()
    }

    /// Trusts `roots` ([`Self::server_roots`]) for the connections to the server.
    fn set_roots(&self, roots: Vec<Vec<u8>>) {
        let roots = self.server_roots(roots);
        let current = self.current();
        if current.roots == roots {
            return;
        }
        let next = Identity {
            id: current.id.clone(),
            chain: current.chain.clone(),
            key: current.key.clone(),
            issued: current.issued,
            expires: current.expires,
            roots,
        };
        match Self::channel(&self.addr, &next) {
            Ok(channel) => {
                *write(&self.identity) = Arc::new(next);
                *write(&self.channel) = channel;
                if let Err(e) = self.persist() {
                    tracing::warn!(error = %e, "could not store the new bundle");
                }
            }
            Err(e) => tracing::warn!(error = %e, "new bundle not usable for TLS"),
        }
    }

    /// Converts a pushed entry to the domain type.
    pub fn entry_from_wire(&self, e: &pb::Entry) -> Result<Entry, AgentError> {
        let id = EntryId::parse(&e.id).map_err(|err| AgentError::Invalid(err.to_string()))?;
        crate::api::convert::entry_draft(e)
            .validate(
                &self.trust_domain,
                id,
                e.revision,
                u64::try_from(e.created_at).unwrap_or(0),
            )
            .map_err(|err| AgentError::Invalid(err.to_string()))
    }
}

/// Signs workload credentials through the server's Node service.
#[derive(Debug)]
pub struct NodeIssuer(pub Arc<Session>);

#[tonic::async_trait]
impl Issuer for NodeIssuer {
    async fn sign_x509(
        &self,
        entry: &Entry,
        csr_der: Vec<u8>,
    ) -> Result<(Vec<Vec<u8>>, SystemTime), AgentError> {
        let resp = self
            .0
            .node()
            .sign_x509_svid(pb::SignX509SvidRequest {
                entry_id: entry.id.as_str().to_owned(),
                csr: csr_der,
                spiffe_id: entry.spiffe_id.to_string(),
                ttl_seconds: 0,
                dns_names: Vec::new(),
            })
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        Ok((resp.chain, from_wire_time(resp.expires_at)))
    }

    async fn mint_jwt(
        &self,
        entry: &Entry,
        audiences: Vec<String>,
    ) -> Result<(Secret, SystemTime), AgentError> {
        let resp = self
            .0
            .node()
            .mint_jwt_svid(pb::MintJwtSvidRequest {
                entry_id: entry.id.as_str().to_owned(),
                spiffe_id: entry.spiffe_id.to_string(),
                audience: audiences,
                ttl_seconds: 0,
            })
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        Ok((Secret::from(resp.token), from_wire_time(resp.expires_at)))
    }
}
