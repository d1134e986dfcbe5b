//! Where a secret's records live in the sealed store, and reading and writing
//! them. Metadata: [`Table::META`] at the path. Values: [`Table::SECRETS`] at
//! `path ‖ 0x00 ‖ version (8 bytes, big-endian)`; a begun rotation's new
//! value at `path ‖ 0x01`. A path never holds a byte below `-`, so no two
//! paths' keys overlap.
//!
//! Every write goes through [`Shared::write`]: the metadata record is
//! compared-and-swapped in the same atomic batch as the values it describes,
//! so a reader never sees a version without its value (or the reverse), and
//! two writers to one path cannot both win.

use super::SecretsError;
use crate::secret::Secret;
use crate::secrets::{Fields, SecretMeta, SecretPath};
use crate::store::{SealError, SealedStore, SealedWrite, Stamp, Table};

/// How often a write that lost a compare-and-swap is retried.
pub(super) const RETRIES: usize = 16;

pub(super) fn data_key(path: &SecretPath, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.as_str().len() + 9);
    k.extend_from_slice(path.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

pub(super) fn pending_key(path: &SecretPath) -> Vec<u8> {
    let mut k = path.as_str().as_bytes().to_vec();
    k.push(1);
    k
}

/// One write of a path: the new metadata, values to put, values to remove.
#[derive(Default)]
pub(super) struct Write {
    pub(super) puts: Vec<(Vec<u8>, Secret)>,
    pub(super) deletes: Vec<Vec<u8>>,
}

pub(super) fn load_meta(
    store: &SealedStore,
    path: &SecretPath,
) -> Result<(Option<SecretMeta>, Stamp), SecretsError> {
    let (value, stamp) = store.get_stamped(Table::META, path.as_str().as_bytes())?;
    let meta = value
        .map(|v| serde_json::from_slice(v.expose()))
        .transpose()
        .map_err(|e| SecretsError::RecordCorrupt(format!("{path}: {e}")))?;
    Ok((meta, stamp))
}

pub(super) fn write(
    store: &SealedStore,
    path: &SecretPath,
    stamp: &Stamp,
    meta: &SecretMeta,
    w: &Write,
) -> Result<(), SecretsError> {
    let encoded =
        serde_json::to_vec(meta).map_err(|e| SecretsError::RecordCorrupt(e.to_string()))?;
    let key = path.as_str().as_bytes();
    let mut ops = vec![SealedWrite::Put {
        table: Table::META,
        key,
        plaintext: &encoded,
    }];
    for (k, v) in &w.puts {
        ops.push(SealedWrite::Put {
            table: Table::SECRETS,
            key: k,
            plaintext: v.expose(),
        });
    }
    for k in &w.deletes {
        ops.push(SealedWrite::Delete {
            table: Table::SECRETS,
            key: k,
        });
    }
    store.batch_if((Table::META, key, stamp), &ops)?;
    Ok(())
}

/// Reads the path's metadata, lets `change` decide the new metadata and
/// writes, and commits both atomically; retried when another writer got there
/// first. `change` sees `None` for a path never written.
pub(super) fn update<T>(
    store: &SealedStore,
    path: &SecretPath,
    mut change: impl FnMut(Option<SecretMeta>) -> Result<(SecretMeta, Write, T), SecretsError>,
) -> Result<T, SecretsError> {
    for _ in 0..RETRIES {
        let (meta, stamp) = load_meta(store, path)?;
        let (meta, w, out) = change(meta)?;
        match write(store, path, &stamp, &meta, &w) {
            Ok(()) => return Ok(out),
            Err(SecretsError::Store(SealError::Conflict)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SecretsError::Contended(path.to_string()))
}

pub(super) fn read_fields(store: &SealedStore, key: &[u8]) -> Result<Option<Fields>, SecretsError> {
    store
        .get(Table::SECRETS, key)?
        .map(|v| Fields::decode(v.expose()))
        .transpose()
        .map_err(SecretsError::from)
}
