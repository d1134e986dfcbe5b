//! Keeps the audit chain head in the sealed store, so that dropping records
//! from the end of the log file is detected.

use crate::audit::ChainHead;
use crate::store::audit_log::HeadStore;
use crate::store::{SealError, SealedStore, Table};
use std::sync::Arc;

const HEAD_KEY: &[u8] = b"audit-head";

/// A [`HeadStore`] in the sealed store's META table.
#[derive(Debug)]
pub struct SealedHeads(pub Arc<SealedStore>);

impl SealedHeads {
    /// A reader over `store`.
    pub fn new(store: Arc<SealedStore>) -> Self {
        Self(store)
    }
}

impl SealedHeads {
    /// The stored head, `Err(Sealed)` while sealed.
    pub fn stored(&self) -> Result<Option<ChainHead>, SealError> {
        match self.0.get(Table::STATE, HEAD_KEY)? {
            Some(v) => {
                serde_json::from_slice(v.expose())
                    .map(Some)
                    .map_err(|_| SealError::Corrupt {
                        table: Table::STATE,
                        key: "audit-head".to_owned(),
                        cause: crate::keyring::KeyringError::RecordAuthenticationFailed,
                    })
            }
            None => Ok(None),
        }
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
        let bytes = serde_json::to_vec(head).map_err(|e| e.to_string())?;
        match self.0.put(Table::STATE, HEAD_KEY, &bytes) {
            Ok(()) => Ok(()),
            // Records appended while sealed (status, init, unseal attempts)
            // extend the chain past the stored head; the next append after
            // unseal stores the new head. The chain itself still links them.
            Err(SealError::Sealed | SealError::NotInitialized) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}
