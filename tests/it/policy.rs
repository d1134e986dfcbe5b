//! Policy administration: checks with reasons, atomic reload that keeps the
//! old policies when the new ones fail, and offline tests.

use crate::common::*;
use sigil::api::pb;
use tonic::Code;

fn write_input(dir: &std::path::Path, name: &str, json: serde_json::Value) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, json.to_string()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reload_and_test() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let good = std::fs::read_to_string(policy_dir().join("sigil.rego")).unwrap();
    std::fs::write(policies.join("sigil.rego"), &good).unwrap();
    let mut cfg = config(tmp.path());
    cfg.policy_dir = policies.clone();
    let s = TestServer::start_with(cfg).await;
    let mut c = s.clients().await;
    c.operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    let admin = s.admin.to_str().unwrap().to_owned();
    let env = [("SIGIL_ADMIN_SOCKET", admin.as_str())];

    let ctx = serde_json::json!({"time": 1_700_000_000u64, "source": "test"});
    let allow = write_input(
        tmp.path(),
        "allow.json",
        serde_json::json!({
            "subject": {"kind": "workload", "spiffe_id": "spiffe://example.org/ops", "uid": null, "authn": "mtls", "admin": true},
            "action": "entry.create", "resource": {"kind": "entry", "id": null}, "context": ctx,
        }),
    );
    let deny = write_input(
        tmp.path(),
        "deny.json",
        serde_json::json!({
            "subject": {"kind": "workload", "spiffe_id": "spiffe://example.org/web", "uid": null, "authn": "mtls", "admin": false},
            "action": "entry.create", "resource": {"kind": "entry", "id": null}, "context": ctx,
        }),
    );
    let out = ok(sigil(
        &["policy", "check", "--input", allow.to_str().unwrap()],
        &env,
    ));
    assert!(out.starts_with("allow"), "{out}");
    assert!(out.contains("admin workload"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&ok(sigil(
        &[
            "policy",
            "check",
            "--json",
            "--input",
            deny.to_str().unwrap(),
        ],
        &env,
    )))
    .unwrap();
    assert_eq!(v["allow"], false);
    let bad = write_input(tmp.path(), "bad.json", serde_json::json!({"subject": 5}));
    let out = sigil(&["policy", "check", "--input", bad.to_str().unwrap()], &env);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: invalid argument: input_json")
    );

    // A broken policy is refused on reload; the old one stays in force.
    std::fs::write(
        policies.join("sigil.rego"),
        "package sigil.authz\nallow if {",
    )
    .unwrap();
    let e = c.policy.reload(pb::ReloadRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("sigil.rego"), "{}", e.message());
    c.entries
        .list(pb::ListEntriesRequest::default())
        .await
        .unwrap();

    // So is one that would let anonymous callers create entries.
    let permissive =
        format!("{good}\nreasons contains \"open door\" if input.action == \"entry.create\"\n");
    std::fs::write(policies.join("sigil.rego"), &permissive).unwrap();
    let e = c.policy.reload(pb::ReloadRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().to_lowercase().contains("must"),
        "{}",
        e.message()
    );
    let out = sigil(
        &["policy", "test", "--dir", policies.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));

    // The good one reloads.
    std::fs::write(policies.join("sigil.rego"), &good).unwrap();
    let r = c
        .policy
        .reload(pb::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files, vec!["sigil.rego".to_string()]);
    let out = ok(sigil(
        &["policy", "test", "--dir", policies.to_str().unwrap()],
        &[],
    ));
    assert!(out.starts_with("OK"), "{out}");
    drop(c);
    s.stop().await;
}
