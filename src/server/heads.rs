//! Keeps the audit chain head in the sealed store, so that dropping records
//! from the end of the log file is detected, and gives the audit writer the
//! store's write generation to carry in every record.
//!
//! The head is the anchor of the store's integrity record
//! ([`SealedStore::set_anchor`]): it is saved at every audit sync, and
//! there it costs the write of one record. Stores written before it moved
//! there hold it in the [`Table::STATE`] record at [`HEAD_KEY`]; it is read
//! from there while the anchor is unset, and the first save moves it.

use crate::audit::ChainHead;
use crate::keyring::KeyringError;
use crate::secret::Secret;
use crate::store::audit_log::HeadStore;
use crate::store::{SealError, SealedStore, Table, Unsealing};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Key of the head's former record in [`Table::STATE`].
pub const HEAD_KEY: &[u8] = b"audit-head";

/// Parses a head from its former record.
pub fn decode_head(stored: Option<Secret>) -> Result<Option<ChainHead>, SealError> {
    decode_state(stored, HEAD_KEY)
}

/// Parses a head kept as the integrity record's anchor; one that does not
/// parse is reported as corruption of that record.
fn decode_anchor(anchor: &str) -> Result<ChainHead, SealError> {
    serde_json::from_str(anchor).map_err(|_| SealError::Corrupt {
        table: Table::INTEGRITY,
        key: "state".to_owned(),
        cause: KeyringError::RecordAuthenticationFailed,
    })
}

/// The head a store being unsealed holds: its anchor, or its former record.
pub fn opened_head(opened: &Unsealing<'_>) -> Result<Option<ChainHead>, SealError> {
    head_in(opened.anchor(), || opened.get(Table::STATE, HEAD_KEY))
}

/// The head `anchor` holds or, while no anchor is set, the one in the
/// former record that `former` reads.
fn head_in(
    anchor: Option<&str>,
    former: impl FnOnce() -> Result<Option<Secret>, SealError>,
) -> Result<Option<ChainHead>, SealError> {
    match anchor {
        Some(anchor) => decode_anchor(anchor).map(Some),
        None => decode_head(former()?),
    }
}

/// Parses the JSON of the [`Table::STATE`] record at `key`; one that does
/// not parse is reported as corruption of that record.
pub fn decode_state<T: serde::de::DeserializeOwned>(
    stored: Option<Secret>,
    key: &[u8],
) -> Result<Option<T>, SealError> {
    stored
        .map(|v| {
            serde_json::from_slice(v.expose()).map_err(|_| SealError::Corrupt {
                table: Table::STATE,
                key: key.escape_ascii().to_string(),
                cause: KeyringError::RecordAuthenticationFailed,
            })
        })
        .transpose()
}

/// A [`HeadStore`] in the sealed store.
#[derive(Debug)]
pub struct SealedHeads {
    store: Arc<SealedStore>,
    /// Whether the head's former record may still exist: the first save
    /// deletes it.
    former: AtomicBool,
}

impl SealedHeads {
    /// Heads kept in `store`.
    pub fn new(store: Arc<SealedStore>) -> Self {
        Self {
            store,
            former: AtomicBool::new(true),
        }
    }

    /// The stored head, `Err(Sealed)` while sealed.
    pub fn stored(&self) -> Result<Option<ChainHead>, SealError> {
        head_in(self.store.anchor()?.as_deref(), || {
            self.store.get(Table::STATE, HEAD_KEY)
        })
    }
}

impl HeadStore for SealedHeads {
    fn load_head(&self) -> Result<Option<ChainHead>, String> {
        match self.stored() {
            Ok(h) => Ok(h),
            // While sealed the head cannot be read; the chain is checked
            // against it again at unseal.
            Err(SealError::Sealed | SealError::NotInitialized) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn save_head(&self, head: &ChainHead) -> Result<(), String> {
        let json = serde_json::to_string(head).map_err(|e| e.to_string())?;
        let former = self
            .former
            .load(Ordering::Acquire)
            .then_some((Table::STATE, HEAD_KEY));
        match self.store.set_anchor(&json, former) {
            Ok(()) => {
                self.former.store(false, Ordering::Release);
                Ok(())
            }
            // Records appended while sealed (status, init, unseal attempts)
            // extend the chain past the stored head, unauthenticated; the
            // re-anchor at the next unseal states how many there are, and
            // the next save after it covers them.
            Err(SealError::Sealed | SealError::NotInitialized) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn generation(&self) -> u64 {
        self.store.generation()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::server::testing::unsealed_store;

    fn head(seq: u64) -> ChainHead {
        ChainHead {
            seq,
            hash: [u8::try_from(seq % 256).unwrap(); 32],
        }
    }

    /// A store written before the head moved into the integrity record
    /// keeps serving its head from the former record until the first save,
    /// which moves it and deletes that record; unseal reads it either way.
    #[test]
    fn a_head_in_its_former_record_is_read_then_moved_by_the_first_save() {
        let (_dir, _raw, store) = unsealed_store();
        let old = serde_json::to_vec(&head(7)).unwrap();
        store.put(Table::STATE, HEAD_KEY, &old).unwrap();
        let heads = SealedHeads::new(store.clone());
        assert_eq!(heads.stored().unwrap(), Some(head(7)));
        assert_eq!(heads.load_head().unwrap(), Some(head(7)));
        let opened = store
            .open_keys(&Secret::from_slice(b"server test passphrase"))
            .unwrap();
        assert_eq!(opened_head(&opened).unwrap(), Some(head(7)));
        drop(opened);

        let generation = store.generation();
        heads.save_head(&head(8)).unwrap();
        assert_eq!(heads.stored().unwrap(), Some(head(8)));
        assert_eq!(store.get(Table::STATE, HEAD_KEY).unwrap().map(|_| ()), None);
        assert_eq!(store.generation(), generation + 1);
        heads.save_head(&head(9)).unwrap();
        assert_eq!(heads.generation(), generation + 2);
        let opened = store
            .open_keys(&Secret::from_slice(b"server test passphrase"))
            .unwrap();
        assert_eq!(
            opened.anchor(),
            Some(serde_json::to_string(&head(9)).unwrap().as_str())
        );
        assert_eq!(opened_head(&opened).unwrap(), Some(head(9)));
    }

    /// An anchor that is not a head is reported as a corrupt integrity
    /// record, not taken for "no head".
    #[test]
    fn an_anchor_that_is_not_a_head_is_corruption() {
        let (_dir, _raw, store) = unsealed_store();
        store.set_anchor("not a head", None).unwrap();
        let heads = SealedHeads::new(store.clone());
        assert!(matches!(
            heads.stored(),
            Err(SealError::Corrupt {
                table: Table::INTEGRITY,
                ..
            })
        ));
        assert!(heads.load_head().is_err());
    }
}
