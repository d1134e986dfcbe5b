//! node-vault, the Node.js Vault client (a third stack, beside vaultrs and
//! hvac; Node is what `hashicorp/vault-action` runs on), driven through
//! tests/node/vault_client.js with the modules scripts/test.sh installs
//! into target/node: the sys routes it reads, JWT login, KV v2 reads, lists
//! both ways it sends them (LIST, and `GET ?list=1` with
//! `noCustomHTTPVerbs`), lookup-self, revoke-self and the revoked token
//! refused.

use super::hvac::{harness, vault_client};
use crate::interop::grpcio::root;
use crate::oidc_signer::Issuer;
use serde_json::json;

const NODE_VAULT: &str = "0.12.0";

/// The installed modules, or a failure saying how to get them.
fn node_modules() -> std::path::PathBuf {
    let dir = root().join("target/node/node_modules");
    assert!(
        dir.join("node-vault").exists(),
        "{} is missing: run scripts/test.sh, which installs node-vault for this test",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_vault_logs_in_reads_and_lists_as_against_vault() {
    let modules = node_modules();
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let mut cmd = vault_client("node", "tests/node/vault_client.js", &h, &issuer);
    cmd.env("NODE_PATH", modules)
        // node-vault's debug output would carry the login body (the JWT).
        .env_remove("DEBUG");
    let js = crate::common::client_json(cmd, "node-vault").await;
    assert_eq!(js["node-vault"], NODE_VAULT);

    assert_eq!(js["health"]["ok"]["sealed"], false, "{js:#}");
    // What `vault.status()` returns: Vault's seal-status shape.
    let status = &js["status"]["ok"];
    assert_eq!(
        (
            &status["type"],
            &status["initialized"],
            &status["sealed"],
            &status["t"],
            &status["n"],
            &status["progress"]
        ),
        (
            &json!("shamir"),
            &json!(true),
            &json!(false),
            &json!(1),
            &json!(1),
            &json!(0)
        ),
        "{js:#}"
    );
    assert_eq!(js["initialized"]["ok"]["initialized"], true, "{js:#}");

    assert_eq!(
        js["login"],
        json!({"policies": ["read:ci/app/*", "list:ci", "list:ci/**"], "renewable": false, "has_token": true}),
        "{js:#}"
    );
    assert_eq!(
        js["read"]["ok"]["data"],
        json!({"password": "two"}),
        "{js:#}"
    );
    assert_eq!(js["read"]["ok"]["metadata"]["version"], 2);
    assert_eq!(js["read_v1"]["ok"], json!({"password": "one"}), "{js:#}");
    assert_eq!(
        js["read_forbidden"],
        json!({"status": 403, "message": "permission denied"})
    );
    assert_eq!(js["read_missing"]["status"], 404, "{js:#}");

    assert_eq!(js["list"]["ok"], json!(["db", "old"]), "{js:#}");
    assert_eq!(js["list_get"]["ok"], json!(["app/"]), "{js:#}");
    assert_eq!(js["list_hidden"]["status"], 404, "{js:#}");

    let me = &js["lookup_self"]["ok"];
    assert_eq!(
        me["policies"],
        json!(["read:ci/app/*", "list:ci", "list:ci/**"]),
        "{js:#}"
    );
    let ttl = me["ttl"].as_u64().unwrap();
    assert!(ttl > 800 && ttl <= 900, "{ttl}");
    assert_eq!(js["revoke_self"]["ok"], "revoked", "{js:#}");
    assert_eq!(
        js["read_after_revoke"],
        json!({"status": 403, "message": "permission denied"}),
        "{js:#}"
    );
}
