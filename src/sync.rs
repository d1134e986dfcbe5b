//! Taking std locks, one way everywhere: a poisoned lock is recovered and
//! used, never skipped and never turned into an error.
//!
//! A std lock is poisoned when a thread panicked while holding it. Taking the
//! guard anyway is safe in sigil because of two rules that every critical
//! section keeps:
//!
//! - **No panics on production paths.** Clippy denies `unwrap`, `expect`,
//!   `panic` and slice indexing outside tests, so a poisoned lock means a bug
//!   somewhere, not an expected state.
//! - **Whole values only.** A critical section replaces or inserts whole
//!   values (an `Arc`, an `Option`, one map entry, a counter) and never
//!   leaves a change made of several steps half done. Whatever a panicking
//!   holder left behind is therefore a consistent state, earlier or later.
//!
//! The other two ways are worse. Skipping the write and reporting success
//! loses it silently (a ban that never reaches the in-memory cache, a new
//! TLS identity that is never used). Failing every later caller turns one
//! bug into an outage of everything behind that lock.
//!
//! Async locks (tokio's) do not poison; this module is for std locks, which
//! are never held across an `.await`. A new critical section must keep the
//! "whole values" rule, or take a different lock type and say why.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Read access to `l`, recovering it if poisoned.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write access to `l`, recovering it if poisoned.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// The guard of `m`, recovering it if poisoned.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;
    use std::sync::Arc;

    /// Poisons `f`'s lock by panicking on another thread while holding it.
    fn poison(f: impl FnOnce() + Send + 'static) {
        let joined = std::thread::spawn(f).join();
        assert!(joined.is_err(), "the holder panicked");
    }

    #[test]
    fn a_poisoned_rwlock_still_reads_and_takes_writes() {
        let l = Arc::new(RwLock::new(1));
        let held = l.clone();
        poison(move || {
            let mut g = held.write().unwrap();
            *g = 2;
            panic!("holder fails after a whole-value write");
        });
        assert!(l.is_poisoned());
        assert_eq!(*read(&l), 2);
        *write(&l) = 3;
        assert_eq!(*read(&l), 3);
    }

    #[test]
    fn a_poisoned_mutex_still_takes_writes() {
        let m = Arc::new(Mutex::new(vec![1]));
        let held = m.clone();
        poison(move || {
            let _g = held.lock().unwrap();
            panic!("holder fails");
        });
        assert!(m.is_poisoned());
        lock(&m).push(2);
        assert_eq!(*lock(&m), [1, 2]);
    }
}
