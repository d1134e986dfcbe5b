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
use crate::store::{SealError, SealedStore, SealedWrite, Stamp, Table, Unless};

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
    let meta = value.map(|v| parse_meta(path, &v)).transpose()?;
    Ok((meta, stamp))
}

/// A metadata record's plaintext, parsed.
fn parse_meta(path: &SecretPath, plaintext: &Secret) -> Result<SecretMeta, SecretsError> {
    serde_json::from_slice(plaintext.expose())
        .map_err(|e| SecretsError::RecordCorrupt(format!("{path}: {e}")))
}

/// Most paths whose parsed metadata [`cached_meta`] keeps; it starts over
/// when full.
const META_CACHE_CAPACITY: usize = 4096;

/// Parsed metadata by path, each with the sealed bytes it was parsed from.
/// Metadata only: a secret's values are never kept beyond the read.
#[derive(Default)]
pub(super) struct MetaCache(
    std::collections::HashMap<SecretPath, (std::sync::Arc<[u8]>, std::sync::Arc<SecretMeta>)>,
);

/// The metadata of `path`, as [`load_meta`] reads it, reusing what `cache`
/// parsed before while the stored record is unchanged. The store is asked
/// every time, so a write (by this process or any other) is seen at once,
/// and a sealed store refuses as it always does.
pub(super) fn cached_meta(
    store: &SealedStore,
    cache: &std::sync::Mutex<MetaCache>,
    path: &SecretPath,
) -> Result<Option<std::sync::Arc<SecretMeta>>, SecretsError> {
    let known = crate::sync::lock(cache).0.get(path).cloned();
    let found = store.get_unless(
        Table::META,
        path.as_str().as_bytes(),
        known.as_ref().map(|(raw, _)| raw.as_ref()),
    )?;
    match found {
        Unless::Unchanged => Ok(known.map(|(_, meta)| meta)),
        Unless::Absent => {
            crate::sync::lock(cache).0.remove(path);
            Ok(None)
        }
        Unless::Changed { raw, value } => {
            let meta = std::sync::Arc::new(parse_meta(path, &value)?);
            let mut cache = crate::sync::lock(cache);
            if cache.0.len() >= META_CACHE_CAPACITY {
                cache.0.clear();
            }
            cache.0.insert(path.clone(), (raw.into(), meta.clone()));
            Ok(Some(meta))
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;
    use crate::server::testing::unsealed_store;
    use std::sync::{Arc, Mutex};

    fn put_meta(store: &SealedStore, path: &SecretPath, meta: &SecretMeta) {
        let bytes = serde_json::to_vec(meta).unwrap();
        store
            .put(Table::META, path.as_str().as_bytes(), &bytes)
            .unwrap();
    }

    #[test]
    fn cached_metadata_follows_every_change_of_the_stored_record() {
        let (_dir, _raw, store) = unsealed_store();
        let cache = Mutex::new(MetaCache::default());
        let path = SecretPath::parse("app/db").unwrap();
        assert_eq!(cached_meta(&store, &cache, &path).unwrap(), None);
        let first = SecretMeta::new(10);
        put_meta(&store, &path, &first);
        let read = cached_meta(&store, &cache, &path).unwrap().unwrap();
        assert_eq!(*read, first);
        let again = cached_meta(&store, &cache, &path).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&read, &again),
            "an unchanged record is not parsed again"
        );
        // Written straight to the store, past this cache: the next read sees it.
        let mut second = SecretMeta::new(10);
        second.updated = 20;
        put_meta(&store, &path, &second);
        assert_eq!(
            *cached_meta(&store, &cache, &path).unwrap().unwrap(),
            second
        );
        store.delete(Table::META, path.as_str().as_bytes()).unwrap();
        assert_eq!(cached_meta(&store, &cache, &path).unwrap(), None);
        put_meta(&store, &path, &first);
        assert_eq!(*cached_meta(&store, &cache, &path).unwrap().unwrap(), first);
        store.seal();
        assert!(
            matches!(
                cached_meta(&store, &cache, &path),
                Err(SecretsError::Store(SealError::Sealed))
            ),
            "a sealed store refuses, whatever the cache holds"
        );
    }

    #[tokio::test]
    async fn a_read_fills_the_cache_and_clearing_at_seal_empties_it() {
        let (_dir, _raw, store) = unsealed_store();
        let secrets = crate::server::Secrets::new(store);
        let path = SecretPath::parse("app/db").unwrap();
        let fields =
            crate::secrets::Fields::new(vec![("password".into(), Secret::from_slice(b"pw"))])
                .unwrap();
        secrets.put(&path, fields, None, 10).await.unwrap();
        let read = secrets.get(&path, 0, 10).await.unwrap();
        assert_eq!(read.version, 1);
        assert_eq!(crate::sync::lock(&secrets.shared.metas).0.len(), 1);
        secrets.clear();
        assert!(crate::sync::lock(&secrets.shared.metas).0.is_empty());
    }
}
