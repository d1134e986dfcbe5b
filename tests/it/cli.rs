//! The command line as users and scripts call it: human text, `--json`,
//! exit status and one-line errors.

use crate::common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_commands_round_trip_with_json_and_text() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let admin = s.admin.to_str().unwrap().to_owned();
    let env = [("SIGIL_ADMIN_SOCKET", admin.as_str())];

    let status: serde_json::Value =
        serde_json::from_str(&ok(sigil(&["operator", "status", "--json"], &env))).unwrap();
    assert_eq!(status["initialized"], true);
    assert_eq!(status["sealed"], false);
    assert_eq!(status["trust_domain"], TD);
    assert_eq!(status["key_versions"], serde_json::json!([1]));

    let created: serde_json::Value = serde_json::from_str(&ok(sigil(
        &[
            "entry",
            "create",
            "--json",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--parent-id",
            "spiffe://example.org/sigil/agent/n1",
            "--selector",
            "unix:uid:1000",
            "--selector",
            "unix:gid:1000",
            "--x509-ttl",
            "30m",
            "--dns",
            "web.example.org",
            "--hint",
            "web",
            "--federates-with",
            "other.org",
            "--federates-with",
            "spiffe://third.org",
        ],
        &env,
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["x509_ttl_seconds"], 1800);
    let mut federates: Vec<String> =
        serde_json::from_value(created["federates_with"].clone()).unwrap();
    federates.sort();
    assert_eq!(federates, ["other.org", "third.org"], "{created}");
    assert_eq!(
        created["selectors"],
        serde_json::json!(["unix:gid:1000", "unix:uid:1000"])
    );

    let text = ok(sigil(&["entry", "show", &id], &env));
    assert!(
        text.contains("SPIFFE ID  : spiffe://example.org/web"),
        "{text}"
    );
    let updated: serde_json::Value = serde_json::from_str(&ok(sigil(
        &["entry", "update", &id, "--hint", "frontend", "--json"],
        &env,
    )))
    .unwrap();
    assert_eq!(updated["hint"], "frontend");
    assert_eq!(updated["revision"], 2);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(sigil(&["entry", "list", "--json"], &env))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    ok(sigil(&["entry", "delete", &id], &env));

    // Failures: non-zero exit, one line on stderr naming the problem.
    let out = sigil(&["entry", "show", &id], &env);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: not found: entry"), "{err}");

    let out = sigil(&["entry", "list"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server given"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_operator_uid_on_the_admin_socket_is_denied() {
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_sigil"),
        ])
        .args(["entry", "list"])
        .env("SIGIL_ADMIN_SOCKET", &s.admin)
        .env("SIGIL_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: permission denied:"), "{err}");
    // The denial is in the audit log, attributed to the uid.
    let mut c = s.clients().await;
    let tail = c
        .audit
        .tail(sigil::api::pb::TailAuditRequest { count: 5 })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        tail.iter()
            .any(|r| r.contains("uid:65534") && r.contains("\"deny\"")),
        "{tail:?}"
    );
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_files_must_be_private() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(tmp.path()).await;
    let f = tmp.path().join("pass");
    std::fs::write(&f, PASSPHRASE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let admin = s.admin.to_str().unwrap().to_owned();
    let out = sigil(
        &["operator", "init", "--passphrase-file", f.to_str().unwrap()],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must have mode 0600"));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = ok(sigil(
        &["operator", "init", "--passphrase-file", f.to_str().unwrap()],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    ));
    assert!(
        text.contains("initialized trust domain example.org"),
        "{text}"
    );
    s.stop().await;
}
