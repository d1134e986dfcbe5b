//! The agent's SVID rotation plan (SPEC §2 "agent", §7 SPIRE defaults): when a
//! cached credential is renewed (½ of its lifetime ±10% jitter), when it is
//! dropped (its entry is gone or it expired), when the rotation task wakes up
//! next, and how long it backs off after failures.
//!
//! Pure functions of `now` and the cached state (STYLE §7): no clock reads, no
//! async, no I/O. The loop that applies a [`Plan`] lives in the cache.

use std::time::{Duration, SystemTime};

/// Largest jitter, as a share of the lifetime, either side of half-life.
pub const MAX_JITTER: f64 = 0.1;
/// Shortest sleep of the rotation task, so a burst of due items cannot spin it.
pub const MIN_SLEEP: Duration = Duration::from_secs(1);
/// Longest sleep of the rotation task (also the sleep when nothing is cached):
/// re-planning at least this often bounds the effect of wall-clock jumps.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// First retry delay after a failed renewal; doubled per consecutive failure
/// up to [`MAX_SLEEP`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// What the plan needs to know about one cached SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedState {
    /// The entry the SVID was issued for.
    pub entry_id: String,
    /// When it should be renewed.
    pub renew_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Whether its entry (at the revision it was issued for) is still assigned.
    pub entry_present: bool,
}

/// What the rotation task should do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Entry IDs whose SVIDs are due for renewal.
    pub renew: Vec<String>,
    /// Entry IDs whose SVIDs must be forgotten (entry gone, or expired).
    pub drop: Vec<String>,
    /// The earliest future renewal time, if any SVID is waiting for one.
    pub next_wake: Option<SystemTime>,
}

/// When a credential valid from `issued_at` to `expires_at` should be renewed:
/// at half its lifetime plus `jitter` × lifetime. `jitter` is clamped to
/// ±[`MAX_JITTER`]; a non-finite jitter counts as zero. A lifetime that is
/// empty or negative renews at `issued_at`.
pub fn renew_at(issued_at: SystemTime, expires_at: SystemTime, jitter: f64) -> SystemTime {
    let Ok(lifetime) = expires_at.duration_since(issued_at) else {
        return issued_at;
    };
    let jitter = if jitter.is_finite() {
        jitter.clamp(-MAX_JITTER, MAX_JITTER)
    } else {
        0.0
    };
    // Jitter spreads the renewals of SVIDs issued together (agent start, entry
    // push) so they do not all hit the server at the same instant.
    issued_at + lifetime.mul_f64(0.5 + jitter)
}

/// Maps 32 random bits uniformly onto [-[`MAX_JITTER`], +[`MAX_JITTER`]].
pub fn jitter_from_u32(random: u32) -> f64 {
    (f64::from(random) / f64::from(u32::MAX)) * 2.0 * MAX_JITTER - MAX_JITTER
}

/// Decides, at `now`, which cached SVIDs to renew and drop and when to wake.
///
/// An SVID whose entry is gone or that has expired is dropped (never served
/// again); one past its renewal time is renewed; the others contribute their
/// renewal time to `next_wake`. Output order follows input order.
pub fn plan(now: SystemTime, cached: &[CachedState]) -> Plan {
    let mut out = Plan::default();
    for state in cached {
        if !state.entry_present || now >= state.expires_at {
            out.drop.push(state.entry_id.clone());
        } else if now >= state.renew_at {
            out.renew.push(state.entry_id.clone());
        } else {
            out.next_wake = Some(match out.next_wake {
                Some(w) => w.min(state.renew_at),
                None => state.renew_at,
            });
        }
    }
    out
}

/// The retry delay after `failures` consecutive failed rounds: 1 s, 2 s, 4 s …
/// capped at [`MAX_SLEEP`]. Zero failures means no backoff.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_SLEEP)
}

