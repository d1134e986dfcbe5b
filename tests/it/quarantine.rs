//! Quarantine (SPEC §3.3 `sigil quarantine`): one operation cuts an
//! identity off everywhere at once: its open Workload API stream ends with
//! PermissionDenied within a second, nothing more is issued for it, its
//! tokens stop introspecting as active, every request it makes is denied
//! naming the reason, and all of it survives seal and unseal and is in a
//! verifiable audit log. Lifting it restores issuance.

use crate::agent::{client, identities};
use crate::common::*;
use crate::secrets::policy_with;
use futures::StreamExt;
use sigil::api::pb;
use std::time::Duration;
use tonic::Code;

const WEB: &str = "spiffe://example.org/web";
const REASON: &str = "key leaked in build logs";

/// The spiffe crate reports the Workload API's PermissionDenied as
/// `NoIdentityIssued` (the standard's meaning of that code).
fn permission_denied<E: std::fmt::Debug>(e: &E) -> bool {
    format!("{e:?}") == "NoIdentityIssued"
}

/// The quarantines `c` is shown.
async fn quarantined(c: &mut sigil::cli::client::Clients) -> Vec<pb::QuarantineRecord> {
    c.quarantine
        .list(pb::QuarantineListRequest {})
        .await
        .unwrap()
        .into_inner()
        .records
}

