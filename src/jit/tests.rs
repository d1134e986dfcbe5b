//! The elevation rules and the expiry plan, on a controlled clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;

const T0: u64 = 1_700_000_000;
const ALICE: &str = "spiffe://example.org/agent/alice";
const BOB: &str = "spiffe://example.org/admin/bob";
const CAROL: &str = "spiffe://example.org/admin/carol";

fn role(approvals: u32) -> JitRole {
    JitRole {
        name: "prod-db-read".into(),
        grants: vec![Grant::parse("read:prod/db/*").unwrap()],
        max_duration: 3600,
        approvals,
    }
}

fn request(role: &JitRole, subject: Option<&str>) -> Request {
    Request::new(
        role,
        "r1".into(),
        ALICE,
        subject,
        600,
        "incident 42",
        T0,
        DEFAULT_PENDING_TTL,
    )
    .unwrap()
}

#[test]
fn one_approval_activates_for_the_requested_duration_from_then() {
    let role = role(1);
    let mut r = request(&role, None);
    assert_eq!(r.state, State::Pending);
    let got = r.approve(BOB, "ok", T0 + 100).unwrap();
    assert_eq!(
        got,
        Approved::Activated {
            expires_at: T0 + 700
        }
    );
    assert_eq!(r.state_at(T0 + 699), State::Active);
    assert_eq!(r.state_at(T0 + 700), State::Expired);
    assert_eq!(
        active_grants([&r], ALICE, T0 + 100),
        vec![("read:prod/db/*".to_owned(), "r1".to_owned())]
    );
    assert!(active_grants([&r], ALICE, T0 + 700).is_empty());
}

#[test]
fn two_approvals_need_two_distinct_approvers() {
    let role = role(2);
    let mut r = request(&role, None);
    assert_eq!(
        r.approve(BOB, "", T0 + 1).unwrap(),
        Approved::Counted { have: 1, need: 2 }
    );
    assert_eq!(
        r.approve(BOB, "again", T0 + 2).unwrap_err(),
        JitError::AlreadyApproved {
            by: BOB.into(),
            id: "r1".into()
        }
    );
    assert_eq!(r.approvals.len(), 1, "a duplicate is not counted");
    assert_eq!(r.state, State::Pending);
    assert_eq!(
        r.approve(CAROL, "", T0 + 3).unwrap(),
        Approved::Activated {
            expires_at: T0 + 603
        }
    );
}

#[test]
fn nobody_approves_their_own_request_directly_or_through_for() {
    let role = role(1);
    let mut own = request(&role, None);
    assert_eq!(
        own.approve(ALICE, "", T0).unwrap_err(),
        JitError::SelfApproval {
            by: ALICE.into(),
            id: "r1".into()
        }
    );
    // Bob asks on Alice's behalf: neither of them may approve it.
    let mut on_behalf = Request::new(
        &role,
        "r2".into(),
        BOB,
        Some(ALICE),
        60,
        "pairing",
        T0,
        DEFAULT_PENDING_TTL,
    )
    .unwrap();
    for who in [ALICE, BOB] {
        assert!(matches!(
            on_behalf.approve(who, "", T0).unwrap_err(),
            JitError::SelfApproval { .. }
        ));
    }
    assert!(on_behalf.approve(CAROL, "", T0).is_ok());
    assert_eq!(on_behalf.subject, ALICE);
}

#[test]
fn requests_are_checked_and_an_over_long_duration_is_refused_not_trimmed() {
    let role = role(1);
    let new = |duration, reason: &str| {
        Request::new(
            &role,
            "r".into(),
            ALICE,
            None,
            duration,
            reason,
            T0,
            DEFAULT_PENDING_TTL,
        )
    };
    assert_eq!(new(60, "  ").unwrap_err(), JitError::ReasonRequired);
    assert_eq!(new(0, "x").unwrap_err(), JitError::ZeroDuration);
    assert_eq!(
        new(3601, "x").unwrap_err(),
        JitError::OverMaximum {
            role: "prod-db-read".into(),
            requested: 3601,
            max: 3600
        }
    );
    assert_eq!(
        new(60, &"x".repeat(MAX_TEXT + 1)).unwrap_err(),
        JitError::TooLong { what: "the reason" }
    );
    assert_eq!(new(3600, "x").unwrap().duration, 3600);
}

