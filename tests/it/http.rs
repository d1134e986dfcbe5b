//! The Vault-compatible HTTP API (SPEC §3.5), driven by a maintained Vault
//! client (the `vaultrs` crate) over real TLS, trusting the `bundle.pem` the
//! server writes to its data directory: JWT login, KV v2 reads of the
//! current and a previous version, metadata, lists filtered by policy,
//! deleted and destroyed reads, check-and-set writes, lookup-self,
//! revoke-self, and the revoked token refused. The routes clients use that
//! vaultrs does not (PUT login, `GET ?list=1`, trailing slashes, 405, 413,
//! health codes) are checked with raw HTTPS requests.

mod hvac;
mod node_vault;

use crate::login::oidc_config;
use crate::oidc_signer::{Issuer, github_claims};
use crate::secrets::{Harness, put, versions};
use serde_json::{Value, json};
use sigil::config::{HttpCert, HttpConfig, ServerConfig};
use std::collections::HashMap;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// The CI configuration the HTTP API tests share: `issuer`'s keys, the
/// `deploy` role (reads `ci/app/*` and lists `ci`), a `writer` role (reads
/// and writes `ci/app/*`), and the HTTP API on with a certificate sigil
/// issues.
pub(crate) fn ci_http(issuer: &Issuer, mut c: ServerConfig) -> ServerConfig {
    let jwks = c.data_dir.with_file_name("github-jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let mut oidc = oidc_config(jwks);
    let mut writer = oidc.roles[0].clone();
    writer.name = "writer".into();
    writer.grants = vec!["read:ci/app/*".into(), "write:ci/app/*".into()];
    // Listing `ci/` is a list of the path `ci`; `ci/**` is below it.
    oidc.roles[0].grants.push("list:ci".into());
    oidc.roles[0].grants.push("list:ci/**".into());
    oidc.roles.push(writer);
    c.oidc = oidc;
    c.http = Some(HttpConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: HttpCert::Issued(vec!["127.0.0.1".into(), "localhost".into()]),
        kv_mount: "secret".into(),
    });
    c
}

/// A server with the HTTP API on, the CI roles, grants for one workload,
/// and a few secrets.
async fn harness(issuer: &Issuer) -> Harness {
    let h = Harness::start_with(
        // The SPIFFE ID's own grants do not reach its tokens: a token may
        // do what its role's scopes say.
        json!({"spiffe://example.org/ci/acme/app": ["read:ci/**"]}),
        |c| ci_http(issuer, c),
    )
    .await;
    let mut admin = h.admin().await;
    admin
        .put(put("ci/app/db", &[("password", "one")], None))
        .await
        .unwrap();
    admin
        .put(put("ci/app/db", &[("password", "two")], None))
        .await
        .unwrap();
    admin
        .put(put("ci/app/api", &[("key", "k")], None))
        .await
        .unwrap();
    admin
        .put(put("ci/other/db", &[("password", "hidden")], None))
        .await
        .unwrap();
    h
}

fn vault_addr(h: &Harness) -> String {
    format!("https://127.0.0.1:{}", h.server.http_addr.unwrap().port())
}

fn ca_file(h: &Harness) -> String {
    h.tmp
        .path()
        .join("data/bundle.pem")
        .to_str()
        .unwrap()
        .to_owned()
}

fn client(h: &Harness, token: &str) -> VaultClient {
    let settings = VaultClientSettingsBuilder::default()
        .address(vault_addr(h))
        .token(token)
        .ca_certs(vec![ca_file(h)])
        .verify(true)
        .build()
        .unwrap();
    VaultClient::new(settings).unwrap()
}

async fn login(h: &Harness, issuer: &Issuer) -> (VaultClient, vaultrs::api::AuthInfo) {
    let mut c = client(h, "");
    let jwt = issuer.sign_rs256(&github_claims(sigil::clock::unix_seconds(
        sigil::clock::now(),
    )));
    let auth = vaultrs::auth::oidc::login(&c, "jwt", &jwt, Some("deploy".into()))
        .await
        .unwrap();
    c.set_token(&auth.client_token);
    (c, auth)
}

