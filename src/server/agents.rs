//! Join tokens and attested agents (SPEC §2 "agent ... attests itself to the
//! server (join token first)").
//!
//! A join token is stored only as its SHA-256 hash, so the store never holds
//! a usable token. It names the agent's SPIFFE ID in advance
//! (`spiffe://<td>/sigil/agent/<name>`), so operators can register entries
//! for a node before it joins. Using a token is a compare-and-swap on its
//! record: of two concurrent attempts exactly one wins. A name an active
//! agent holds gets a new token only when the caller asks to replace it.
//!
//! Agent records change the same way: every change (attestation, renewal,
//! last-seen, ban) is a compare-and-swap against the stored record, retried
//! on a fresh read, so a renewal that read the record before a ban can never
//! write `banned: false` back over it. The in-memory copy is then refreshed
//! from the store, never from the writer's own copy.
//!
//! The store work runs on the blocking pool (`server::blocking`); the
//! last-seen write on every issuance is not even awaited.

use super::blocking;
use crate::id::{SpiffeId, TrustDomain};
use crate::secret::Secret;
use crate::store::SealedStore;
use crate::sync::{lock, read, write};
use records::Shared;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

mod error;
mod records;
pub use error::AgentsError;

/// What the server knows about an attested agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentRecord {
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    /// When it first attested (Unix seconds).
    pub attested_at: u64,
    /// When it was last heard from (Unix seconds).
    pub last_seen: u64,
    /// When its current SVID expires (Unix seconds).
    pub svid_expires_at: u64,
    /// SHA-256 (hex) of the leaf of the SVID last issued to it; empty in
    /// records written before it was kept. After a compromise of the CA that
    /// signed it, this SVID is the only one from that CA still honoured for
    /// the agent (see the gate): a thief of the CA key can mint others for
    /// the same agent ID, but not this exact certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub svid_sha256: String,
    /// Banned agents are refused everything.
    pub banned: bool,
}

/// A newly created join token. The token is a one-time secret.
#[derive(Debug)]
pub struct JoinToken {
    /// The token to hand to the agent.
    pub token: Secret,
    /// The SPIFFE ID the agent will get.
    pub agent_id: SpiffeId,
    /// When the token stops being accepted.
    pub expires_at: SystemTime,
}

/// Join tokens and agents: the async face over [`records::Shared`], which
/// does the store work on the blocking pool.
#[derive(Debug)]
pub struct Agents {
    shared: Arc<Shared>,
}

impl Agents {
    /// Agents over `store`; empty until [`Agents::load`].
    pub fn new(store: Arc<SealedStore>, trust_domain: TrustDomain) -> Self {
        Self {
            shared: Arc::new(Shared::new(store, trust_domain)),
        }
    }

    /// Reads every agent record into memory (at unseal; the caller is
    /// already off the async workers).
    pub fn load(&self) -> Result<usize, AgentsError> {
        self.shared.load()
    }

    /// Forgets cached records (at seal).
    pub fn clear(&self) {
        write(&self.shared.cache).clear();
    }

    /// Notified when any agent is banned.
    pub fn bans(&self) -> watch::Receiver<u64> {
        self.shared.bans.subscribe()
    }

    /// True when `id` is an attested agent that is not banned.
    pub fn is_active(&self, id: &SpiffeId) -> bool {
        self.shared.is_active(id)
    }

    /// True when `leaf_der` is the SVID last issued to the active agent `id`.
    pub fn holds_issued_svid(&self, id: &SpiffeId, leaf_der: &[u8]) -> bool {
        let sha = leaf_sha256(leaf_der);
        read(&self.shared.cache)
            .get(id.as_str())
            .is_some_and(|r| !r.banned && !r.svid_sha256.is_empty() && r.svid_sha256 == sha)
    }

    /// Every agent, ordered by SPIFFE ID.
    pub fn list(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = read(&self.shared.cache).values().cloned().collect();
        v.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
        v
    }

    /// Creates a one-time token for an agent called `name` (random if None).
    /// A name an active agent holds is refused unless `replace` is set: the
    /// token's user would become that agent, on another node.
    pub async fn create_join_token(
        &self,
        ttl: Duration,
        name: Option<&str>,
        replace: bool,
        now: SystemTime,
    ) -> Result<JoinToken, AgentsError> {
        let shared = self.shared.clone();
        let name = name.map(str::to_owned);
        blocking::run(move || shared.create_join_token(ttl, name.as_deref(), replace, now)).await
    }

    /// Consumes `token`, returning the agent ID it names. Unknown, used and
    /// expired tokens are refused with a reason that says which.
    pub async fn redeem(&self, token: &str, now: SystemTime) -> Result<SpiffeId, AgentsError> {
        let shared = self.shared.clone();
        let token = Secret::from(token.to_owned());
        blocking::run(move || {
            let text =
                std::str::from_utf8(token.expose()).map_err(|_| AgentsError::TokenUnknown)?;
            shared.redeem(text, now)
        })
        .await
    }

    /// Records that `id` holds the SVID with leaf `leaf_der` until `expires`
    /// (attestation or renewal). A ban stored before or during the call wins:
    /// the call then fails.
    pub async fn record_svid(
        &self,
        id: &SpiffeId,
        leaf_der: &[u8],
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<(), AgentsError> {
        let (shared, id) = (self.shared.clone(), id.clone());
        let sha = leaf_sha256(leaf_der);
        blocking::run(move || shared.record_svid(&id, sha, expires, now)).await
    }

    /// Notes that `id` was heard from; written back at most once a minute.
    /// Runs on every issuance, so it never waits: the write happens in the
    /// background, one at a time per agent, and a failure is logged.
    pub fn touch(&self, id: &SpiffeId, now: SystemTime) {
        if !self.shared.touch_due(id, now) {
            return;
        }
        if !lock(&self.shared.touching).insert(id.to_string()) {
            return;
        }
        let (shared, id) = (self.shared.clone(), id.clone());
        blocking::detach(move || {
            shared.touch(&id, now);
            lock(&shared.touching).remove(id.as_str());
        });
    }

    /// Bans `id`: it is refused from now on and its streams end.
    pub async fn ban(&self, id: &SpiffeId) -> Result<(), AgentsError> {
        let (shared, id) = (self.shared.clone(), id.clone());
        blocking::run(move || shared.ban(&id)).await
    }
}

#[cfg(test)]
mod tests;

/// The hex SHA-256 of a certificate, as [`AgentRecord::svid_sha256`] keeps it.
fn leaf_sha256(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}
