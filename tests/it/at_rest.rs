//! Data at rest: a marker value written through the API and the CA's
//! private key never appear in plaintext in any file under the data
//! directory; a store damaged or rolled back with the server stopped stops
//! the unseal.

use crate::common::*;
use base64::Engine;
use sigil::api::pb;
use sigil::store::{SledStore, Store, Table};
use std::path::Path;
use tonic::Code;

const MARKER: &str = "MARKER-7f3a9c0d-plaintext-at-rest";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_and_ca_key_never_reach_the_disk_in_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let mut e = entry("/marked", 42);
    e.hint = MARKER.into();
    e.selectors.push(format!("unix:user:{MARKER}"));
    let created = c
        .entries
        .create(pb::CreateEntryRequest { entry: Some(e) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.hint, MARKER);

    // The CA key as the authority holds it.
    let sealed = s.server.authority().unwrap().to_sealed_bytes();
    let json: serde_json::Value = serde_json::from_slice(sealed.expose()).unwrap();
    let b64 = json["ca_keys"][0]["pkcs8"].as_str().unwrap().to_owned();
    let pkcs8 = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let at = pkcs8
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .expect("private scalar in PKCS#8");
    let scalar = pkcs8[at + 2..at + 34].to_vec();
    let jwt_b64 = json["jwt_keys"][0]["pkcs8"].as_str().unwrap().to_owned();

    drop(c);
    s.stop().await;

    let files = all_file_bytes(tmp.path());
    assert!(
        files.iter().any(|(p, _)| p.ends_with("audit.log")),
        "scanned the audit log too"
    );
    for (path, bytes) in &files {
        for (what, needle) in [
            ("marker", MARKER.as_bytes()),
            ("CA key (PKCS#8)", &pkcs8[..]),
            ("CA key (base64)", b64.as_bytes()),
            ("CA private scalar", &scalar[..]),
            ("JWT key (base64)", jwt_b64.as_bytes()),
        ] {
            assert!(
                !contains(bytes, needle),
                "{what} found in plaintext in {}",
                path.display()
            );
        }
    }
}

async fn unseal_refused(dir: &Path) -> tonic::Status {
    let s = TestServer::start_in(dir).await;
    let mut c = s.clients().await;
    let e = c
        .operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    drop(c);
    s.stop().await;
    e
}

/// The raw store of a stopped server.
fn raw_store(dir: &Path) -> SledStore {
    SledStore::open(&dir.join("data/store")).unwrap()
}

/// Attack, with the server stopped: bytes of a stored entry flipped, then
/// entries deleted (what truncating the store does), then sled's file
/// itself damaged. Each stops the unseal, naming the table or the lost
/// writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_refuses_unseal_naming_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    for i in 0..3 {
        c.entries
            .create(pb::CreateEntryRequest {
                entry: Some(entry(&format!("/w{i}"), i)),
            })
            .await
            .unwrap();
    }
    drop(c);
    s.stop().await;

    let raw = raw_store(tmp.path());
    let (key, original) = raw.scan_prefix(Table::ENTRIES, b"").unwrap().remove(0);
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    raw.put(Table::ENTRIES, &key, &flipped).unwrap();
    drop(raw);
    let e = unseal_refused(tmp.path()).await;
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert_eq!(
        e.message(),
        "store table entries does not match its digest (3 records, 3 expected): records were altered, removed or added outside the server"
    );

    let raw = raw_store(tmp.path());
    raw.put(Table::ENTRIES, &key, &original).unwrap();
    raw.delete(Table::ENTRIES, &key).unwrap();
    drop(raw);
    let e = unseal_refused(tmp.path()).await;
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(
        e.message()
            .starts_with("store table entries does not match its digest (2 records, 3 expected)"),
        "{}",
        e.message()
    );

    // Put back, the store is whole again.
    let raw = raw_store(tmp.path());
    raw.put(Table::ENTRIES, &key, &original).unwrap();
    drop(raw);
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    unseal(&mut c).await;
    assert_eq!(list_entries(&mut c).await.entries.len(), 3);
    drop(c);
    s.stop().await;

    // sled's own file damaged near the end of what it wrote (flipped bytes
    // or cut short): sled stops reading at the damage and recovers an
    // older state whose digests match, so its generation gives it away.
    // Whatever the damage, the server never unseals with entries missing.
    let data = tmp.path().join("data");
    let pristine = tmp.path().join("pristine");
    copy_dir(&data, &pristine);
    let bytes = std::fs::read(data.join("store/db")).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    let mut rollbacks = 0;
    for back in [512, 1024, 2048, 4096] {
        let mut flipped = bytes.clone();
        flipped[end - back..end - back + 16]
            .iter_mut()
            .for_each(|b| *b ^= 0x55);
        let cut = bytes[..end - back].to_vec();
        for damaged in [flipped, cut] {
            std::fs::remove_dir_all(&data).unwrap();
            copy_dir(&pristine, &data);
            std::fs::write(data.join("store/db"), &damaged).unwrap();
            rollbacks += u32::from(never_missing_entries(tmp.path()).await);
        }
    }
    assert!(rollbacks > 0, "no damage was caught as lost writes");
}

