//! The audit chain: verifies after a mixed workload; a flipped byte or a
//! dropped last record is named; records written while sealed are reported
//! as unauthenticated and re-anchored at unseal; failed unseal attempts read
//! as failed; the chain head reaches the server log.

use crate::common::*;
use sigil::api::pb;
use std::path::{Path, PathBuf};
use tonic::Code;

pub fn passphrase_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("unseal");
    std::fs::write(&f, PASSPHRASE).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

pub fn offline_verify(data: &Path, pass: &Path) -> std::process::Output {
    sigil(
        &[
            "audit",
            "verify",
            "--data-dir",
            data.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
        &[],
    )
}

/// The bodies of the last `n` records before this call's own, parsed.
pub async fn tail(c: &mut sigil::cli::client::Clients, n: u32) -> Vec<serde_json::Value> {
    let mut records: Vec<serde_json::Value> = c
        .audit
        .tail(pb::TailAuditRequest { count: n + 1 })
        .await
        .unwrap()
        .into_inner()
        .records
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let own = records.pop().unwrap();
    assert_eq!(own["event"]["action"], "audit.tail");
    records
}

async fn verify(c: &mut sigil::cli::client::Clients) -> pb::VerifyAuditResponse {
    c.audit
        .verify(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_verifies_and_tampering_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    // A mixed workload: allowed admin calls and denied anonymous ones.
    for i in 0..5 {
        c.entries
            .create(pb::CreateEntryRequest {
                entry: Some(entry(&format!("/w{i}"), i)),
            })
            .await
            .unwrap();
    }
    let bundle_path = tmp.path().join("bundle.pem");
    let pem = c
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .pem;
    std::fs::write(&bundle_path, pem).unwrap();
    let mut anon = s.tls_clients(&bundle_path, None).await;
    for _ in 0..3 {
        let e = anon
            .entries
            .list(pb::ListEntriesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    let report = verify(&mut c).await;
    assert!(report.ok, "{report:?}");
    // init (written while sealed) + re-anchor + the first CA and JWT key
    // (each prepared and activated) + 5 creates + bundle + 3 denied + this
    // verify.
    assert_eq!(
        (report.records, report.authenticated, report.unauthenticated),
        (16, 15, 1),
        "{report:?}"
    );
    let tail = tail(&mut c, 50).await;
    assert!(
        tail.iter().any(|r| r["event"]["decision"] == "deny"),
        "denials are recorded: {tail:?}"
    );
    assert!(
        tail.iter().any(|r| r["event"]["action"] == "entry.create"),
        "{tail:?}"
    );
    drop((c, anon));
    s.stop().await;

    let data = tmp.path().join("data");
    let pass = passphrase_file(tmp.path());
    let out = ok(offline_verify(&data, &pass));
    // 16 records, the tail call, then the keyed checkpoint at shutdown.
    assert!(
        out.starts_with("chain intact: 18 records, 17 authenticated\n"),
        "{out}"
    );
    assert!(
        out.contains("UNAUTHENTICATED: 1 records written while sealed: 1 (re-anchored by 2)"),
        "{out}"
    );

    let log = data.join("audit.log");
    let original = std::fs::read(&log).unwrap();
    let lines: Vec<&[u8]> = original.split_inclusive(|b| *b == b'\n').collect();
    let count = lines.len();

    // Flip one byte inside record 4's body (a keyed record).
    let mut tampered = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut l = l.to_vec();
        if i == 3 {
            let pos = l.len() - 10;
            l[pos] ^= 0x01;
        }
        tampered.extend(l);
    }
    std::fs::write(&log, &tampered).unwrap();
    let out = offline_verify(&data, &pass);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("record 4: keyed HMAC does not verify"),
        "{err}"
    );

    // Drop the last record.
    let truncated: Vec<u8> = lines[..count - 1].concat();
    std::fs::write(&log, &truncated).unwrap();
    let out = offline_verify(&data, &pass);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("record {count}")), "{err}");

    // A server refuses to unseal on a truncated log.
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    let e = c
        .operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("audit log failed verification"),
        "{}",
        e.message()
    );
    drop(c);
    s.stop().await;

    std::fs::write(&log, &original).unwrap();
    ok(offline_verify(&data, &pass));
}

