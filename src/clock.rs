//! The one module that reads the wall clock. Everything else receives `now`
//! as a parameter so that tests control time (STYLE.md §6).

use std::time::SystemTime;

/// The current wall-clock time.
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the Unix epoch for `t`, saturating at zero for times before it.
pub fn unix_seconds(t: SystemTime) -> u64 {
    crate::unix_time::seconds(t)
}
