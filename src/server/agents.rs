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

use crate::clock;
use crate::id::{SpiffeId, TrustDomain};
use crate::secret::Secret;
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{lock, read, write};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

mod error;
pub use error::AgentsError;

/// How long expired join tokens are kept before they are deleted.
const TOKEN_RETENTION_SECS: u64 = 86_400;

/// How often `last_seen` is written back at most, per agent.
const LAST_SEEN_GRANULARITY: u64 = 60;

/// How many times a change to an agent record is retried after losing a
/// compare-and-swap to another writer before the request gives up.
const MAX_RECORD_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct TokenRecord {
    agent_id: String,
    expires_at: u64,
    used_at: Option<u64>,
}

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

/// Join tokens and agents.
#[derive(Debug)]
pub struct Agents {
    store: Arc<SealedStore>,
    trust_domain: TrustDomain,
    cache: RwLock<HashMap<String, AgentRecord>>,
    /// Bumped when an agent is banned, so its open streams end at once.
    bans: watch::Sender<u64>,
    /// Serializes refreshing the cache from the store (read, then insert),
    /// so an older read can never replace a newer one in memory. Record
    /// changes themselves are compare-and-swaps and do not take it.
    refresh: std::sync::Mutex<()>,
}

fn token_key(token: &str) -> Vec<u8> {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
    .into_bytes()
}

fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, AgentsError> {
    serde_json::from_slice(bytes).map_err(|e| AgentsError::RecordCorrupt {
        what,
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AgentsError> {
    serde_json::to_vec(v).map_err(|e| AgentsError::RecordUnencodable(e.to_string()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AgentsError> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| AgentsError::NoRandomness)?;
    Ok(b)
}

impl Agents {
    /// Agents over `store`; empty until [`Agents::load`].
    pub fn new(store: Arc<SealedStore>, trust_domain: TrustDomain) -> Self {
        Self {
            store,
            trust_domain,
            cache: RwLock::new(HashMap::new()),
            bans: watch::channel(0).0,
            refresh: std::sync::Mutex::new(()),
        }
    }

    /// Reads every agent record into memory (at unseal).
    pub fn load(&self) -> Result<usize, AgentsError> {
        let _guard = self.lock_refresh();
        let mut map = HashMap::new();
        for (_, v) in self.store.scan_prefix(Table::AGENTS, b"")? {
            let r: AgentRecord = decode(v.expose(), "agent")?;
            map.insert(r.spiffe_id.clone(), r);
        }
        let n = map.len();
        *write(&self.cache) = map;
        Ok(n)
    }

    /// Forgets cached records (at seal).
    pub fn clear(&self) {
        write(&self.cache).clear();
    }

    /// Notified when any agent is banned.
    pub fn bans(&self) -> watch::Receiver<u64> {
        self.bans.subscribe()
    }

    /// True when `id` is an attested agent that is not banned.
    pub fn is_active(&self, id: &SpiffeId) -> bool {
        read(&self.cache)
            .get(id.as_str())
            .is_some_and(|r| !r.banned)
    }

    /// Every agent, ordered by SPIFFE ID.
    pub fn list(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = read(&self.cache).values().cloned().collect();
        v.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
        v
    }

    /// Creates a one-time token for an agent called `name` (random if None).
    /// A name an active agent holds is refused unless `replace` is set: the
    /// token's user would become that agent, on another node.
    pub fn create_join_token(
        &self,
        ttl: Duration,
        name: Option<&str>,
        replace: bool,
        now: SystemTime,
    ) -> Result<JoinToken, AgentsError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None if replace => return Err(AgentsError::ReplaceNeedsName),
            None => hex::encode(random_bytes::<8>()?),
        };
        let agent_id = self
            .trust_domain
            .agent_id(&name)
            .map_err(AgentsError::NameInvalid)?;
        if !replace && self.is_active(&agent_id) {
            return Err(AgentsError::NameTaken(agent_id));
        }
        use base64::Engine;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let expires_at = now + ttl;
        let record = TokenRecord {
            agent_id: agent_id.to_string(),
            expires_at: clock::unix_seconds(expires_at),
            used_at: None,
        };
        self.prune_tokens(now)?;
        self.store
            .create(Table::JOIN_TOKENS, &token_key(&token), &encode(&record)?)?;
        Ok(JoinToken {
            token: Secret::from(token),
            agent_id,
            expires_at,
        })
    }

    /// Deletes tokens that expired more than a day ago (used or not): they
    /// can never be accepted again, and keeping them would grow the table
    /// without bound. The day keeps "expired" (rather than "unknown") as the
    /// answer to a late attempt.
    fn prune_tokens(&self, now: SystemTime) -> Result<(), AgentsError> {
        let now_s = clock::unix_seconds(now).saturating_sub(TOKEN_RETENTION_SECS);
        for (key, value) in self.store.scan_prefix(Table::JOIN_TOKENS, b"")? {
            let record: TokenRecord = decode(value.expose(), "join token")?;
            if record.expires_at <= now_s {
                self.store.delete(Table::JOIN_TOKENS, &key)?;
            }
        }
        Ok(())
    }

    /// Consumes `token`, returning the agent ID it names. Unknown, used and
    /// expired tokens are refused with a reason that says which.
    pub fn redeem(&self, token: &str, now: SystemTime) -> Result<SpiffeId, AgentsError> {
        let key = token_key(token);
        let stored = self
            .store
            .get(Table::JOIN_TOKENS, &key)?
            .ok_or(AgentsError::TokenUnknown)?;
        let record: TokenRecord = decode(stored.expose(), "join token")?;
        if record.used_at.is_some() {
            return Err(AgentsError::TokenUsed);
        }
        let now_s = clock::unix_seconds(now);
        if now_s >= record.expires_at {
            return Err(AgentsError::TokenExpired);
        }
        let used = TokenRecord {
            used_at: Some(now_s),
            ..record.clone()
        };
        match self.store.compare_and_put(
            Table::JOIN_TOKENS,
            &key,
            Some(&encode(&record)?),
            Some(&encode(&used)?),
        ) {
            Ok(()) => {}
            Err(SealError::Conflict) => return Err(AgentsError::TokenUsed),
            Err(e) => return Err(e.into()),
        }
        let id = SpiffeId::parse(&record.agent_id).map_err(|e| AgentsError::RecordCorrupt {
            what: "join token",
            detail: e.to_string(),
        })?;
        if read(&self.cache).get(id.as_str()).is_some_and(|r| r.banned) {
            return Err(AgentsError::AgentBanned(id));
        }
        Ok(id)
    }

    /// Records that `id` holds an SVID until `expires` (attestation or renewal).
    /// A ban stored before or during the call wins: the call then fails.
    pub fn record_svid(
        &self,
        id: &SpiffeId,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<(), AgentsError> {
        let now_s = clock::unix_seconds(now);
        let expires_s = clock::unix_seconds(expires);
        self.change(id, |current| match current {
            Some(r) if r.banned => Err(AgentsError::AgentBanned(id.clone())),
            Some(r) => Ok(Some(AgentRecord {
                last_seen: now_s,
                svid_expires_at: expires_s,
                ..r.clone()
            })),
            None => Ok(Some(AgentRecord {
                spiffe_id: id.to_string(),
                attested_at: now_s,
                last_seen: now_s,
                svid_expires_at: expires_s,
                banned: false,
            })),
        })
    }

    /// Notes that `id` was heard from; written back at most once a minute.
    pub fn touch(&self, id: &SpiffeId, now: SystemTime) {
        let now_s = clock::unix_seconds(now);
        let stale = |r: &AgentRecord| {
            !r.banned && r.last_seen.saturating_add(LAST_SEEN_GRANULARITY) <= now_s
        };
        // The cache answers the common case (recently seen) without a store read.
        let cached_stale = read(&self.cache).get(id.as_str()).is_some_and(stale);
        if !cached_stale {
            return;
        }
        let written = self.change(id, |current| {
            Ok(current.filter(|r| stale(r)).map(|r| AgentRecord {
                last_seen: now_s,
                ..r.clone()
            }))
        });
        if let Err(e) = written {
            tracing::warn!(agent = %id, error = %e, "could not record last-seen time");
        }
    }

    /// Bans `id`: it is refused from now on and its streams end.
    pub fn ban(&self, id: &SpiffeId) -> Result<(), AgentsError> {
        self.change(id, |current| match current {
            Some(r) => Ok(Some(AgentRecord {
                banned: true,
                ..r.clone()
            })),
            None => Err(AgentsError::AgentNotFound(id.clone())),
        })?;
        self.bans.send_modify(|n| *n += 1);
        tracing::warn!(agent = %id, "agent banned");
        Ok(())
    }

    /// Applies `next` to the stored record of `id` with a compare-and-swap,
    /// reading again and retrying when another writer changed it first, then
    /// refreshes the cache from the store. `next` sees the record as stored
    /// now (None if there is none) and returns what to write (None: nothing).
    fn change(
        &self,
        id: &SpiffeId,
        next: impl Fn(Option<&AgentRecord>) -> Result<Option<AgentRecord>, AgentsError>,
    ) -> Result<(), AgentsError> {
        let key = id.as_str().as_bytes();
        for _ in 0..MAX_RECORD_ATTEMPTS {
            let stored = self.store.get(Table::AGENTS, key)?;
            let current: Option<AgentRecord> = stored
                .as_ref()
                .map(|v| decode(v.expose(), "agent"))
                .transpose()?;
            let Some(record) = next(current.as_ref())? else {
                return Ok(());
            };
            match self.store.compare_and_put(
                Table::AGENTS,
                key,
                stored.as_ref().map(|v| v.expose()),
                Some(&encode(&record)?),
            ) {
                Ok(()) => return self.refresh(id),
                Err(SealError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AgentsError::Contended {
            id: id.clone(),
            attempts: MAX_RECORD_ATTEMPTS,
        })
    }

    /// Copies the stored record of `id` into the cache.
    fn refresh(&self, id: &SpiffeId) -> Result<(), AgentsError> {
        let _guard = self.lock_refresh();
        let stored = self.store.get(Table::AGENTS, id.as_str().as_bytes())?;
        let record: Option<AgentRecord> = stored
            .as_ref()
            .map(|v| decode(v.expose(), "agent"))
            .transpose()?;
        let mut cache = write(&self.cache);
        match record {
            Some(r) => cache.insert(r.spiffe_id.clone(), r),
            None => cache.remove(id.as_str()),
        };
        Ok(())
    }

    fn lock_refresh(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.refresh)
    }
}

#[cfg(test)]
mod tests;