/// Records written while sealed (status calls, unseal attempts) are
/// reported as unauthenticated, online and offline, never as verified; the
/// re-anchor at unseal states how many there were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_time_records_are_unauthenticated_and_re_anchored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    s.stop().await;

    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    for _ in 0..3 {
        c.operator.status(pb::StatusRequest {}).await.unwrap();
    }
    let pass = passphrase_file(tmp.path());
    let out = ok(offline_verify_while_running(&tmp.path().join("data")));
    assert!(out.contains("NOT CHECKED"), "{out}");
    unseal(&mut c).await;
    let records = tail(&mut c, 2).await;
    let anchor = &records[1];
    assert_eq!(anchor["auth"], "hmac");
    assert_eq!(anchor["event"]["action"], "audit.anchor");
    // 3 status calls + the unseal call's own decision record.
    assert_eq!(anchor["sealed_records"], 4, "{anchor}");
    assert_eq!(
        anchor["event"]["reasons"][1],
        "4 records written while sealed precede this one (unauthenticated)"
    );
    assert_eq!(records[0]["auth"], "none");
    assert_eq!(records[0]["event"]["action"], "operator.unseal");

    let report = verify(&mut c).await;
    assert!(report.ok, "{report:?}");
    // Run 1: init. Run 2: after the restart, up to the re-anchor.
    let runs: Vec<(u64, u64, u64)> = report
        .sealed_runs
        .iter()
        .map(|r| (r.first, r.last, r.anchored_by))
        .collect();
    let anchor_seq = anchor["seq"].as_u64().unwrap();
    assert_eq!(
        runs,
        vec![(1, 1, 2), (anchor_seq - 4, anchor_seq - 1, anchor_seq)]
    );
    assert_eq!(report.unauthenticated, 5);
    assert_eq!(report.authenticated, report.records - 5);
    drop(c);
    s.stop().await;
    let out = ok(offline_verify(&tmp.path().join("data"), &pass));
    assert!(!out.starts_with("OK"), "{out}");
    assert!(
        out.contains(&format!(
            "UNAUTHENTICATED: 5 records written while sealed: 1 (re-anchored by 2), {}-{} (re-anchored by {anchor_seq})",
            anchor_seq - 4,
            anchor_seq - 1
        )),
        "{out}"
    );
}

/// Offline verification without the passphrase: only links are checked.
fn offline_verify_while_running(data: &Path) -> std::process::Output {
    sigil(
        &["audit", "verify", "--data-dir", data.to_str().unwrap()],
        &[],
    )
}

/// A wrong passphrase reads as a failure in the audit log, not as "allow".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_is_audited_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    s.stop().await;
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    let wrong = c
        .operator
        .unseal(pb::UnsealRequest {
            passphrase: b"not the passphrase".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    unseal(&mut c).await;
    let records = tail(&mut c, 4).await;
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["event"]["action"].as_str().unwrap(),
                r["event"]["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("operator.unseal", "allow"),
            ("operator.unseal", "failed"),
            ("operator.unseal", "allow"),
            ("audit.anchor", "allow"),
        ]
    );
    assert_eq!(
        records[1]["event"]["reasons"][0],
        "wrong passphrase: the store stays sealed"
    );
    assert_eq!(records[1]["auth"], "none");
    drop(c);
    s.stop().await;
}

/// Captures what the server logs through `tracing` on this thread (the
/// audit writer thread inherits it when the server opens its log).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn heads(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter(|l| l.contains("audit chain head"))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_head_is_logged_at_seal_and_shutdown() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    c.operator.seal(pb::SealRequest {}).await.unwrap();
    let head = s.server.audit().head();
    let heads = captured.heads();
    let at_seal = format!(
        "sigil::audit: audit chain head seq={} hash={} reason=\"seal\"",
        head.seq,
        hex::encode(head.hash)
    );
    assert!(heads.iter().any(|l| l.contains(&at_seal)), "{heads:?}");
    drop(c);
    s.stop().await;
    let heads = captured.heads();
    let last = heads.last().unwrap();
    assert!(last.contains("reason=\"shutdown\""), "{heads:?}");
}

/// Init refuses a log kept from another store (its keyed records can never
/// verify under new keys) before creating anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_another_stores_log() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    s.stop().await;
    std::fs::remove_dir_all(tmp.path().join("data/store")).unwrap();
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    let e = c
        .operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        e.message(),
        "the audit log holds 6 keyed records from another store; move it aside before init"
    );
    let st = c
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!st.initialized, "{st:?}");
    drop(c);
    s.stop().await;
}

/// A mistaken init on a running server is refused and leaves it unsealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_init_leaves_the_server_unsealed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let e = c
        .operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(list_entries(&mut c).await.entries.is_empty());
    let records = tail(&mut c, 3).await;
    assert_eq!(records[0]["event"]["decision"], "allow");
    assert_eq!(records[1]["event"]["decision"], "failed");
    assert_eq!(records[1]["event"]["reasons"][0], "already initialized");
    drop(c);
    s.stop().await;
}
