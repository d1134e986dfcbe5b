//! hvac, the Python Vault client (a second stack beside vaultrs, and the one
//! Ansible's `hashi_vault` and many CI scripts use), driven through
//! tests/python/vault_client.py against a real server over TLS, trusting
//! the `bundle.pem` the server writes: JWT login, KV v2 reads (current,
//! previous, deleted, missing, forbidden), metadata, lists filtered by
//! policy, check-and-set writes, lookup-self, revoke-self, and the seal
//! status routes hvac reads. Every answer must be what hvac makes of
//! Vault's.

use crate::interop::grpcio::{python, root};
use crate::oidc_signer::{Issuer, github_claims};
use crate::secrets::{Harness, put, versions};
use serde_json::{Value, json};

const HVAC: &str = "2.4.0";

/// The `deploy` role reads `ci/app/*` and lists `ci`; the `writer` role
/// reads and writes `ci/app/*`. `ci/app/old` has its first version deleted.
pub(super) async fn harness(issuer: &Issuer) -> Harness {
    let h = Harness::start_with(json!({}), |c| super::ci_http(issuer, c)).await;
    let mut admin = h.admin().await;
    for (path, value) in [
        ("ci/app/db", "one"),
        ("ci/app/db", "two"),
        ("ci/app/old", "gone"),
        ("ci/app/old", "kept"),
        ("ci/other/db", "hidden"),
    ] {
        admin
            .put(put(path, &[("password", value)], None))
            .await
            .unwrap();
    }
    admin.delete(versions("ci/app/old", &[1])).await.unwrap();
    h
}

/// A GitHub-Actions-shaped JWT from `issuer`, in a file.
fn jwt_file(h: &Harness, issuer: &Issuer) -> std::path::PathBuf {
    let path = h.tmp.path().join("ci.jwt");
    let now = sigil::clock::unix_seconds(sigil::clock::now());
    std::fs::write(&path, issuer.sign_rs256(&github_claims(now))).unwrap();
    path
}

/// `program script` with the arguments both Vault client scripts take: the
/// HTTP API's address, the CA bundle that verifies it, and a CI JWT file.
pub(super) fn vault_client(
    program: impl AsRef<std::ffi::OsStr>,
    script: &str,
    h: &Harness,
    issuer: &Issuer,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(root().join(script))
        .arg("--addr")
        .arg(format!(
            "https://127.0.0.1:{}",
            h.server.http_addr.unwrap().port()
        ))
        .arg("--ca")
        .arg(h.tmp.path().join("data/bundle.pem"))
        .arg("--jwt-file")
        .arg(jwt_file(h, issuer));
    cmd
}

async fn run_hvac(h: &Harness, issuer: &Issuer) -> Value {
    let cmd = vault_client(python(), "tests/python/vault_client.py", h, issuer);
    crate::common::client_json(cmd, "hvac").await
}

/// An hvac exception: its class and Vault's `errors`.
fn raised(v: &Value, class: &str, errors: &[&str]) {
    assert_eq!(v["error"], class, "{v:#}");
    assert_eq!(v["errors"], json!(errors), "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_logs_in_reads_lists_and_writes_as_against_vault() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let py = run_hvac(&h, &issuer).await;
    assert_eq!(py["hvac"], HVAC);

    // The public sys routes hvac reads before anything else.
    assert_eq!(py["health"]["ok"]["initialized"], true, "{py:#}");
    assert_eq!(py["health"]["ok"]["sealed"], false);
    assert_eq!(py["initialized"]["ok"], true, "{py:#}");
    assert_eq!(py["sealed"]["ok"], false, "{py:#}");

    // Login: an unknown role is a 400 naming it; the deploy role's grants
    // are the token's policies.
    assert_eq!(py["bad_role"]["error"], "InvalidRequest", "{py:#}");
    let why = py["bad_role"]["errors"][0].as_str().unwrap();
    assert!(why.contains("nobody"), "{why}");
    assert_eq!(
        py["login"]["policies"],
        json!(["read:ci/app/*", "list:ci", "list:ci/**"])
    );
    assert_eq!(py["login"]["renewable"], false);
    let lease = py["login"]["lease_duration"].as_u64().unwrap();
    assert!((890..=900).contains(&lease), "{lease}");
    assert_eq!(py["login"]["has_token"], true);
    assert_eq!(py["authenticated"], true);

    // KV v2 reads.
    assert_eq!(
        py["read"]["ok"],
        json!({"data": {"password": "two"}, "version": 2}),
        "{py:#}"
    );
    assert_eq!(
        py["read_v1"]["ok"],
        json!({"data": {"password": "one"}, "version": 1})
    );
    // A deleted version: hvac returns Vault's 404 body (metadata, no data)
    // when asked to, and raises InvalidPath otherwise.
    let deleted = &py["read_deleted"]["ok"];
    assert_eq!(deleted["data"], Value::Null, "{py:#}");
    assert_eq!(deleted["metadata"]["version"], 1);
    assert_eq!(deleted["metadata"]["destroyed"], false);
    let deleted_at = deleted["metadata"]["deletion_time"].as_str().unwrap();
    assert!(!deleted_at.is_empty(), "{py:#}");
    assert_eq!(py["read_deleted_raises"]["error"], "InvalidPath", "{py:#}");
    assert_eq!(py["read_missing"]["error"], "InvalidPath", "{py:#}");
    raised(&py["read_forbidden"], "Forbidden", &["permission denied"]);

    assert_eq!(
        py["metadata"]["ok"],
        json!({"current_version": 2, "oldest_version": 1, "max_versions": 10, "versions": ["1", "2"]}),
        "{py:#}"
    );
    // Lists (hvac sends LIST): only what the token may read is shown, and a
    // list with nothing visible is a 404.
    assert_eq!(py["list_ci"]["ok"], json!(["app/"]), "{py:#}");
    assert_eq!(py["list_app"]["ok"], json!(["db", "old"]), "{py:#}");
    assert_eq!(py["list_hidden"]["error"], "InvalidPath", "{py:#}");

    // Writes: refused for the reader; for the writer, cas=0 creates once,
    // then the cas must name the current version.
    raised(&py["write_refused"], "Forbidden", &["permission denied"]);
    assert_eq!(py["write_create"]["ok"], 1, "{py:#}");
    assert_eq!(
        py["write_create_again"]["error"], "InvalidRequest",
        "{py:#}"
    );
    assert_eq!(py["write_cas"]["ok"], 2, "{py:#}");
    raised(
        &py["write_stale"],
        "InvalidRequest",
        &["check-and-set parameter did not match the current version"],
    );
    assert_eq!(py["read_written"]["ok"], json!({"password": "cas-1"}));

    // The token: lookup, revocation, and refusal afterwards.
    let me = &py["lookup_self"]["ok"];
    assert_eq!(
        me["policies"],
        json!(["read:ci/app/*", "list:ci", "list:ci/**"]),
        "{py:#}"
    );
    assert_eq!(me["renewable"], false);
    let ttl = me["ttl"].as_u64().unwrap();
    assert!(ttl > 800 && ttl <= 900, "{ttl}");
    assert_eq!(py["revoke_self"]["ok"], 204, "{py:#}");
    assert_eq!(py["authenticated_after_revoke"], false);
    raised(
        &py["read_after_revoke"],
        "Forbidden",
        &["permission denied"],
    );
}
