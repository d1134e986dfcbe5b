//! A bounded cache of executable digests for the Unix attestor (SPEC §2), so
//! that attesting the same binary again costs a `stat` instead of a hash.
//!
//! The key is what the kernel says about the file: device, inode, size and
//! both timestamps with nanoseconds. Rewriting a file changes its ctime, and
//! ctime cannot be set back by the file's owner (only mtime can, with
//! `utimes`), so a binary changed in place never hits an old entry. Replacing
//! the file gives a new inode, which misses as well.

use std::collections::{HashMap, VecDeque};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// Identity of one version of an executable file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ExeKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl ExeKey {
    /// The key of the file `meta` describes.
    pub(crate) fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The file's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

/// Maps [`ExeKey`] to lowercase hex SHA-256, holding at most `capacity`
/// entries and evicting the oldest insert first.
#[derive(Debug)]
pub(crate) struct DigestCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<ExeKey, String>,
    order: VecDeque<ExeKey>,
}

impl DigestCache {
    /// An empty cache; a capacity of 0 caches nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The digest recorded for `key`, if any.
    pub(crate) fn get(&self, key: &ExeKey) -> Option<String> {
        self.lock().map.get(key).cloned()
    }

    /// Records `digest` for `key`, evicting the oldest entries beyond capacity.
    pub(crate) fn insert(&self, key: ExeKey, digest: String) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.map.insert(key, digest).is_none() {
            inner.order.push_back(key);
        }
        while inner.map.len() > self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// How many digests are cached.
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    // The map and queue are each updated by single calls; at worst a panic
    // leaves the queue naming a key the map lacks, which eviction tolerates.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key(ino: u64) -> ExeKey {
        ExeKey {
            dev: 1,
            ino,
            size: 10,
            mtime: (0, 0),
            ctime: (0, 0),
        }
    }

    #[test]
    fn evicts_oldest_beyond_capacity() {
        let cache = DigestCache::new(2);
        cache.insert(key(1), "a".into());
        cache.insert(key(2), "b".into());
        cache.insert(key(1), "a2".into());
        cache.insert(key(3), "c".into());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(1)), None);
        assert_eq!(cache.get(&key(2)), Some("b".into()));
        assert_eq!(cache.get(&key(3)), Some("c".into()));
    }

    #[test]
    fn any_changed_field_misses() {
        let cache = DigestCache::new(4);
        cache.insert(key(1), "a".into());
        let mut changed = key(1);
        changed.ctime = (0, 1);
        assert_eq!(cache.get(&changed), None);
        changed = key(1);
        changed.size = 11;
        assert_eq!(cache.get(&changed), None);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = DigestCache::new(0);
        cache.insert(key(1), "a".into());
        assert_eq!(cache.len(), 0);
    }
}
