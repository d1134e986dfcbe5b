//! `sigil dev` and the CLI exactly as users run them: a workload reads a
//! secret with nothing but the Workload API socket and the server address,
//! and a marker secret written through the API is found nowhere in clear:
//! not in any file under the data directory, not in the server's log output
//! (at the most verbose level), not in the audit log.

use crate::common::*;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Dev {
    child: Option<Child>,
    env: serde_json::Value,
    log: std::path::PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Dev {
    fn start(dir: &Path, log: &Path, level: &str) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args([
                "dev",
                "--json",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--data-dir",
                dir.to_str().unwrap(),
            ])
            .env("SIGIL_LOG", level)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let env = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Dev {
            child: Some(child),
            env,
            log: log.to_owned(),
        }
    }

    fn var(&self, k: &str) -> String {
        self.env[k].as_str().unwrap().to_owned()
    }

    fn stop(mut self) {
        let child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            // The server's own last words say why it did not exit cleanly.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(120).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("sigil dev exited with {}:\n{}", out.status, tail.join("\n"));
        }
    }
}

#[test]
fn a_workload_reads_a_secret_with_only_the_workload_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Dev::start(&tmp.path().join("dev"), &tmp.path().join("log"), "error");
    let admin = dev.var("SIGIL_ADMIN_SOCKET");
    ok(sigil(
        &["secret", "put", "app/db", "password=pa55-w0rd"],
        &[("SIGIL_ADMIN_SOCKET", &admin)],
    ));
    let cwd = tmp.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["secret", "get", "app/db", "--field", "password"])
        .current_dir(&cwd)
        .env_clear()
        .env("SPIFFE_ENDPOINT_SOCKET", dev.var("SPIFFE_ENDPOINT_SOCKET"))
        .env("SIGIL_SERVER", dev.var("SIGIL_SERVER"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "pa55-w0rd\n");
    assert_eq!(
        std::fs::read_dir(&cwd).unwrap().count(),
        0,
        "nothing written to disk"
    );
    // The same identity without a grant for the path is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["secret", "get", "other/db"])
        .env_clear()
        .env("SPIFFE_ENDPOINT_SOCKET", dev.var("SPIFFE_ENDPOINT_SOCKET"))
        .env("SIGIL_SERVER", dev.var("SIGIL_SERVER"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: not found: no secret at other/db"
    );
    dev.stop();
}

#[test]
fn a_marker_secret_is_nowhere_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let log = tmp.path().join("server.log");
    let dev = Dev::start(&data, &log, "trace");
    let admin = dev.var("SIGIL_ADMIN_SOCKET");
    let env = [("SIGIL_ADMIN_SOCKET", admin.as_str())];
    let marker = format!("MARKER-{}-{}", std::process::id(), "q8ZkW3vT");
    let file = tmp.path().join("value");
    std::fs::write(&file, &marker).unwrap();
    let at_file = format!("token=@{}", file.display());
    ok(sigil(
        &["secret", "put", "ci/app/token", &at_file, "user=svc"],
        &env,
    ));
    ok(sigil(
        &["secret", "put", "ci/app/token", &at_file, "user=svc2"],
        &env,
    ));
    // Reads, a watch, metadata, a delete and a failed cas: every path a value takes.
    let got = ok(sigil(
        &["secret", "get", "ci/app/token", "--field", "token"],
        &env,
    ));
    assert_eq!(got.trim(), marker, "the search below can find the marker");
    let watched = ok(sigil(
        &["--json", "secret", "watch", "ci/app/token", "--count", "1"],
        &env,
    ));
    assert!(watched.contains(&marker));
    ok(sigil(&["secret", "meta", "ci/app/token"], &env));
    ok(sigil(
        &["secret", "delete", "ci/app/token", "--versions", "1"],
        &env,
    ));
    let refused = sigil(
        &["secret", "put", "ci/app/token", &at_file, "--cas", "1"],
        &env,
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&refused.stderr).contains(&marker));
    let audit_path = data.join("server/audit.log");
    dev.stop();

    let m = marker.as_bytes();
    for (path, bytes) in all_file_bytes(&data) {
        assert!(
            !contains(&bytes, m),
            "marker in clear in {}",
            path.display()
        );
    }
    let logged = std::fs::read(&log).unwrap();
    assert!(!logged.is_empty(), "the server logged at trace level");
    assert!(!contains(&logged, m), "marker in the server's log output");
    // The store's own debug output (which prints pages byte for byte) stays
    // off even at trace.
    assert!(!contains(&logged, b"sled::pagecache"));
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    assert!(!audit.contains(&marker));
    // The audit log names path, version and outcome.
    assert!(audit.contains("\"secret:ci/app/token\""), "{audit}");
    assert!(audit.contains("wrote version 2"), "{audit}");
    assert!(audit.contains("read version 2"), "{audit}");
    assert!(audit.contains("check-and-set failed"), "{audit}");
}
