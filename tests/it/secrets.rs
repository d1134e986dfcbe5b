//! Sealed secrets (SPEC §3.3 `sigil secret`, §4, §7): Vault KV v2 semantics
//! over the API with exact outcomes, grants deciding who reads what, values
//! never at rest in clear nor in logs, scheduled rotation on the real clock,
//! watch streams, and the `postgres` generator against a real PostgreSQL
//! server (scripts/test.sh starts one; see `pg_roles`).

mod dev;
mod grants;
mod grpcio;
mod kv;
mod pg_roles;
mod pg_rotation;
mod rotation;

use crate::common::*;
use sigil::api::pb;
use sigil::api::pb::secrets_client::SecretsClient;
use std::path::{Path, PathBuf};

/// A server whose policy directory holds the default policy and `grants`.
pub(crate) struct Harness {
    pub tmp: tempfile::TempDir,
    pub server: TestServer,
}

pub(crate) fn policy_with(dir: &Path, grants: &serde_json::Value) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(policy_dir().join("sigil.rego"), policies.join("sigil.rego")).unwrap();
    let doc = serde_json::json!({"sigil": {"grants": grants}});
    std::fs::write(policies.join("grants.json"), doc.to_string()).unwrap();
    policies
}

impl Harness {
    pub async fn start(grants: serde_json::Value) -> Harness {
        Self::start_with(grants, |c| c).await
    }

    pub async fn start_with(
        grants: serde_json::Value,
        tweak: impl FnOnce(sigil::config::ServerConfig) -> sigil::config::ServerConfig,
    ) -> Harness {
        Self::start_with_clock(
            grants,
            tweak,
            std::sync::Arc::new(sigil::clock::SystemClock),
        )
        .await
    }

    /// [`Harness::start_with`], the server reading the time from `clock`.
    pub async fn start_with_clock(
        grants: serde_json::Value,
        tweak: impl FnOnce(sigil::config::ServerConfig) -> sigil::config::ServerConfig,
        clock: std::sync::Arc<dyn sigil::clock::Clock>,
    ) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.policy_dir = policy_with(tmp.path(), &grants);
        let server = TestServer::initialized_with_config_and_clock(tweak(cfg), clock).await;
        Harness { tmp, server }
    }

    /// The operator's client, over the admin socket.
    pub async fn admin(&self) -> SecretsClient<sigil::cli::client::Conn> {
        self.server.clients().await.secrets
    }

    /// A client authenticated over mTLS as `spiffe://example.org{path}`.
    pub async fn workload(&self, path: &str) -> SecretsClient<sigil::cli::client::Conn> {
        self.workload_clients(path).await.secrets
    }

    /// The SVID directory of `spiffe://example.org{path}`, minted on first use.
    pub fn svid_dir(&self, path: &str) -> PathBuf {
        let dir = self
            .tmp
            .path()
            .join(format!("svid{}", path.replace('/', "_")));
        if !dir.join("svid.pem").exists() {
            let id = format!("spiffe://{TD}{path}");
            let admin = self.server.admin.to_str().unwrap().to_owned();
            ok(sigil(
                &[
                    "svid",
                    "mint",
                    "--spiffe-id",
                    &id,
                    "--out",
                    dir.to_str().unwrap(),
                ],
                &[("SIGIL_ADMIN_SOCKET", &admin)],
            ));
        }
        dir
    }

    /// Every client, authenticated over mTLS as `spiffe://example.org{path}`.
    pub async fn workload_clients(&self, path: &str) -> sigil::cli::client::Clients {
        let dir = self.svid_dir(path);
        self.server
            .tls_clients(&dir.join("bundle.pem"), Some(&dir))
            .await
    }
}

/// `PutSecretRequest` for `fields` with an optional check-and-set.
pub(crate) fn put(path: &str, fields: &[(&str, &str)], cas: Option<u64>) -> pb::PutSecretRequest {
    pb::PutSecretRequest {
        path: path.into(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
        has_cas: cas.is_some(),
        cas: cas.unwrap_or(0),
    }
}

pub(crate) fn get(path: &str, version: u64) -> pb::GetSecretRequest {
    pb::GetSecretRequest {
        path: path.into(),
        version,
    }
}

pub(crate) fn versions(path: &str, v: &[u64]) -> pb::SecretVersionsRequest {
    pb::SecretVersionsRequest {
        path: path.into(),
        versions: v.to_vec(),
    }
}

/// A field of a version as text.
pub(crate) fn field(v: &pb::SecretVersion, name: &str) -> String {
    String::from_utf8(v.fields.get(name).cloned().unwrap_or_default()).unwrap()
}
