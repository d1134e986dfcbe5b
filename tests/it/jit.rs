//! Just-in-time elevation (SPEC §3.3 `sigil jit`): the roles configured in
//! server.toml, checked at load and listed to operators and workloads.

use crate::common::*;
use crate::login::{anonymous, bundle};
use crate::secrets::{Harness, get, put};
use sigil::api::pb;
use sigil::clock::{Clock, ManualClock};
use std::path::Path;
use std::sync::Arc;
use tonic::Code;

mod tokens;

const EXAMPLE: &str = r#"
trust_domain = "example.org"
data_dir = "data"
listen = "127.0.0.1:0"
admin_socket = "admin.sock"
[policy]
dir = "policies"

[[jit.role]]
name = "prod-db-read"
grants = ["read:prod/db/*"]        # same grant form as the policy data
max_duration = "1h"
approvals = 2                      # distinct approvers needed
"#;

#[test]
fn the_issue_example_parses_and_bad_roles_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("server.toml");
    let c = sigil::config::ServerConfig::parse(path, EXAMPLE).unwrap();
    let role = c.jit.role("prod-db-read").unwrap();
    assert_eq!(role.max_duration, 3600);
    assert_eq!(role.approvals, 2);
    assert_eq!(role.grants[0].to_string(), "read:prod/db/*");
    assert_eq!(c.jit.pending_ttl, 3600);
    for (bad, want) in [
        (
            EXAMPLE.replace("approvals = 2", "approvals = 0"),
            "jit.role.approvals",
        ),
        (EXAMPLE.replace("read:prod", "raed:prod"), "jit.role.grants"),
        (
            EXAMPLE.replace("\"1h\"", "\"soon\""),
            "jit.role.max_duration",
        ),
        (
            format!(
                "{EXAMPLE}\n[[jit.role]]\nname = \"prod-db-read\"\ngrants = [\"read:x\"]\nmax_duration = \"1m\"\napprovals = 1\n"
            ),
            "defined twice",
        ),
        (
            EXAMPLE.replace("approvals = 2", "approvals = 2\nowner = \"x\""),
            "owner",
        ),
    ] {
        let e = sigil::config::ServerConfig::parse(path, &bad).unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_listed_to_operators_and_workloads_but_not_anonymous_callers() {
    let h = Harness::start_with(serde_json::json!({}), |mut c| {
        let dir = c.data_dir.with_file_name("cfg");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.toml");
        c.jit = sigil::config::ServerConfig::parse(&path, EXAMPLE)
            .unwrap()
            .jit;
        c
    })
    .await;
    let listed = h
        .server
        .clients()
        .await
        .jit
        .roles(pb::JitRolesRequest {})
        .await
        .unwrap()
        .into_inner()
        .roles;
    assert_eq!(
        listed,
        vec![pb::JitRole {
            name: "prod-db-read".into(),
            grants: vec!["read:prod/db/*".into()],
            max_duration_seconds: 3600,
            approvals: 2,
        }]
    );
    // A registered workload over mTLS sees them too.
    let admin = h.server.admin.to_str().unwrap().to_owned();
    let svid = h.tmp.path().join("wl");
    ok(sigil(
        &[
            "svid",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/agent/alice",
            "--out",
            svid.to_str().unwrap(),
        ],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    ));
    let addr = h.server.addr.to_string();
    let out = ok(sigil(
        &["--json", "jit", "roles"],
        &[
            ("SIGIL_SERVER", &addr),
            ("SIGIL_CA_BUNDLE", svid.join("bundle.pem").to_str().unwrap()),
            ("SIGIL_SVID_DIR", svid.to_str().unwrap()),
        ],
    ));
    let roles: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(roles[0]["name"], "prod-db-read");
    assert_eq!(roles[0]["max_duration"], "1h");
    assert_eq!(roles[0]["approvals"], 2);
    let _ = bundle(&h);
    let e = anonymous(&h, None)
        .await
        .jit
        .roles(pb::JitRolesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

/// Roles for the workflow tests: one approval and two, at most an hour.
const ROLES: &str = r#"
trust_domain = "example.org"
data_dir = "data"
listen = "127.0.0.1:0"
admin_socket = "admin.sock"
[policy]
dir = "policies"
[jit]
pending_ttl = "10m"
[[jit.role]]
name = "db-read"
grants = ["read:prod/db/*"]
max_duration = "1h"
approvals = 1
[[jit.role]]
name = "db-write"
grants = ["write:prod/db/*"]
max_duration = "1h"
approvals = 2
"#;

pub(crate) const ALICE: &str = "spiffe://example.org/app/alice";
const CAROL: &str = "spiffe://example.org/app/carol";

/// A server with [`ROLES`] on `clock`, a secret at prod/db/main, admin
/// entries for /ops/bob, /ops/dave and /ops/carol-admin, and the
/// operator's clients.
async fn workflow(clock: Arc<ManualClock>) -> (Harness, sigil::cli::client::Clients) {
    workflow_with(serde_json::json!({}), clock).await
}

/// [`workflow`] with `grants` as the policy data's standing grants.
pub(crate) async fn workflow_with(
    grants: serde_json::Value,
    clock: Arc<ManualClock>,
) -> (Harness, sigil::cli::client::Clients) {
    let h = Harness::start_with_clock(
        grants,
        |mut c| {
            let dir = c.data_dir.with_file_name("cfg");
            std::fs::create_dir_all(&dir).unwrap();
            c.jit = sigil::config::ServerConfig::parse(&dir.join("server.toml"), ROLES)
                .unwrap()
                .jit;
            c
        },
        clock,
    )
    .await;
    let mut op = h.server.clients().await;
    op.secrets
        .put(put("prod/db/main", &[("password", "s3cret")], None))
        .await
        .unwrap();
    for (i, path) in ["/ops/bob", "/ops/dave", "/app/carol"].iter().enumerate() {
        let mut e = entry(path, 2000 + u32::try_from(i).unwrap());
        e.admin = true;
        op.entries
            .create(pb::CreateEntryRequest { entry: Some(e) })
            .await
            .unwrap();
    }
    (h, op)
}

/// The environment that makes the CLI speak as `spiffe://example.org{path}`
/// over mTLS.
pub(crate) fn cli_as(h: &Harness, path: &str) -> Vec<(String, String)> {
    let dir = h.svid_dir(path);
    vec![
        ("SIGIL_SERVER".to_owned(), h.server.addr.to_string()),
        (
            "SIGIL_CA_BUNDLE".to_owned(),
            dir.join("bundle.pem").to_str().unwrap().to_owned(),
        ),
        (
            "SIGIL_SVID_DIR".to_owned(),
            dir.to_str().unwrap().to_owned(),
        ),
    ]
}

/// Runs the CLI with `args` in the environment `who`.
pub(crate) fn run(who: &[(String, String)], args: &[&str]) -> std::process::Output {
    let env: Vec<(&str, &str)> = who.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sigil(args, &env)
}

/// The request `c` made with `r`.
pub(crate) async fn asked(
    c: &mut sigil::cli::client::Clients,
    r: pb::JitRequestRequest,
) -> pb::JitElevation {
    c.jit
        .request(r)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

/// The request after `c` approved it.
pub(crate) async fn approved(
    c: &mut sigil::cli::client::Clients,
    a: pb::JitApproveRequest,
) -> pb::JitElevation {
    c.jit
        .approve(a)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

/// Request `id` as `c` is shown it.
pub(crate) async fn shown(c: &mut sigil::cli::client::Clients, id: &str) -> pb::JitElevation {
    c.jit
        .show(pb::JitShowRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

/// The request `sigil --json jit request ARGS` made in the environment `who`.
pub(crate) fn cli_request(who: &[(String, String)], args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "jit", "request"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(run(who, &all))).unwrap()
}

pub(crate) fn ask(role: &str, for_id: &str, secs: i64, reason: &str) -> pb::JitRequestRequest {
    pb::JitRequestRequest {
        role: role.into(),
        for_id: for_id.into(),
        duration_seconds: secs,
        reason: reason.into(),
    }
}

pub(crate) fn approve(id: &str) -> pb::JitApproveRequest {
    pb::JitApproveRequest {
        id: id.into(),
        comment: "looks right".into(),
    }
}

pub(crate) async fn read_code(
    c: &mut sigil::cli::client::Clients,
) -> Result<String, tonic::Status> {
    c.secrets
        .get(get("prod/db/main", 0))
        .await
        .map(|r| String::from_utf8(r.into_inner().fields["password"].clone()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_widens_access_at_the_next_request_until_revoked() {
    let clock = Arc::new(ManualClock::at_wall_time());
    let (h, mut op) = workflow(clock.clone()).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;

    let e = read_code(&mut alice).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let r = asked(
        &mut alice,
        ask("db-read", "", 1800, "incident 42: read the replica lag"),
    )
    .await;
    assert_eq!(r.state, "pending");
    assert_eq!((r.requester.as_str(), r.subject.as_str()), (ALICE, ALICE));
    assert_eq!(r.approvals_needed, 1);
    assert!(r.id.starts_with("jit-"), "{}", r.id);
    // Pending gives nothing yet.
    assert_eq!(
        read_code(&mut alice).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let approved = approved(&mut bob, approve(&r.id)).await;
    assert_eq!(approved.state, "active");
    let now = i64::try_from(sigil::clock::unix_seconds(clock.now())).unwrap();
    assert_eq!(approved.activated_at, now);
    assert_eq!(approved.expires_at, now + 1800);
    assert_eq!(approved.approvals[0].by, "spiffe://example.org/ops/bob");
    assert_eq!(approved.approvals[0].text, "looks right");
    // Same connection, next request: the grant applies, no restart.
    assert_eq!(read_code(&mut alice).await.unwrap(), "s3cret");
    // The record says which grant allowed it.
    let last = crate::audit::tail(&mut op, 1).await;
    assert_eq!(last[0]["event"]["action"], "secret.get");
    assert_eq!(
        last[0]["event"]["reasons"][0],
        format!("jit grant read:prod/db/* (request {})", r.id)
    );
    // The grant is read-only, as its role says.
    let e = alice
        .secrets
        .put(put("prod/db/main", &[("password", "x")], None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A non-admin may not revoke; an admin ends it at once.
    let e = alice
        .jit
        .revoke(pb::JitRevokeRequest {
            id: r.id.clone(),
            reason: "done".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let revoked = bob
        .jit
        .revoke(pb::JitRevokeRequest {
            id: r.id.clone(),
            reason: "incident closed".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(revoked.state, "revoked");
    let ended = revoked.ended.unwrap();
    assert_eq!(
        (ended.by.as_str(), ended.text.as_str()),
        ("spiffe://example.org/ops/bob", "incident closed")
    );
    assert_eq!(
        read_code(&mut alice).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Every transition is in the audit log with who and why.
    let records = crate::audit::tail(&mut op, 12).await;
    let outcomes: Vec<String> = records
        .iter()
        .filter(|r| {
            r["event"]["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("jit."))
        })
        .map(|r| {
            format!(
                "{} {} {}",
                r["event"]["subject"].as_str().unwrap(),
                r["event"]["action"].as_str().unwrap(),
                r["event"]["reasons"].as_array().unwrap().last().unwrap()
            )
        })
        .collect();
    let joined = outcomes.join("\n");
    assert!(
        joined.contains(&format!(
            "{ALICE} jit.request \"requested {} for {ALICE} for 1800s: incident 42: read the replica lag\"",
            r.id
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "spiffe://example.org/ops/bob jit.approve \"approved {}: active for {ALICE} until {}\"",
            r.id,
            now + 1800
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "spiffe://example.org/ops/bob jit.revoke \"revoked {}: incident closed\"",
            r.id
        )),
        "{joined}"
    );
    // Revoking twice names the state.
    let e = bob
        .jit
        .revoke(pb::JitRevokeRequest {
            id: r.id.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        format!("request {} is revoked: there is nothing to revoke", r.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_distinct_approvers_neither_of_them_the_requester_or_the_subject() {
    let (h, _op) = workflow(Arc::new(ManualClock::at_wall_time())).await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let mut dave = h.workload_clients("/ops/dave").await;
    let mut carol = h.workload_clients("/app/carol").await;
    let mut eve = h.workload_clients("/app/eve").await;

    // Bob (an admin) asks for Carol.
    let r = asked(&mut bob, ask("db-write", CAROL, 600, "schema migration")).await;
    assert_eq!(r.subject, CAROL);
    assert_eq!(r.approvals_needed, 2);
    // The requester may not approve, nor the one it is for (also an admin).
    let e = bob.jit.approve(approve(&r.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        format!(
            "spiffe://example.org/ops/bob may not approve request {}: it is their own",
            r.id
        )
    );
    let e = carol.jit.approve(approve(&r.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("it is their own"), "{}", e.message());
    // A workload the policy does not let approve.
    let e = eve.jit.approve(approve(&r.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), sigil::policy::DEFAULT_DENY_REASON);

    let mut op = h.server.clients().await;
    let once = approved(&mut op, approve(&r.id)).await;
    assert_eq!((once.state.as_str(), once.approvals.len()), ("pending", 1));
    assert_eq!(once.approvals[0].by, "uid:0");
    // The same approver again is refused and not counted.
    let e = op.jit.approve(approve(&r.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(
        e.message(),
        format!(
            "uid:0 has already approved request {}; an approver counts once",
            r.id
        )
    );
    let shown = shown(&mut op, &r.id).await;
    assert_eq!(
        (shown.state.as_str(), shown.approvals.len()),
        ("pending", 1)
    );
    // Carol cannot write yet; the second distinct approver activates it.
    let e = carol
        .secrets
        .put(put("prod/db/main", &[("password", "new")], None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let twice = approved(&mut dave, approve(&r.id)).await;
    assert_eq!((twice.state.as_str(), twice.approvals.len()), ("active", 2));
    carol
        .secrets
        .put(put("prod/db/main", &[("password", "new")], None))
        .await
        .unwrap();
    // Bob asked but the grant is Carol's: Bob gains nothing.
    let e = bob
        .secrets
        .put(put("prod/db/main", &[("password", "bob")], None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Eve sees neither the request in a list nor by its ID.
    let listed = eve
        .jit
        .list(pb::JitListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(listed.is_empty(), "{listed:?}");
    let e = eve
        .jit
        .show(pb::JitShowRequest { id: r.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Carol sees it: it is hers.
    let listed = carol
        .jit
        .list(pb::JitListRequest {
            state: "active".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, r.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_pending_expiry_and_grant_expiry_follow_the_clock() {
    let clock = Arc::new(ManualClock::at_wall_time());
    let (h, mut op) = workflow(clock.clone()).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;

    // Refused requests name their rule.
    for (req, code, msg) in [
        (
            ask("db-read", "", 7200, "long"),
            Code::InvalidArgument,
            "duration 7200s is over role \"db-read\"'s maximum of 3600s",
        ),
        (
            ask("db-read", "", 60, "  "),
            Code::InvalidArgument,
            "a reason is required",
        ),
        (
            ask("db-admin", "", 60, "x"),
            Code::NotFound,
            "no JIT role named \"db-admin\"",
        ),
        (
            ask("db-read", "carol", 60, "x"),
            Code::InvalidArgument,
            "for: ",
        ),
        (
            ask("db-read", "spiffe://other.org/app/carol", 60, "x"),
            Code::InvalidArgument,
            "for: spiffe://other.org/app/carol is not in trust domain example.org",
        ),
        (
            ask(
                "db-read",
                "",
                60,
                "fine\napproved by spiffe://example.org/ops/bob",
            ),
            Code::InvalidArgument,
            "the reason may not contain control characters",
        ),
    ] {
        let e = alice.jit.request(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().starts_with(msg), "{msg}: {}", e.message());
    }

    // An operator names who a grant is for.
    let e = op
        .jit
        .request(ask("db-read", "", 60, "x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "an operator has no workload identity: name who the grant is for (--for)"
    );
    // An ID nobody has: the policy decides first, then NotFound.
    let e = bob.jit.approve(approve("jit-0000")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = alice.jit.approve(approve("jit-0000")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A denial ends a request for good.
    let denied = asked(&mut alice, ask("db-read", "", 600, "curious")).await;
    let e = bob
        .jit
        .deny(pb::JitDenyRequest {
            id: denied.id.clone(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let d = bob
        .jit
        .deny(pb::JitDenyRequest {
            id: denied.id.clone(),
            reason: "not without a ticket".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(d.state, "denied");
    assert_eq!(d.ended.unwrap().text, "not without a ticket");
    // The denial is audited with who, when and why (decided as an approval).
    let records = crate::audit::tail(&mut op, 1).await;
    let record = &records[0]["event"];
    assert_eq!(
        (
            record["subject"].as_str(),
            record["action"].as_str(),
            record["time"].as_u64()
        ),
        (
            Some("spiffe://example.org/ops/bob"),
            Some("jit.approve"),
            Some(sigil::clock::unix_seconds(clock.now()))
        )
    );
    assert_eq!(
        record["reasons"].as_array().unwrap().last().unwrap(),
        &format!("denied {}: not without a ticket", denied.id)
    );
    let e = bob.jit.approve(approve(&denied.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        format!("request {} is denied, not pending", denied.id)
    );

    // A request nobody approves within pending_ttl (10m) expires.
    let waiting = asked(&mut alice, ask("db-read", "", 600, "later")).await;
    // And one approved now lasts its 10 minutes.
    let granted = asked(&mut alice, ask("db-read", "", 600, "now")).await;
    let active = approved(&mut bob, approve(&granted.id)).await;
    assert_eq!(read_code(&mut alice).await.unwrap(), "s3cret");

    clock.advance(std::time::Duration::from_secs(9 * 60));
    assert_eq!(read_code(&mut alice).await.unwrap(), "s3cret");
    clock.advance(std::time::Duration::from_secs(61));
    // The grant's end applies to the very next request.
    assert_eq!(
        read_code(&mut alice).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let e = bob.jit.approve(approve(&waiting.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        format!("request {} is expired, not pending", waiting.id)
    );
    let mut expired: Vec<String> = op
        .jit
        .list(pb::JitListRequest {
            state: "expired".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .requests
        .into_iter()
        .map(|r| r.id)
        .collect();
    expired.sort();
    let mut want = vec![waiting.id.clone(), granted.id.clone()];
    want.sort();
    assert_eq!(expired, want);
    // The expiry task records both, and audits each.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let records = crate::audit::tail(&mut op, 10).await;
        let expiries: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["event"]["action"] == "jit.expire")
            .collect();
        if expiries.len() == 2 {
            // Recorded by the server, timed when each took effect.
            let mut when: Vec<(String, i64)> = expiries
                .iter()
                .map(|r| {
                    assert_eq!(r["event"]["subject"], "sigil-server", "{r}");
                    (
                        r["event"]["reasons"][0].as_str().unwrap().to_owned(),
                        r["event"]["time"].as_i64().unwrap(),
                    )
                })
                .collect();
            when.sort();
            assert_eq!(
                when,
                vec![
                    (
                        format!("grant {} for {ALICE} ended", granted.id),
                        active.expires_at
                    ),
                    (
                        format!("request {} expired without enough approvals", waiting.id),
                        waiting.pending_until
                    ),
                ]
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no expiry records: {records:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A bad state filter is named.
    let e = op
        .jit
        .list(pb::JitListRequest {
            state: "gone".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_survive_seal_and_unseal_and_the_cli_runs_the_flow() {
    let (h, mut op) = workflow(Arc::new(ManualClock::at_wall_time())).await;
    let alice = cli_as(&h, "/app/alice");
    let bob = cli_as(&h, "/ops/bob");
    let r = cli_request(
        &alice,
        &[
            "--role",
            "db-read",
            "--duration",
            "30m",
            "--reason",
            "on call",
        ],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    assert_eq!(r["state"], "pending");
    assert_eq!(r["duration"], "30m");
    let refused = run(
        &alice,
        &[
            "jit",
            "request",
            "--role",
            "db-read",
            "--duration",
            "2h",
            "--reason",
            "x",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: invalid argument: duration 7200s is over role \"db-read\"'s maximum of 3600s"
    );
    let out = ok(run(&bob, &["jit", "approve", &id, "--comment", "ok"]));
    assert!(
        out.contains(&format!("{id}  active  role db-read for {ALICE}")),
        "{out}"
    );
    let out = ok(run(&bob, &["jit", "list", "--state", "active"]));
    assert!(out.contains(&id), "{out}");

    // Sealed, nothing is held; unsealed, the grant is back.
    op.operator.seal(pb::SealRequest {}).await.unwrap();
    op.operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = ok(run(
        &alice,
        &["secret", "get", "prod/db/main", "--field", "password"],
    ));
    assert_eq!(out, "s3cret\n");
    let out = ok(run(&alice, &["--json", "jit", "show", &id]));
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "active");
    assert_eq!(shown["approvals"][0]["by"], "spiffe://example.org/ops/bob");
    assert_eq!(shown["grants"], serde_json::json!(["read:prod/db/*"]));
    ok(run(&bob, &["jit", "revoke", &id, "--reason", "shift over"]));
    let denied = run(&alice, &["secret", "get", "prod/db/main"]);
    assert_eq!(denied.status.code(), Some(1));
    let out = ok(run(&bob, &["--json", "jit", "list", "--state", "revoked"]));
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["ended"]["text"], "shift over");

    // An admin asks on Carol's behalf (--for): neither the one who asked
    // nor the one it is for may approve it.
    let carol = cli_as(&h, "/app/carol");
    let r = cli_request(
        &bob,
        &[
            "--role",
            "db-write",
            "--for",
            CAROL,
            "--duration",
            "10m",
            "--reason",
            "schema migration",
        ],
    );
    assert_eq!(
        (&r["requester"], &r["subject"], &r["approvals_needed"]),
        (
            &serde_json::json!("spiffe://example.org/ops/bob"),
            &serde_json::json!(CAROL),
            &serde_json::json!(2)
        )
    );
    let id = r["id"].as_str().unwrap();
    for (who, name) in [(&bob, "spiffe://example.org/ops/bob"), (&carol, CAROL)] {
        let refused = run(who, &["jit", "approve", id]);
        assert_eq!(refused.status.code(), Some(1), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&refused.stderr).trim(),
            format!(
                "error: permission denied: {name} may not approve request {id}: it is their own"
            )
        );
    }
    let out = ok(run(&bob, &["--json", "jit", "show", id]));
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["approvals"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_requests_are_dropped_after_thirty_days() {
    let clock = Arc::new(ManualClock::at_wall_time());
    let (h, mut op) = workflow(clock.clone()).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let mut ids = Vec::new();
    for reason in ["one", "two"] {
        ids.push(asked(&mut alice, ask("db-read", "", 60, reason)).await.id);
    }
    bob.jit
        .deny(pb::JitDenyRequest {
            id: ids[0].clone(),
            reason: "no".into(),
        })
        .await
        .unwrap();
    // Thirty days on, the denied request goes; the other ended (expired
    // unapproved) later, and goes too once its own thirty days are up.
    clock.advance(std::time::Duration::from_secs(30 * 24 * 3600));
    let listed = |mut op: sigil::cli::client::Clients| async move {
        op.jit
            .list(pb::JitListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .requests
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while listed(h.server.clients().await).await.len() != 1 {
        assert!(std::time::Instant::now() < deadline, "not dropped");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(listed(h.server.clients().await).await, vec![ids[1].clone()]);
    let e = op
        .jit
        .show(pb::JitShowRequest { id: ids[0].clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    clock.advance(std::time::Duration::from_secs(600));
    while !listed(h.server.clients().await).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "not dropped");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_is_asked_for_or_approved_for_a_quarantined_identity() {
    const REASON: &str = "credential leak";
    let clock = Arc::new(ManualClock::at_wall_time());
    let (h, mut op) = workflow(clock.clone()).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let pending = asked(&mut alice, ask("db-read", "", 600, "incident 7")).await;
    op.quarantine
        .put(pb::QuarantinePutRequest {
            spiffe_id: ALICE.into(),
            reason: REASON.into(),
        })
        .await
        .unwrap();
    let quarantined = format!("{ALICE} is quarantined: {REASON}");

    // An operator (or an admin) naming it with --for is refused, by name.
    let e = op
        .jit
        .request(ask("db-read", ALICE, 600, "incident 7, on alice's behalf"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), quarantined);
    // Its request from before cannot be approved into a grant.
    let e = bob.jit.approve(approve(&pending.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), quarantined);

    // Lifted: asking for it works again; the old request stays revoked.
    op.quarantine
        .lift(pb::QuarantineLiftRequest {
            spiffe_id: ALICE.into(),
            reason: "keys rotated".into(),
        })
        .await
        .unwrap();
    let again = asked(&mut op, ask("db-read", ALICE, 600, "incident 7, again")).await;
    assert_eq!(
        (again.state.as_str(), again.subject.as_str()),
        ("pending", ALICE)
    );
    let e = bob.jit.approve(approve(&pending.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}
