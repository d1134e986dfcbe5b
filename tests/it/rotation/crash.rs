//! The server, run as the binary, is killed with SIGKILL twice in the middle of
//! rotations (with a successor prepared, and with the old CA still published) while
//! the workloads keep talking: after each restart it resumes the same plan (the key
//! prepared before the kill is the one that signs, the old one stays published), and
//! the workloads never see a failed handshake or a JWT gap.

use super::probe::Probe;
use super::{ids, keys, register_probe_workloads};
use crate::common::*;
use sigil::api::pb;
use sigil::cli::client::{Clients, Target};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A config for the binary with the short key lifetimes, listening on `port`.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let pass = dir.join("unseal");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"data\"\nlisten = \"127.0.0.1:{port}\"\n\
             admin_socket = \"admin.sock\"\n[unseal]\npassphrase_file = \"unseal\"\n\
             [policy]\ndir = \"{}\"\n\
             [ca]\nttl = \"60s\"\nx509_svid_ttl = \"10s\"\njwt_svid_ttl = \"10s\"\n\
             publish_window = \"5s\"\ntaint_grace = \"8s\"\n",
            policy_dir().display()
        ),
    )
    .unwrap();
    cfg
}

fn spawn(cfg: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "--config", cfg.to_str().unwrap()])
        .env("SIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Clients on the admin socket once the server answers there unsealed (or, on a
/// fresh store, at all).
async fn connect(sock: &Path, unsealed: bool) -> Clients {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Clients::connect(&Target::Admin(sock.to_owned())).await
            && let Ok(st) = c.operator.status(pb::StatusRequest {}).await
            && (!unsealed || !st.into_inner().sealed)
        {
            return c;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// A port nobody listens on now, for a server that must come back on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls the server's keys until `f` finds what it waits for.
async fn wait_keys<T>(
    c: &mut Clients,
    secs: u64,
    what: &str,
    f: impl Fn(&[pb::AuthorityKey]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let k = keys(c).await;
        if let Some(v) = f(&k) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs}s: {k:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the agent has just renewed its SVID, so that a kill now leaves it the
/// longest time to reach the restarted server before its SVID expires (an agent whose
/// SVID expired needs a new join token).
async fn after_agent_renewal(dir: &Path) {
    let svid = dir.join("state/agent_svid.pem");
    let before = std::fs::read(&svid).unwrap();
    eventually(15, || async {
        (std::fs::read(&svid).ok()? != before).then_some(())
    })
    .await;
}

fn one(v: Vec<String>) -> Option<String> {
    (v.len() == 1).then(|| v.into_iter().next()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_rotations_resumes_the_same_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(tmp.path(), port);
    let sock = tmp.path().join("admin.sock");
    // Initialized in process with the same settings, so that its stored Argon2
    // parameters are the fast ones of the tests: each restart below is then quick,
    // as it would be on a production machine with a release build, and the short
    // SVIDs do not expire while the server is down.
    let init = TestServer::initialized_with_config(short_config(tmp.path())).await;
    init.stop().await;
    let mut child = spawn(&cfg);
    let mut c = connect(&sock, true).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tmp.path().join("agent");
    let agent =
        TestAgent::start_against(&sock, addr, &dir, "node1", sigil::net::Limits::workload()).await;
    register_probe_workloads(&sock, &agent.id).await;
    crate::agent::identities(&agent, 2).await;
    let probe = Probe::start(&agent.endpoint()).await;
    let first = one(ids(&keys(&mut c).await, "x509-ca", "active")).unwrap();

    // 30 s after init the successor is published; it signs at 50 s. Killed in
    // between, the server comes back with the same successor, still waiting.
    let prepared = wait_keys(&mut c, 45, "a CA prepared", |k| {
        one(ids(k, "x509-ca", "prepared"))
    })
    .await;
    after_agent_renewal(&dir).await;
    kill(&mut child);
    child = spawn(&cfg);
    c = connect(&sock, true).await;
    let k = keys(&mut c).await;
    assert_eq!(
        ids(&k, "x509-ca", "prepared"),
        [prepared.as_str()],
        "{k:#?}"
    );
    assert_eq!(ids(&k, "x509-ca", "active"), [first.as_str()], "{k:#?}");

    // It signs when it was due; killed right after, the server comes back with the
    // old CA still published (it signed SVIDs that are still valid).
    let leaves = wait_keys(&mut c, 30, "the prepared CA active", |k| {
        let old = k.iter().find(|k| k.id == first)?;
        (ids(k, "x509-ca", "active") == [prepared.clone()]).then_some(old.leaves_bundle_at)
    })
    .await;
    after_agent_renewal(&dir).await;
    kill(&mut child);
    child = spawn(&cfg);
    c = connect(&sock, true).await;
    let k = keys(&mut c).await;
    assert_eq!(ids(&k, "x509-ca", "active"), [prepared], "{k:#?}");
    // Unless a loaded machine took us past the second it leaves the bundle.
    let now = sigil::clock::unix_seconds(std::time::SystemTime::now());
    if now < u64::try_from(leaves).unwrap() {
        assert_eq!(ids(&k, "x509-ca", "old"), [first], "{k:#?}");
    }

    // And on to the third generation, which signs 80 s after init.
    probe
        .until(90, "three key generations", |r| {
            r.cas.len() >= 3 && r.kids.len() >= 3 && !r.dropped.is_empty()
        })
        .await;
    let report = probe.stop().await;
    report.assert_clean();
    let audit = c
        .audit
        .verify(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(audit.ok, "{audit:?}");
    agent.stop().await;
    kill(&mut child);
}