fn api_code(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultrs_logs_in_and_reads_kv_v2_as_from_vault() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (c, auth) = login(&h, &issuer).await;
    assert_eq!(
        auth.policies,
        vec![
            "read:ci/app/*".to_owned(),
            "list:ci".to_owned(),
            "list:ci/**".to_owned()
        ]
    );
    assert!(!auth.renewable);
    assert!((890..=900).contains(&auth.lease_duration));

    // The current version and a previous one.
    let now: HashMap<String, String> = vaultrs::kv2::read(&c, "secret", "ci/app/db").await.unwrap();
    assert_eq!(now["password"], "two");
    let v1: HashMap<String, String> = vaultrs::kv2::read_version(&c, "secret", "ci/app/db", 1)
        .await
        .unwrap();
    assert_eq!(v1["password"], "one");
    let meta = vaultrs::kv2::read_metadata(&c, "secret", "ci/app/db")
        .await
        .unwrap();
    assert_eq!(meta.current_version, 2);
    assert_eq!(meta.oldest_version, 1);
    assert_eq!(meta.max_versions, 10);
    assert_eq!(meta.versions.len(), 2);

    // A path outside the grants: 403.
    let e = vaultrs::kv2::read::<HashMap<String, String>>(&c, "secret", "ci/other/db")
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(403), "{e:?}");
    // A missing secret inside them: 404.
    let e = vaultrs::kv2::read::<HashMap<String, String>>(&c, "secret", "ci/app/none")
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(404), "{e:?}");

    // Token lookup, then revocation: the token is refused afterwards.
    let me = vaultrs::token::lookup_self(&c).await.unwrap();
    assert_eq!(me.accessor, auth.accessor);
    assert_eq!(me.policies, auth.policies);
    assert!(me.ttl > 800 && me.ttl <= 900, "{}", me.ttl);
    vaultrs::token::revoke_self(&c).await.unwrap();
    let e = vaultrs::kv2::read::<HashMap<String, String>>(&c, "secret", "ci/app/db")
        .await
        .unwrap_err();
    match e {
        ClientError::APIError { code, errors } => {
            assert_eq!(code, 403);
            assert_eq!(errors, vec!["permission denied".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    let e = vaultrs::token::lookup_self(&c).await.unwrap_err();
    assert_eq!(api_code(&e), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_filtered_by_policy_and_empty_lists_are_404() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (c, _) = login(&h, &issuer).await;
    // The token reads ci/app/* only: ci/other is not shown.
    let keys = vaultrs::kv2::list(&c, "secret", "ci/").await.unwrap();
    assert_eq!(keys, vec!["app/".to_owned()]);
    let keys = vaultrs::kv2::list(&c, "secret", "ci/app").await.unwrap();
    assert_eq!(keys, vec!["api".to_owned(), "db".to_owned()]);
    let e = vaultrs::kv2::list(&c, "secret", "ci/other")
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(404), "{e:?}");
}

/// The body of a 404 that carries Vault's wrapper rather than `errors`
/// (vaultrs reports it as a REST error with the content).
fn not_found_body(e: &ClientError) -> Value {
    match e {
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code: 404, content },
        } => serde_json::from_str(content.as_deref().unwrap()).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_destroyed_versions_answer_404_with_their_metadata() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let mut admin = h.admin().await;
    admin.delete(versions("ci/app/db", &[1])).await.unwrap();
    admin.destroy(versions("ci/app/api", &[1])).await.unwrap();
    let (c, _) = login(&h, &issuer).await;
    let e = vaultrs::kv2::read_version::<HashMap<String, String>>(&c, "secret", "ci/app/db", 1)
        .await
        .unwrap_err();
    let body = not_found_body(&e);
    assert_eq!(body["data"]["data"], Value::Null);
    assert_eq!(body["data"]["metadata"]["version"], 1);
    assert_eq!(body["data"]["metadata"]["destroyed"], false);
    assert_ne!(body["data"]["metadata"]["deletion_time"], "");

    let e = vaultrs::kv2::read::<HashMap<String, String>>(&c, "secret", "ci/app/api")
        .await
        .unwrap_err();
    let body = not_found_body(&e);
    assert_eq!(body["data"]["metadata"]["destroyed"], true);
    // The version after it still reads.
    let v2: HashMap<String, String> = vaultrs::kv2::read_version(&c, "secret", "ci/app/db", 2)
        .await
        .unwrap();
    assert_eq!(v2["password"], "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_allowed_by_policy_write_with_check_and_set() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (c, _) = login(&h, &issuer).await;
    // The deploy role reads only: a write is refused.
    let data = HashMap::from([("password", "three")]);
    let e = vaultrs::kv2::set(&c, "secret", "ci/app/db", &data)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(403));

    // A role whose grants include write: its token writes.
    let writer = writer_harness(&issuer).await;
    let (w, _) = login_role(&writer, &issuer, "writer").await;
    let v = vaultrs::kv2::set(&w, "secret", "ci/app/db", &data)
        .await
        .unwrap();
    assert_eq!(v.version, 1);
    let opts = vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 1 };
    let v = vaultrs::kv2::set_with_options(&w, "secret", "ci/app/db", &data, opts)
        .await
        .unwrap();
    assert_eq!(v.version, 2);
    let stale = vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 1 };
    let e = vaultrs::kv2::set_with_options(&w, "secret", "ci/app/db", &data, stale)
        .await
        .unwrap_err();
    match e {
        ClientError::APIError { code, errors } => {
            assert_eq!(code, 400);
            assert_eq!(
                errors,
                vec!["check-and-set parameter did not match the current version".to_owned()]
            );
        }
        other => panic!("{other:?}"),
    }
    let create_only = vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 0 };
    let e = vaultrs::kv2::set_with_options(&w, "secret", "ci/app/db", &data, create_only)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(400));
}

