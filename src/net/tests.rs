#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::fds::{RESERVED_FDS, shares};
use super::limits::{WARN_INTERVAL, WarnGate, decide};
use super::*;
use std::time::Duration;
use tokio::time::Instant;

fn small() -> Limits {
    Limits {
        max_connections: 4,
        max_per_peer: Some(2),
        operator_reserve: 1,
        max_handshakes: 1,
        ..Limits::tcp()
    }
}

#[test]
fn decide_names_the_cap_that_refuses() {
    let l = small();
    // (open, of this peer, operator) → outcome
    let table = [
        (0, 0, false, Ok(())),
        (2, 1, false, Ok(())),
        (2, 2, false, Err(Refused::PeerFull { max: 2 })),
        (
            3,
            0,
            false,
            Err(Refused::ReservedForOperators { reserve: 1 }),
        ),
        (3, 0, true, Ok(())),
        (4, 0, true, Err(Refused::ListenerFull { max: 4 })),
        (4, 0, false, Err(Refused::ListenerFull { max: 4 })),
        (3, 2, true, Err(Refused::PeerFull { max: 2 })),
    ];
    for (open, of_peer, operator, want) in table {
        assert_eq!(
            decide(&l, open, of_peer, operator),
            want,
            "open {open}, peer {of_peer}, operator {operator}"
        );
    }
    let tcp = Limits::tcp();
    assert_eq!(decide(&tcp, 10, 10_000, false), Ok(()), "no per-peer cap");
}

#[tokio::test]
async fn admissions_count_until_dropped_and_peers_are_separate() {
    let limiter = Limiter::with_operators("test", small(), |p| p == Peer::Uid(0));
    let a1 = limiter.admit(Peer::Uid(7)).unwrap();
    let _a2 = limiter.admit(Peer::Uid(7)).unwrap();
    assert_eq!(
        limiter.admit(Peer::Uid(7)).unwrap_err(),
        Refused::PeerFull { max: 2 }
    );
    let _b = limiter.admit(Peer::Uid(8)).unwrap();
    assert_eq!(
        limiter.admit(Peer::Uid(9)).unwrap_err(),
        Refused::ReservedForOperators { reserve: 1 }
    );
    let root = limiter.admit(Peer::Uid(0)).unwrap();
    assert_eq!(
        limiter.admit(Peer::Uid(0)).unwrap_err(),
        Refused::ListenerFull { max: 4 }
    );
    assert_eq!(limiter.open(), 4);
    drop(a1);
    drop(root);
    assert_eq!(limiter.open(), 2);
    limiter.admit(Peer::Uid(7)).unwrap();
    assert_eq!(limiter.refusals(Cap::Peer), 1);
    assert_eq!(limiter.refusals(Cap::Reserve), 1);
    assert_eq!(limiter.refusals(Cap::Listener), 1);
    assert_eq!(limiter.refusals(Cap::Handshakes), 0);
}

#[tokio::test]
async fn handshake_slots_are_capped_and_given_back() {
    let limiter = Limiter::new("test", small());
    let peer = Peer::Addr([127, 0, 0, 1].into());
    let slot = limiter.begin_handshake(peer).unwrap();
    assert_eq!(
        limiter.begin_handshake(peer).unwrap_err(),
        Refused::HandshakesBusy { max: 1 }
    );
    drop(slot);
    let _slot = limiter.begin_handshake(peer).unwrap();
    assert_eq!(limiter.refusals(Cap::Handshakes), 1);
}

#[test]
fn warnings_are_limited_to_one_per_interval_and_count_the_rest() {
    let mut gate = WarnGate::default();
    let t0 = Instant::now();
    assert_eq!(gate.refuse(t0), Some(0), "the first refusal is reported");
    assert_eq!(gate.refuse(t0 + Duration::from_secs(1)), None);
    assert_eq!(gate.refuse(t0 + WARN_INTERVAL / 2), None);
    assert_eq!(
        gate.refuse(t0 + WARN_INTERVAL),
        Some(2),
        "the next report counts the suppressed ones"
    );
    assert_eq!(gate.refuse(t0 + WARN_INTERVAL), None);
    assert_eq!(gate.total, 5);
}

#[test]
fn shares_grant_first_claims_in_full_and_split_the_rest() {
    // (available, wants) → granted
    let table = [
        (1000, vec![(100, true), (400, false)], vec![100, 400]),
        (
            500,
            vec![(100, true), (400, false), (400, false)],
            vec![100, 200, 200],
        ),
        (
            500,
            vec![(100, true), (600, false), (200, false)],
            vec![100, 300, 100],
        ),
        (50, vec![(100, true), (400, false)], vec![50, 0]),
        (0, vec![(100, true), (400, false)], vec![0, 0]),
    ];
    for (available, wants, want) in table {
        assert_eq!(shares(available, &wants), want, "{available} for {wants:?}");
    }
}

#[test]
fn fit_lowers_caps_in_proportion_and_keeps_admin_whole() {
    let mut admin = Limits::admin();
    let mut tcp = Limits::tcp();
    let mut workload = Limits::workload();
    // Room for the admin socket and about half of the rest.
    let nofile = RESERVED_FDS + 256 + (8192 + 8192 * fds::WORKLOAD_FDS_PER_CONN) / 2;
    fds::fit_listeners(
        nofile,
        Some(&mut admin),
        Some(&mut tcp),
        Some(&mut workload),
    );
    assert_eq!(admin, Limits::admin());
    assert_eq!(tcp.max_connections, 4096);
    assert_eq!(tcp.max_handshakes, 128, "still within the total");
    assert_eq!(workload.max_connections, 4096);
    assert_eq!(workload.max_per_peer, Some(512));
    let used = 256
        + tcp.max_connections as u64
        + fds::WORKLOAD_FDS_PER_CONN * workload.max_connections as u64;
    assert!(used + RESERVED_FDS <= nofile, "{used} over {nofile}");
}

#[test]
fn fit_leaves_caps_alone_when_they_fit_and_never_reaches_zero() {
    fn claim(limits: &mut Limits) -> fds::Claim<'_> {
        fds::Claim {
            listener: "admin",
            limits,
            fds_per_conn: 1,
            first: true,
        }
    }
    let mut admin = Limits::admin();
    fds::fit(u64::MAX, &mut [claim(&mut admin)]);
    assert_eq!(admin, Limits::admin());
    fds::fit(RESERVED_FDS + 20, &mut [claim(&mut admin)]);
    assert_eq!(admin.max_connections, 20);
    assert_eq!(admin.max_per_peer, Some(2));
    assert_eq!(admin.operator_reserve, 1);
    fds::fit(0, &mut [claim(&mut admin)]);
    assert_eq!(admin.max_connections, 1);
    assert_eq!(admin.operator_reserve, 0, "a reserve must leave room");
}
