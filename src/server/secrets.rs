//! The secrets store (SPEC §3.3 `sigil secret`, §4): versioned secrets in
//! the sealed store with Vault KV v2 semantics (`crate::secrets`), pushed to
//! watchers as they are written, and rotated on schedule (`secrets/rotate.rs`,
//! its task in `secrets/task.rs`).
//!
//! Values travel as [`Fields`] (zeroizing, `Debug` without values) from the
//! request to the store; they are never logged and never audited.
//!
//! Every store call runs on the blocking pool (`server::blocking`).

use super::blocking;
use crate::secrets::{
    CustomMetadata, Fields, RotationState, Schedule, SecretMeta, SecretPath, VersionMeta,
};
use crate::store::SealedStore;
use crate::sync::lock;
use records::{Write, data_key, load_meta, read_fields, update};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast};

mod error;
pub mod postgres;
mod records;
mod rotate;
pub mod task;
pub use error::SecretsError;
pub use rotate::Rotated;

/// A change of some versions' state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionsChange {
    /// Soft-delete ([`SecretMeta::delete`]).
    Delete,
    /// Restore soft-deleted versions ([`SecretMeta::undelete`]).
    Undelete,
    /// Destroy: the values are removed from the store in the same write
    /// ([`SecretMeta::destroy`]).
    Destroy,
}

/// How many change notices a slow watcher may fall behind before it re-reads.
const CHANGES_BUFFER: usize = 1024;

/// A new version was written (or versions changed state) at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The path.
    pub path: SecretPath,
    /// Its current version now.
    pub version: u64,
}

/// One version as read.
#[derive(Debug, Clone)]
pub struct Read {
    /// The version number.
    pub version: u64,
    /// Its times.
    pub meta: VersionMeta,
    /// Its fields.
    pub fields: Fields,
    /// True while it is the replaced version in a rotation's grace period.
    pub previous: bool,
    /// The secret's custom metadata.
    pub custom: CustomMetadata,
}

pub(crate) struct Shared {
    store: Arc<SealedStore>,
    changes: broadcast::Sender<Changed>,
    /// Rotation due times of every path with a rotation, rebuilt at unseal.
    schedules: Mutex<BTreeMap<SecretPath, Schedule>>,
    /// Wakes the rotation task when a schedule changes.
    wake: Notify,
    /// One rotation at a time: the task's and `rotate now`'s.
    rotating: tokio::sync::Mutex<()>,
    rng: ring::rand::SystemRandom,
    /// Parsed metadata by path, with the sealed bytes it came from: a read
    /// reuses it while the stored record is byte for byte the same (see
    /// [`records::cached_meta`]), instead of decrypting and parsing it again.
    metas: Mutex<records::MetaCache>,
}

/// The secrets store. Cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

fn schedule_of(path: &SecretPath, r: &RotationState) -> Schedule {
    Schedule {
        path: path.clone(),
        rotate_at: r.rotate_at(),
        retire_at: r.retire_at(),
    }
}

