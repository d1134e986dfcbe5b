//! The agent's JWT-SVID cache (SPEC §2 "agent", §3.1 FetchJWTSVID): tokens
//! per (SPIFFE ID, audience set). A fresh token is served from cache; past
//! half-life the cached token is still served while one background task
//! mints its successor, so a slow server never stalls a fetch that has a
//! usable token. The cache is bounded.

use super::Clock;
use crate::agent::{AgentError, Issuer, JwtIdentity, rotation};
use crate::id::SpiffeId;
use crate::registry::Entry;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Most tokens held at once; beyond it expired tokens go first, then the
/// one closest to expiry.
pub(super) const MAX_JWT_ENTRIES: usize = 10_000;
/// After a failed background refresh, wait this long before the next try
/// (the cached token keeps being served meanwhile).
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// A cache key: one identity and one audience set (sorted, deduplicated).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    spiffe_id: SpiffeId,
    audiences: Vec<String>,
}

struct Slot {
    token: Arc<JwtIdentity>,
    /// The `kid` of the key that signed it, to forget it if that key is tainted.
    kid: Option<String>,
    refresh_at: SystemTime,
    refreshing: bool,
}

/// What a lookup found.
enum Lookup {
    /// Serve this token.
    Serve(Arc<JwtIdentity>),
    /// Serve this token; the caller was chosen to start the refresh.
    ServeAndRefresh(Arc<JwtIdentity>),
    /// Nothing usable: mint now.
    Miss,
}

/// The bounded JWT-SVID cache.
pub(super) struct JwtCache {
    issuer: Arc<dyn Issuer>,
    clock: Clock,
    capacity: usize,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl JwtCache {
    pub(super) fn new(issuer: Arc<dyn Issuer>, clock: Clock, capacity: usize) -> Self {
        Self {
            issuer,
            clock,
            capacity: capacity.max(1),
            slots: Mutex::default(),
        }
    }

    /// A token for `entry` whose `aud` is exactly `audiences` (deduplicated,
    /// in the caller's order).
    pub(super) async fn get(
        self: &Arc<Self>,
        entry: Arc<Entry>,
        audiences: &[String],
    ) -> Result<Arc<JwtIdentity>, AgentError> {
        let audiences = dedup_in_order(audiences)?;
        // Keyed on the list in the caller's order, not the sorted set: the
        // token's `aud` must be exactly what this caller asked for.
        let key = Key {
            spiffe_id: entry.spiffe_id.clone(),
            audiences: audiences.clone(),
        };
        match self.lookup(&key, (self.clock)()) {
            Lookup::Serve(token) => Ok(token),
            Lookup::ServeAndRefresh(token) => {
                let me = Arc::clone(self);
                tokio::spawn(async move { me.refresh(key, &entry, audiences).await });
                Ok(token)
            }
            Lookup::Miss => {
                let token = self.mint(&entry, audiences).await?;
                self.insert(key, Arc::clone(&token));
                Ok(token)
            }
        }
    }

    fn lookup(&self, key: &Key, now: SystemTime) -> Lookup {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get_mut(key) else {
            return Lookup::Miss;
        };
        if now >= slot.token.expires_at {
            return Lookup::Miss;
        }
        let token = Arc::clone(&slot.token);
        // Only one refresh per key is in flight: the flag is set under the lock.
        if now >= slot.refresh_at && !slot.refreshing {
            slot.refreshing = true;
            return Lookup::ServeAndRefresh(token);
        }
        Lookup::Serve(token)
    }

    async fn refresh(&self, key: Key, entry: &Entry, audiences: Vec<String>) {
        match self.mint(entry, audiences).await {
            Ok(token) => {
                // Replace only a slot that still exists: the identity may have
                // been unassigned while we were minting.
                if let Some(slot) = lock(&self.slots).get_mut(&key) {
                    *slot = new_slot(token);
                }
            }
            Err(e) => {
                tracing::warn!(spiffe_id = %key.spiffe_id, error = %e,
                    "JWT-SVID refresh failed; the cached one is served until it expires");
                if let Some(slot) = lock(&self.slots).get_mut(&key) {
                    slot.refreshing = false;
                    slot.refresh_at = (self.clock)() + REFRESH_RETRY;
                }
            }
        }
    }

    async fn mint(
        &self,
        entry: &Entry,
        audiences: Vec<String>,
    ) -> Result<Arc<JwtIdentity>, AgentError> {
        let issued_at = (self.clock)();
        let (token, expires_at) = self.issuer.mint_jwt(entry, audiences).await?;
        if expires_at <= (self.clock)() {
            return Err(AgentError::Internal(
                "the server returned an expired JWT-SVID".into(),
            ));
        }
        Ok(Arc::new(JwtIdentity {
            spiffe_id: entry.spiffe_id.clone(),
            hint: entry.hint.clone(),
            token,
            issued_at,
            expires_at,
        }))
    }

    fn insert(&self, key: Key, token: Arc<JwtIdentity>) {
        let now = (self.clock)();
        let mut slots = lock(&self.slots);
        if slots.len() >= self.capacity && !slots.contains_key(&key) {
            slots.retain(|_, s| now < s.token.expires_at);
            if slots.len() >= self.capacity {
                let soonest = slots
                    .iter()
                    .min_by_key(|(_, s)| s.token.expires_at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    slots.remove(&k);
                }
            }
        }
        slots.insert(key, new_slot(token));
    }

    /// Forgets expired tokens.
    pub(super) fn prune(&self, now: SystemTime) {
        lock(&self.slots).retain(|_, s| now < s.token.expires_at);
    }

    /// Forgets every token signed by a key in `kids`.
    pub(super) fn forget_signed_by(&self, kids: &std::collections::HashSet<String>) {
        if kids.is_empty() {
            return;
        }
        lock(&self.slots).retain(|_, s| !s.kid.as_ref().is_some_and(|k| kids.contains(k)));
    }

    /// Keeps only tokens of identities for which `keep` holds.
    pub(super) fn retain_identities(&self, keep: impl Fn(&SpiffeId) -> bool) {
        lock(&self.slots).retain(|k, _| keep(&k.spiffe_id));
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

fn new_slot(token: Arc<JwtIdentity>) -> Slot {
    Slot {
        refresh_at: rotation::renew_at(token.issued_at, token.expires_at, 0.0),
        kid: crate::authority::jwt_key_id(token.token.expose()),
        token,
        refreshing: false,
    }
}

/// The audiences without duplicates, in the caller's order; at least one,
/// none empty.
fn dedup_in_order(audiences: &[String]) -> Result<Vec<String>, AgentError> {
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(AgentError::Invalid(
            "at least one non-empty audience is required".into(),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(audiences.len());
    Ok(audiences
        .iter()
        .filter(|a| seen.insert(a.as_str()))
        .cloned()
        .collect())
}
