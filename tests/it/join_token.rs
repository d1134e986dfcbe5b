//! Join tokens as operators and nodes handle them: the agent binary takes its
//! token from a file, standard input or the environment without showing it
//! to other local users, and a name held by an active agent is handed to a
//! new node only when asked for explicitly (and audited as such).

use crate::common::*;
use sigil::api::pb;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tonic::Code;

async fn token(s: &TestServer, name: &str, replace: bool) -> Result<String, tonic::Status> {
    s.clients()
        .await
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 0,
            agent_name: name.into(),
            replace,
        })
        .await
        .map(|r| r.into_inner().token)
}

/// An agent config for a node called `name` under `dir`.
async fn agent_config(s: &TestServer, dir: &Path, name: &str) -> PathBuf {
    let node = dir.join(name);
    std::fs::create_dir_all(&node).unwrap();
    let pem = s
        .clients()
        .await
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .pem;
    std::fs::write(node.join("bootstrap.pem"), pem).unwrap();
    let cfg = node.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "server = \"{}\"\ntrust_bundle = \"bootstrap.pem\"\ndata_dir = \"state\"\nsocket = \"agent.sock\"\n",
            s.addr
        ),
    )
    .unwrap();
    cfg
}

fn spawn_agent(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(["agent", "--config", cfg.to_str().unwrap()])
        .args(args)
        .env_remove("SIGIL_JOIN_TOKEN")
        .env("SIGIL_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits until the agent called `name` has attested.
async fn attested(s: &TestServer, name: &str) {
    let id = format!("spiffe://{TD}/sigil/agent/{name}");
    eventually(30, || {
        let id = id.clone();
        async move {
            let mut c = s.clients().await;
            let agents = c.agents.list(pb::ListAgentsRequest {}).await.ok()?;
            agents
                .into_inner()
                .agents
                .iter()
                .any(|a| a.spiffe_id == id)
                .then_some(())
        }
    })
    .await;
}

/// `/proc/<pid>/<file>` as another local user (uid 65534) sees it.
fn proc_as_other_user(pid: u32, file: &str) -> Vec<u8> {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(format!("/proc/{pid}/{file}"))
        .output()
        .unwrap()
        .stdout
}

fn stop(mut child: Child) -> String {
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn secret_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_token_is_not_visible_to_other_local_users() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;

    // From a file, made as the README shows: only the token is on stdout.
    let cfg = agent_config(&s, tmp.path(), "file").await;
    let admin = s.admin.to_str().unwrap().to_owned();
    let out = sigil(
        &["join-token", "create", "--name", "file"],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.starts_with("(agent spiffe://example.org/sigil/agent/file — expires "),
        "{stderr}"
    );
    let stdout = ok(out);
    let t = stdout.trim_end().to_owned();
    assert_eq!(stdout, format!("{t}\n"));
    let f = tmp.path().join("file/token");
    secret_file(&f, &stdout, 0o600);
    let child = spawn_agent(&cfg, &["--join-token-file", f.to_str().unwrap()], &[]);
    attested(&s, "file").await;
    let cmdline = proc_as_other_user(child.id(), "cmdline");
    assert!(contains(&cmdline, b"--join-token-file"), "not the agent");
    assert!(!contains(&cmdline, t.as_bytes()));
    assert!(!contains(
        &proc_as_other_user(child.id(), "environ"),
        t.as_bytes()
    ));
    stop(child);

    // From standard input.
    let cfg = agent_config(&s, tmp.path(), "stdin").await;
    let t = token(&s, "stdin", false).await.unwrap();
    let mut child = spawn_agent(&cfg, &["--join-token-file", "-"], &[]);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{t}").unwrap();
    drop(stdin);
    attested(&s, "stdin").await;
    assert!(!contains(
        &proc_as_other_user(child.id(), "cmdline"),
        t.as_bytes()
    ));
    stop(child);

    // From the environment, which other users cannot read.
    let cfg = agent_config(&s, tmp.path(), "env").await;
    let t = token(&s, "env", false).await.unwrap();
    let child = spawn_agent(&cfg, &[], &[("SIGIL_JOIN_TOKEN", &t)]);
    attested(&s, "env").await;
    assert!(!contains(
        &proc_as_other_user(child.id(), "cmdline"),
        t.as_bytes()
    ));
    assert!(!contains(
        &proc_as_other_user(child.id(), "environ"),
        t.as_bytes()
    ));
    stop(child);

    // On the command line it still works, but everyone sees it, and the
    // agent says so.
    let cfg = agent_config(&s, tmp.path(), "inline").await;
    let t = token(&s, "inline", false).await.unwrap();
    let child = spawn_agent(&cfg, &["--join-token", &t], &[]);
    attested(&s, "inline").await;
    assert!(contains(
        &proc_as_other_user(child.id(), "cmdline"),
        t.as_bytes()
    ));
    let stderr = stop(child);
    assert!(
        stderr.contains("WARNING: the join token given with --join-token is visible to every local user in the process list; use --join-token-file or $SIGIL_JOIN_TOKEN"),
        "{stderr}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let cfg = agent_config(&s, tmp.path(), "n1").await;
    let t = token(&s, "n1", false).await.unwrap();
    let f = tmp.path().join("n1/token");
    secret_file(&f, &t, 0o644);
    let out = spawn_agent(&cfg, &["--join-token-file", f.to_str().unwrap()], &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: {} must have mode 0600 (it has 644): it holds a secret",
            f.display()
        )
    );
    // Nothing was redeemed: the same token still works from a private file.
    secret_file(&f, &t, 0o600);
    let child = spawn_agent(&cfg, &["--join-token-file", f.to_str().unwrap()], &[]);
    attested(&s, "n1").await;
    stop(child);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_agents_name_is_handed_over_only_with_replace() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let admin = s.admin.to_str().unwrap().to_owned();
    let env = [("SIGIL_ADMIN_SOCKET", admin.as_str())];

    // Agent names are one path segment.
    let err = token(&s, "a/b", false).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "agent_name: agent name must be a single path segment (no '/')"
    );
    let out = sigil(&["join-token", "create", "--name", "a/b"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: invalid argument: agent_name: agent name must be a single path segment (no '/')"
    );

    let agent = TestAgent::start(&s, &tmp.path().join("n1"), "n1").await;
    let active = "agent spiffe://example.org/sigil/agent/n1 is active: a new token would hand its identity to another node (replace it explicitly with --replace)";
    let err = token(&s, "n1", false).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::AlreadyExists, active));
    let out = sigil(&["join-token", "create", "--name", "n1"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: already exists: {active}")
    );

    // With --replace the token is made, and the audit log names the action.
    let made: serde_json::Value = serde_json::from_str(&ok(sigil(
        &[
            "join-token",
            "create",
            "--name",
            "n1",
            "--replace",
            "--json",
        ],
        &env,
    )))
    .unwrap();
    assert_eq!(made["agent_id"], "spiffe://example.org/sigil/agent/n1");
    let records = s
        .clients()
        .await
        .audit
        .tail(pb::TailAuditRequest { count: 20 })
        .await
        .unwrap()
        .into_inner()
        .records;
    // (Records are matched as text: their framing belongs to the audit log.)
    let replaced: Vec<&String> = records
        .iter()
        .filter(|r| r.contains("\"action\":\"agent.token.replace\""))
        .collect();
    assert_eq!(replaced.len(), 1, "{records:?}");
    assert!(
        replaced[0].contains("\"resource\":\"join_token:n1\"")
            && replaced[0].contains("\"decision\":\"allow\""),
        "{replaced:?}"
    );
    // The new node redeems it and becomes the agent.
    let node = tmp.path().join("n1-new");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::copy(
        tmp.path().join("n1/bootstrap.pem"),
        node.join("bootstrap.pem"),
    )
    .unwrap();
    let opts = sigil::agent::run::AgentOptions {
        server: s.addr.to_string(),
        trust_bundle: node.join("bootstrap.pem"),
        data_dir: node.join("state"),
        attest: sigil::attest::AttestConfig::default(),
        limits: sigil::net::Limits::workload(),
    };
    let token = sigil::secret::Secret::from(made["token"].as_str().unwrap().to_owned());
    let taken = sigil::agent::run::Agent::start(&opts, Some(&token))
        .await
        .unwrap();
    assert_eq!(taken.session.agent_id().to_string(), agent.id);

    // --replace names the agent it replaces.
    let out = sigil(&["join-token", "create", "--replace"], &env);
    assert_eq!(out.status.code(), Some(2));
    agent.stop().await;
    s.stop().await;
}
