//! The audit chain: verifies after a mixed workload; one flipped byte or a
//! dropped last record is detected and the record named.

use crate::common::*;
use sigil::api::pb;
use std::path::Path;
use tonic::Code;

fn passphrase_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("unseal");
    std::fs::write(&f, PASSPHRASE).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

fn offline_verify(data: &Path, pass: &Path) -> std::process::Output {
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
    let report = c
        .audit
        .verify(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{report:?}");
    // init + 5 creates + bundle + 3 denied + this verify.
    assert_eq!(report.records, 11, "{report:?}");
    let tail = c
        .audit
        .tail(pb::TailAuditRequest { count: 50 })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        tail.iter().any(|r| r.contains("\"deny\"")),
        "denials are recorded: {tail:?}"
    );
    assert!(tail.iter().any(|r| r.contains("entry.create")), "{tail:?}");
    drop((c, anon));
    s.stop().await;

    let data = tmp.path().join("data");
    let pass = passphrase_file(tmp.path());
    let out = ok(offline_verify(&data, &pass));
    assert!(out.starts_with("OK: "), "{out}");

    let log = data.join("audit.log");
    let original = std::fs::read(&log).unwrap();
    let lines: Vec<&[u8]> = original.split_inclusive(|b| *b == b'\n').collect();
    let count = lines.len();

    // Flip one byte inside record 4's body.
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
    assert!(err.contains("record 4"), "{err}");

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
