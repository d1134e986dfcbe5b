//! The synchronous side of [`super::Entries`]: every change to the stored
//! entries and their uniqueness index, and the cache update that follows it.
//! Everything here may wait on the disk, so it runs on the blocking pool
//! (see `server::blocking`), never on an async worker.
//!
//! Writers on this server are serialized by a std lock taken here, inside
//! the blocking task, and held until the cache holds what the store holds.
//! A caller that goes away while its write runs does not release the lock
//! early (the task keeps it to the end), so the cache always follows the
//! store in the order the writes happened.

use super::EntriesError;
use crate::id::TrustDomain;
use crate::registry::{Entry, EntryDraft, EntryId};
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{lock, read, write};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// The state [`super::Entries`] shares with the tasks that do its store work.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) store: Arc<SealedStore>,
    pub(super) trust_domain: TrustDomain,
    pub(super) cache: RwLock<BTreeMap<EntryId, Entry>>,
    /// Serializes writers on this server so the cache follows the store.
    write: Mutex<()>,
    /// Bumped after every change, so agent streams push it at once.
    pub(super) changes: watch::Sender<u64>,
}

pub(super) fn decode(bytes: &[u8]) -> Result<Entry, EntriesError> {
    serde_json::from_slice(bytes).map_err(|e| EntriesError::RecordCorrupt(e.to_string()))
}

fn encode(e: &Entry) -> Result<Vec<u8>, EntriesError> {
    serde_json::to_vec(e).map_err(|e| EntriesError::RecordUnencodable(e.to_string()))
}

impl Shared {
    pub(super) fn new(store: Arc<SealedStore>, trust_domain: TrustDomain) -> Self {
        Self {
            store,
            trust_domain,
            cache: RwLock::new(BTreeMap::new()),
            write: Mutex::new(()),
            changes: watch::channel(0).0,
        }
    }

    pub(super) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn cache_put(&self, e: Entry) {
        write(&self.cache).insert(e.id.clone(), e);
        self.changed();
    }

    /// One entry, from the cache.
    pub(super) fn cached(&self, id: &EntryId) -> Result<Entry, EntriesError> {
        read(&self.cache)
            .get(id)
            .cloned()
            .ok_or_else(|| EntriesError::EntryNotFound(id.clone()))
    }

    /// Stores a validated new entry; a duplicate is `EntryExists`.
    pub(super) fn create(&self, entry: Entry) -> Result<Entry, EntriesError> {
        let _guard = lock(&self.write);
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

    /// Replaces an entry's fields; `expected_revision` 0 skips the check.
    pub(super) fn update(
        &self,
        id: &EntryId,
        draft: &EntryDraft,
        expected_revision: u64,
    ) -> Result<Entry, EntriesError> {
        let _guard = lock(&self.write);
        let old = self.cached(id)?;
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
    pub(super) fn delete(&self, id: &EntryId) -> Result<(), EntriesError> {
        let _guard = lock(&self.write);
        let old = self.cached(id)?;
        self.store.delete(Table::ENTRIES, id.as_str().as_bytes())?;
        self.store
            .delete(Table::ENTRY_INDEX, &old.uniqueness_key())?;
        write(&self.cache).remove(id);
        self.changed();
        Ok(())
    }
}
