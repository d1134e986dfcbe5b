//! Denial of service by local users, as the attack review ran it: processes
//! of other uids open and hold thousands of idle connections to `sigil
//! dev`'s sockets, and the invoking user's Workload API fetch and an
//! operator's admin call still succeed, with the refusals in the log.

use crate::common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/flood.py");
/// Debian's interpreter, reachable by any uid (a per-user one may not be).
const PYTHON: &str = "/usr/bin/python3";
/// Generous bound for anything the tests wait on; never a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A process running as another uid that holds connections to a socket
/// (tests/support/flood.py).
pub struct Flood {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Connections it managed to open.
    pub opened: usize,
}

impl Flood {
    /// Opens up to `count` connections to `socket` as `uid`.
    pub async fn start(uid: u32, socket: &Path, count: usize) -> Flood {
        let id = uid.to_string();
        let mut child = Command::new("setpriv")
            .args([
                format!("--reuid={id}"),
                format!("--regid={id}"),
                "--clear-groups".into(),
            ])
            .args([PYTHON, HELPER])
            .arg(socket)
            .arg(count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON} under setpriv: {e}"));
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the flood helper did not report")
            .unwrap()
            .expect("the flood helper exited");
        let opened = first
            .strip_prefix("opened ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected helper output {first:?}"));
        Flood {
            child,
            stdin,
            lines,
            opened,
        }
    }

    /// How many of its connections the server has not closed.
    pub async fn open(&mut self) -> usize {
        self.stdin.write_all(b"?\n").await.unwrap();
        let line = self.lines.next_line().await.unwrap().unwrap();
        line.strip_prefix("open ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected helper output {line:?}"))
    }

    /// Waits until the server holds exactly `want` of its connections.
    pub async fn settles_at(&mut self, want: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let open = self.open().await;
            if open == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server still holds {open} of the flood's {} connections, not {want}",
                self.opened
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ends the helper, closing its connections.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Lets other uids reach sockets under `dir` (tempdirs are private).
pub fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the CLI with a deadline, so a server that stopped answering fails
/// the test instead of hanging it.
async fn sigil_cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(args)
        .env_remove("SIGIL_ADMIN_SOCKET")
        .env_remove("SIGIL_SERVER")
        .env("SIGIL_LOG", "error")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("sigil {args:?} got no answer"))
        .unwrap();
    ok(out)
}

/// `sigil dev` as a user runs it, with its warnings on stderr.
async fn start_dev(dir: &Path) -> (Child, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "dev",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .env("SIGIL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (child, serde_json::from_str(&line).unwrap())
}

/// The per-uid caps `sigil dev` ends up with on this machine: the defaults,
/// fitted under the descriptor limit it raises itself to.
fn dev_caps() -> (usize, usize) {
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    let mut admin = sigil::net::Limits::admin();
    let mut tcp = sigil::net::Limits::tcp();
    let mut workload = sigil::net::Limits::workload();
    sigil::net::fds::fit_listeners(
        nofile,
        Some(&mut admin),
        Some(&mut tcp),
        Some(&mut workload),
    );
    (workload.max_per_peer.unwrap(), admin.max_per_peer.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_other_uids_leaves_the_workload_api_and_admin_socket_answering() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let dir = tmp.path().join("dev");
    let (dev, env) = start_dev(&dir).await;
    open_to_all(&dir);
    let endpoint = env["SPIFFE_ENDPOINT_SOCKET"].as_str().unwrap().to_owned();
    let workload_socket = endpoint.strip_prefix("unix://").unwrap();
    let admin_socket = env["SIGIL_ADMIN_SOCKET"].as_str().unwrap().to_owned();
    let (workload_cap, admin_cap) = dev_caps();

    // The review's numbers: two unprivileged processes, 10,500 idle
    // connections each, one at each socket.
    let mut at_workload = Flood::start(65534, Path::new(workload_socket), 10_500).await;
    let mut at_admin = Flood::start(65533, Path::new(&admin_socket), 10_500).await;
    assert!(at_workload.opened > workload_cap, "{}", at_workload.opened);
    assert!(at_admin.opened > admin_cap, "{}", at_admin.opened);
    at_workload.settles_at(workload_cap).await;
    at_admin.settles_at(admin_cap).await;

    // While both floods hold all they may: the invoking user's identity
    // through the Workload API, and an operator's call on the admin socket.
    let out_dir = tmp.path().join("me");
    let fetched: serde_json::Value = serde_json::from_str(
        &sigil_cli(
            &[
                "svid",
                "fetch",
                "--json",
                "--write",
                out_dir.to_str().unwrap(),
            ],
            &[("SPIFFE_ENDPOINT_SOCKET", &endpoint)],
        )
        .await,
    )
    .unwrap();
    assert_eq!(fetched["spiffe_id"], "spiffe://example.org/dev/admin");
    let agents = sigil_cli(
        &["agent-node", "list", "--json"],
        &[("SIGIL_ADMIN_SOCKET", &admin_socket)],
    )
    .await;
    assert!(
        agents.contains("spiffe://example.org/sigil/agent/dev"),
        "{agents}"
    );

    at_workload.stop().await;
    at_admin.stop().await;
    let pid = dev.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(PATIENCE, dev.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "sigil dev exited with {}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    for want in [
        format!(
            "Workload API socket: refusing a connection from uid 65534: the peer holds {workload_cap} connections"
        ),
        format!(
            "admin socket: refusing a connection from uid 65533: the peer holds {admin_cap} connections"
        ),
    ] {
        assert!(log.contains(&want), "{want:?} not in the log:\n{log}");
    }
}
