//! Versions and their lifecycle, with the semantics of Vault KV v2 (SPEC §7):
//! versions only go up and are never reused, even after destroy; `cas = 0`
//! creates only; the last `max_versions` are kept (older ones are destroyed);
//! delete is soft (undelete restores), destroy is permanent; reading a deleted
//! or destroyed version says which.
//!
//! [`SecretMeta`] is the whole per-path record; every operation here is a pure
//! change of it, and tells the caller which version records to remove from the
//! store.

use super::rotation::RotationState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Versions kept per secret unless `--max-versions` says otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;
/// The largest `--max-versions` accepted: metadata grows with it.
pub const MAX_MAX_VERSIONS: u32 = 1000;
/// Most custom-metadata keys.
pub const MAX_CUSTOM_KEYS: usize = 64;
/// Longest custom-metadata key, in bytes.
pub const MAX_CUSTOM_KEY: usize = 128;
/// Longest custom-metadata value, in bytes.
pub const MAX_CUSTOM_VALUE: usize = 512;

/// Why a version operation was refused. Variants name the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The version was never written.
    #[error("version {version} does not exist (current version is {current})")]
    NoSuchVersion {
        /// Asked for.
        version: u64,
        /// The newest there is.
        current: u64,
    },
    /// The version is soft-deleted; `undelete` restores it.
    #[error("version {version} was deleted at {at} (undelete restores it)")]
    Deleted {
        /// The version.
        version: u64,
        /// When, Unix seconds.
        at: u64,
    },
    /// The version is destroyed: its value is gone for good.
    #[error("version {version} was destroyed{}; its value is gone", if *.pruned { " (beyond max-versions)" } else { "" })]
    Destroyed {
        /// The version.
        version: u64,
        /// True when it was removed to keep `max_versions`.
        pruned: bool,
    },
    /// `--cas N` did not match the current version.
    #[error("check-and-set failed: expected current version {expected}, it is {current}")]
    CasMismatch {
        /// What the caller expected.
        expected: u64,
        /// What it is.
        current: u64,
    },
    /// Version 0 in a list of versions.
    #[error("version numbers start at 1")]
    VersionZero,
    /// `max_versions` outside 1..=[`MAX_MAX_VERSIONS`].
    #[error("max-versions must be between 1 and {MAX_MAX_VERSIONS}, not {0}")]
    MaxVersionsOutOfRange(u32),
}

/// Why custom metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// More than [`MAX_CUSTOM_KEYS`].
    #[error("{0} custom metadata keys; the limit is {MAX_CUSTOM_KEYS}")]
    TooManyKeys(usize),
    /// An empty key.
    #[error("a custom metadata key is empty")]
    EmptyKey,
    /// A key over [`MAX_CUSTOM_KEY`] bytes.
    #[error("custom metadata key {0:?}… is longer than {MAX_CUSTOM_KEY} bytes")]
    KeyTooLong(String),
    /// A value over [`MAX_CUSTOM_VALUE`] bytes.
    #[error("custom metadata value of {0:?} is longer than {MAX_CUSTOM_VALUE} bytes")]
    ValueTooLong(String),
}

/// Custom metadata: a few short, non-secret strings (owner, ticket, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomMetadata(BTreeMap<String, String>);

impl CustomMetadata {
    /// Validates `pairs`.
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, MetaError> {
        if pairs.len() > MAX_CUSTOM_KEYS {
            return Err(MetaError::TooManyKeys(pairs.len()));
        }
        for (k, v) in &pairs {
            if k.is_empty() {
                return Err(MetaError::EmptyKey);
            }
            if k.len() > MAX_CUSTOM_KEY {
                return Err(MetaError::KeyTooLong(k.chars().take(32).collect()));
            }
            if v.len() > MAX_CUSTOM_VALUE {
                return Err(MetaError::ValueTooLong(k.chars().take(32).collect()));
            }
        }
        Ok(Self(pairs))
    }

    /// The pairs.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// One version's times. Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// When it was written.
    pub created: u64,
    /// When it was soft-deleted, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// When it was destroyed, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed: Option<u64>,
    /// Set while a rotation's grace period keeps this replaced version
    /// readable: until then it is the `previous` credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<u64>,
}

/// What a version is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// Readable.
    Live,
    /// Soft-deleted at this time.
    Deleted(u64),
    /// Destroyed: by request, or (`pruned`) to keep `max_versions`.
    Destroyed {
        /// Removed to keep `max_versions`.
        pruned: bool,
    },
}

/// Everything known about one path except its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    /// When the path was first written.
    pub created: u64,
    /// When the metadata last changed.
    pub updated: u64,
    /// The newest version number written (0: none yet). Never goes down.
    pub current: u64,
    /// Versions below this were pruned to keep `max_versions`.
    pub oldest: u64,
    /// How many versions are kept.
    pub max_versions: u32,
    /// Custom metadata.
    #[serde(default)]
    pub custom: CustomMetadata,
    /// The versions kept, by number.
    pub versions: BTreeMap<u64, VersionMeta>,
    /// Scheduled rotation, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationState>,
}

impl SecretMeta {
    /// Metadata for a path first written at `now`.
    pub fn new(now: u64) -> Self {
        Self {
            created: now,
            updated: now,
            current: 0,
            oldest: 1,
            max_versions: DEFAULT_MAX_VERSIONS,
            custom: CustomMetadata::default(),
            versions: BTreeMap::new(),
            rotation: None,
        }
    }

