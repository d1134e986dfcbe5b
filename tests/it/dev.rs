//! `sigil dev` run exactly as a user would: it prints the environment,
//! serves the invoking user's identity on the Workload API, stops cleanly on
//! SIGTERM, and reuses its directory on the next run.

use crate::common::*;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// A running `sigil dev`, killed if the test fails before stopping it.
struct DevChild(Option<std::process::Child>);

impl Drop for DevChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_dev(dir: &std::path::Path) -> (DevChild, serde_json::Value) {
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
        .env("SIGIL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let env: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (DevChild(Some(child)), env)
}

fn stop(mut dev: DevChild) -> String {
    let child = dev.0.take().unwrap();
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sigil dev exited with {}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dev_serves_the_invoking_user_and_restarts_on_the_same_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (child, env) = start_dev(&dir);
    let endpoint = env["SPIFFE_ENDPOINT_SOCKET"].as_str().unwrap().to_owned();
    assert!(endpoint.starts_with("unix:///"), "{endpoint}");
    for key in ["SIGIL_ADMIN_SOCKET", "SIGIL_SERVER", "SIGIL_CA_BUNDLE"] {
        assert!(env[key].is_string(), "{key} missing from {env}");
    }
    // The Vault-compatible HTTP API answers at VAULT_ADDR, trusted through
    // VAULT_CACERT.
    let vault_addr = env["VAULT_ADDR"].as_str().unwrap();
    let port: u16 = vault_addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(vault_addr, format!("https://127.0.0.1:{port}"));
    let cacert = std::path::PathBuf::from(env["VAULT_CACERT"].as_str().unwrap());
    let (status, health) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::http::https(
            ([127, 0, 0, 1], port).into(),
            &cacert,
            "GET",
            "/v1/sys/health",
            None,
            None,
        ));
    assert_eq!(
        (status, &health["sealed"]),
        (200, &serde_json::json!(false))
    );
    // Two JIT roles to try the elevation flow with: one and two approvals.
    let roles: serde_json::Value = serde_json::from_str(&ok(sigil(
        &["--json", "jit", "roles"],
        &[(
            "SIGIL_ADMIN_SOCKET",
            env["SIGIL_ADMIN_SOCKET"].as_str().unwrap(),
        )],
    )))
    .unwrap();
    let approvals: Vec<_> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["approvals"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        approvals,
        vec![("dev-read".to_owned(), 1), ("dev-write".to_owned(), 2)]
    );
    let out_dir = tmp.path().join("me");
    let fetched: serde_json::Value = serde_json::from_str(&ok(sigil(
        &[
            "svid",
            "fetch",
            "--json",
            "--write",
            out_dir.to_str().unwrap(),
        ],
        &[("SPIFFE_ENDPOINT_SOCKET", &endpoint)],
    )))
    .unwrap();
    assert_eq!(fetched["spiffe_id"], "spiffe://example.org/dev/admin");
    let bundle_before = std::fs::read(env["SIGIL_CA_BUNDLE"].as_str().unwrap()).unwrap();

    // The identity from the Workload API is an admin over TLS.
    let listed = ok(sigil(
        &[
            "entry",
            "list",
            "--json",
            "--svid-dir",
            out_dir.to_str().unwrap(),
        ],
        &[
            ("SIGIL_SERVER", env["SIGIL_SERVER"].as_str().unwrap()),
            ("SIGIL_CA_BUNDLE", env["SIGIL_CA_BUNDLE"].as_str().unwrap()),
        ],
    ));
    assert!(
        listed.contains("spiffe://example.org/dev/admin"),
        "{listed}"
    );
    let stderr = stop(child);
    assert!(stderr.contains("development only"), "{stderr}");

    // A second run reuses the directory: same CA, same entries.
    let (child, env) = start_dev(&dir);
    let bundle_after = std::fs::read(env["SIGIL_CA_BUNDLE"].as_str().unwrap()).unwrap();
    assert_eq!(bundle_before, bundle_after);
    let endpoint = env["SPIFFE_ENDPOINT_SOCKET"].as_str().unwrap().to_owned();
    let text = ok(sigil(
        &["jwt", "fetch", "--audience", "ci"],
        &[("SPIFFE_ENDPOINT_SOCKET", &endpoint)],
    ));
    assert_eq!(text.trim().split('.').count(), 3, "{text}");
    stop(child);
}
