//! The server decides time-bound questions with the clock it was given, so
//! tests move that clock instead of sleeping: an SVID that expires while its
//! connection stays open proves nothing any more, and audit records carry
//! the clock's time.

use crate::common::*;
use sigil::api::pb;
use sigil::clock::{Clock, ManualClock};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_that_expires_on_an_open_connection_proves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Starts at wall time: the TLS handshake checks certificates against
    // real time, and the SVID below must pass it.
    let clock = Arc::new(ManualClock::at_wall_time());
    let s = TestServer::initialized_with_clock(tmp.path(), clock.clone()).await;
    let mut c = s.clients().await;
    let mut ops = entry("/ops", 1234);
    ops.admin = true;
    c.entries
        .create(pb::CreateEntryRequest { entry: Some(ops) })
        .await
        .unwrap();
    let dir = tmp.path().join("ops");
    let admin = s.admin.to_str().unwrap();
    ok(sigil(
        &[
            "svid",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/ops",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[("SIGIL_ADMIN_SOCKET", admin)],
    ));
    let mut tls = s.tls_clients(&dir.join("bundle.pem"), Some(&dir)).await;
    assert_eq!(list_entries(&mut tls).await.entries.len(), 1);

    // The SVID lives an hour (the test config's default). Two hours later,
    // on the same connection, it no longer identifies the caller.
    clock.advance(Duration::from_secs(2 * 3600));
    let e = tls
        .entries
        .list(pb::ListEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), "anonymous callers may not perform entry.list");

    // The refusal is recorded at the server's time.
    let tail = c
        .audit
        .tail(pb::TailAuditRequest { count: 2 })
        .await
        .unwrap()
        .into_inner()
        .records;
    let denied: serde_json::Value = tail
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["event"].clone())
        .find(|e| e["decision"] == "deny")
        .unwrap_or_else(|| panic!("{tail:?}"));
    assert_eq!(
        denied["time"],
        sigil::clock::unix_seconds(clock.now()),
        "{denied}"
    );
    s.stop().await;
}
