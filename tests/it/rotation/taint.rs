//! After a compromise: `rotate-ca --force` makes a new CA sign at once, `taint-ca`
//! makes the agent re-issue every SVID the old CA signed (its own included) as soon
//! as the push reaches it — hours before their half-life — and the tainted CA leaves
//! the bundle when its grace has passed. The same for the JWT signing key.

use super::probe::ca_of;
use super::{ids, keys};
use crate::common::*;
use futures::StreamExt;
use sigil::authority::signing_ca_id;
use std::time::{Duration, Instant};

const WORKLOADS: [&str; 3] = ["/t/a", "/t/b", "/t/c"];

/// Runs the CLI as an operator on the server's admin socket; returns its JSON.
fn cli_json(s: &TestServer, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(sigil(
        &all,
        &[("SIGIL_ADMIN_SOCKET", s.admin.to_str().unwrap())],
    ));
    serde_json::from_str(&out).unwrap()
}

/// The CA ids that signed the SVIDs of a context, and the CA ids of its bundle.
fn issuers_and_bundle(ctx: &spiffe::X509Context) -> (Vec<String>, Vec<Vec<u8>>) {
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let issuers = ctx
        .svids()
        .iter()
        .map(|s| signing_ca_id(s.leaf().as_bytes()).unwrap())
        .collect();
    let bundle = ctx
        .bundle_set()
        .get(&td)
        .unwrap()
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    (issuers, bundle)
}

/// Reads the open stream until a context satisfies `done`, for up to `secs`.
async fn until_context(
    stream: &mut (
             impl futures::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>> + Unpin
         ),
    secs: u64,
    what: &str,
    done: impl Fn(&spiffe::X509Context) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, stream.next()).await;
        let ctx = next
            .unwrap_or_else(|_| panic!("{what}: not within {secs}s"))
            .unwrap()
            .unwrap();
        if done(&ctx) {
            return;
        }
    }
}

