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
use std::fs::File;
use std::hash::Hash;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{AtFlags, CWD, Statx, StatxFlags, StatxTimestamp, statx};

/// Identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    dev: (u32, u32),
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

/// Whether a `stat` may ask the file's filesystem for fresh attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// As `stat(2)` does: a network or FUSE filesystem may be asked, which
    /// can take as long as its server or daemon likes.
    Synced,
    /// `AT_STATX_DONT_SYNC`: what the kernel has in memory, without asking
    /// the filesystem, so the call never waits on a remote server or on a
    /// FUSE daemon that a local user controls. Device and inode never
    /// change for a file; size and times are as fresh as the kernel knows.
    Cached,
}

impl FileKey {
    /// The key of `path`, following symlinks (and `/proc/<pid>/exe`).
    pub(crate) fn of_path(path: &Path, fresh: Freshness) -> io::Result<Self> {
        let flags = match fresh {
            Freshness::Synced => AtFlags::empty(),
            Freshness::Cached => AtFlags::STATX_DONT_SYNC,
        };
        Ok(Self::of(&statx(CWD, path, flags, StatxFlags::BASIC_STATS)?))
    }

    /// The key of `name` in the directory `dir`, following symlinks (and
    /// magic links such as `exe` in a `/proc/<pid>` directory).
    pub(crate) fn of_at(dir: &impl AsFd, name: &str, fresh: Freshness) -> io::Result<Self> {
        let flags = match fresh {
            Freshness::Synced => AtFlags::empty(),
            Freshness::Cached => AtFlags::STATX_DONT_SYNC,
        };
        Ok(Self::of(&statx(dir, name, flags, StatxFlags::BASIC_STATS)?))
    }

    /// The key of the open `file`.
    pub(crate) fn of_file(file: &File) -> io::Result<Self> {
        Ok(Self::of(&statx(
            file,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::BASIC_STATS,
        )?))
    }

    fn of(st: &Statx) -> Self {
        let time = |t: &StatxTimestamp| (t.tv_sec, t.tv_nsec);
        Self {
            dev: (st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime: time(&st.stx_mtime),
            ctime: time(&st.stx_ctime),
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

    // The map and queue are each updated by single calls; at worst a panic
    // leaves the queue naming a key the map lacks, which eviction tolerates.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        crate::sync::lock(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey {
            dev: (8, 1),
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
    fn a_file_has_one_key_however_it_is_stated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"content").unwrap();
        let synced = FileKey::of_path(&path, Freshness::Synced).unwrap();
        assert_eq!(FileKey::of_path(&path, Freshness::Cached).unwrap(), synced);
        assert_eq!(
            FileKey::of_file(&File::open(&path).unwrap()).unwrap(),
            synced
        );
        assert_eq!(synced.size(), 7);
        std::fs::write(&path, b"other!!").unwrap();
        assert_ne!(FileKey::of_path(&path, Freshness::Cached).unwrap(), synced);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = DigestCache::new(0);
        cache.insert(key(1), "a".into());
        assert_eq!(cache.len(), 0);
    }
}
