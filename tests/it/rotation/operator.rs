//! What operators see and do: the key view in `operator status` and `bundle show`,
//! `rotate-ca` and `taint-ca` refusals named after the rule they break, the plan
//! resumed after a restart, and every key change audited with the server as subject.
//! The server's decisions follow a manual clock here; nothing below needs TLS.

use super::{ids, keys};
use crate::common::*;
use sigil::api::pb;
use sigil::clock::ManualClock;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::Code;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `t` in whole seconds, as key times are kept.
fn whole(t: SystemTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + secs(sigil::clock::unix_seconds(t))
}

async fn audit_events(c: &mut sigil::cli::client::Clients) -> Vec<serde_json::Value> {
    c.audit
        .tail(pb::TailAuditRequest { count: 200 })
        .await
        .unwrap()
        .into_inner()
        .records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["event"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_resumes_after_a_restart_and_every_change_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(whole(SystemTime::now())));
    let t0 = sigil::clock::Clock::now(clock.as_ref());
    let s = TestServer::start_with_clock(short_config(tmp.path()), clock.clone()).await;
    let mut c = s.clients().await;
    c.operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    let first = ids(&keys(&mut c).await, "x509-ca", "active").remove(0);

    // Half the CA's life left: its successor is published; it signs at 10 s left.
    clock.set(t0 + secs(30));
    assert_eq!(s.server.advance_keys().await.unwrap(), Some(t0 + secs(50)));
    let prepared = ids(&keys(&mut c).await, "x509-ca", "prepared").remove(0);
    drop(c);
    s.stop().await;

    // Restarted before it was due: the same key waits, and signs when due.
    clock.set(t0 + secs(45));
    let s = TestServer::start_with_clock(short_config(tmp.path()), clock.clone()).await;
    let mut c = s.clients().await;
    unseal(&mut c).await;
    let k = keys(&mut c).await;
    assert_eq!(
        ids(&k, "x509-ca", "prepared"),
        [prepared.as_str()],
        "{k:#?}"
    );
    clock.set(t0 + secs(50));
    s.server.advance_keys().await.unwrap();
    let k = keys(&mut c).await;
    assert_eq!(ids(&k, "x509-ca", "active"), [prepared.as_str()], "{k:#?}");
    assert_eq!(ids(&k, "x509-ca", "old"), [first.as_str()], "{k:#?}");
    let old = k.iter().find(|k| k.id == first).unwrap();
    assert_eq!(old.leaves_bundle_at, old.not_after + 1, "{old:?}");
    assert_eq!(
        old.retired_at,
        sigil::api::convert::wire_time(t0 + secs(50))
    );

    let events = audit_events(&mut c).await;
    let about = |id: &str| -> Vec<(String, String, String)> {
        events
            .iter()
            .filter(|e| e["resource"] == format!("x509-ca:{id}"))
            .map(|e| {
                assert_eq!(e["subject"], sigil::audit::SERVER_SUBJECT, "{e}");
                assert_eq!(e["decision"], "allow", "{e}");
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["reasons"][0].as_str().unwrap().to_owned(),
                    e["time"].to_string(),
                )
            })
            .collect()
    };
    let at = |s: u64| sigil::clock::unix_seconds(t0 + secs(s)).to_string();
    assert_eq!(
        about(&first),
        [
            ("key.prepared".into(), "unseal".into(), at(0)),
            ("key.activated-forced".into(), "unseal".into(), at(0)),
            ("key.retired".into(), "rotation schedule".into(), at(50)),
        ]
    );
    assert_eq!(
        about(&prepared),
        [
            ("key.prepared".into(), "rotation schedule".into(), at(30)),
            ("key.activated".into(), "rotation schedule".into(), at(50)),
        ]
    );
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rotations_and_taints_name_the_rule_and_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let taint = |kind: pb::SigningKeyKind, id: &str| pb::TaintSigningKeyRequest {
        kind: kind.into(),
        id: id.to_owned(),
    };
    let e = c
        .operator
        .taint_signing_key(taint(pb::SigningKeyKind::X509Ca, "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(e.message(), "no x509-ca key has id \"nope\"");
    let e = c
        .operator
        .taint_signing_key(taint(pb::SigningKeyKind::Unspecified, "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.message(),
        "kind: must be SIGNING_KEY_KIND_X509_CA or SIGNING_KEY_KIND_JWT"
    );
    let e = c
        .operator
        .taint_signing_key(taint(pb::SigningKeyKind::Jwt, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .operator
        .rotate_signing_key(pb::RotateSigningKeyRequest {
            kind: 7,
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Tainting the active key replaces it at once; tainting it again is refused.
    let jwt = ids(&keys(&mut c).await, "jwt", "active").remove(0);
    let r = c
        .operator
        .taint_signing_key(taint(pb::SigningKeyKind::Jwt, &jwt))
        .await
        .unwrap()
        .into_inner();
    let changes: Vec<&str> = r.changes.iter().map(|c| c.change.as_str()).collect();
    assert_eq!(
        changes,
        ["tainted", "prepared", "activated-forced", "retired"]
    );
    let e = c
        .operator
        .taint_signing_key(taint(pb::SigningKeyKind::Jwt, &jwt))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        e.message(),
        format!("the jwt key \"{jwt}\" is already tainted")
    );

    // The refusal follows the gate's "allow" in the log, as a failure.
    let events = audit_events(&mut c).await;
    let last: Vec<&serde_json::Value> = events
        .iter()
        .rev()
        .filter(|e| e["action"] == "operator.taint_signing_key")
        .take(2)
        .collect();
    assert_eq!(last[0]["decision"], "failed", "{last:?}");
    assert_eq!(last[0]["reasons"][0], e.message());
    assert_eq!(last[1]["decision"], "allow", "{last:?}");
    assert_eq!(last[0]["resource"], format!("jwt:{jwt}"));

    // The CLI says the same in one line and exits non-zero.
    let out = sigil(
        &["operator", "taint-ca", "nope"],
        &[("SIGIL_ADMIN_SOCKET", s.admin.to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: not found: no x509-ca key has id \"nope\""
    );
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_view_is_for_operators_and_admins() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let admin = [("SIGIL_ADMIN_SOCKET", s.admin.to_str().unwrap())];

    let status: serde_json::Value =
        serde_json::from_str(&ok(sigil(&["--json", "operator", "status"], &admin))).unwrap();
    let keys = status["authority_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{status}");
    assert_eq!(status["rotation_failures"], 0);
    let ca = keys.iter().find(|k| k["kind"] == "x509-ca").unwrap();
    for field in ["id", "state", "not_after", "tainted", "leaves_bundle_at"] {
        assert!(ca.get(field).is_some(), "{field}: {ca}");
    }
    assert_eq!(ca["state"], "active");
    assert_eq!(ca["tainted"], false);
    assert_eq!(ca["leaves_bundle_at"], serde_json::Value::Null);
    assert_eq!(ca["forced_activation"], true, "the first key signs at once");

    let text = ok(sigil(&["bundle", "show", "--format", "keys"], &admin));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("KIND     STATE     TAINTED"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with("x509-ca  active    no"), "{text}");
    assert!(lines[1].contains("while active"), "{text}");
    assert!(lines[1].ends_with(ca["id"].as_str().unwrap()), "{text}");
    let text = ok(sigil(&["operator", "status"], &admin));
    assert!(text.contains("key rotation failures: 0\nKIND"), "{text}");

    // Status answers anyone; the key view only those who may act on keys.
    let mut c = s.clients().await;
    let pem = c
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .pem;
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(&bundle, pem).unwrap();
    let mut anon = s.tls_clients(&bundle, None).await;
    let st = anon
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!st.sealed);
    assert!(st.authority_keys.is_empty(), "{st:?}");
    // The bundle answers a plain workload, without the key view.
    c.entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/plain", 4321)),
        })
        .await
        .unwrap();
    let plain = tmp.path().join("plain");
    ok(sigil(
        &[
            "svid",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/plain",
            "--out",
            plain.to_str().unwrap(),
        ],
        &admin,
    ));
    let mut workload = s.tls_clients(&plain.join("bundle.pem"), Some(&plain)).await;
    let seen = workload
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!seen.pem.is_empty());
    assert!(seen.keys.is_empty(), "{seen:?}");
    let e = anon
        .operator
        .rotate_signing_key(pb::RotateSigningKeyRequest {
            kind: pb::SigningKeyKind::X509Ca.into(),
            force: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    drop((c, anon, workload));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_svid_a_tainted_ca_signed_authenticates_nobody() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let mut ops = entry("/ops", 1234);
    ops.admin = true;
    c.entries
        .create(pb::CreateEntryRequest { entry: Some(ops) })
        .await
        .unwrap();
    let admin = [("SIGIL_ADMIN_SOCKET", s.admin.to_str().unwrap())];
    let mint = |dir: &std::path::Path| {
        ok(sigil(
            &[
                "svid",
                "mint",
                "--spiffe-id",
                "spiffe://example.org/ops",
                "--out",
                dir.to_str().unwrap(),
            ],
            &admin,
        ))
    };
    let before = tmp.path().join("before");
    mint(&before);
    let mut tls = s
        .tls_clients(&before.join("bundle.pem"), Some(&before))
        .await;
    list_entries(&mut tls).await;

    // After a compromise of the CA that signed it, the same SVID is nobody's.
    let old = ids(&keys(&mut c).await, "x509-ca", "active").remove(0);
    ok(sigil(&["operator", "rotate-ca", "--force"], &admin));
    ok(sigil(&["operator", "taint-ca", &old], &admin));
    let e = tls
        .entries
        .list(pb::ListEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), "anonymous callers may not perform entry.list");

    // One the new CA signed is the admin's again.
    let after = tmp.path().join("after");
    mint(&after);
    let mut tls = s.tls_clients(&after.join("bundle.pem"), Some(&after)).await;
    list_entries(&mut tls).await;
    drop((c, tls));
    s.stop().await;
}