/// How long the rotation task sleeps at `now`: until `next_wake` (or
/// [`MAX_SLEEP`] when nothing waits), shortened to the backoff after
/// failures, and kept within [`MIN_SLEEP`, `MAX_SLEEP`].
pub fn sleep_for(now: SystemTime, next_wake: Option<SystemTime>, failures: u32) -> Duration {
    let mut sleep = next_wake.map_or(MAX_SLEEP, |w| {
        w.duration_since(now).unwrap_or(Duration::ZERO)
    });
    if failures > 0 {
        sleep = sleep.min(backoff(failures));
    }
    sleep.clamp(MIN_SLEEP, MAX_SLEEP)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn state(id: &str, renew: u64, expires: u64, present: bool) -> CachedState {
        CachedState {
            entry_id: id.into(),
            renew_at: t(renew),
            expires_at: t(expires),
            entry_present: present,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn renew_at_is_half_life_plus_jitter() {
        let rows: &[(f64, u64)] = &[
            (0.0, 1800),
            (0.1, 2160),
            (-0.1, 1440),
            (0.5, 2160),  // clamped to +10%
            (-7.0, 1440), // clamped to -10%
            (f64::NAN, 1800),
        ];
        for (jitter, want) in rows {
            assert_eq!(
                renew_at(t(0), t(3600), *jitter),
                t(*want),
                "jitter {jitter}"
            );
        }
        assert_eq!(renew_at(t(10), t(5), 0.0), t(10), "negative lifetime");
    }

    #[test]
    fn jitter_covers_the_range() {
        assert!((jitter_from_u32(0) + MAX_JITTER).abs() < 1e-12);
        assert!((jitter_from_u32(u32::MAX) - MAX_JITTER).abs() < 1e-12);
        assert!(jitter_from_u32(u32::MAX / 2).abs() < 1e-6);
    }

    #[test]
    fn plan_table() {
        struct Row {
            name: &'static str,
            now: u64,
            cached: Vec<CachedState>,
            renew: Vec<String>,
            drop: Vec<String>,
            next_wake: Option<SystemTime>,
        }
        let rows = vec![
            Row {
                name: "empty",
                now: 0,
                cached: vec![],
                renew: vec![],
                drop: vec![],
                next_wake: None,
            },
            Row {
                name: "nothing due",
                now: 10,
                cached: vec![state("a", 50, 100, true), state("b", 30, 60, true)],
                renew: vec![],
                drop: vec![],
                next_wake: Some(t(30)),
            },
            Row {
                name: "one due, next wake from the other",
                now: 40,
                cached: vec![state("a", 50, 100, true), state("b", 30, 60, true)],
                renew: ids(&["b"]),
                drop: vec![],
                next_wake: Some(t(50)),
            },
            Row {
                name: "due exactly at renew_at",
                now: 50,
                cached: vec![state("a", 50, 100, true)],
                renew: ids(&["a"]),
                drop: vec![],
                next_wake: None,
            },
            Row {
                name: "expired and absent are dropped, not renewed",
                now: 100,
                cached: vec![
                    state("expired", 50, 100, true),
                    state("absent", 150, 200, false),
                    state("absent-due", 50, 200, false),
                    state("live", 120, 200, true),
                ],
                renew: vec![],
                drop: ids(&["expired", "absent", "absent-due"]),
                next_wake: Some(t(120)),
            },
        ];
        for row in rows {
            let got = plan(t(row.now), &row.cached);
            assert_eq!(got.renew, row.renew, "{}", row.name);
            assert_eq!(got.drop, row.drop, "{}", row.name);
            assert_eq!(got.next_wake, row.next_wake, "{}", row.name);
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let rows = [(0, 0), (1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)];
        for (failures, secs) in rows {
            assert_eq!(backoff(failures), Duration::from_secs(secs), "{failures}");
        }
    }

    #[test]
    fn sleep_table() {
        let s = Duration::from_secs;
        let rows = [
            (None, 0, s(60)),
            (Some(t(30)), 0, s(30)),
            (Some(t(1000)), 0, s(60)),
            (Some(t(0)), 0, s(1)),
            (Some(t(30)), 3, s(4)),
            (None, 1, s(1)),
            (Some(t(2)), 10, s(2)),
        ];
        for (wake, failures, want) in rows {
            assert_eq!(sleep_for(t(0), wake, failures), want, "{wake:?} {failures}");
        }
    }
}
