//! Versions, check-and-set, delete / undelete / destroy, max-versions,
//! metadata times and input limits, each with its exact status and message.

use super::*;
use sigil::clock::ManualClock;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tonic::Code;

async fn harness_at(clock: Arc<ManualClock>) -> (tempfile::TempDir, TestServer) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.policy_dir = policy_with(tmp.path(), &serde_json::json!({}));
    let s = TestServer::initialized_with_config_and_clock(cfg, clock).await;
    (tmp, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_cas_delete_undelete_destroy_with_exact_outcomes() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    let v = |r: tonic::Response<pb::PutSecretResponse>| r.into_inner().version;
    assert_eq!(
        v(c.put(put("app/db", &[("password", "one")], Some(0)))
            .await
            .unwrap()),
        1
    );
    let e = c
        .put(put("app/db", &[("password", "x")], Some(0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert_eq!(
        e.message(),
        "check-and-set failed: expected current version 0, it is 1"
    );
    assert_eq!(
        v(c.put(put("app/db", &[("password", "two")], Some(1)))
            .await
            .unwrap()),
        2
    );
    assert_eq!(
        v(c.put(put("app/db", &[("password", "three")], None))
            .await
            .unwrap()),
        3
    );
    let e = c
        .put(put("app/db", &[("password", "x")], Some(2)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);

    let cur = c.get(get("app/db", 0)).await.unwrap().into_inner();
    assert_eq!((cur.version, field(&cur, "password")), (3, "three".into()));
    let one = c.get(get("app/db", 1)).await.unwrap().into_inner();
    assert_eq!(field(&one, "password"), "one");

    // Missing, deleted and destroyed each say which.
    let e = c.get(get("nope/db", 0)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "no secret at nope/db")
    );
    let e = c.get(get("app/db", 9)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::NotFound,
            "version 9 does not exist (current version is 3)"
        )
    );
    let changed = c
        .delete(versions("app/db", &[]))
        .await
        .unwrap()
        .into_inner()
        .changed;
    assert_eq!(changed, vec![3]);
    let e = c.get(get("app/db", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().starts_with("version 3 was deleted at "),
        "{}",
        e.message()
    );
    assert!(
        e.message().ends_with("(undelete restores it)"),
        "{}",
        e.message()
    );
    assert_eq!(
        c.undelete(versions("app/db", &[3]))
            .await
            .unwrap()
            .into_inner()
            .changed,
        vec![3]
    );
    assert_eq!(
        c.get(get("app/db", 0)).await.unwrap().into_inner().version,
        3
    );
    assert_eq!(
        c.destroy(versions("app/db", &[2]))
            .await
            .unwrap()
            .into_inner()
            .changed,
        vec![2]
    );
    let e = c.get(get("app/db", 2)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "version 2 was destroyed; its value is gone"
        )
    );
    assert_eq!(
        c.undelete(versions("app/db", &[2]))
            .await
            .unwrap()
            .into_inner()
            .changed,
        Vec::<u64>::new(),
        "destroyed stays destroyed"
    );
    // Version numbers are never reused, even after destroy.
    c.destroy(versions("app/db", &[3])).await.unwrap();
    assert_eq!(
        v(c.put(put("app/db", &[("password", "four")], Some(3)))
            .await
            .unwrap()),
        4
    );
    let e = c.delete(versions("app/db", &[0])).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "version numbers start at 1")
    );
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_versions_prunes_and_pruned_versions_read_as_destroyed() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    for i in 1..=12 {
        let r = c
            .put(put("app/k", &[("v", &i.to_string())], None))
            .await
            .unwrap();
        assert_eq!(r.into_inner().version, i);
    }
    let meta = c
        .meta(pb::SecretMetaRequest {
            path: "app/k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (meta.current_version, meta.oldest_version, meta.max_versions),
        (12, 3, 10)
    );
    assert_eq!(meta.versions.len(), 10);
    let e = c.get(get("app/k", 2)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "version 2 was destroyed (beyond max-versions); its value is gone"
        )
    );
    let meta = c
        .meta(pb::SecretMetaRequest {
            path: "app/k".into(),
            set_max_versions: true,
            max_versions: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        meta.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![11, 12]
    );
    assert_eq!(
        field(&c.get(get("app/k", 11)).await.unwrap().into_inner(), "v"),
        "11"
    );
    assert_eq!(
        c.get(get("app/k", 10)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // The pruned values are gone from the store, not only hidden.
    let path = sigil::secrets::SecretPath::parse("app/k").unwrap();
    let store = h.server.server.secrets().get(&path, 5, 0).await;
    assert!(matches!(
        store,
        Err(sigil::server::SecretsError::Kv(
            sigil::secrets::KvError::Destroyed {
                version: 5,
                pruned: true
            }
        ))
    ));
    let e = c
        .meta(pb::SecretMetaRequest {
            path: "app/k".into(),
            set_max_versions: true,
            max_versions: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "max-versions must be between 1 and 1000, not 0"
        )
    );
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_records_each_versions_times() {
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = Arc::new(ManualClock::new(start));
    let (_tmp, s) = harness_at(clock.clone()).await;
    let mut c = s.clients().await.secrets;
    c.put(put("t/s", &[("a", "1")], None)).await.unwrap();
    clock.advance(Duration::from_secs(10));
    c.put(put("t/s", &[("a", "2")], None)).await.unwrap();
    clock.advance(Duration::from_secs(10));
    c.delete(versions("t/s", &[1])).await.unwrap();
    clock.advance(Duration::from_secs(10));
    c.destroy(versions("t/s", &[2])).await.unwrap();
    let custom = [("owner".to_string(), "team-a".to_string())]
        .into_iter()
        .collect();
    let m = c
        .meta(pb::SecretMetaRequest {
            path: "t/s".into(),
            set_custom: true,
            custom,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t0 = 1_800_000_000;
    assert_eq!((m.created_at, m.updated_at), (t0, t0 + 30));
    assert_eq!(m.custom.get("owner").map(String::as_str), Some("team-a"));
    let v1 = &m.versions[0];
    let v2 = &m.versions[1];
    assert_eq!(
        (v1.version, v1.created_at, v1.deleted_at, v1.destroyed_at),
        (1, t0, t0 + 20, 0)
    );
    assert_eq!(
        (v2.version, v2.created_at, v2.deleted_at, v2.destroyed_at),
        (2, t0 + 10, 0, t0 + 30)
    );
    let big = [("k".to_string(), "v".repeat(513))].into_iter().collect();
    let e = c
        .meta(pb::SecretMetaRequest {
            path: "t/s".into(),
            set_custom: true,
            custom: big,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "custom metadata value of \"k\" is longer than 512 bytes"
        )
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_fields_are_refused_and_store_nothing() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    let long = "a".repeat(257);
    let huge = "x".repeat(64 * 1024 + 1);
    let cases: Vec<(pb::PutSecretRequest, &str)> = vec![
        (put("", &[("a", "1")], None), "secret path is empty"),
        (
            put("/app/db", &[("a", "1")], None),
            "secret path \"/app/db\" has an empty segment (leading, trailing or doubled '/')",
        ),
        (
            put("app//db", &[("a", "1")], None),
            "secret path \"app//db\" has an empty segment (leading, trailing or doubled '/')",
        ),
        (
            put("app/../db", &[("a", "1")], None),
            "secret path \"app/../db\" has a '.' or '..' segment",
        ),
        (
            put("app/./db", &[("a", "1")], None),
            "secret path \"app/./db\" has a '.' or '..' segment",
        ),
        (
            put("app/d b", &[("a", "1")], None),
            "secret path \"app/d b\" has the character ' '; segments use only letters, digits, '_', '-' and '.'",
        ),
        (
            put(&long, &[("a", "1")], None),
            "secret path is 257 bytes; the limit is 256",
        ),
        (
            put("app/db", &[], None),
            "a secret version needs at least one field (KEY=VALUE)",
        ),
        (
            put("app/db", &[("bad name", "1")], None),
            "field name \"bad name\" may use only letters, digits, '_', '-' and '.'",
        ),
        (
            put("app/db", &[("big", &huge)], None),
            "field \"big\" is 65537 bytes; the limit is 65536",
        ),
    ];
    for (req, want) in cases {
        let e = c.put(req).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, want));
    }
    let mut not_text = put("app/db", &[], None);
    not_text.fields.insert("k".into(), vec![0xff, 0xfe]);
    let e = c.put(not_text).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "field \"k\" is not UTF-8 text")
    );
    // Nothing was stored by any of them.
    let listed = c
        .list(pb::ListSecretsRequest {
            prefix: String::new(),
        })
        .await
        .unwrap();
    assert!(listed.into_inner().secrets.is_empty());
    assert_eq!(
        c.get(get("app/db", 0)).await.unwrap_err().code(),
        Code::NotFound
    );
    h.server.stop().await;
}
