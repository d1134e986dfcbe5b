//! Persistence of registration entries in the sealed store, with an
//! in-memory index for lookups on the request path.
//!
//! Uniqueness (same SPIFFE ID, parent and selectors) is enforced with a
//! compare-and-swap on an index record, which a networked store can do
//! atomically; the in-memory map is a cache rebuilt from the store at unseal.

use crate::clock;
use crate::id::{SpiffeId, TrustDomain};
use crate::registry::{Entry, EntryDraft, EntryId};
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{read, write};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

mod error;
pub use error::EntriesError;

/// The entry registry.
#[derive(Debug)]
pub struct Entries {
    store: Arc<SealedStore>,
    trust_domain: TrustDomain,
    cache: RwLock<BTreeMap<EntryId, Entry>>,
    /// Serializes writers on this server so the cache follows the store.
    write: tokio::sync::Mutex<()>,
    /// Bumped after every change, so agent streams push it at once.
    changes: tokio::sync::watch::Sender<u64>,
}

fn decode(bytes: &[u8]) -> Result<Entry, EntriesError> {
    serde_json::from_slice(bytes).map_err(|e| EntriesError::RecordCorrupt(e.to_string()))
}

fn encode(e: &Entry) -> Result<Vec<u8>, EntriesError> {
    serde_json::to_vec(e).map_err(|e| EntriesError::RecordUnencodable(e.to_string()))
}

impl Entries {
    /// A registry over `store` for `trust_domain`; empty until [`Entries::load`].
    pub fn new(store: Arc<SealedStore>, trust_domain: TrustDomain) -> Self {
        Self {
            store,
            trust_domain,
            cache: RwLock::new(BTreeMap::new()),
            write: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    /// A receiver that sees every change to the entry set.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The entries agent `agent` may obtain: those whose parent is the agent,
    /// and, transitively, those whose parent is one of those entries' IDs.
    pub fn authorized_for(&self, agent: &SpiffeId) -> Vec<Entry> {
        let cache = read(&self.cache);
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
        for (_, value) in self.store.scan_prefix(Table::ENTRIES, b"")? {
            let e = decode(value.expose())?;
            map.insert(e.id.clone(), e);
        }
        let n = map.len();
        *write(&self.cache) = map;
        Ok(n)
    }

    /// Forgets every cached entry (at seal).
    pub fn clear(&self) {
        write(&self.cache).clear();
        self.changed();
    }

    fn cache_put(&self, e: Entry) {
        write(&self.cache).insert(e.id.clone(), e);
        self.changed();
    }

    /// Validates and stores a new entry; a duplicate is `EntryExists`.
    pub async fn create(&self, draft: &EntryDraft, now: SystemTime) -> Result<Entry, EntriesError> {
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| EntriesError::NoRandomness)?;
        let entry = draft.validate(
            &self.trust_domain,
            EntryId::from_random(id),
            1,
            clock::unix_seconds(now),
        )?;
        let _guard = self.write.lock().await;
        let ukey = entry.uniqueness_key();
        match self
            .store
            .create(Table::ENTRY_INDEX, &ukey, entry.id.as_str().as_bytes())
        {
            Ok(()) => {}
            Err(SealError::AlreadyExists) => {
                let holder = self
                    .store
                    .get(Table::ENTRY_INDEX, &ukey)?
                    .and_then(|v| EntryId::parse(&String::from_utf8_lossy(v.expose())).ok());
                if let Some(holder) = holder
                    && self
                        .store
                        .get(Table::ENTRIES, holder.as_str().as_bytes())?
                        .is_some()
                {
                    return Err(EntriesError::EntryExists {
                        holder: Some(holder),
                    });
                }
                // The index outlived its entry (a crash between the two
                // writes): take it over.
                self.store
                    .put(Table::ENTRY_INDEX, &ukey, entry.id.as_str().as_bytes())?;
            }
            Err(e) => return Err(e.into()),
        }
        self.store.create(
            Table::ENTRIES,
            entry.id.as_str().as_bytes(),
            &encode(&entry)?,
        )?;
        self.cache_put(entry.clone());
        Ok(entry)
    }

    /// Every entry, ordered by ID.
    pub fn list(&self) -> Vec<Entry> {
        read(&self.cache).values().cloned().collect()
    }

    /// One entry, if `agent` is authorized for it.
    pub fn get_for_agent(&self, agent: &SpiffeId, id: &EntryId) -> Option<Entry> {
        self.authorized_for(agent).into_iter().find(|e| &e.id == id)
    }

    /// One entry.
    pub fn get(&self, id: &EntryId) -> Result<Entry, EntriesError> {
        read(&self.cache)
            .get(id)
            .cloned()
            .ok_or_else(|| EntriesError::EntryNotFound(id.clone()))
    }

    /// True when some entry for `id` carries the admin flag.
    pub fn is_admin(&self, id: &SpiffeId) -> bool {
        read(&self.cache)
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
        let _guard = self.write.lock().await;
        let old = self.get(id)?;
        if expected_revision != 0 && expected_revision != old.revision {
            return Err(EntriesError::RevisionConflict {
                id: id.clone(),
                current: old.revision,
                expected: expected_revision,
            });
        }
        let new = draft.validate(
            &self.trust_domain,
            id.clone(),
            old.revision + 1,
            old.created_at,
        )?;
        let (old_key, new_key) = (old.uniqueness_key(), new.uniqueness_key());
        if old_key != new_key {
            self.store
                .create(Table::ENTRY_INDEX, &new_key, id.as_str().as_bytes())
                .map_err(|e| match e {
                    SealError::AlreadyExists => EntriesError::EntryExists { holder: None },
                    other => other.into(),
                })?;
        }
        self.store.compare_and_put(
            Table::ENTRIES,
            id.as_str().as_bytes(),
            Some(&encode(&old)?),
            Some(&encode(&new)?),
        )?;
        if old_key != new_key {
            self.store.delete(Table::ENTRY_INDEX, &old_key)?;
        }
        self.cache_put(new.clone());
        Ok(new)
    }

    /// Deletes an entry.
    pub async fn delete(&self, id: &EntryId) -> Result<(), EntriesError> {
        let _guard = self.write.lock().await;
        let old = self.get(id)?;
        self.store.delete(Table::ENTRIES, id.as_str().as_bytes())?;
        self.store
            .delete(Table::ENTRY_INDEX, &old.uniqueness_key())?;
        write(&self.cache).remove(id);
        self.changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