impl Secrets {
    /// Secrets in `store`.
    pub fn new(store: Arc<SealedStore>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                changes: broadcast::channel(CHANGES_BUFFER).0,
                schedules: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
                rotating: tokio::sync::Mutex::new(()),
                rng: ring::rand::SystemRandom::new(),
                metas: Mutex::new(records::MetaCache::default()),
            }),
        }
    }

    /// Reads every rotation schedule (at unseal). Blocks.
    pub fn load(&self) -> Result<usize, SecretsError> {
        let mut map = BTreeMap::new();
        for (key, value) in self
            .shared
            .store
            .scan_prefix(crate::store::Table::META, b"")?
        {
            let path = std::str::from_utf8(&key)
                .ok()
                .and_then(|p| SecretPath::parse(p).ok())
                .ok_or_else(|| SecretsError::RecordCorrupt("metadata key is not a path".into()))?;
            let meta: SecretMeta = serde_json::from_slice(value.expose())
                .map_err(|e| SecretsError::RecordCorrupt(format!("{path}: {e}")))?;
            if let Some(r) = &meta.rotation {
                map.insert(path.clone(), schedule_of(&path, r));
            }
        }
        let n = map.len();
        *lock(&self.shared.schedules) = map;
        self.shared.wake.notify_one();
        Ok(n)
    }

    /// Forgets the schedules and the parsed metadata (at seal): a sealed
    /// server keeps nothing it read from the store.
    pub fn clear(&self) {
        lock(&self.shared.schedules).clear();
        *lock(&self.shared.metas) = records::MetaCache::default();
    }

    /// Every change as it happens.
    pub fn changes(&self) -> broadcast::Receiver<Changed> {
        self.shared.changes.subscribe()
    }

    fn changed(&self, path: &SecretPath, meta: &SecretMeta) {
        let mut schedules = lock(&self.shared.schedules);
        match &meta.rotation {
            Some(r) => {
                schedules.insert(path.clone(), schedule_of(path, r));
            }
            None => {
                schedules.remove(path);
            }
        }
        drop(schedules);
        self.shared.wake.notify_one();
        // Nobody listening is fine.
        let _ = self.shared.changes.send(Changed {
            path: path.clone(),
            version: meta.current,
        });
    }

    /// Writes the next version of `path`. `cas`: `Some(0)` creates only,
    /// `Some(n)` needs current version n. Returns the new version.
    pub async fn put(
        &self,
        path: &SecretPath,
        fields: Fields,
        cas: Option<u64>,
        now: u64,
    ) -> Result<u64, SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        let (version, meta) = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.unwrap_or_else(|| SecretMeta::new(now));
                meta.check_cas(cas)?;
                let (version, pruned) = meta.add_version(now);
                let w = Write {
                    puts: vec![(data_key(&p, version), fields.encode())],
                    deletes: pruned.iter().map(|v| data_key(&p, *v)).collect(),
                };
                Ok((meta.clone(), w, (version, meta)))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(version)
    }

    /// Reads version `version` of `path` (0: the current one).
    pub async fn get(
        &self,
        path: &SecretPath,
        version: u64,
        now: u64,
    ) -> Result<Read, SecretsError> {
        let (s, p) = (&self.shared, path);
        blocking::point_read(|| {
            let meta = records::cached_meta(&s.store, &s.metas, p)?
                .ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
            let version = meta.readable(version)?;
            let fields = read_fields(&s.store, &data_key(p, version))?.ok_or(
                crate::secrets::KvError::Destroyed {
                    version,
                    pruned: false,
                },
            )?;
            Ok(Read {
                version,
                meta: meta.versions.get(&version).cloned().ok_or_else(|| {
                    SecretsError::RecordCorrupt(format!("{p}: version {version} has no times"))
                })?,
                fields,
                previous: meta.previous(now) == Some(version),
                custom: meta.custom.clone(),
            })
        })
    }

    /// The metadata of `path`.
    pub async fn meta(&self, path: &SecretPath) -> Result<SecretMeta, SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        blocking::run(move || {
            load_meta(&s.store, &p)?
                .0
                .ok_or_else(|| SecretsError::NotFound(p.to_string()))
        })
        .await
    }

    /// Every path at or below `prefix` (segment-wise), with its metadata.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(SecretPath, SecretMeta)>, SecretsError> {
        let s = self.shared.clone();
        let prefix = prefix.trim_end_matches('/').to_owned();
        blocking::run(move || {
            let mut out = Vec::new();
            for (key, value) in s
                .store
                .scan_prefix(crate::store::Table::META, prefix.as_bytes())?
            {
                let Some(path) = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|p| SecretPath::parse(p).ok())
                else {
                    continue;
                };
                if !path.is_under(&prefix) {
                    continue;
                }
                let meta: SecretMeta = serde_json::from_slice(value.expose())
                    .map_err(|e| SecretsError::RecordCorrupt(format!("{path}: {e}")))?;
                out.push((path, meta));
            }
            Ok(out)
        })
        .await
    }

    /// Applies `change` to `versions` of `path` (the current one when empty).
    /// Returns the versions whose state changed.
    pub async fn change_versions(
        &self,
        path: &SecretPath,
        change: VersionsChange,
        versions: Vec<u64>,
        now: u64,
    ) -> Result<Vec<u64>, SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        let (changed, meta) = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
                let changed = match change {
                    VersionsChange::Delete => meta.delete(&versions, now)?,
                    VersionsChange::Undelete => meta.undelete(&versions, now)?,
                    VersionsChange::Destroy => meta.destroy(&versions, now)?,
                };
                let mut w = Write::default();
                if change == VersionsChange::Destroy {
                    w.deletes = changed.iter().map(|v| data_key(&p, *v)).collect();
                }
                meta.updated = now;
                Ok((meta.clone(), w, (changed, meta)))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(changed)
    }

    /// Sets `max_versions` (pruning at once) and/or the custom metadata.
    /// Creates the metadata of a path not yet written.
    pub async fn set_meta(
        &self,
        path: &SecretPath,
        max_versions: Option<u32>,
        custom: Option<CustomMetadata>,
        now: u64,
    ) -> Result<SecretMeta, SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        let meta = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.unwrap_or_else(|| SecretMeta::new(now));
                let mut w = Write::default();
                if let Some(max) = max_versions {
                    w.deletes = meta
                        .set_max_versions(max, now)?
                        .iter()
                        .map(|v| data_key(&p, *v))
                        .collect();
                }
                if let Some(custom) = custom.clone() {
                    meta.custom = custom;
                }
                meta.updated = now;
                Ok((meta.clone(), w, meta))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(meta)
    }
}