/// A server with the CI roles and no secrets.
async fn writer_harness(issuer: &Issuer) -> Harness {
    Harness::start_with(json!({}), |c| ci_http(issuer, c)).await
}

async fn login_role(h: &Harness, issuer: &Issuer, role: &str) -> (VaultClient, String) {
    let mut c = client(h, "");
    let jwt = issuer.sign_rs256(&github_claims(sigil::clock::unix_seconds(
        sigil::clock::now(),
    )));
    let auth = vaultrs::auth::oidc::login(&c, "jwt", &jwt, Some(role.into()))
        .await
        .unwrap();
    c.set_token(&auth.client_token);
    (c, auth.client_token)
}

/// A raw HTTPS request (method, path, token, body) with `curl`-like
/// freedom: the status and the JSON body.
pub(crate) async fn raw(
    h: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    https(
        h.server.http_addr.unwrap(),
        std::path::Path::new(&ca_file(h)),
        method,
        path,
        token,
        body,
    )
    .await
}

/// A TLS connection to `addr` (as `127.0.0.1`), trusting the PEM roots in
/// `ca`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let roots = sigil::cli::client::read_bundle(ca).unwrap();
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.into()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(sigil::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A KV write that declares a 2 MiB body and sends none of it: the raw
/// answer, read until the server closes.
async fn declared_too_large(h: &Harness, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = ca_file(h);
    let mut tls = tls_connect(h.server.http_addr.unwrap(), std::path::Path::new(&ca)).await;
    let head = format!(
        "POST /v1/secret/data/ci/app/db HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         x-vault-token: {token}\r\ncontent-length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    // The server closes a connection whose body it did not read; a reset
    // after the answer is not an error here.
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// One HTTPS request to `addr` (as `127.0.0.1`), trusting the PEM roots in
/// `ca`: the status and the JSON body (null when not JSON).
pub(crate) async fn https(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = token.map(|t| ("x-vault-token", t)).into_iter().collect();
    https_with(addr, ca, method, path, &headers, body).await
}

/// [`https`] with any request headers.
async fn https_with(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, Value) {
    let tls = tls_connect(addr, ca).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or_default(),
        )))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_other_clients_use_answer_like_vault() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (status, health) = raw(&h, "GET", "/v1/sys/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["sealed"], false);
    assert_eq!(health["initialized"], true);

    // The vault CLI and the Go client log in with PUT.
    let jwt = issuer.sign_rs256(&github_claims(sigil::clock::unix_seconds(
        sigil::clock::now(),
    )));
    let body = json!({"role": "deploy", "jwt": jwt}).to_string();
    let (status, login) = raw(&h, "PUT", "/v1/auth/jwt/login", None, Some(body)).await;
    assert_eq!(status, 200, "{login}");
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(login["auth"]["renewable"], false);

    // node-vault lists with ?list=1; the vault CLI with a trailing slash.
    for path in [
        "/v1/secret/metadata/ci/app?list=1",
        "/v1/secret/metadata/ci/app/?list=true",
    ] {
        let (status, listed) = raw(&h, "GET", path, Some(&token), None).await;
        assert_eq!(status, 200, "{path}: {listed}");
        assert_eq!(listed["data"]["keys"], json!(["api", "db"]));
    }
    let (status, _) = raw(
        &h,
        "LIST",
        "/v1/secret/metadata/ci/app/",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // A refused login names its reason with 400.
    let body = json!({"role": "deploy", "jwt": "a.b.c"}).to_string();
    let (status, refused) = raw(&h, "POST", "/v1/auth/jwt/login", None, Some(body)).await;
    assert_eq!(status, 400);
    assert!(
        refused["errors"][0]
            .as_str()
            .unwrap()
            .contains("malformed token"),
        "{refused}"
    );
    // No token, a made-up token: 403 permission denied.
    for t in [None, Some("not-a-token")] {
        let (status, body) = raw(&h, "GET", "/v1/secret/data/ci/app/db", t, None).await;
        assert_eq!(status, 403);
        assert_eq!(body, json!({"errors": ["permission denied"]}));
    }
    // Wrong method, and a body over the limit.
    let (status, _) = raw(
        &h,
        "DELETE",
        "/v1/secret/data/ci/app/db",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 405);
    // A body declared over the limit is refused before it is sent (the
    // client waits for the answer, as with `Expect: 100-continue`).
    let head = declared_too_large(&h, &token).await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    assert!(head.contains("request body is larger than 1 MiB"), "{head}");

    // Every request passed the audit: the reads are recorded with the
    // token's jti, never the token.
    let log = std::fs::read_to_string(h.tmp.path().join("data/audit.log")).unwrap();
    assert!(log.contains("\"secret.list\""));
    assert!(!log.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_503_while_sealed_and_the_issued_listener_closes() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (status, _) = raw(&h, "GET", "/v1/sys/health", None, None).await;
    assert_eq!(status, 200);
    h.server
        .clients()
        .await
        .operator
        .seal(sigil::api::pb::SealRequest {})
        .await
        .unwrap();
    // With a certificate sigil issued, the listener serves only unsealed.
    let tcp = tokio::net::TcpStream::connect(h.server.http_addr.unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut tcp = tcp;
        tcp.read(&mut buf).await
    })
    .await
    .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed while sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_token_reads_a_rotating_secret_for_a_minute_without_an_error() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let mut admin = h.admin().await;
    admin
        .set_rotation(sigil::api::pb::SetRotationRequest {
            path: "ci/app/db".into(),
            every_seconds: 3,
            window_seconds: 0,
            grace_seconds: 2,
            generator: "random:length=24,charset=alnum,field=password".into(),
        })
        .await
        .unwrap();
    let (c, _) = login(&h, &issuer).await;
    let start = std::time::Instant::now();
    let (mut reads, mut last, mut first) = (0u32, 0u64, None);
    while start.elapsed() < std::time::Duration::from_secs(60) {
        let current = admin
            .meta(sigil::api::pb::SecretMetaRequest {
                path: "ci/app/db".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .current_version;
        let got = vaultrs::kv2::read_metadata(&c, "secret", "ci/app/db")
            .await
            .map(|m| m.current_version);
        let value: HashMap<String, String> = vaultrs::kv2::read(&c, "secret", "ci/app/db")
            .await
            .unwrap_or_else(|e| panic!("read {reads} failed: {e:?}"));
        let seen = got.unwrap_or_else(|e| panic!("metadata read {reads} failed: {e:?}"));
        if seen > 2 {
            assert_eq!(value["password"].len(), 24, "a whole generated password");
        }
        // What a reader is given is the current version, or the one it
        // replaced while its grace period lasts: never older, never a gap.
        assert!(
            seen + 1 >= current,
            "read version {seen} while {current} is current"
        );
        assert!(seen >= last, "versions never go back ({seen} after {last})");
        last = seen;
        first.get_or_insert(seen);
        reads += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rotations = last - first.unwrap();
    assert!(rotations >= 10, "only {rotations} rotations in a minute");
    assert!(reads > 500, "{reads} reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_serves_while_sealed_and_health_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    crate::federation::web::operator_certificate(&certs);
    let h = Harness::start_with(json!({}), |mut c| {
        c.http = Some(HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: HttpCert::Files {
                cert_file: certs.join("cert.pem"),
                key_file: certs.join("key.pem"),
            },
            kv_mount: "secret".into(),
        });
        c
    })
    .await;
    let addr = h.server.http_addr.unwrap();
    let ca = certs.join("ca.pem");
    let (status, body) = https(addr, &ca, "GET", "/v1/sys/health", None, None).await;
    assert_eq!((status, &body["sealed"]), (200, &json!(false)), "{body}");
    h.server
        .clients()
        .await
        .operator
        .seal(sigil::api::pb::SealRequest {})
        .await
        .unwrap();
    let (status, body) = https(addr, &ca, "GET", "/v1/sys/health", None, None).await;
    assert_eq!((status, &body["sealed"]), (503, &json!(true)), "{body}");
    // `vault status` reads seal-status, which answers 200 either way.
    let (status, body) = https(addr, &ca, "GET", "/v1/sys/seal-status", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["initialized"],
            &body["sealed"],
            &body["t"],
            &body["n"]
        ),
        (&json!(true), &json!(true), &json!(1), &json!(1)),
        "{body}"
    );
    assert_eq!(
        body["version"],
        concat!(env!("CARGO_PKG_VERSION"), "+sigil")
    );
    assert_eq!(
        body["cluster_name"],
        Value::Null,
        "named only while unsealed"
    );
    let (status, body) = https(addr, &ca, "GET", "/v1/sys/init", None, None).await;
    assert_eq!((status, body), (200, json!({"initialized": true})));
    // ... and sys/leader, which it reads next: one server, no HA.
    let (status, body) = https(addr, &ca, "GET", "/v1/sys/leader", None, None).await;
    assert_eq!(
        (status, &body["ha_enabled"]),
        (200, &json!(false)),
        "{body}"
    );
    // Everything else answers 503 sealed, in Vault's error shape.
    let (status, body) = https(addr, &ca, "GET", "/v1/secret/data/x", Some("t"), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!({"errors": ["sigil is sealed"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_is_closed() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    // A TLS connection that never sends a request: the server closes it
    // once the header timeout passes, so idle clients cannot hold slots.
    let mut tls = tls_connect(
        h.server.http_addr.unwrap(),
        std::path::Path::new(&ca_file(&h)),
    )
    .await;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the idle connection was not closed");
    assert!(
        start.elapsed() >= std::time::Duration::from_secs(9),
        "closed too early: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_servers_introspect_tokens_over_http() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (_, caller) = login_role(&h, &issuer, "deploy").await;
    let (_, asked) = login_role(&h, &issuer, "deploy").await;
    let addr = h.server.http_addr.unwrap();
    let ca = ca_file(&h);
    let ca = std::path::Path::new(&ca);
    let bearer = format!("Bearer {caller}");
    // The RFC's form, with the caller's own token as Authorization.
    let form = format!("token={asked}&token_type_hint=access_token");
    let (status, v) = https_with(
        addr,
        ca,
        "POST",
        "/v1/sigil/introspect",
        &[
            ("authorization", &bearer),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(form),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "spiffe://example.org/ci/acme/app");
    assert_eq!(v["aud"], json!(["sigil"]));
    assert_eq!(v["token_type"], "Bearer");
    assert!(
        v["scope"].as_str().unwrap().contains("read:ci/app/*"),
        "{v}"
    );
    assert!(v.get("cnf").is_none(), "a CI token is not bound");
    // JSON too, with X-Vault-Token.
    let body = json!({ "token": asked }).to_string();
    let (status, v) = raw(
        &h,
        "POST",
        "/v1/sigil/introspect",
        Some(&caller),
        Some(body),
    )
    .await;
    assert_eq!((status, v["active"].clone()), (200, json!(true)));
    // Nothing to ask about, and nobody asking.
    let (status, v) = raw(&h, "POST", "/v1/sigil/introspect", Some(&caller), None).await;
    assert_eq!(status, 400);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("missing token"),
        "{v}"
    );
    let body = json!({ "token": asked }).to_string();
    let (status, _) = raw(&h, "POST", "/v1/sigil/introspect", None, Some(body)).await;
    assert_eq!(status, 403);
    // Revoked: inactive, and nothing else is said about it.
    let (status, _) = raw(&h, "POST", "/v1/auth/token/revoke-self", Some(&asked), None).await;
    assert_eq!(status, 204);
    let body = json!({ "token": asked }).to_string();
    let (status, v) = raw(
        &h,
        "POST",
        "/v1/sigil/introspect",
        Some(&caller),
        Some(body),
    )
    .await;
    assert_eq!((status, v), (200, json!({"active": false})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_ci_identity_cannot_log_in_until_the_quarantine_is_lifted() {
    const CI: &str = "spiffe://example.org/ci/acme/app";
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (c, before) = login_role(&h, &issuer, "deploy").await;
    let accessor = vaultrs::token::lookup_self(&c).await.unwrap().accessor;
    let mut op = h.server.clients().await;
    let put = op
        .quarantine
        .put(sigil::api::pb::QuarantinePutRequest {
            spiffe_id: CI.into(),
            reason: "leaked runner".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        put.tokens_revoked,
        vec![accessor],
        "the token issued before"
    );
    let (status, v) = raw(&h, "GET", "/v1/secret/data/ci/app/db", Some(&before), None).await;
    assert_eq!((status, v), (403, json!({"errors": ["permission denied"]})));

    // A login is not an mTLS request: the login itself checks the
    // quarantine, over HTTP and over gRPC, and names it on gRPC.
    let jwt = issuer.sign_rs256(&github_claims(sigil::clock::unix_seconds(
        sigil::clock::now(),
    )));
    let body = json!({"role": "deploy", "jwt": jwt}).to_string();
    let (status, v) = raw(&h, "POST", "/v1/auth/jwt/login", None, Some(body.clone())).await;
    assert_eq!((status, v), (403, json!({"errors": ["permission denied"]})));
    let e = op
        .auth
        .login_oidc(sigil::api::pb::LoginOidcRequest {
            role: "deploy".into(),
            jwt: jwt.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(e.message(), format!("{CI} is quarantined: leaked runner"));

    op.quarantine
        .lift(sigil::api::pb::QuarantineLiftRequest {
            spiffe_id: CI.into(),
            reason: "runner rebuilt".into(),
        })
        .await
        .unwrap();
    let (status, v) = raw(&h, "POST", "/v1/auth/jwt/login", None, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    let token = v["auth"]["client_token"].as_str().unwrap();
    let (status, v) = raw(&h, "GET", "/v1/secret/data/ci/app/db", Some(token), None).await;
    assert_eq!(
        (status, &v["data"]["data"]["password"]),
        (200, &json!("two")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_workload_cannot_speak_with_another_identitys_token() {
    use sigil::cli::client::{Clients, Credential, Target};
    const W: &str = "spiffe://example.org/app/w";
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let (_, ci_token) = login_role(&h, &issuer, "deploy").await;
    // Over W's own mTLS connection, the CI token speaks for the request.
    let dir = h.svid_dir("/app/w");
    let channel = sigil::cli::client::connect(&Target::Tls {
        addr: h.server.addr.to_string(),
        ca_bundle: dir.join("bundle.pem"),
        svid_dir: Some(dir),
    })
    .await
    .unwrap();
    let credential = Credential::bearer(&sigil::secret::Secret::from(ci_token)).unwrap();
    let mut w = Clients::with_credential(channel, credential);
    w.secrets
        .get(crate::secrets::get("ci/app/db", 0))
        .await
        .unwrap();
    h.server
        .clients()
        .await
        .quarantine
        .put(sigil::api::pb::QuarantinePutRequest {
            spiffe_id: W.into(),
            reason: "compromised pod".into(),
        })
        .await
        .unwrap();
    // Quarantined, W is cut off whoever its requests claim to speak for.
    let e = w
        .secrets
        .get(crate::secrets::get("ci/app/db", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), format!("{W} is quarantined: compromised pod"));
}

/// Reads from `stream` until the peer closes it (or fails), for at most
/// `within`; whether it closed.
async fn closed_within(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    within: std::time::Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_closes_http_connections_and_releases_the_server_at_once() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let addr = h.server.http_addr.unwrap();
    // A keep-alive connection that has been answered and sits idle, and a
    // connection that never starts its TLS handshake.
    let mut idle = tls_connect(addr, std::path::Path::new(&ca_file(&h))).await;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        idle.write_all(b"GET /v1/sys/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(
            buf.get(..n).unwrap().starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(buf.get(..n).unwrap())
        );
    }
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Both are served (the silent one waits in its handshake) before the stop.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let server = std::sync::Arc::downgrade(&h.server.server);
    let start = std::time::Instant::now();
    let Harness {
        tmp: _tmp,
        server: running,
    } = h;
    let stopping = tokio::spawn(running.stop());
    // At once: not after the 10 s a handshake or an idle connection is
    // otherwise given, nor after the 2 s grace for requests in flight.
    let at_once = std::time::Duration::from_secs(1);
    assert!(
        closed_within(&mut idle, at_once).await,
        "the idle connection stayed open"
    );
    assert!(
        closed_within(&mut silent, at_once).await,
        "the handshaking connection stayed open"
    );
    stopping.await.unwrap();
    let soon = std::time::Duration::from_secs(3);
    // Nothing the HTTP API ran still holds the server (its store, audit log
    // and token writer), so another server could open the same data.
    while server.strong_count() > 0 && start.elapsed() < soon {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.strong_count(),
        0,
        "the server is still held after {:?}",
        start.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is still open"
    );
}
