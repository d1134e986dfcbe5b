//! The Secrets API from another stack: Python grpcio (gRPC C-core, installed
//! into target/pyenv by scripts/test.sh) puts, gets, watches and is refused
//! over the admin socket with its default `:authority`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_puts_gets_and_watches_a_secret() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs grpcio",
        python.display()
    );
    let h = Harness::start(serde_json::json!({})).await;
    let value = h.tmp.path().join("value");
    std::fs::write(&value, "py-s3cret-value").unwrap();
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(root.join("tests/python/secrets_client.py"))
        .arg("--admin-socket")
        .arg(&h.server.admin)
        .arg("--proto-dir")
        .arg(root.join("proto"))
        .arg("--value-file")
        .arg(&value);
    let got = crate::common::client_json(cmd, "grpcio").await;
    assert_eq!(
        got,
        serde_json::json!({
            "put_version": 1,
            "get": {"version": 1, "matches": true},
            "missing": {"code": "NOT_FOUND", "details": "no secret at py/none"},
            "watch": {"version": 1, "matches": true},
        })
    );
    // What grpcio wrote, the Rust client reads.
    let mut c = h.admin().await;
    assert_eq!(
        field(
            &c.get(get("py/db", 0)).await.unwrap().into_inner(),
            "password"
        ),
        "py-s3cret-value"
    );
    h.server.stop().await;
}