fn change(out: &serde_json::Value, kind: &str, id: &str) -> Vec<String> {
    out["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind && c["id"] == id)
        .map(|c| c["change"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taint_reissues_every_svid_at_once_and_the_ca_leaves_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    // SVIDs live an hour: only the taint can make them renew during this test.
    cfg.rotation.publish_window = Duration::from_secs(1);
    cfg.rotation.taint_grace = Duration::from_secs(3);
    cfg.rotation.validate().unwrap();
    let s = TestServer::start_with(cfg).await;
    s.clients()
        .await
        .operator
        .init(sigil::api::pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    let dir = tmp.path().join("agent");
    let agent = TestAgent::start(&s, &dir, "node1").await;
    for w in WORKLOADS {
        register(&s, &agent.id, w, sigil::server::own_uid(), "", 0).await;
    }
    crate::agent::identities(&agent, 3).await;
    let mut c = s.clients().await;
    let k = keys(&mut c).await;
    let old = ids(&k, "x509-ca", "active").remove(0);
    let old_kid = ids(&k, "jwt", "active").remove(0);

    let client = crate::agent::client(&agent).await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(issuers_and_bundle(&first).0, [old.as_str(); 3]);
    let wid = spiffe::SpiffeId::new(format!("spiffe://{TD}/t/a")).unwrap();
    let token = client.fetch_jwt_svid(["aud"], Some(&wid)).await.unwrap();
    assert_eq!(token.key_id(), old_kid);

    // A forced rotation: the new CA signs at once. What the old one signed stays
    // valid and is not re-issued by the rotation alone.
    let out = cli_json(&s, &["operator", "rotate-ca", "--force"]);
    let new = ids(&keys(&mut c).await, "x509-ca", "active").remove(0);
    assert_ne!(new, old);
    assert_eq!(
        change(&out, "x509-ca", &new),
        ["prepared", "activated-forced"]
    );
    assert_eq!(change(&out, "x509-ca", &old), ["retired"]);
    // The server's own SVID follows the active CA: a client trusting only the new
    // CA reaches it.
    let pem = c
        .bundle
        .get(sigil::api::pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .pem;
    let only_new: Vec<Vec<u8>> = sigil::tls::certs_from_pem("bundle", pem.as_bytes())
        .unwrap()
        .into_iter()
        .filter(|der| ca_of(der).0 == new)
        .collect();
    let td = sigil::id::TrustDomain::parse(TD).unwrap();
    let config = sigil::tls::client_config(&only_new, td.server_id(), None).unwrap();
    let channel = sigil::tls::channel::connect(&s.addr.to_string(), std::sync::Arc::new(config))
        .await
        .unwrap();
    sigil::api::pb::operator_client::OperatorClient::new(channel)
        .status(sigil::api::pb::StatusRequest {})
        .await
        .unwrap();
    let svids = client.fetch_all_x509_svids().await.unwrap();
    assert!(
        svids
            .iter()
            .all(|s| signing_ca_id(s.leaf().as_bytes()).unwrap() == old)
    );

    // The taint: the agent re-issues every SVID the old CA signed, and the open
    // stream delivers them.
    let out = cli_json(&s, &["operator", "taint-ca", &old]);
    assert_eq!(change(&out, "x509-ca", &old), ["tainted"]);
    let tainted = out["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == old.as_str())
        .unwrap()
        .clone();
    assert_eq!(tainted["tainted"], true, "{tainted}");
    assert_eq!(tainted["state"], "old", "{tainted}");
    assert_eq!(
        tainted["leaves_bundle_at"].as_i64().unwrap(),
        tainted["tainted_at"].as_i64().unwrap() + 3,
        "{tainted}"
    );
    until_context(&mut stream, 10, "every SVID re-issued", |ctx| {
        issuers_and_bundle(ctx).0.iter().all(|i| *i == new)
    })
    .await;
    let agent_svid = dir.join("state/agent_svid.pem");
    eventually(10, || async {
        let pem = std::fs::read(&agent_svid).ok()?;
        let chain = sigil::tls::certs_from_pem("agent_svid.pem", &pem).ok()?;
        (signing_ca_id(&chain[0])? == new).then_some(())
    })
    .await;
    // Nor does the agent trust the tainted CA for the server any more, while it is
    // still in the bundle: whoever stole its key could stand in for the server.
    let pem = std::fs::read(dir.join("state/bundle.pem")).unwrap();
    let trusted: Vec<String> = sigil::tls::certs_from_pem("bundle.pem", &pem)
        .unwrap()
        .iter()
        .map(|der| ca_of(der).0)
        .collect();
    let published: Vec<String> = s
        .server
        .authority()
        .unwrap()
        .bundle()
        .x509_authorities
        .iter()
        .map(|der| ca_of(der).0)
        .collect();
    assert!(trusted.contains(&new), "{trusted:?}");
    if published.contains(&old) {
        assert!(!trusted.contains(&old), "{trusted:?} of {published:?}");
    }

    // The tainted CA leaves the bundle once its grace has passed.
    until_context(&mut stream, 15, "the tainted CA out of the bundle", |ctx| {
        let bundle = issuers_and_bundle(ctx).1;
        !bundle.iter().any(|der| ca_of(der).0 == old)
    })
    .await;
    let shown = cli_json(&s, &["bundle", "show"]);
    let listed: Vec<&str> = shown["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(!listed.contains(&old.as_str()), "{shown}");

    // The JWT key the same way: a token it signed is no longer served, and no
    // longer validates.
    cli_json(&s, &["operator", "rotate-jwt-key", "--force"]);
    let out = cli_json(&s, &["operator", "taint-jwt-key", &old_kid]);
    assert_eq!(change(&out, "jwt", &old_kid), ["tainted"]);
    let new_kid = ids(&keys(&mut c).await, "jwt", "active").remove(0);
    eventually(10, || async {
        let t = client.fetch_jwt_svid(["aud"], Some(&wid)).await.ok()?;
        (t.key_id() == new_kid).then_some(())
    })
    .await;
    // A token the tainted key signed is refused as soon as the taint reaches the
    // agent, while the key is still in the bundle for its grace period.
    let refused = eventually(10, || async {
        let e = client
            .validate_jwt_token("aud", token.token())
            .await
            .err()?;
        Some(format!("{e:?}"))
    })
    .await;
    assert!(
        refused.contains(&format!(
            "signed by key {old_kid}, which is marked compromised"
        )),
        "{refused}"
    );

    // Every step is audited: the operator's request by the gate, each key change
    // with the server as subject.
    let tail = c
        .audit
        .tail(sigil::api::pb::TailAuditRequest { count: 200 })
        .await
        .unwrap()
        .into_inner()
        .records;
    let events: Vec<serde_json::Value> = tail
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["event"].clone())
        .collect();
    let request = events
        .iter()
        .find(|e| e["action"] == "operator.taint_signing_key")
        .unwrap();
    assert_eq!(request["resource"], format!("x509-ca:{old}"));
    assert_eq!(request["decision"], "allow");
    let record = events
        .iter()
        .find(|e| e["action"] == "key.tainted" && e["resource"] == format!("x509-ca:{old}"))
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(record["subject"], sigil::audit::SERVER_SUBJECT);
    assert_eq!(
        record["reasons"][0],
        format!(
            "operator.taint_signing_key requested by {}",
            request["subject"].as_str().unwrap()
        )
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "key.dropped" && e["resource"] == format!("x509-ca:{old}")),
        "{events:#?}"
    );
    drop(stream);
    agent.stop().await;
    s.stop().await;
}

/// Writes an SVID, its key (0600) and `bundle` where `--svid-dir` looks.
fn write_svid_dir(
    dir: &std::path::Path,
    chain: &[Vec<u8>],
    key: &sigil::secret::Secret,
    bundle: &str,
) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("svid.pem"), sigil::tls::certs_to_pem(chain)).unwrap();
    let key_path = dir.join("key.pem");
    std::fs::write(&key_path, sigil::tls::key_to_pem(key).expose()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_agent_svid_from_a_tainted_ca_renews_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let dir = tmp.path().join("agent");
    let agent = TestAgent::start(&s, &dir, "node1").await;
    let id = sigil::id::SpiffeId::parse(&agent.id).unwrap();

    // What a thief of the CA key makes: another SVID for the same agent, as
    // valid as the one the server issued.
    let (key, csr) = sigil::authority::generate_key_and_csr(&id).unwrap();
    let forged = s
        .server
        .authority()
        .unwrap()
        .sign_x509_svid(
            &csr,
            &id,
            Duration::from_secs(3600),
            &[],
            sigil::clock::now(),
        )
        .unwrap();
    let mut c = s.clients().await;
    let old = ids(&keys(&mut c).await, "x509-ca", "active").remove(0);
    cli_json(&s, &["operator", "rotate-ca", "--force"]);
    let new = ids(&keys(&mut c).await, "x509-ca", "active").remove(0);
    cli_json(&s, &["operator", "taint-ca", &old]);

    // The old CA is still in the bundle (its grace), but the forged SVID is
    // nobody's: renewing with it is refused.
    let bundle = s.server.authority().unwrap().bundle().to_pem();
    let forged_dir = tmp.path().join("forged");
    write_svid_dir(&forged_dir, &forged.chain_der, &key, &bundle);
    let mut thief = s
        .tls_clients(&forged_dir.join("bundle.pem"), Some(&forged_dir))
        .await;
    let (_, csr) = sigil::authority::generate_key_and_csr(&id).unwrap();
    let e = thief
        .node
        .renew_agent(sigil::api::pb::RenewAgentRequest { csr })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().starts_with("anonymous callers may not perform"),
        "{e:?}"
    );

    // The agent renews with the SVID the server issued it, from the new CA.
    let agent_svid = dir.join("state/agent_svid.pem");
    eventually(10, || async {
        let pem = std::fs::read(&agent_svid).ok()?;
        let chain = sigil::tls::certs_from_pem("agent_svid.pem", &pem).ok()?;
        (signing_ca_id(&chain[0])? == new).then_some(())
    })
    .await;
    drop((c, thief));
    agent.stop().await;
    s.stop().await;
}
