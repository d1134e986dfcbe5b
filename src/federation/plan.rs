//! When to fetch each foreign trust domain's bundle (SPIFFE Federation §4, §6.2; issue 8
//! §4): pure functions of `now` and what is known about each relationship (STYLE §7). The
//! thin loop that applies them is `super::refresh`.
//!
//! After a successful fetch the next one comes one interval later: the bundle's
//! `spiffe_refresh_hint` (five minutes when it sets none, as Federation §4 recommends),
//! bounded between [`MIN_INTERVAL`] and [`MAX_INTERVAL`]. A hint of one second would have
//! us hammer the foreign endpoint; a hint of a year would leave a rotated CA unseen.
//!
//! After a failure the standard asks for a retry "at the next polling interval, rather
//! than immediately or aggressively" (§6.2). Retries come after one minute, then two,
//! four, … and never later than the interval of the last good bundle: an endpoint that
//! comes back is seen within one interval, one that stays down is asked at most once a
//! minute. The agent's backoff (`agent::rotation::backoff`) starts at one second, which
//! suits a server of our own but not somebody else's endpoint, so it is not reused here.

use std::time::{Duration, SystemTime};

use crate::id::TrustDomain;

/// Shortest time between two fetches of one bundle endpoint, whatever its hint says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Longest time between two fetches of one bundle endpoint, whatever its hint says.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The interval when a bundle carries no `spiffe_refresh_hint` (or zero): the five
/// minutes Federation §4 recommends.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// The time between fetches for a bundle whose `spiffe_refresh_hint` is `hint_secs`.
pub fn interval(hint_secs: u64) -> Duration {
    if hint_secs == 0 {
        return DEFAULT_INTERVAL;
    }
    Duration::from_secs(hint_secs).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// The `spiffe_refresh_hint` this server's own bundle endpoint advertises, for a
/// rotation policy that publishes a new key `publish_window` before it signs: a third
/// of the window, between [`MIN_INTERVAL`] and [`DEFAULT_INTERVAL`]. A peer that polls
/// at the hint then fetches a new CA about three times within its window, and has time
/// to push it to its own workloads, instead of fetching it at best as it starts to sign.
pub fn advertised_hint_secs(publish_window: Duration) -> u64 {
    (publish_window / 3)
        .clamp(MIN_INTERVAL, DEFAULT_INTERVAL)
        .as_secs()
}

/// `t + d`, or `t` itself in the (impossible in practice) case that it overflows.
fn after(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

/// The next fetch after one at `now` that returned a bundle with `hint_secs`.
pub fn after_success(now: SystemTime, hint_secs: u64) -> SystemTime {
    after(now, interval(hint_secs))
}

/// The next fetch after the `failures`-th failure in a row at `now`; `last_hint` is the
/// refresh hint of the bundle in use, if there is one (it caps the wait).
pub fn after_failure(now: SystemTime, failures: u32, last_hint: Option<u64>) -> SystemTime {
    let cap = last_hint.map_or(DEFAULT_INTERVAL, interval);
    let doublings = failures.saturating_sub(1).min(31);
    let wait = MIN_INTERVAL.saturating_mul(1u32 << doublings).min(cap);
    after(now, wait.max(MIN_INTERVAL))
}

/// What the refresh loop should do at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Trust domains whose bundle is due to be fetched now, in input order.
    pub fetch: Vec<TrustDomain>,
    /// The earliest later time at which another fetch falls due.
    pub next_wake: Option<SystemTime>,
}

/// The plan at `now` for relationships whose next fetches are `next_attempts`.
pub fn plan(now: SystemTime, next_attempts: &[(TrustDomain, SystemTime)]) -> Plan {
    let mut out = Plan::default();
    for (td, at) in next_attempts {
        if *at <= now {
            out.fetch.push(td.clone());
        } else {
            out.next_wake = Some(out.next_wake.map_or(*at, |w| w.min(*at)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn td(name: &str) -> TrustDomain {
        TrustDomain::parse(name).unwrap()
    }

    #[test]
    fn the_advertised_hint_is_a_third_of_the_publish_window_within_bounds() {
        let m = |n: u64| Duration::from_secs(n * 60);
        let table = [
            (m(5), 100), // the default window: about three fetches in it
            (m(9), 180),
            (m(15), 300), // never above the five minutes of Federation §4
            (m(60), 300),
            (m(1), 60), // never below what fetchers accept
            (Duration::ZERO, 60),
        ];
        for (window, want) in table {
            assert_eq!(advertised_hint_secs(window), want, "{window:?}");
        }
    }

    #[test]
    fn the_hint_is_bounded_between_a_minute_and_a_day() {
        let rows = [
            (0, 300),
            (1, 60),
            (59, 60),
            (60, 60),
            (300, 300),
            (3600, 3600),
            (86_400, 86_400),
            (86_401, 86_400),
            (u64::MAX, 86_400),
        ];
        for (hint, want) in rows {
            assert_eq!(interval(hint), Duration::from_secs(want), "hint {hint}");
            assert_eq!(after_success(t(0), hint), t(want), "hint {hint}");
        }
    }

    #[test]
    fn failures_back_off_from_a_minute_to_the_interval() {
        // (failures, hint of the bundle in use, wait in seconds)
        let rows = [
            (1, None, 60),
            (2, None, 120),
            (3, None, 240),
            (4, None, 300),
            (9, None, 300),
            (1, Some(3600), 60),
            (4, Some(3600), 480),
            (6, Some(3600), 1920),
            (7, Some(3600), 3600),
            (u32::MAX, Some(3600), 3600),
            (3, Some(10), 60),
            (0, Some(10), 60),
            (40, Some(86_400 * 7), 86_400),
        ];
        for (failures, hint, want) in rows {
            assert_eq!(
                after_failure(t(0), failures, hint),
                t(want),
                "{failures} failures, hint {hint:?}"
            );
        }
    }

    #[test]
    fn plan_fetches_what_is_due_and_wakes_for_the_next() {
        struct Row {
            name: &'static str,
            now: u64,
            next: Vec<(&'static str, u64)>,
            fetch: Vec<&'static str>,
            wake: Option<u64>,
        }
        let rows = [
            Row {
                name: "nothing configured",
                now: 0,
                next: vec![],
                fetch: vec![],
                wake: None,
            },
            Row {
                name: "nothing due",
                now: 10,
                next: vec![("a.org", 50), ("b.org", 30)],
                fetch: vec![],
                wake: Some(30),
            },
            Row {
                name: "due exactly now, next from the other",
                now: 30,
                next: vec![("a.org", 50), ("b.org", 30)],
                fetch: vec!["b.org"],
                wake: Some(50),
            },
            Row {
                name: "all overdue",
                now: 100,
                next: vec![("a.org", 50), ("b.org", 30)],
                fetch: vec!["a.org", "b.org"],
                wake: None,
            },
        ];
        for row in rows {
            let next: Vec<(TrustDomain, SystemTime)> =
                row.next.iter().map(|(n, s)| (td(n), t(*s))).collect();
            let got = plan(t(row.now), &next);
            let want: Vec<TrustDomain> = row.fetch.iter().map(|n| td(n)).collect();
            assert_eq!(got.fetch, want, "{}", row.name);
            assert_eq!(got.next_wake, row.wake.map(t), "{}", row.name);
        }
    }
}
