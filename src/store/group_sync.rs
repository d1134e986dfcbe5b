//! Group commit for the embedded store: writers that need their write on
//! disk at the same moment share one flush and one `fdatasync` instead of
//! queueing a flush each.
//!
//! A writer's write is covered only by a sync that *starts* after the write
//! returned: one already running may have read the log before it. So a
//! writer asks for the generation after the one that has started, and
//! either runs it (when no sync is running) or waits for it. While one sync
//! runs, every writer that arrives waits for the next; the first of them to
//! wake runs it for all. At most one sync runs at a time.
//!
//! A failed sync is final: every later sync fails too, until the store is
//! reopened. After a failed `fdatasync`, Linux may mark the unwritten pages
//! clean, so a later sync that "succeeds" proves nothing about the earlier
//! writes (the PostgreSQL "fsyncgate" lesson). Refusing further writes is
//! the only answer that never acknowledges a write that is not on disk.

use super::StoreError;
use crate::sync::lock;
use std::sync::{Condvar, Mutex};

/// One store's sync, shared by its writers.
#[derive(Debug, Default)]
pub(super) struct GroupSync {
    state: Mutex<State>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Generations started so far.
    started: u64,
    /// The last generation that finished (all before it finished too).
    finished: u64,
    /// Whether a sync is running now.
    running: bool,
    /// What the failed sync reported, once one has failed.
    failed: Option<String>,
    /// Writers waiting for a sync to finish.
    waiting: usize,
}

impl State {
    fn refused(failed: &str) -> StoreError {
        StoreError::Io(std::io::Error::other(format!(
            "an earlier sync of the store failed ({failed}); no write is acknowledged until the server reopens the store"
        )))
    }
}

/// Marks the running sync finished even if it unwinds, so waiters never
/// hang on a sync that will not finish.
struct Finish<'a> {
    sync: &'a GroupSync,
    generation: u64,
    failed: Option<String>,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.sync.state);
        s.running = false;
        s.finished = self.generation;
        if s.failed.is_none() {
            s.failed = self.failed.take();
        }
        drop(s);
        self.sync.finished.notify_all();
    }
}

impl GroupSync {
    /// Returns once a run of `sync` that started after this call has
    /// succeeded: run here, or by another writer for the whole group.
    /// Blocks.
    pub(super) fn sync(
        &self,
        sync: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut s = lock(&self.state);
        let needed = s.started + 1;
        loop {
            if let Some(failed) = &s.failed {
                return Err(State::refused(failed));
            }
            if s.finished >= needed {
                return Ok(());
            }
            if !s.running {
                s.running = true;
                s.started += 1;
                let mut finish = Finish {
                    sync: self,
                    generation: s.started,
                    // Until `sync` returns: a panic inside it is a failure.
                    failed: Some("the sync panicked".into()),
                };
                drop(s);
                let outcome = sync();
                finish.failed = outcome.as_ref().err().map(ToString::to_string);
                drop(finish);
                return outcome;
            }
            s.waiting += 1;
            s = self
                .finished
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::channel;

    #[test]
    fn a_lone_writer_runs_its_own_sync() {
        let g = GroupSync::default();
        let runs = AtomicUsize::new(0);
        for _ in 0..3 {
            g.sync(|| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// Writers arriving while a sync runs are all covered by the one next
    /// sync, which starts after each of them arrived.
    #[test]
    fn writers_arriving_during_a_sync_share_the_next_one() {
        let g = Arc::new(GroupSync::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (entered, wait_entered) = channel();
        let (release, held) = channel::<()>();
        let first = {
            let (g, runs) = (g.clone(), runs.clone());
            std::thread::spawn(move || {
                g.sync(|| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    entered.send(()).unwrap();
                    held.recv().unwrap();
                    Ok(())
                })
            })
        };
        wait_entered.recv().unwrap();
        let later: Vec<_> = (0..8)
            .map(|_| {
                let (g, runs) = (g.clone(), runs.clone());
                std::thread::spawn(move || {
                    g.sync(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                })
            })
            .collect();
        // Every later writer is waiting before the first sync ends.
        while lock(&g.state).waiting < 8 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for t in later {
            t.join().unwrap().unwrap();
        }
        // The first sync could not cover them; one more covered them all.
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_sync_fails_every_later_one() {
        let g = GroupSync::default();
        let e = g
            .sync(|| Err(StoreError::Io(std::io::Error::other("EIO"))))
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Io(ref io) if io.to_string() == "EIO"),
            "{e}"
        );
        let ran = AtomicUsize::new(0);
        let e = g
            .sync(|| {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(
            e.to_string(),
            "store I/O failed: an earlier sync of the store failed (store I/O failed: EIO); no write is acknowledged until the server reopens the store"
        );
    }

    #[test]
    fn a_panicking_sync_releases_its_waiters_with_an_error() {
        let g = Arc::new(GroupSync::default());
        let g2 = g.clone();
        let panicked = std::thread::spawn(move || g2.sync(|| panic!("boom"))).join();
        assert!(panicked.is_err());
        let e = g.sync(|| Ok(())).unwrap_err();
        assert!(e.to_string().contains("the sync panicked"), "{e}");
    }
}