#[test]
fn deny_and_revoke_end_a_request_with_their_reason() {
    let role = role(1);
    let mut r = request(&role, None);
    assert_eq!(r.deny(BOB, "", T0).unwrap_err(), JitError::ReasonRequired);
    r.deny(BOB, "not during the freeze", T0 + 5).unwrap();
    assert_eq!(r.state, State::Denied);
    assert_eq!(r.ended.as_ref().unwrap().text, "not during the freeze");
    assert!(matches!(
        r.approve(CAROL, "", T0 + 6).unwrap_err(),
        JitError::NotPending {
            state: "denied",
            ..
        }
    ));

    let mut g = request(&role, None);
    g.approve(BOB, "", T0).unwrap();
    g.revoke(CAROL, "done early", T0 + 30).unwrap();
    assert_eq!(g.state_at(T0 + 30), State::Revoked);
    assert_eq!(g.expires_at, Some(T0 + 30), "the grant ends at once");
    assert!(active_grants([&g], ALICE, T0 + 31).is_empty());
    assert!(matches!(
        g.revoke(CAROL, "again", T0 + 40).unwrap_err(),
        JitError::NotRevocable {
            state: "revoked",
            ..
        }
    ));
}

#[test]
fn the_plan_expires_pending_requests_and_grants_and_says_when_to_look_again() {
    let role = role(1);
    let pending = request(&role, None);
    let mut active = Request::new(
        &role,
        "r2".into(),
        ALICE,
        None,
        120,
        "x",
        T0,
        DEFAULT_PENDING_TTL,
    )
    .unwrap();
    active.approve(BOB, "", T0 + 10).unwrap();
    let all = [pending.clone(), active.clone()];

    let (due, next) = plan(&all, T0 + 20);
    assert!(due.is_empty());
    assert_eq!(next, Some(T0 + 130), "the grant ends first");

    let (due, next) = plan(&all, T0 + 130);
    assert_eq!(due, vec![Due::GrantExpired("r2".into())]);
    assert_eq!(next, Some(T0 + DEFAULT_PENDING_TTL));

    let (due, next) = plan(&all, T0 + DEFAULT_PENDING_TTL);
    assert_eq!(
        due,
        vec![
            Due::PendingExpired("r1".into()),
            Due::GrantExpired("r2".into())
        ]
    );
    assert_eq!(next, None);

    let mut late = pending;
    assert!(matches!(
        late.approve(BOB, "", T0 + DEFAULT_PENDING_TTL).unwrap_err(),
        JitError::NotPending {
            state: "expired",
            ..
        }
    ));
    expire(&mut late);
    assert_eq!(late.state, State::Expired);
}

#[test]
fn states_have_their_names() {
    for s in ["pending", "active", "expired", "denied", "revoked"] {
        assert_eq!(State::parse(s).unwrap().as_str(), s);
    }
    assert_eq!(State::parse("approved"), None);
}

#[test]
fn texts_with_control_characters_are_refused() {
    let role = role(1);
    let e = Request::new(
        &role,
        "r2".into(),
        ALICE,
        None,
        60,
        "fine\napproved by spiffe://example.org/admin/bob",
        T0,
        DEFAULT_PENDING_TTL,
    )
    .unwrap_err();
    assert_eq!(e, JitError::ControlCharacter { what: "the reason" });
    let mut r = request(&role, None);
    assert_eq!(
        r.approve(BOB, "\u{1b}[2Kok", T0).unwrap_err(),
        JitError::ControlCharacter {
            what: "the comment"
        }
    );
    assert!(r.approvals.is_empty());
}

#[test]
fn a_request_keeps_the_grants_and_threshold_its_role_had() {
    let mut role = role(2);
    let mut r = request(&role, None);
    // The role is edited afterwards: the request does not follow.
    role.approvals = 1;
    role.grants = vec![Grant::parse("write:**").unwrap()];
    assert_eq!(
        r.approve(BOB, "", T0).unwrap(),
        Approved::Counted { have: 1, need: 2 }
    );
    r.approve(CAROL, "", T0).unwrap();
    assert_eq!(
        active_grants([&r], ALICE, T0),
        vec![("read:prod/db/*".to_owned(), "r1".to_owned())]
    );
}

#[test]
fn ended_requests_are_dropped_after_the_retention_and_open_ones_never() {
    let role = role(1);
    let open = request(&role, None);
    let mut denied = request(&role, None);
    denied.id = "d".into();
    denied.deny(BOB, "no", T0 + 10).unwrap();
    let mut granted = request(&role, None);
    granted.id = "g".into();
    granted.approve(BOB, "", T0 + 20).unwrap();
    let mut gone = granted.clone();
    gone.id = "x".into();
    expire(&mut gone);
    assert_eq!(ended_at(&denied), Some(T0 + 10));
    assert_eq!(ended_at(&gone), Some(T0 + 620), "its grant's end");
    assert_eq!(ended_at(&granted), None);
    let all = [&open, &denied, &granted, &gone];
    assert!(prunable(all, T0 + 10 + RETENTION - 1).is_empty());
    assert_eq!(prunable(all, T0 + 10 + RETENTION), vec!["d".to_owned()]);
    assert_eq!(
        prunable(all, T0 + 620 + RETENTION),
        vec!["d".to_owned(), "x".to_owned()]
    );
}
