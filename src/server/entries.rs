//! Persistence of registration entries in the sealed store, with an
//! in-memory index for lookups on the request path.
//!
//! Uniqueness (same SPIFFE ID, parent and selectors) is enforced with a
//! compare-and-swap on an index record, which a networked store can do
//! atomically; the in-memory map is a cache rebuilt from the store at unseal.
//!
//! Reads answer from the cache. Writes run whole on the blocking pool
//! (`server::blocking`), serialized so the cache follows the store
//! (`writes`).

use super::blocking;
use crate::clock;
use crate::id::{SpiffeId, TrustDomain};
use crate::registry::{Entry, EntryDraft, EntryId};
use crate::store::{SealedStore, Table};
use crate::sync::{read, write};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;
use writes::{Shared, decode};

mod error;
mod writes;
pub use error::EntriesError;

/// The entry registry.
#[derive(Debug)]
pub struct Entries {
    shared: Arc<Shared>,
}

impl Entries {
    /// A registry over `store` for `trust_domain`; empty until [`Entries::load`].
    pub fn new(store: Arc<SealedStore>, trust_domain: TrustDomain) -> Self {
        Self {
            shared: Arc::new(Shared::new(store, trust_domain)),
        }
    }

    /// A receiver that sees every change to the entry set.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// The entries agent `agent` may obtain: those whose parent is the agent,
    /// and, transitively, those whose parent is one of those entries' IDs.
    pub fn authorized_for(&self, agent: &SpiffeId) -> Vec<Entry> {
        let cache = read(&self.shared.cache);
        let mut parents = std::collections::HashSet::from([agent.clone()]);
        let mut taken = std::collections::BTreeMap::new();
        loop {
            let before = taken.len();
            for e in cache.values() {
                if !taken.contains_key(&e.id) && parents.contains(&e.parent_id) {
                    parents.insert(e.spiffe_id.clone());
                    taken.insert(e.id.clone(), e.clone());
                }
            }
            if taken.len() == before {
                break;
            }
        }
        taken.into_values().collect()
    }

    /// Reads every entry from the store into the cache (at unseal).
    pub fn load(&self) -> Result<usize, EntriesError> {
        let mut map = BTreeMap::new();
        for (_, value) in self.shared.store.scan_prefix(Table::ENTRIES, b"")? {
            let e = decode(value.expose())?;
            map.insert(e.id.clone(), e);
        }
        let n = map.len();
        *write(&self.shared.cache) = map;
        Ok(n)
    }

    /// Forgets every cached entry (at seal).
    pub fn clear(&self) {
        write(&self.shared.cache).clear();
        self.shared.changed();
    }

    /// Validates and stores a new entry; a duplicate is `EntryExists`.
    pub async fn create(&self, draft: &EntryDraft, now: SystemTime) -> Result<Entry, EntriesError> {
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| EntriesError::NoRandomness)?;
        let entry = draft.validate(
            &self.shared.trust_domain,
            EntryId::from_random(id),
            1,
            clock::unix_seconds(now),
        )?;
        let shared = self.shared.clone();
        blocking::run(move || shared.create(entry)).await
    }

    /// Every entry, ordered by ID.
    pub fn list(&self) -> Vec<Entry> {
        read(&self.shared.cache).values().cloned().collect()
    }

    /// One entry, if `agent` is authorized for it.
    pub fn get_for_agent(&self, agent: &SpiffeId, id: &EntryId) -> Option<Entry> {
        self.authorized_for(agent).into_iter().find(|e| &e.id == id)
    }

    /// One entry.
    pub fn get(&self, id: &EntryId) -> Result<Entry, EntriesError> {
        self.shared.cached(id)
    }

    /// True when some entry for `id` carries the admin flag.
    pub fn is_admin(&self, id: &SpiffeId) -> bool {
        read(&self.shared.cache)
            .values()
            .any(|e| e.admin && &e.spiffe_id == id)
    }

    /// Replaces an entry's fields; `expected_revision` 0 skips the check.
    pub async fn update(
        &self,
        id: &EntryId,
        draft: &EntryDraft,
        expected_revision: u64,
    ) -> Result<Entry, EntriesError> {
        let (shared, id, draft) = (self.shared.clone(), id.clone(), draft.clone());
        blocking::run(move || shared.update(&id, &draft, expected_revision)).await
    }

    /// Deletes an entry.
    pub async fn delete(&self, id: &EntryId) -> Result<(), EntriesError> {
        let (shared, id) = (self.shared.clone(), id.clone());
        blocking::run(move || shared.delete(&id)).await
    }
}

#[cfg(test)]
mod tests;
