//! The rotation plan, one table per rule, on key records alone (no keys are generated).
//! Times are seconds after `t0` under [`short_policy`]: keys live 60 s, successors are
//! prepared at 30 s left and activated at 10 s left, the publish window is 5 s (10 s for
//! JWT keys: one JWT-SVID lifetime), the taint grace 8 s.

use super::*;

use KeyKind::{Jwt, X509Ca};
use KeyState::{Active, Old, Prepared};

/// A key of `kind` created (and published) at `created`, expiring at `not_after`.
fn rec(kind: KeyKind, id: &str, state: KeyState, created: u64, not_after: u64) -> KeyRecord {
    KeyRecord {
        kind,
        id: id.into(),
        state,
        created_at: s(created),
        published_at: s(created),
        activated_at: (state != Prepared).then(|| s(created)),
        forced_activation: false,
        retired_at: (state == Old).then(|| s(created)),
        not_after: s(not_after),
        tainted_at: None,
        activate_early: false,
    }
}

fn tainted(mut r: KeyRecord, at: u64) -> KeyRecord {
    r.tainted_at = Some(s(at));
    r
}

fn early(mut r: KeyRecord) -> KeyRecord {
    r.activate_early = true;
    r
}

/// A key of the other kind that needs nothing for a long time, so each table speaks of
/// one kind only; its deadlines (from [`QUIET_UNTIL`] on) are left out of the checks.
fn quiet(kind: KeyKind) -> KeyRecord {
    let other = if kind == X509Ca { Jwt } else { X509Ca };
    rec(other, "quiet", Active, 0, 100_000)
}

/// Before the quiet key's first deadline.
const QUIET_UNTIL: u64 = 90_000;

fn prepare(kind: KeyKind) -> Action {
    Action::Prepare { kind }
}

fn activate(kind: KeyKind, id: &str, forced: bool) -> Action {
    Action::Activate {
        kind,
        id: id.into(),
        forced,
    }
}

fn drop_key(kind: KeyKind, id: &str) -> Action {
    Action::Drop {
        kind,
        id: id.into(),
    }
}

/// One row: at `now`, `keys` (plus a quiet key of the other kind) plan `actions` and
/// wake next at `deadline`.
struct Row {
    name: &'static str,
    now: u64,
    keys: Vec<KeyRecord>,
    actions: Vec<Action>,
    deadline: Option<u64>,
}

fn check(kind: KeyKind, rows: Vec<Row>) {
    for row in rows {
        let mut keys = row.keys.clone();
        keys.push(quiet(kind));
        let got = plan(s(row.now), &keys, &short_policy());
        assert_eq!(got.actions, row.actions, "{}: actions", row.name);
        let deadline = got.next_deadline.filter(|d| *d < s(QUIET_UNTIL));
        assert_eq!(deadline, row.deadline.map(s), "{}: deadline", row.name);
    }
}

#[test]
fn prepare_at_half_life() {
    for kind in KeyKind::ALL {
        let a = || vec![rec(kind, "a", Active, 0, 60)];
        check(
            kind,
            vec![
                Row {
                    name: "before half life: wait for it",
                    now: 29,
                    keys: a(),
                    actions: vec![],
                    deadline: Some(30),
                },
                Row {
                    name: "at half life: prepare",
                    now: 30,
                    keys: a(),
                    actions: vec![prepare(kind)],
                    deadline: Some(60),
                },
                Row {
                    name: "late (a server that was down): prepare at once",
                    now: 45,
                    keys: a(),
                    actions: vec![prepare(kind)],
                    deadline: Some(60),
                },
            ],
        );
    }
}

#[test]
fn activate_at_a_sixth_remaining() {
    let keys = || {
        vec![
            rec(X509Ca, "a", Active, 0, 60),
            rec(X509Ca, "b", Prepared, 30, 90),
        ]
    };
    check(
        X509Ca,
        vec![
            Row {
                name: "published long enough, but more than a sixth left",
                now: 49,
                keys: keys(),
                actions: vec![],
                deadline: Some(50),
            },
            Row {
                name: "a sixth left: activate",
                now: 50,
                keys: keys(),
                actions: vec![activate(X509Ca, "b", false)],
                deadline: Some(60),
            },
        ],
    );
}

#[test]
fn activation_waits_for_the_publish_window() {
    // Prepared late, 2 s before the activation point: it signs only 5 s after it was
    // published, so every agent and open stream has it.
    let keys = || {
        vec![
            rec(X509Ca, "a", Active, 0, 60),
            rec(X509Ca, "b", Prepared, 48, 108),
        ]
    };
    check(
        X509Ca,
        vec![
            Row {
                name: "activation point passed, window open",
                now: 50,
                keys: keys(),
                actions: vec![],
                deadline: Some(53),
            },
            Row {
                name: "window closed: activate",
                now: 53,
                keys: keys(),
                actions: vec![activate(X509Ca, "b", false)],
                deadline: Some(60),
            },
        ],
    );
}

#[test]
fn old_key_kept_until_its_last_certificate_expires() {
    let keys = || {
        vec![
            rec(X509Ca, "a", Old, 0, 60),
            rec(X509Ca, "b", Active, 40, 100),
        ]
    };
    check(
        X509Ca,
        vec![
            Row {
                name: "certificates it signed are valid through its NotAfter second",
                now: 60,
                keys: keys(),
                actions: vec![],
                deadline: Some(61),
            },
            Row {
                name: "everything it signed has expired: drop",
                now: 61,
                keys: keys(),
                actions: vec![drop_key(X509Ca, "a")],
                deadline: Some(70),
            },
        ],
    );
}

