//! The agent against a real server: the `spiffe` crate as the Workload API
//! client, workloads under different uids, rotation on open streams,
//! outages, join tokens and bans.

use crate::common::*;
use futures::StreamExt;
use sigil::api::pb;
use sigil::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

fn private_dir_open(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub(crate) async fn client(agent: &TestAgent) -> spiffe::WorkloadApiClient {
    spiffe::WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap()
}

/// Waits until the caller (this process) holds `n` identities.
pub(crate) async fn identities(agent: &TestAgent, n: usize) {
    let c = client(agent).await;
    eventually(5, || {
        let c = c.clone();
        async move {
            c.fetch_all_x509_svids()
                .await
                .ok()
                .filter(|v| v.len() == n)
                .map(|_| ())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_client_gets_every_workload_api_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    register(&s, &agent.id, "/web", 0, "web", 0).await;
    register(&s, &agent.id, "/db", 0, "db", 0).await;
    identities(&agent, 2).await;
    let c = client(&agent).await;

    let svid = c.fetch_x509_svid().await.unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/db",
        "default is the first in order"
    );
    let ctx = c.fetch_x509_context().await.unwrap();
    let got: Vec<(String, Option<&str>)> = ctx
        .svids()
        .iter()
        .map(|s| (s.spiffe_id().to_string(), s.hint()))
        .collect();
    assert_eq!(
        got,
        [
            ("spiffe://example.org/db".to_string(), Some("db")),
            ("spiffe://example.org/web".to_string(), Some("web"))
        ]
    );
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let roots = ctx.bundle_set().get(&td).unwrap();
    assert!(!roots.authorities().is_empty());
    let bundles = c.fetch_x509_bundles().await.unwrap();
    assert_eq!(bundles.get(&td).unwrap().authorities().len(), 1);

    // JWT-SVIDs: one audience, two audiences, by SPIFFE ID.
    let web = spiffe::SpiffeId::new("spiffe://example.org/web").unwrap();
    let one = c.fetch_jwt_svid(["vault"], Some(&web)).await.unwrap();
    assert_eq!(one.spiffe_id(), &web);
    assert_eq!(one.audience(), ["vault".to_string()]);
    let two = c.fetch_jwt_svid(["vault", "db"], None).await.unwrap();
    assert_eq!(two.audience(), ["vault".to_string(), "db".to_string()]);
    let all = c.fetch_all_jwt_svids(["x"], None).await.unwrap();
    assert_eq!(all.len(), 2);
    let jwt_bundles = c.fetch_jwt_bundles().await.unwrap();
    assert!(jwt_bundles.get(&td).is_some());
    let validated = c.validate_jwt_token("vault", one.token()).await.unwrap();
    assert_eq!(validated.spiffe_id(), &web);
    let wrong = c.validate_jwt_token("other", one.token()).await;
    assert!(wrong.is_err());

    // Raw client: no security header → InvalidArgument.
    let channel =
        sigil::cli::client::connect(&sigil::cli::client::Target::Admin(agent.socket.clone()))
            .await
            .unwrap();
    let mut raw = SpiffeWorkloadApiClient::new(channel);
    let e = raw
        .fetch_jwt_bundles(sigil::api::workload::JwtBundlesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "security header missing from request");

    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_get_the_identity_of_their_own_uid() {
    let tmp = tempfile::tempdir().unwrap();
    private_dir_open(tmp.path());
    let s = TestServer::initialized(tmp.path()).await;
    let dir = tmp.path().join("agent");
    let agent = TestAgent::start(&s, &dir, "node1").await;
    private_dir_open(&dir);
    register(&s, &agent.id, "/root-svc", 0, "", 0).await;
    register(&s, &agent.id, "/nobody-svc", 65534, "", 0).await;
    identities(&agent, 1).await;

    // A shared sticky directory (like /tmp): the workload writes into a
    // directory of its own there.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let out_dir = shared.join("nobody-out");
    let run_as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_sigil"),
            ])
            .args(args)
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", agent.socket.display()),
            )
            .env("SIGIL_LOG", "error")
            .output()
            .unwrap()
    };
    let out = run_as_nobody(&[
        "svid",
        "fetch",
        "--write",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("spiffe://example.org/nobody-svc"), "{text}");
    assert!(!text.contains("root-svc"), "{text}");

    // This process (uid 0) sees only its own.
    let mine = client(&agent).await.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = mine.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, ["spiffe://example.org/root-svc"]);

    // An unregistered uid gets PermissionDenied `no identity issued`.
    let out = Command::new("setpriv")
        .args([
            "--reuid=4242",
            "--regid=4242",
            "--clear-groups",
            env!("CARGO_BIN_EXE_sigil"),
        ])
        .args(["svid", "fetch", "--write", "/tmp/unused"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", agent.socket.display()),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim(), "error: permission denied: no identity issued");
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_svid_arrives_on_an_open_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    register(&s, &agent.id, "/short", 0, "", 4).await;
    identities(&agent, 1).await;
    let c = client(&agent).await;
    let mut stream = c.stream_x509_svids().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let first_leaf = first.cert_chain()[0].as_bytes().to_vec();
    // A 4 s SVID is renewed at about 2 s (±10%) and pushed on the stream.
    let next = tokio::time::timeout(Duration::from_secs(8), stream.next())
        .await
        .expect("rotation within 8 s");
    let next = next.unwrap().unwrap();
    assert_ne!(next.cert_chain()[0].as_bytes(), &first_leaf[..]);
    assert_eq!(next.spiffe_id().to_string(), "spiffe://example.org/short");
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_through_a_server_outage_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let addr = s.addr;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    register(&s, &agent.id, "/steady", 0, "", 6).await;
    identities(&agent, 1).await;
    let c = client(&agent).await;
    let before = c.fetch_x509_svid().await.unwrap();
    s.stop().await;

    // The server is gone: the cached SVID and bundle are still served.
    let during = c.fetch_x509_svid().await.unwrap();
    assert_eq!(
        during.cert_chain()[0].as_bytes(),
        before.cert_chain()[0].as_bytes()
    );
    c.fetch_x509_bundles().await.unwrap();

    // Back on the same address (unsealed from its config): rotation resumes.
    let mut cfg = config(tmp.path());
    let pass = tmp.path().join("unseal");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    cfg.unseal = Some(sigil::config::UnsealConfig {
        passphrase_file: Some(pass),
        passphrase_env: None,
    });
    let s = TestServer::start_at(cfg, addr).await;
    let rotated = eventually(15, || {
        let c = c.clone();
        let old = before.cert_chain()[0].as_bytes().to_vec();
        async move {
            c.fetch_x509_svid()
                .await
                .ok()
                .filter(|s| s.cert_chain()[0].as_bytes() != old.as_slice())
        }
    })
    .await;
    assert_eq!(
        rotated.spiffe_id().to_string(),
        "spiffe://example.org/steady"
    );
    // New entries reach the agent again once it has reconnected.
    register(&s, &agent.id, "/late", 0, "", 0).await;
    identities(&agent, 2).await;
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_single_use_and_expire() {
    let tmp = tempfile::tempdir().unwrap();
    // Expiry is decided by the server's clock: the test moves it instead of
    // waiting. It starts at wall time, so the certificates it dates pass the
    // TLS checks, which use real time.
    let clock = Arc::new(sigil::clock::ManualClock::at_wall_time());
    let s = TestServer::initialized_with_clock(tmp.path(), clock.clone()).await;
    let mut c = s.clients().await;
    let pem = c
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .pem;
    let attest = |token: String, dir: std::path::PathBuf| {
        let pem = pem.clone();
        let addr = s.addr.to_string();
        async move {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("bootstrap.pem"), pem).unwrap();
            let opts = sigil::agent::run::AgentOptions {
                server: addr,
                trust_bundle: dir.join("bootstrap.pem"),
                data_dir: dir.join("state"),
                attest: sigil::attest::AttestConfig::default(),
                limits: sigil::net::Limits::workload(),
            };
            sigil::agent::run::Agent::start(&opts, Some(&sigil::secret::Secret::from(token)))
                .await
                .map(|_| ())
        }
    };
    let token = c
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 0,
            agent_name: "a".into(),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner();
    attest(token.token.clone(), tmp.path().join("a1"))
        .await
        .unwrap();
    let again = attest(token.token.clone(), tmp.path().join("a2"))
        .await
        .unwrap_err();
    assert!(
        again
            .to_string()
            .contains("join token refused: already used"),
        "{again}"
    );
    let unknown = attest("not-a-token".into(), tmp.path().join("a3"))
        .await
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("join token refused: unknown token"),
        "{unknown}"
    );

    let short = c
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 1,
            agent_name: "b".into(),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner();
    clock.advance(Duration::from_secs(1));
    let expired = attest(short.token, tmp.path().join("b")).await.unwrap_err();
    assert!(
        expired.to_string().contains("join token refused: expired"),
        "{expired}"
    );

    let bad = c
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: -5,
            agent_name: String::new(),
            replace: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = c
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 0,
            agent_name: "a/../b".into(),
            replace: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // The attested agent is listed with its last-seen time.
    let listed = c
        .agents
        .list(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].spiffe_id, "spiffe://example.org/sigil/agent/a");
    assert!(listed[0].last_seen > 0 && !listed[0].banned);
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_agent_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    register(&s, &agent.id, "/before", 0, "", 0).await;
    identities(&agent, 1).await;

    let admin = s.admin.to_str().unwrap().to_owned();
    ok(sigil(
        &["agent-node", "ban", &agent.id],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    ));
    let listed = ok(sigil(
        &["agent-node", "list", "--json"],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    ));
    assert!(listed.contains("\"banned\":true"), "{listed}");

    // Renewal and signing are refused at once.
    let renew = agent.agent.session.renew().await.unwrap_err();
    assert!(
        matches!(renew, sigil::agent::AgentError::Denied(_)),
        "{renew:?}"
    );
    // Entries created after the ban are never pushed to it.
    register(&s, &agent.id, "/after", 0, "", 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = agent
        .agent
        .cache
        .entries()
        .iter()
        .map(|e| e.spiffe_id.to_string())
        .collect();
    assert_eq!(ids, ["spiffe://example.org/before"]);
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_needs_no_new_token() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let dir = tmp.path().join("agent");
    let agent = TestAgent::start(&s, &dir, "node1").await;
    let id = agent.id.clone();
    register(&s, &id, "/svc", 0, "", 0).await;
    identities(&agent, 1).await;
    agent.stop().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("state/agent_key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let agent = TestAgent::restart(s.addr, &dir, &id).await;
    assert_eq!(agent.agent.session.agent_id().to_string(), id);
    identities(&agent, 1).await;
    agent.stop().await;
    s.stop().await;
}