/// `sigil svid mint` for [`WEB`] into `out`, as the operator of `s`.
fn mint_web_svid(s: &TestServer, out: &std::path::Path) -> std::process::Output {
    sigil(
        &[
            "svid",
            "mint",
            "--spiffe-id",
            WEB,
            "--out",
            out.to_str().unwrap(),
        ],
        &[("SIGIL_ADMIN_SOCKET", s.admin.to_str().unwrap())],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_workload_is_cut_off_everywhere_and_lifting_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.policy_dir = policy_with(tmp.path(), &serde_json::json!({ WEB: ["read:web/*"] }));
    let s = TestServer::initialized_with_config(cfg).await;
    let mut op = s.clients().await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    register(&s, &agent.id, "/web", 0, "web", 0).await;
    identities(&agent, 1).await;
    let c = client(&agent).await;
    let mut stream = c.stream_x509_svids().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.spiffe_id().to_string(), WEB);

    // The workload also holds an SVID file and a token minted with it.
    let dir = tmp.path().join("web");
    ok(mint_web_svid(&s, &dir));
    let mut web = s.tls_clients(&dir.join("bundle.pem"), Some(&dir)).await;
    let token = web
        .auth
        .mint(pb::MintTokenRequest {
            scopes: vec!["read:web/*".into()],
            audience: "payments".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let introspect = |t: String| pb::IntrospectRequest { token: t };
    assert!(
        op.auth
            .introspect(introspect(token.token.clone()))
            .await
            .unwrap()
            .into_inner()
            .active
    );

    // Refusals name what is wrong.
    for (id, reason, msg) in [
        (
            "spiffe://other.org/web",
            REASON,
            "spiffe_id: spiffe://other.org/web is not in trust domain example.org",
        ),
        (
            WEB,
            " ",
            "reason: give 1 to 1024 bytes without control characters",
        ),
        ("web", REASON, "spiffe_id: "),
    ] {
        let e = op
            .quarantine
            .put(pb::QuarantinePutRequest {
                spiffe_id: id.into(),
                reason: reason.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id}");
        assert!(e.message().starts_with(msg), "{id}: {}", e.message());
    }

    let put = op
        .quarantine
        .put(pb::QuarantinePutRequest {
            spiffe_id: WEB.into(),
            reason: REASON.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let started = std::time::Instant::now();
    assert_eq!(
        put.tokens_revoked,
        vec![token.info.as_ref().unwrap().jti.clone()]
    );
    assert_eq!(put.record.unwrap().by, "uid:0");

    // The open stream ends with PermissionDenied within a second.
    let ended = tokio::time::timeout(Duration::from_secs(1), stream.next())
        .await
        .expect("the stream answers within a second")
        .expect("an answer, not the end");
    let e = ended.unwrap_err();
    assert!(permission_denied(&e), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A new fetch too.
    let e = c.fetch_x509_svid().await.unwrap_err();
    assert!(permission_denied(&e), "{e:?}");
    // Its token is no longer active.
    assert!(
        !op.auth
            .introspect(introspect(token.token.clone()))
            .await
            .unwrap()
            .into_inner()
            .active
    );
    // Its SVID file proves nothing any more, and says why.
    let e = web
        .secrets
        .get(pb::GetSecretRequest {
            path: "web/db".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), format!("{WEB} is quarantined: {REASON}"));
    // Nothing is issued for it, to anyone.
    let refused = mint_web_svid(&s, &tmp.path().join("again"));
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        format!("error: permission denied: {WEB} is quarantined: {REASON}")
    );

    // It survives seal and unseal.
    op.operator.seal(pb::SealRequest {}).await.unwrap();
    op.operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = quarantined(&mut op).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, REASON);
    let mut web = s.tls_clients(&dir.join("bundle.pem"), Some(&dir)).await;
    let e = web
        .auth
        .mint(pb::MintTokenRequest {
            scopes: vec!["read:web/*".into()],
            audience: "payments".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), format!("{WEB} is quarantined: {REASON}"));

    // The audit log verifies and shows the quarantine and its effects.
    let verified = op
        .audit
        .verify(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    let records = crate::audit::tail(&mut op, 40).await;
    let reasons: Vec<String> = records
        .iter()
        .map(|r| r["event"]["reasons"].to_string())
        .collect();
    let joined = reasons.join("\n");
    assert!(
        joined.contains(&format!("quarantined {WEB}: {REASON}; revoked tokens")),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("{WEB} is quarantined: {REASON}")),
        "denials name it: {joined}"
    );

    // Lifted: the agent issues again (pushed like any entry change).
    let lifted = op
        .quarantine
        .lift(pb::QuarantineLiftRequest {
            spiffe_id: WEB.into(),
            reason: "key rotated".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lifted.reason, REASON);
    identities(&agent, 1).await;
    assert_eq!(
        c.fetch_x509_svid().await.unwrap().spiffe_id().to_string(),
        WEB
    );
    ok(mint_web_svid(&s, &tmp.path().join("again")));
    let e = op
        .quarantine
        .lift(pb::QuarantineLiftRequest {
            spiffe_id: WEB.into(),
            reason: "twice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), format!("{WEB} is not quarantined"));
    agent.stop().await;
    s.stop().await;
}

pub(crate) fn put_request(id: &str, reason: &str) -> pb::QuarantinePutRequest {
    pb::QuarantinePutRequest {
        spiffe_id: id.into(),
        reason: reason.into(),
    }
}

pub(crate) fn lift_request(id: &str) -> pb::QuarantineLiftRequest {
    pb::QuarantineLiftRequest {
        spiffe_id: id.into(),
        reason: "cleared".into(),
    }
}

/// A quarantine is kept in the sealed store: a server stopped and started
/// again on the same data still holds it, and still refuses to issue for
/// the identity, naming the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_survives_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    s.clients()
        .await
        .quarantine
        .put(put_request(WEB, REASON))
        .await
        .unwrap();
    let config = s.server.config().clone();
    s.stop().await;

    let s = TestServer::start_with(config).await;
    let mut op = s.clients().await;
    unseal(&mut op).await;
    let listed = quarantined(&mut op).await;
    let held: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|r| (r.spiffe_id.as_str(), r.reason.as_str(), r.by.as_str()))
        .collect();
    assert_eq!(held, vec![(WEB, REASON, "uid:0")]);
    let refused = mint_web_svid(&s, &tmp.path().join("web"));
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        format!("error: permission denied: {WEB} is quarantined: {REASON}")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_quarantines_and_lifts_each_take_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let c = s.clients().await;
    for round in 0..20 {
        let [x, y, z] = ["x", "y", "z"].map(|n| format!("spiffe://example.org/race/{n}{round}"));
        let (mut a, mut b, mut d) = (
            c.quarantine.clone(),
            c.quarantine.clone(),
            c.quarantine.clone(),
        );
        a.put(put_request(&x, "first")).await.unwrap();
        // Lifting the only quarantine while two others are put: none of the
        // three may be lost, in the store or in memory.
        let (lifted, put_y, put_z) = tokio::join!(
            a.lift(lift_request(&x)),
            b.put(put_request(&y, "second")),
            d.put(put_request(&z, "third")),
        );
        lifted.unwrap();
        put_y.unwrap();
        put_z.unwrap();
        let held: Vec<String> = a
            .list(pb::QuarantineListRequest {})
            .await
            .unwrap()
            .into_inner()
            .records
            .into_iter()
            .map(|r| r.spiffe_id)
            .collect();
        assert_eq!(held, vec![y.clone(), z.clone()], "round {round}");
        // A lift finds what it lifts through the same check every request
        // passes.
        a.lift(lift_request(&y)).await.unwrap();
        a.lift(lift_request(&z)).await.unwrap();
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_does_not_bring_a_quarantined_agent_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let made = c
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 0,
            agent_name: "n9".into(),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner();
    c.quarantine
        .put(put_request(&made.agent_id, "stolen host"))
        .await
        .unwrap();
    let id = sigil::id::SpiffeId::parse(&made.agent_id).unwrap();
    let (_key, csr) = sigil::authority::generate_key_and_csr(&id).unwrap();
    let e = c
        .node
        .attest_agent(pb::AttestAgentRequest {
            join_token: made.token,
            csr,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        format!("{} is quarantined: stolen host", made.agent_id)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_agents_open_entry_stream_ends_with_permission_denied() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut op = s.clients().await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    let mut stream = agent.open_entry_stream().await;
    op.quarantine
        .put(put_request(&agent.id, "host compromised"))
        .await
        .unwrap();
    // The next message is the end, naming the quarantine, as the agent's
    // next call would be refused.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the stream ends within 5 s");
    let e = end.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        format!("{} is quarantined: host compromised", agent.id)
    );
    agent.stop().await;
    s.stop().await;
}