#[test]
fn jwt_key_published_one_jwt_lifetime_before_signing() {
    // An operator asked for an early rotation 45 s in: the CA key waits the 5 s publish
    // window, the JWT key one JWT-SVID lifetime (10 s).
    for (kind, signs_at) in [(X509Ca, 50), (Jwt, 55)] {
        let keys = || {
            vec![
                rec(kind, "a", Active, 0, 100),
                early(rec(kind, "b", Prepared, 45, 105)),
            ]
        };
        check(
            kind,
            vec![
                Row {
                    name: "just before the wait ends",
                    now: signs_at - 1,
                    keys: keys(),
                    actions: vec![],
                    deadline: Some(signs_at),
                },
                Row {
                    name: "the wait has passed: activate",
                    now: signs_at,
                    keys: keys(),
                    actions: vec![activate(kind, "b", false)],
                    deadline: Some(100),
                },
            ],
        );
    }
}

#[test]
fn jwt_key_kept_until_its_last_token_expires() {
    let keys = || vec![rec(Jwt, "a", Old, 0, 60), rec(Jwt, "b", Active, 40, 100)];
    check(
        Jwt,
        vec![
            Row {
                name: "tokens it signed expire by its end of life",
                now: 60,
                keys: keys(),
                actions: vec![],
                deadline: Some(61),
            },
            Row {
                name: "after that: drop",
                now: 61,
                keys: keys(),
                actions: vec![drop_key(Jwt, "a")],
                deadline: Some(70),
            },
        ],
    );
}

#[test]
fn forced_activation_when_the_active_key_expired() {
    // A server down past its active key's life: a prepared key published long ago is
    // activated normally; one prepared just now is activated forced; with none, a new key.
    check(
        X509Ca,
        vec![
            Row {
                name: "prepared key published long enough",
                now: 60,
                keys: vec![
                    rec(X509Ca, "a", Active, 0, 60),
                    rec(X509Ca, "b", Prepared, 30, 90),
                ],
                actions: vec![activate(X509Ca, "b", false)],
                deadline: Some(90),
            },
            Row {
                name: "prepared key published too recently",
                now: 60,
                keys: vec![
                    rec(X509Ca, "a", Active, 0, 60),
                    rec(X509Ca, "b", Prepared, 58, 118),
                ],
                actions: vec![activate(X509Ca, "b", true)],
                deadline: Some(118),
            },
            Row {
                name: "no prepared key",
                now: 75,
                keys: vec![rec(X509Ca, "a", Active, 0, 60)],
                actions: vec![Action::ActivateNew { kind: X509Ca }],
                deadline: None,
            },
        ],
    );
}

#[test]
fn taint_of_an_active_key() {
    // A tainted active key signs nothing: a fresh key replaces it at once, never the
    // prepared key, which was exposed with it.
    for kind in KeyKind::ALL {
        check(
            kind,
            vec![
                Row {
                    name: "no prepared key",
                    now: 20,
                    keys: vec![tainted(rec(kind, "a", Active, 0, 60), 20)],
                    actions: vec![Action::ActivateNew { kind }],
                    deadline: None,
                },
                Row {
                    name: "a prepared key is not used",
                    now: 40,
                    keys: vec![
                        tainted(rec(kind, "a", Active, 0, 60), 40),
                        rec(kind, "b", Prepared, 30, 90),
                    ],
                    actions: vec![Action::ActivateNew { kind }],
                    deadline: Some(90),
                },
            ],
        );
    }
}

#[test]
fn taint_of_an_old_key() {
    let keys = |tainted_at| {
        vec![
            tainted(rec(X509Ca, "a", Old, 0, 60), tainted_at),
            rec(X509Ca, "b", Active, 30, 90),
        ]
    };
    check(
        X509Ca,
        vec![
            Row {
                name: "within the grace agents re-issue; it stays",
                now: 47,
                keys: keys(40),
                actions: vec![],
                deadline: Some(48),
            },
            Row {
                name: "grace over: it leaves before its certificates expire",
                now: 48,
                keys: keys(40),
                actions: vec![drop_key(X509Ca, "a")],
                deadline: Some(60),
            },
            Row {
                name: "expiry before the grace ends: it leaves at expiry",
                now: 61,
                keys: keys(58),
                actions: vec![drop_key(X509Ca, "a"), prepare(X509Ca)],
                deadline: Some(90),
            },
        ],
    );
}

#[test]
fn taint_of_a_prepared_key() {
    // It never signed: it leaves at once, and a clean successor is prepared.
    check(
        Jwt,
        vec![Row {
            name: "dropped and replaced",
            now: 35,
            keys: vec![
                rec(Jwt, "a", Active, 0, 60),
                tainted(rec(Jwt, "b", Prepared, 30, 90), 35),
            ],
            actions: vec![drop_key(Jwt, "b"), prepare(Jwt)],
            deadline: Some(60),
        }],
    );
}

#[test]
fn steady_state_wakes_at_the_earliest_deadline() {
    // Old, active and prepared at once: the plan wakes for the old key's drop first.
    let keys = vec![
        rec(X509Ca, "a", Old, 0, 60),
        rec(X509Ca, "b", Active, 30, 90),
        rec(X509Ca, "c", Prepared, 60, 120),
        quiet(X509Ca),
    ];
    let got = plan(s(60), &keys, &short_policy());
    assert_eq!(got.actions, vec![]);
    // Drop of `a` at 61, activation of `c` at 80, expiry of `b` at 90, the quiet key's
    // successor at 99_970.
    assert_eq!(got.next_deadline, Some(s(61)));
    let got = plan(s(61), &keys, &short_policy());
    assert_eq!(got.actions, vec![drop_key(X509Ca, "a")]);
    assert_eq!(got.next_deadline, Some(s(80)));
}
