//! A real gRPC C-core client: Python grpcio (installed into target/pyenv by
//! scripts/test.sh) runs tests/python/workload_client.py against the agent
//! and admin sockets with its default `:authority`, and must get what the
//! Rust `spiffe` crate gets.

use super::{ID, Node};
use crate::common::TD;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const AUDIENCE: &str = "interop";
const GRPCIO: &str = "1.85.0";
const HEADER_MISSING: &str = "security header missing from request";

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter, or a failure saying how to get it.
pub(crate) fn python() -> PathBuf {
    let python = root().join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs grpcio for this test",
        python.display()
    );
    python
}

async fn run_client(python: &Path, node: &Node) -> Value {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(root().join("tests/python/workload_client.py"))
        .arg("--agent-socket")
        .arg(&node.agent.socket)
        .arg("--admin-socket")
        .arg(&node.server.admin)
        .args(["--audience", AUDIENCE])
        .arg("--proto-dir")
        .arg(root().join("proto/spiffe"));
    crate::common::client_json(cmd, "grpcio").await
}

fn concat_hex(certs: &[spiffe::cert::Certificate]) -> String {
    let der: Vec<u8> = certs.iter().flat_map(|c| c.as_bytes().to_vec()).collect();
    hex::encode(der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_gets_the_answers_the_rust_client_gets() {
    let python = python();
    let node = Node::start().await;
    let py = run_client(&python, &node).await;
    let rust = spiffe::WorkloadApiClient::connect_to(node.agent.endpoint())
        .await
        .unwrap();
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let td_key = format!("spiffe://{TD}");
    assert_eq!(py["grpcio"], GRPCIO);
    assert_eq!(py["workload_error"], Value::Null, "{py:#}");
    assert_eq!(py["agent_health"], "SERVING");
    assert_eq!(py["admin_health"], "SERVING");

    // FetchX509SVID and FetchX509Bundles: the same leaf, key and bundle.
    let svid = rust.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), ID);
    assert_eq!(svid.cert_chain().len(), 1, "leaf only, no intermediates");
    let key = ring::digest::digest(&ring::digest::SHA256, svid.private_key().as_bytes());
    let bundle = rust.fetch_x509_bundles().await.unwrap().get(&td).unwrap();
    assert_eq!(bundle.authorities().len(), 1);
    let bundle_hex = concat_hex(bundle.authorities());
    assert_eq!(
        py["x509_svids"],
        json!([{
            "spiffe_id": ID,
            "chain": concat_hex(svid.cert_chain()),
            "key_sha256": hex::encode(key),
            "bundle": bundle_hex,
            "hint": "interop",
        }])
    );
    assert_eq!(py["x509_bundles"], json!({ &td_key: bundle_hex }));

    // FetchJWTBundles: the same key ids.
    let jwks = rust.fetch_jwt_bundles().await.unwrap().get(&td).unwrap();
    let mut kids: Vec<&str> = jwks.jwt_authorities().map(|a| a.key_id()).collect();
    kids.sort_unstable();
    assert_eq!(kids.len(), 1);
    assert_eq!(py["jwt_bundle_kids"], json!({ &td_key: kids }));

    // FetchJWTSVID and ValidateJWTSVID: grpcio's token is valid for the Rust
    // client too, with the same subject and audience.
    let svids = py["jwt_svids"].as_array().unwrap();
    assert_eq!(svids.len(), 1, "{py:#}");
    assert_eq!(svids[0]["spiffe_id"], ID);
    assert_eq!(svids[0]["hint"], "interop");
    let token = svids[0]["token"].as_str().unwrap();
    let checked = rust.validate_jwt_token(AUDIENCE, token).await.unwrap();
    assert_eq!(checked.spiffe_id().to_string(), ID);
    assert_eq!(checked.audience(), [AUDIENCE]);
    assert_eq!(kids, [checked.key_id()]);
    let own = rust.fetch_jwt_svid([AUDIENCE], None).await.unwrap();
    assert_eq!(own.spiffe_id().to_string(), ID);
    assert_eq!(own.audience(), checked.audience());
    assert_eq!(py["validated"]["spiffe_id"], ID);
    assert_eq!(py["validated"]["claims"]["sub"], ID);
    assert_eq!(py["validated"]["claims"]["aud"], json!([AUDIENCE]));

    // The security-header rule holds for grpcio too.
    let refused = json!({ "code": "INVALID_ARGUMENT", "details": HEADER_MISSING });
    assert_eq!(py["unary_without_header"], refused);
    assert_eq!(py["stream_without_header"], refused);
    node.stop().await;
}
