//! Grants decide who may do what to which path, over mTLS with real SVIDs:
//! `*` is one segment, `/**` everything below, nothing else; deny by default;
//! `list` shows only what the caller may read; every read, write and denial
//! is in the audit log.

use super::*;
use tonic::Code;

fn grants() -> serde_json::Value {
    serde_json::json!({
        "spiffe://example.org/ci/app": ["read:ci/app/*", "list:ci"],
        "spiffe://example.org/ci/writer": ["write:ci/app/**", "destroy:ci/app/db"],
    })
}

async fn tail(h: &Harness, n: u32) -> Vec<serde_json::Value> {
    let mut c = h.server.clients().await.audit;
    c.tail(pb::TailAuditRequest { count: n })
        .await
        .unwrap()
        .into_inner()
        .records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["event"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_decide_reads_writes_and_lists() {
    let h = Harness::start(grants()).await;
    let mut admin = h.admin().await;
    for p in ["ci/app/db", "ci/app/db/x", "ci/app", "ci/other/db"] {
        admin
            .put(put(p, &[("password", "s3cret")], None))
            .await
            .unwrap();
    }
    let mut app = h.workload("/ci/app").await;
    let read = app.get(get("ci/app/db", 0)).await.unwrap().into_inner();
    assert_eq!(
        (read.version, field(&read, "password")),
        (1, "s3cret".into())
    );
    for p in ["ci/app/db/x", "ci/app", "ci/other/db"] {
        let e = app.get(get(p, 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{p}");
        assert_eq!(
            e.message(),
            "denied by default: no policy rule allows this",
            "{p}"
        );
    }
    let e = app
        .put(put("ci/app/db", &[("password", "x")], None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let listed: Vec<String> = app
        .list(pb::ListSecretsRequest {
            prefix: "ci".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .secrets
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(
        listed,
        vec!["ci/app/db".to_string()],
        "only what it may read"
    );
    let e = app
        .list(pb::ListSecretsRequest {
            prefix: "ci/other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "list:ci is not list:ci/other"
    );

    let mut writer = h.workload("/ci/writer").await;
    let v = writer
        .put(put("ci/app/db/x", &[("k", "v")], None))
        .await
        .unwrap();
    assert_eq!(v.into_inner().version, 2);
    assert_eq!(
        writer.get(get("ci/app/db/x", 0)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        writer
            .destroy(versions("ci/app/db/x", &[1]))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        writer
            .destroy(versions("ci/app/db", &[1]))
            .await
            .unwrap()
            .into_inner()
            .changed,
        vec![1]
    );

    // Nobody else gets anything, and an admin operator's grants do not
    // extend to workloads.
    let mut stranger = h.workload("/other").await;
    assert_eq!(
        stranger.get(get("ci/app/db", 0)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        stranger
            .list(pb::ListSecretsRequest {
                prefix: String::new()
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let events = tail(&h, 40).await;
    let find = |subject: &str, action: &str, decision: &str| {
        events.iter().any(|e| {
            e["subject"] == format!("spiffe://example.org{subject}")
                && e["action"] == action
                && e["decision"] == decision
        })
    };
    assert!(find("/ci/app", "secret.get", "allow"), "{events:#?}");
    assert!(find("/ci/app", "secret.put", "deny"));
    assert!(find("/ci/writer", "secret.put", "allow"));
    assert!(find("/other", "secret.get", "deny"));
    let read = events
        .iter()
        .find(|e| e["action"] == "secret.get" && e["decision"] == "allow")
        .unwrap();
    assert_eq!(read["resource"], "secret:ci/app/db");
    let reasons = read["reasons"].to_string();
    assert!(
        reasons.contains("grant read:ci/app/*") && reasons.contains("read version 1"),
        "{reasons}"
    );
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_is_audited_with_its_reason() {
    let h = Harness::start(grants()).await;
    let mut admin = h.admin().await;
    admin
        .put(put("ci/app/db", &[("k", "v")], None))
        .await
        .unwrap();
    admin.delete(versions("ci/app/db", &[])).await.unwrap();
    let mut app = h.workload("/ci/app").await;
    assert_eq!(
        app.get(get("ci/app/db", 0)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let events = tail(&h, 3).await;
    let last = events
        .iter()
        .rev()
        .find(|e| e["action"] == "secret.get")
        .unwrap();
    assert_eq!(last["decision"], "failed");
    assert!(
        last["reasons"]
            .to_string()
            .contains("version 1 was deleted"),
        "{last}"
    );
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_rotation_needs_read_on_its_connection_secret() {
    let h = Harness::start(serde_json::json!({
        "spiffe://example.org/team/rotator": ["rotate:team/**", "read:team/**"],
    }))
    .await;
    let mut admin = h.admin().await;
    admin
        .put(put("prod/pg-admin", &[("host", "127.0.0.1")], None))
        .await
        .unwrap();
    let mut rotator = h.workload("/team/rotator").await;
    let req = |connection: &str| pb::SetRotationRequest {
        path: "team/t".into(),
        every_seconds: 3600,
        window_seconds: 0,
        grace_seconds: 0,
        generator: format!("postgres:connection={connection},roles=billing_app+x"),
    };
    // A `rotate` grant does not lend the server's database credentials.
    let e = rotator
        .set_rotation(req("prod/pg-admin"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message()
            .starts_with("a postgres rotation needs read on its connection secret prod/pg-admin"),
        "{}",
        e.message()
    );
    let shown = rotator
        .show_rotation(pb::SecretPathRequest {
            path: "team/t".into(),
        })
        .await;
    assert_eq!(shown.unwrap_err().code(), Code::NotFound, "nothing was set");
    // With read on the connection secret it is allowed.
    rotator.set_rotation(req("team/pg-admin")).await.unwrap();
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_everything_needs_list_double_star() {
    let h = Harness::start(serde_json::json!({
        "spiffe://example.org/one": ["list:*", "read:**"],
        "spiffe://example.org/all": ["list:**", "read:a/*"],
    }))
    .await;
    let mut admin = h.admin().await;
    admin.put(put("a/b", &[("k", "v")], None)).await.unwrap();
    admin.put(put("c/d", &[("k", "v")], None)).await.unwrap();
    let mut one = h.workload("/one").await;
    let e = one
        .list(pb::ListSecretsRequest {
            prefix: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "list:* is one segment, not the empty prefix"
    );
    assert_eq!(
        one.list(pb::ListSecretsRequest { prefix: "a".into() })
            .await
            .unwrap()
            .into_inner()
            .secrets
            .len(),
        1
    );
    let mut all = h.workload("/all").await;
    let listed = all
        .list(pb::ListSecretsRequest {
            prefix: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<_> = listed.secrets.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, vec!["a/b"], "only what it may read");
    h.server.stop().await;
}
