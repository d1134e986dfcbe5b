//! The one module that reads the wall clock. Everything else receives `now`
//! as a parameter, or a [`Clock`] to ask, so that tests control time
//! (STYLE.md §6). Clippy refuses `SystemTime::now`, `Instant::now` and
//! `thread::sleep` everywhere else (clippy.toml); async waits use
//! `tokio::time`, whose clock tests can pause.
//!
//! The server takes a [`Clock`] when it opens (`Server::open_with_clock`):
//! [`SystemClock`] in production, a [`ManualClock`] in tests that wait for
//! something to expire. What rustls checks during a TLS handshake (the
//! validity of certificates) still uses real time; the clock decides what
//! sigil itself decides: token and SVID lifetimes, audit times, and whether
//! a peer's certificate is still valid on a long-lived connection.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Where a component reads the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        now()
    }
}

/// A clock that moves only when told to: tests set or advance it instead of
/// sleeping.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Mutex::new(start))
    }

    /// A clock standing at the wall clock's time now. Certificates it dates
    /// are then valid for peers that check them against real time.
    pub fn at_wall_time() -> Self {
        Self::new(now())
    }

    /// Moves the clock to `t` (forward or back).
    pub fn set(&self, t: SystemTime) {
        *crate::sync::lock(&self.0) = t;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = crate::sync::lock(&self.0);
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *crate::sync::lock(&self.0)
    }
}

/// The current wall-clock time.
pub fn now() -> SystemTime {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that reads the wall clock"
    )]
    SystemTime::now()
}

/// A reading of the monotonic clock, for measuring how long ago something
/// was checked (never for deciding what sigil issues: that uses [`Clock`]).
pub fn monotonic() -> std::time::Instant {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that reads the monotonic clock"
    )]
    std::time::Instant::now()
}

/// CPU time used so far by every thread of this process, if the system
/// tells it.
pub fn process_cpu_time() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u32::try_from(t.tv_nsec()).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Blocks the calling thread for `d`. Only for the rare blocking paths that
/// must wait for another thread to let go of something (a file lock) or
/// that wait on purpose off the async workers (the audit log's syncer
/// gathering a busy machine's records into fewer syncs); async code waits
/// with `tokio::time`, and a worker thread must never sleep.
pub fn pause_thread(d: Duration) {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one sanctioned blocking wait; its callers are named in its doc"
    )]
    std::thread::sleep(d);
}

/// Seconds since the Unix epoch for `t`, saturating at zero for times before it.
pub fn unix_seconds(t: SystemTime) -> u64 {
    crate::unix_time::seconds(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        assert_eq!(c.now(), start);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), start + Duration::from_secs(5));
        c.set(start);
        assert_eq!(c.now(), start);
    }
}