/// Opens and unseals a damaged store: either the store refuses to open, or
/// unseal refuses, or every entry is there. True when unseal refused it as
/// a rollback (lost writes).
async fn never_missing_entries(dir: &Path) -> bool {
    use sigil::server::{Server, ServerError};
    use sigil::store::StoreError;
    let server = match Server::open(config(dir)).await {
        Err(ServerError::Store(StoreError::Corrupt { .. })) => return false,
        Err(e) => panic!("unexpected: {e}"),
        Ok(server) => server,
    };
    let unsealed = server
        .clone()
        .unseal(sigil::secret::Secret::from(PASSPHRASE.to_string()))
        .await;
    match unsealed.map_err(tonic::Status::from) {
        Ok(()) => {
            assert_eq!(server.entries().list().len(), 3);
            false
        }
        Err(e) if e.code() == Code::DataLoss => {
            assert!(e.message().starts_with("store table "), "{e:?}");
            false
        }
        Err(e) => {
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            assert!(
                e.message().contains(
                    "or the store lost its latest writes (a damaged or truncated store file)"
                ),
                "{}",
                e.message()
            );
            true
        }
    }
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Attack: an older copy of the store restored after an agent was banned
/// (and its join token used): unseal refuses it as a rollback. The escape
/// hatch for a deliberate restore, `--accept-rollback`, works and is
/// audited, and the next unseal needs it no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_store_copy_refuses_unseal_until_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    s.stop().await;
    let store = tmp.path().join("data/store");
    let copy = tmp.path().join("store-copy");
    copy_dir(&store, &copy);

    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    unseal(&mut c).await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    c.agents
        .ban(pb::BanAgentRequest {
            spiffe_id: agent.id.clone(),
        })
        .await
        .unwrap();
    agent.stop().await;
    drop(c);
    s.stop().await;

    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(&copy, &store);
    let e = unseal_refused(tmp.path()).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .starts_with("store rollback: the audit log has seen store generation"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("--accept-rollback"), "{}", e.message());

    let s = TestServer::start_in(tmp.path()).await;
    let admin = s.admin.to_str().unwrap().to_owned();
    let pass = crate::audit::passphrase_file(tmp.path());
    ok(sigil(
        &[
            "operator",
            "unseal",
            "--accept-rollback",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    ));
    let mut c = s.clients().await;
    // The restored store is what is served now: the agent is not there.
    let agents = c
        .agents
        .list(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert!(agents.is_empty(), "{agents:?}");
    let records = crate::audit::tail(&mut c, 3).await;
    assert_eq!(records[0]["event"]["action"], "operator.unseal");
    assert_eq!(records[0]["event"]["resource"], "store:accept-rollback");
    assert_eq!(records[0]["event"]["decision"], "allow");
    assert_eq!(records[1]["event"]["action"], "audit.anchor");
    assert_eq!(records[1]["auth"], "hmac");
    let accepted = records[1]["event"]["reasons"][1].as_str().unwrap();
    assert!(
        accepted.starts_with("rollback accepted: the store was at generation"),
        "{accepted}"
    );
    let report = c
        .audit
        .verify(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{report:?}");
    assert!(
        report.store_generation >= report.log_generation,
        "{report:?}"
    );
    drop(c);
    s.stop().await;

    // The store is ahead of the log again: a plain unseal works.
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    unseal(&mut c).await;
    drop(c);
    s.stop().await;
}