    /// Checks `--cas`: `Some(0)` creates only; `Some(n)` needs current = n.
    pub fn check_cas(&self, cas: Option<u64>) -> Result<(), KvError> {
        match cas {
            Some(expected) if expected != self.current => Err(KvError::CasMismatch {
                expected,
                current: self.current,
            }),
            _ => Ok(()),
        }
    }

    /// Adds the next version at `now`. Returns its number and the versions
    /// pruned to keep `max_versions` (their values must be removed).
    pub fn add_version(&mut self, now: u64) -> (u64, Vec<u64>) {
        self.current = self.current.saturating_add(1);
        self.versions.insert(
            self.current,
            VersionMeta {
                created: now,
                deleted: None,
                destroyed: None,
                previous_until: None,
            },
        );
        self.updated = now;
        (self.current, self.prune())
    }

    /// Sets `max_versions` and prunes to it; returns the versions pruned.
    pub fn set_max_versions(&mut self, max: u32, now: u64) -> Result<Vec<u64>, KvError> {
        if !(1..=MAX_MAX_VERSIONS).contains(&max) {
            return Err(KvError::MaxVersionsOutOfRange(max));
        }
        self.max_versions = max;
        self.updated = now;
        Ok(self.prune())
    }

    fn prune(&mut self) -> Vec<u64> {
        let mut pruned = Vec::new();
        while self.versions.len() > self.max_versions as usize {
            let Some((v, meta)) = self.versions.pop_first() else {
                break;
            };
            self.oldest = v + 1;
            if meta.destroyed.is_none() {
                pruned.push(v);
            }
        }
        pruned
    }

    /// The version `asked` names (0: the current one) and its state.
    pub fn state(&self, asked: u64) -> Result<(u64, VersionState), KvError> {
        let version = if asked == 0 { self.current } else { asked };
        if version == 0 || version > self.current {
            return Err(KvError::NoSuchVersion {
                version,
                current: self.current,
            });
        }
        if version < self.oldest {
            return Ok((version, VersionState::Destroyed { pruned: true }));
        }
        let Some(meta) = self.versions.get(&version) else {
            return Ok((version, VersionState::Destroyed { pruned: true }));
        };
        Ok((
            version,
            match (meta.destroyed, meta.deleted) {
                (Some(_), _) => VersionState::Destroyed { pruned: false },
                (None, Some(at)) => VersionState::Deleted(at),
                (None, None) => VersionState::Live,
            },
        ))
    }

    /// The version `asked` names if it is readable.
    pub fn readable(&self, asked: u64) -> Result<u64, KvError> {
        match self.state(asked)? {
            (v, VersionState::Live) => Ok(v),
            (version, VersionState::Deleted(at)) => Err(KvError::Deleted { version, at }),
            (version, VersionState::Destroyed { pruned }) => {
                Err(KvError::Destroyed { version, pruned })
            }
        }
    }

    /// The versions a delete/undelete/destroy names: `asked`, or the current
    /// one when empty. Every one must have been written.
    fn targets(&self, asked: &[u64]) -> Result<Vec<u64>, KvError> {
        if asked.is_empty() {
            return Ok(vec![self.state(0)?.0]);
        }
        let mut out = Vec::new();
        for &v in asked {
            if v == 0 {
                return Err(KvError::VersionZero);
            }
            self.state(v)?;
            out.push(v);
        }
        Ok(out)
    }

    /// Soft-deletes `versions` (the current one when empty). A version
    /// already deleted or destroyed is left as it is. Returns those changed.
    pub fn delete(&mut self, versions: &[u64], now: u64) -> Result<Vec<u64>, KvError> {
        let targets = self.targets(versions)?;
        let mut changed = Vec::new();
        for v in targets {
            if let Some(m) = self.versions.get_mut(&v)
                && m.deleted.is_none()
                && m.destroyed.is_none()
            {
                m.deleted = Some(now);
                changed.push(v);
            }
        }
        self.updated = now;
        Ok(changed)
    }

    /// Restores soft-deleted `versions` (the current one when empty).
    /// Destroyed versions stay destroyed. Returns those restored.
    pub fn undelete(&mut self, versions: &[u64], now: u64) -> Result<Vec<u64>, KvError> {
        let targets = self.targets(versions)?;
        let mut changed = Vec::new();
        for v in targets {
            if let Some(m) = self.versions.get_mut(&v)
                && m.deleted.is_some()
                && m.destroyed.is_none()
            {
                m.deleted = None;
                changed.push(v);
            }
        }
        self.updated = now;
        Ok(changed)
    }

    /// Destroys `versions` (the current one when empty). Returns those whose
    /// values must now be removed from the store.
    pub fn destroy(&mut self, versions: &[u64], now: u64) -> Result<Vec<u64>, KvError> {
        let targets = self.targets(versions)?;
        let mut changed = Vec::new();
        for v in targets {
            if let Some(m) = self.versions.get_mut(&v)
                && m.destroyed.is_none()
            {
                m.destroyed = Some(now);
                m.previous_until = None;
                changed.push(v);
            }
        }
        self.updated = now;
        Ok(changed)
    }

    /// The readable version kept as `previous` during a rotation's grace, if any.
    pub fn previous(&self, now: u64) -> Option<u64> {
        self.versions
            .iter()
            .rev()
            .find(|(_, m)| {
                m.previous_until.is_some_and(|t| now < t)
                    && m.deleted.is_none()
                    && m.destroyed.is_none()
            })
            .map(|(v, _)| *v)
    }
}
