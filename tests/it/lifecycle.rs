//! init → restart → sealed → every RPC of every service refused with
//! FailedPrecondition `sealed` → unseal → works; a wrong passphrase is
//! refused and changes nothing; an agent's entry stream ends with `sealed`
//! when the server seals.

use crate::common::*;
use sigil::api::pb;
use tonic::Code;

fn assert_sealed<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    let s = r.expect_err(what);
    assert_eq!(s.code(), Code::FailedPrecondition, "{what}: {s:?}");
    assert!(s.message().starts_with("sealed"), "{what}: {}", s.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_server_refuses_everything_but_status_init_unseal() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let created = c
        .entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/web", 1000)),
        })
        .await
        .unwrap()
        .into_inner();
    s.stop().await;

    // A restart without unseal material comes up sealed.
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    let st = c
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(st.initialized && st.sealed, "{st:?}");
    assert_eq!(st.trust_domain, TD);

    assert_sealed(
        c.entries.list(pb::ListEntriesRequest::default()).await,
        "entry list",
    );
    assert_sealed(
        c.entries
            .create(pb::CreateEntryRequest {
                entry: Some(entry("/x", 1)),
            })
            .await,
        "entry create",
    );
    assert_sealed(
        c.entries
            .show(pb::ShowEntryRequest {
                id: created.id.clone(),
            })
            .await,
        "entry show",
    );
    assert_sealed(
        c.entries
            .update(pb::UpdateEntryRequest {
                entry: Some(created.clone()),
                expected_revision: 0,
            })
            .await,
        "entry update",
    );
    assert_sealed(
        c.entries
            .delete(pb::DeleteEntryRequest {
                id: created.id.clone(),
            })
            .await,
        "entry delete",
    );
    assert_sealed(c.bundle.get(pb::GetBundleRequest {}).await, "bundle");
    assert_sealed(
        c.node
            .sign_x509_svid(pb::SignX509SvidRequest {
                spiffe_id: format!("spiffe://{TD}/w"),
                ..Default::default()
            })
            .await,
        "svid mint",
    );
    assert_sealed(
        c.node
            .mint_jwt_svid(pb::MintJwtSvidRequest {
                entry_id: String::new(),
                spiffe_id: format!("spiffe://{TD}/w"),
                audience: vec!["a".into()],
                ttl_seconds: 0,
            })
            .await,
        "jwt mint",
    );
    assert_sealed(
        c.operator.rotate_keys(pb::RotateKeysRequest {}).await,
        "rotate keys",
    );
    assert_sealed(
        c.audit.tail(pb::TailAuditRequest { count: 5 }).await,
        "audit tail",
    );
    assert_sealed(
        c.audit.verify(pb::VerifyAuditRequest {}).await,
        "audit verify",
    );
    assert_sealed(c.policy.reload(pb::ReloadRequest {}).await, "policy reload");
    assert_sealed(
        c.policy
            .check(pb::CheckRequest {
                input_json: "{}".into(),
            })
            .await,
        "policy check",
    );
    assert_sealed(
        c.agents
            .create_join_token(pb::CreateJoinTokenRequest {
                ttl_seconds: 0,
                agent_name: "n1".into(),
                replace: false,
            })
            .await,
        "join token create",
    );
    assert_sealed(c.agents.list(pb::ListAgentsRequest {}).await, "agent list");
    assert_sealed(
        c.agents
            .ban(pb::BanAgentRequest {
                spiffe_id: format!("spiffe://{TD}/sigil/agent/n1"),
            })
            .await,
        "agent ban",
    );
    assert_sealed(
        c.node
            .attest_agent(pb::AttestAgentRequest {
                join_token: "t".into(),
                csr: Vec::new(),
            })
            .await,
        "agent attest",
    );
    assert_sealed(
        c.node
            .renew_agent(pb::RenewAgentRequest { csr: Vec::new() })
            .await,
        "agent renew",
    );
    assert_sealed(
        c.node.sync_entries(pb::SyncEntriesRequest::default()).await,
        "entry sync",
    );
    assert_sealed(c.operator.seal(pb::SealRequest {}).await, "seal");
    // A second init is refused.
    let again = c
        .operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    // A wrong passphrase is refused without touching stored data.
    let before = all_file_bytes(&tmp.path().join("data/store"));
    let wrong = c
        .operator
        .unseal(pb::UnsealRequest {
            passphrase: b"not the passphrase".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied, "{wrong:?}");
    assert!(
        wrong.message().contains("wrong passphrase"),
        "{}",
        wrong.message()
    );
    let after = all_file_bytes(&tmp.path().join("data/store"));
    let db = |v: &Vec<(std::path::PathBuf, Vec<u8>)>| {
        v.iter()
            .filter(|(p, _)| p.ends_with("db") || p.ends_with("conf"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        db(&before),
        db(&after),
        "wrong passphrase changed the store"
    );
    assert!(
        c.operator
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .sealed
    );

    // The right one unseals and everything works again.
    unseal(&mut c).await;
    let listed = list_entries(&mut c).await;
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].id, created.id);
    c.bundle.get(pb::GetBundleRequest {}).await.unwrap();

    // Seal again over the API: keys leave memory at once.
    c.operator.seal(pb::SealRequest {}).await.unwrap();
    assert_sealed(
        c.entries.list(pb::ListEntriesRequest::default()).await,
        "after seal",
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_passphrase_and_uninitialized_unseal_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
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
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not initialized"), "{}", e.message());
    let e = c
        .operator
        .init(pb::InitRequest {
            passphrase: b"short".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let st = c
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!st.initialized);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keys_keeps_old_records_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    c.entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/a", 1)),
        })
        .await
        .unwrap();
    let v = c
        .operator
        .rotate_keys(pb::RotateKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.active_key_version, 2);
    c.entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/b", 2)),
        })
        .await
        .unwrap();
    let st = c
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.key_versions, vec![1, 2]);
    s.stop().await;
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    unseal(&mut c).await;
    let listed = list_entries(&mut c).await;
    assert_eq!(listed.entries.len(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_stream_open_at_seal_ends_with_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    let mut stream = agent.open_entry_stream().await;

    let mut c = s.clients().await;
    c.operator.seal(pb::SealRequest {}).await.unwrap();
    // The same answer as any call to a sealed server: not "banned" (sealing
    // empties the agent records in memory), not Unavailable.
    assert_sealed(stream.message().await, "entry stream at seal");
    agent.stop().await;
    s.stop().await;
}
