//! Bounded caches for the Unix attestor (SPEC §2): executable digests, so
//! that attesting the same binary again costs a `stat` instead of a hash,
//! and whole attestation results (see `Attestor::attest` for what a hit
//! must still check).
//!
//! Files are known by what the kernel says about them ([`FileKey`]):
//! device, inode, size and both timestamps with nanoseconds. Rewriting a
//! file changes its ctime, and ctime cannot be set back by the file's owner
//! (only mtime can, with `utimes`), so a binary changed in place never hits
//! an old entry. Replacing the file gives a new inode, which misses as well.

use std::collections::{HashMap, VecDeque};
use std::fs::Metadata;
use std::hash::Hash;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, PoisonError};

/// Identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
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

/// Maps an executable's [`FileKey`] to its lowercase hex SHA-256.
pub(crate) type DigestCache = Bounded<FileKey, String>;

/// A map holding at most `capacity` entries, evicting the oldest insert
/// first. Values are cloned out, so large ones should be `Arc`s.
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V: Clone> Bounded<K, V> {
    /// An empty cache; a capacity of 0 caches nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The value recorded for `key`, if any.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.lock().map.get(key).cloned()
    }

    /// Records `value` for `key`, evicting the oldest entries beyond capacity.
    pub(crate) fn insert(&self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.map.insert(key.clone(), value).is_none() {
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

    /// How many entries are cached.
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    // A panic while the lock was held cannot leave a half-written entry: the
    // map and queue are each updated by single calls, and at worst the queue
    // names a key the map lacks, which eviction tolerates. So a poisoned
    // lock is still safe to use.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey {
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
