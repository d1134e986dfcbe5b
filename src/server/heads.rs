//! Keeps the audit chain head in the sealed store, so that dropping records
//! from the end of the log file is detected, and gives the audit writer the
//! store's write generation to carry in every record.

use crate::audit::ChainHead;
use crate::keyring::KeyringError;
use crate::secret::Secret;
use crate::store::audit_log::HeadStore;
use crate::store::{SealError, SealedStore, Table};
use std::sync::Arc;

/// Key of the head in [`Table::STATE`].
pub const HEAD_KEY: &[u8] = b"audit-head";

/// Parses a stored head.
pub fn decode_head(stored: Option<Secret>) -> Result<Option<ChainHead>, SealError> {
    decode_state(stored, HEAD_KEY)
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

/// A [`HeadStore`] in the sealed store's STATE table.
#[derive(Debug)]
pub struct SealedHeads(pub Arc<SealedStore>);

impl SealedHeads {
    /// A reader over `store`.
    pub fn new(store: Arc<SealedStore>) -> Self {
        Self(store)
    }

    /// The stored head, `Err(Sealed)` while sealed.
    pub fn stored(&self) -> Result<Option<ChainHead>, SealError> {
        decode_head(self.0.get(Table::STATE, HEAD_KEY)?)
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
            // extend the chain past the stored head, unauthenticated; the
            // re-anchor at the next unseal states how many there are, and
            // the next save after it covers them.
            Err(SealError::Sealed | SealError::NotInitialized) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn generation(&self) -> u64 {
        self.0.generation()
    }
}
