//! Keys opened and the store checked, before they are put to use.

use std::fmt;

use super::{Commit, SealError, SealedStore, check_table, integrity, open};
use crate::audit::ChainKey;
use crate::keyring::{DerivedKey, Keys};
use crate::secret::Secret;
use crate::store::Table;

/// Keys opened and the store checked by [`SealedStore::open_keys`], not yet
/// in use: record operations still answer [`SealError::Sealed`] until
/// [`Unsealing::publish`]. Dropping it leaves the store sealed.
pub struct Unsealing<'a> {
    pub(super) store: &'a SealedStore,
    pub(super) keys: Keys,
    pub(super) generation: u64,
    pub(super) anchor: Option<String>,
}

impl fmt::Debug for Unsealing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unsealing")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Unsealing<'_> {
    /// The store's write generation, as its integrity record states.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The anchor the store's integrity record holds (see
    /// [`SealedStore::set_anchor`]).
    pub fn anchor(&self) -> Option<&str> {
        self.anchor.as_deref()
    }

    /// The decrypted value at (`table`, `key`), read with the opened keys.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Secret>, SealError> {
        check_table(table)?;
        self.store
            .store
            .get(table, key)?
            .map(|raw| open(&self.keys, table, key, &raw))
            .transpose()
    }

    /// The audit chain's HMAC key.
    pub fn chain_key(&self) -> Result<ChainKey, SealError> {
        chain_key(&self.keys)
    }

    /// Moves the write generation forward to at least `to`, and stores
    /// `puts` (encrypted, as [`SealedStore::batch`] does) in the same
    /// durable write: after an accepted rollback, the store must be ahead of
    /// every generation the audit log has seen, or the next unseal refuses
    /// again, and what the server must remember of the rollback lands with it.
    pub fn advance_generation(
        &mut self,
        to: u64,
        puts: &[(Table, &[u8], &[u8])],
    ) -> Result<(), SealError> {
        let changes = puts
            .iter()
            .map(|&(table, key, plaintext)| {
                check_table(table)?;
                Ok(integrity::Change {
                    table,
                    key,
                    new: Some(super::seal(&self.keys, table, key, plaintext)?),
                    expect: None,
                })
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        if let Commit::Applied { generation, .. } = integrity::commit(
            self.store.store.as_ref(),
            &self.store.writers,
            &self.keys,
            &changes,
            None,
            to,
            integrity::Durability::Now,
        )? {
            self.generation = generation;
        }
        Ok(())
    }

    /// Puts the keys to use: the store is unsealed from here on.
    pub fn publish(self) {
        let mut guard = self.store.write_keys();
        self.store.saw_generation(self.generation);
        *guard = Some(self.keys);
    }
}

/// The audit chain's HMAC key, derived from the root key.
pub(super) fn chain_key(keys: &Keys) -> Result<ChainKey, SealError> {
    keys.derive(DerivedKey::AuditChain)
        .map(ChainKey::new)
        .map_err(SealError::Keyring)
}
