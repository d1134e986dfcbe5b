//! The sigil agent (SPEC §2 "agent"): attests itself to the server, keeps
//! the entries it is authorized for (pushed by the server), issues workload
//! SVIDs lazily through the server, caches and rotates them, and serves the
//! SPIFFE Workload API on a Unix socket.
//!
//! The pieces meet at two traits: [`Issuer`] (how the cache gets credentials
//! signed — the server session implements it) and [`IdentityProvider`] (what
//! the Workload API needs — the cache implements it).

pub mod cache;
pub mod rotation;
pub mod run;
pub mod session;
pub mod workload;

use crate::authority::Bundle;
use crate::id::{Selector, SpiffeId, TrustDomain};
use crate::registry::Entry;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// Why the agent could not provide a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The server could not be reached and nothing usable is cached.
    #[error("server unavailable: {0}")]
    ServerUnavailable(String),
    /// The server refused (the agent is banned, or the entry is gone).
    #[error("refused by the server: {0}")]
    Denied(String),
    /// The request was malformed.
    #[error("{0}")]
    Invalid(String),
    /// Something failed inside the agent; details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

/// An X.509-SVID with its private key, as handed to a workload.
#[derive(Clone)]
pub struct X509Identity {
    /// The entry it was issued for.
    pub entry_id: String,
    /// The SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The entry's hint.
    pub hint: String,
    /// DER certificates, leaf first.
    pub chain_der: Vec<Vec<u8>>,
    /// PKCS#8 DER private key, made by the agent; never leaves the node.
    pub key_pkcs8: Secret,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for X509Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Identity")
            .field("entry_id", &self.entry_id)
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A JWT-SVID, as handed to a workload.
#[derive(Clone)]
pub struct JwtIdentity {
    /// The SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The entry's hint.
    pub hint: String,
    /// The compact JWS; a bearer credential.
    pub token: Secret,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for JwtIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How the agent gets credentials signed: the server session implements it
/// over the Node service; tests may implement it over an in-process
/// [`crate::authority::Authority`].
#[tonic::async_trait]
pub trait Issuer: Send + Sync + 'static {
    /// Signs `csr_der` (made by the agent) for `entry`; returns the chain
    /// (leaf first) and its expiry.
    async fn sign_x509(
        &self,
        entry: &Entry,
        csr_der: Vec<u8>,
    ) -> Result<(Vec<Vec<u8>>, SystemTime), AgentError>;
    /// Mints a JWT-SVID for `entry` and exactly `audiences`; returns the
    /// token and its expiry.
    async fn mint_jwt(
        &self,
        entry: &Entry,
        audiences: Vec<String>,
    ) -> Result<(Secret, SystemTime), AgentError>;
}

/// What the Workload API needs from the agent.
#[tonic::async_trait]
pub trait IdentityProvider: Send + Sync + 'static {
    /// The entries whose selectors are all among `selectors`, ordered so the
    /// first is the default identity (stable across calls).
    fn matching(&self, selectors: &[Selector]) -> Vec<Arc<Entry>>;
    /// The current X.509-SVID for `entry`, issued on first use and cached.
    async fn x509_svid(&self, entry: &Entry) -> Result<Arc<X509Identity>, AgentError>;
    /// A JWT-SVID for `entry` and `audiences` (cached per identity and
    /// audience set, refreshed past half-life).
    async fn jwt_svid(
        &self,
        entry: &Entry,
        audiences: &[String],
    ) -> Result<Arc<JwtIdentity>, AgentError>;
    /// The trust domain's bundle, once known.
    fn bundle(&self) -> Option<Arc<Bundle>>;
    /// The bundle of foreign trust domain `td`, when the server pushed one for
    /// the agent's entries (SPIFFE Federation). Providers without federation
    /// know none.
    fn federated_bundle(&self, td: &TrustDomain) -> Option<Arc<Bundle>> {
        let _ = td;
        None
    }
    /// A counter bumped on every change that may alter what a workload
    /// sees: entries, rotated SVIDs, bundles.
    fn changes(&self) -> watch::Receiver<u64>;
    /// Whether the server marked the trust domain's JWT signing key `kid`
    /// compromised. Its tokens are refused from then on, although the key
    /// stays in the bundle for a grace period so that X.509 peers and
    /// in-flight re-issues are not cut off.
    fn jwt_key_tainted(&self, kid: &str) -> bool {
        let _ = kid;
        false
    }
    /// Whether the server's first push (entries and bundle) has arrived.
    /// Until then "no entry matches" means "not known yet", not "none".
    /// Providers that hold everything from the start are always synced.
    fn synced(&self) -> bool {
        true
    }
    /// Completes once [`Self::synced`] is true.
    async fn wait_synced(&self) {}
}
