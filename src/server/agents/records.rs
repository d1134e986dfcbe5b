//! The synchronous side of [`super::Agents`]: join-token and agent records
//! in the sealed store, each change a compare-and-swap, and the in-memory
//! copy refreshed from the store. Everything here may wait on the disk, so
//! it runs on the blocking pool (see `server::blocking`), never on an async
//! worker.

use super::{AgentRecord, AgentsError, JoinToken};
use crate::clock;
use crate::id::{SpiffeId, TrustDomain};
use crate::secret::Secret;
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{lock, read, write};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

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

/// The state [`super::Agents`] shares with the tasks that do its store work.
#[derive(Debug)]
pub(super) struct Shared {
    store: Arc<SealedStore>,
    trust_domain: TrustDomain,
    pub(super) cache: RwLock<HashMap<String, AgentRecord>>,
    /// Bumped when an agent is banned, so its open streams end at once.
    pub(super) bans: watch::Sender<u64>,
    /// Serializes refreshing the cache from the store (read, then insert),
    /// so an older read can never replace a newer one in memory. Record
    /// changes themselves are compare-and-swaps and do not take it.
    refresh: Mutex<()>,
    /// Agents whose last-seen write is under way: one at a time per agent,
    /// however many requests it makes meanwhile.
    pub(super) touching: Mutex<HashSet<String>>,
}

/// Active, and last written a minute or more before `now_s`.
fn last_seen_stale(r: &AgentRecord, now_s: u64) -> bool {
    !r.banned && r.last_seen.saturating_add(LAST_SEEN_GRANULARITY) <= now_s
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

impl Shared {
    pub(super) fn new(store: Arc<SealedStore>, trust_domain: TrustDomain) -> Self {
        Self {
            store,
            trust_domain,
            cache: RwLock::new(HashMap::new()),
            bans: watch::channel(0).0,
            refresh: Mutex::new(()),
            touching: Mutex::new(HashSet::new()),
        }
    }

    /// Reads every agent record into memory (at unseal).
    pub(super) fn load(&self) -> Result<usize, AgentsError> {
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

    /// True when `id` is an attested agent that is not banned.
    pub(super) fn is_active(&self, id: &SpiffeId) -> bool {
        read(&self.cache)
            .get(id.as_str())
            .is_some_and(|r| !r.banned)
    }

    /// Creates a one-time token for an agent called `name` (random if None).
    /// A name an active agent holds is refused unless `replace` is set: the
    /// token's user would become that agent, on another node.
    pub(super) fn create_join_token(
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
    pub(super) fn redeem(&self, token: &str, now: SystemTime) -> Result<SpiffeId, AgentsError> {
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
    pub(super) fn record_svid(
        &self,
        id: &SpiffeId,
        svid_sha256: String,
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
                svid_sha256: svid_sha256.clone(),
                ..r.clone()
            })),
            None => Ok(Some(AgentRecord {
                spiffe_id: id.to_string(),
                attested_at: now_s,
                last_seen: now_s,
                svid_expires_at: expires_s,
                svid_sha256: svid_sha256.clone(),
                banned: false,
            })),
        })
    }

    /// Whether `id`'s last-seen time is due to be written at `now`: it is
    /// active and was last written a minute or more ago. Answered from memory.
    pub(super) fn touch_due(&self, id: &SpiffeId, now: SystemTime) -> bool {
        let now_s = clock::unix_seconds(now);
        read(&self.cache)
            .get(id.as_str())
            .is_some_and(|r| last_seen_stale(r, now_s))
    }

    /// Writes `now` as `id`'s last-seen time if it is still due; failures
    /// are logged, never returned (nothing waits for this write).
    pub(super) fn touch(&self, id: &SpiffeId, now: SystemTime) {
        let now_s = clock::unix_seconds(now);
        let stale = |r: &AgentRecord| last_seen_stale(r, now_s);
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
    pub(super) fn ban(&self, id: &SpiffeId) -> Result<(), AgentsError> {
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
