//! Just-in-time elevation (SPEC §3.3 `sigil jit`): the roles configured in
//! server.toml, checked at load and listed to operators and workloads.

use crate::common::*;
use crate::login::{anonymous, bundle};
use crate::secrets::Harness;
use sigil::api::pb;
use std::path::Path;

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
