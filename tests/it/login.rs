//! CI login (SPEC §3.3 `sigil login oidc`, `sigil token`): a GitHub-Actions-
//! shaped OIDC JWT, signed by a locally generated RSA or P-256 issuer key,
//! traded for a sigil token over gRPC; the token reads exactly what its role
//! grants, looks itself up, revokes itself; every refusal names its reason.

use crate::common::*;
use crate::oidc_signer::{GITHUB_ISSUER, Issuer, github_claims};
use crate::secrets::{Harness, get, put};
use sigil::api::pb;
use sigil::cli::client::{Clients, Credential, Target};
use sigil::config::{JwksSource, OidcConfig, OidcIssuer, OidcRole};
use sigil::oidc::Algorithm;
use sigil::secret::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tonic::Code;

/// The roles every test here logs in to.
pub(crate) fn oidc_config(jwks_file: PathBuf) -> OidcConfig {
    let bound = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    OidcConfig {
        issuers: vec![OidcIssuer {
            name: "github".into(),
            issuer: GITHUB_ISSUER.into(),
            jwks: JwksSource::File(jwks_file),
            audiences: vec!["sigil".into()],
            algorithms: vec![Algorithm::Rs256, Algorithm::Es256],
            mount: "jwt".into(),
            leeway_secs: 60,
        }],
        roles: vec![
            OidcRole {
                name: "deploy".into(),
                issuer: "github".into(),
                bound_claims: bound(&[("repository", "acme/app"), ("ref", "refs/heads/main")]),
                spiffe_id: "spiffe://example.org/ci/{repository}".into(),
                grants: vec!["read:ci/app/*".into()],
                ttl: sigil::id::Ttl::parse("15m").unwrap(),
            },
            OidcRole {
                name: "release".into(),
                issuer: "github".into(),
                bound_claims: bound(&[("ref", "refs/heads/release-*")]),
                spiffe_id: "spiffe://example.org/ci/release/{repository}".into(),
                grants: vec!["read:ci/app/*".into()],
                ttl: sigil::id::Ttl::parse("15m").unwrap(),
            },
        ],
    }
}

/// A server with the roles above (JWKS from `issuer`) and no grants.
pub(crate) async fn harness(issuer: &Issuer) -> Harness {
    let h = Harness::start_with(serde_json::json!({}), |mut c| {
        let jwks = c.data_dir.with_file_name("github-jwks.json");
        std::fs::write(&jwks, issuer.jwks_json()).unwrap();
        c.oidc = oidc_config(jwks);
        c
    })
    .await;
    let mut admin = h.admin().await;
    admin
        .put(put("ci/app/db", &[("password", "hunter2")], None))
        .await
        .unwrap();
    admin
        .put(put("ci/other/db", &[("password", "other")], None))
        .await
        .unwrap();
    h
}

/// The trust bundle, written by minting an SVID nobody uses.
pub(crate) fn bundle(h: &Harness) -> PathBuf {
    let dir = h.tmp.path().join("bundle-only");
    if !dir.join("bundle.pem").exists() {
        let admin = h.server.admin.to_str().unwrap().to_owned();
        ok(sigil(
            &[
                "svid",
                "mint",
                "--spiffe-id",
                "spiffe://example.org/unused",
                "--out",
                dir.to_str().unwrap(),
            ],
            &[("SIGIL_ADMIN_SOCKET", &admin)],
        ));
    }
    dir.join("bundle.pem")
}

/// Clients over TLS with no client certificate, sending `token` if given.
pub(crate) async fn anonymous(h: &Harness, token: Option<&str>) -> Clients {
    let channel = sigil::cli::client::connect(&Target::Tls {
        addr: h.server.addr.to_string(),
        ca_bundle: bundle(h),
        svid_dir: None,
    })
    .await
    .unwrap();
    let credential = match token {
        Some(t) => Credential::bearer(&Secret::from(t.to_owned())).unwrap(),
        None => Credential::default(),
    };
    Clients::with_credential(channel, credential)
}

fn now() -> u64 {
    sigil::clock::unix_seconds(sigil::clock::now())
}

async fn login(h: &Harness, role: &str, jwt: String) -> Result<pb::LoginResponse, tonic::Status> {
    anonymous(h, None)
        .await
        .auth
        .login_oidc(pb::LoginOidcRequest {
            role: role.into(),
            jwt,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_login_gets_a_token_that_reads_exactly_its_grants() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let r = login(&h, "deploy", issuer.sign_rs256(&github_claims(now())))
        .await
        .unwrap();
    let info = r.info.clone().unwrap();
    assert_eq!(info.spiffe_id, "spiffe://example.org/ci/acme/app");
    assert_eq!(info.role, "deploy");
    assert_eq!(info.issuer, "github");
    assert_eq!(info.grants, vec!["read:ci/app/*".to_owned()]);
    let ttl = info.expires_at - info.issued_at;
    assert!((890..=900).contains(&ttl), "15m token, got {ttl}s");

    // The token verifies against the trust bundle as an ES256 JWT whose
    // claims say what it is.
    let claims = jwt_claims(&r.token);
    assert_eq!(claims["sub"], "spiffe://example.org/ci/acme/app");
    assert_eq!(claims["scope"], "read:ci/app/*");
    assert_eq!(claims["jti"], info.jti.as_str());
    assert_eq!(claims["aud"], serde_json::json!(["sigil"]));

    let mut c = anonymous(&h, Some(&r.token)).await;
    let v = c
        .secrets
        .get(get("ci/app/db", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(crate::secrets::field(&v, "password"), "hunter2");
    let denied = c.secrets.get(get("ci/other/db", 0)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = c
        .secrets
        .put(put("ci/app/db", &[("password", "x")], None))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "read grants only");

    let looked = c
        .auth
        .lookup_self(pb::LookupSelfRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(looked.jti, info.jti);
    assert_eq!(looked.revoked_at, 0);
    let revoked = c
        .auth
        .revoke_self(pb::RevokeSelfRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at > 0);
    let after = c.secrets.get(get("ci/app/db", 0)).await.unwrap_err();
    assert_eq!(after.code(), Code::PermissionDenied, "revoked at once");
    let after = c
        .auth
        .lookup_self(pb::LookupSelfRequest {})
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::PermissionDenied);

    // The audit log names the token by jti; the token itself is nowhere.
    let log = std::fs::read_to_string(h.tmp.path().join("data/audit.log")).unwrap();
    assert!(log.contains(&format!("issued token {}", info.jti)), "{log}");
    assert!(log.contains(&format!("token:{}", info.jti)));
    assert!(!log.contains(&r.token));
    let files = all_file_bytes(h.tmp.path());
    for (path, bytes) in files {
        assert!(
            !contains(&bytes, r.token.as_bytes()),
            "token stored in {}",
            path.display()
        );
    }
}

fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_es256_login_and_a_glob_bound_role_succeed() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let r = login(&h, "deploy", issuer.sign_es256(&github_claims(now())))
        .await
        .unwrap();
    assert_eq!(
        r.info.unwrap().spiffe_id,
        "spiffe://example.org/ci/acme/app"
    );
    let mut claims = github_claims(now());
    claims["ref"] = "refs/heads/release-2.1".into();
    let r = login(&h, "release", issuer.sign_rs256(&claims))
        .await
        .unwrap();
    assert_eq!(
        r.info.unwrap().spiffe_id,
        "spiffe://example.org/ci/release/acme/app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refused_login_names_its_reason() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let t = now();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = github_claims(t);
        f(&mut c);
        issuer.sign_rs256(&c)
    };
    let header = |alg: &str| serde_json::json!({"alg": alg, "kid": "rsa-1", "typ": "JWT"});
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "expired",
            "deploy",
            with(&|c| c["exp"] = (t - 600).into()),
            "token has expired",
        ),
        (
            "not yet valid",
            "deploy",
            with(&|c| c["nbf"] = (t + 600).into()),
            "token is not valid yet (nbf)",
        ),
        (
            "wrong issuer",
            "deploy",
            with(&|c| c["iss"] = "https://gitlab.example.com".into()),
            "issuer \"https://gitlab.example.com\" is not the role's issuer",
        ),
        (
            "wrong audience",
            "deploy",
            with(&|c| c["aud"] = "vault".into()),
            "audience does not include any of the issuer's audiences",
        ),
        (
            "unbound claim",
            "deploy",
            with(&|c| c["repository"] = "evil/app".into()),
            "claim \"repository\" does not match the role's bound value \"acme/app\"",
        ),
        (
            "glob mismatch",
            "release",
            issuer.sign_rs256(&github_claims(t)),
            "claim \"ref\" does not match the role's bound pattern \"refs/heads/release-*\"",
        ),
        (
            "unknown kid",
            "deploy",
            issuer.sign_with_header(
                &serde_json::json!({"alg": "RS256", "kid": "rotated-away", "typ": "JWT"}),
                &github_claims(t),
            ),
            "unknown key id \"rotated-away\"",
        ),
        (
            "alg none",
            "deploy",
            issuer.sign_with_header(&header("none"), &github_claims(t)),
            "alg none is refused",
        ),
        (
            "HS256",
            "deploy",
            issuer.sign_with_header(&header("HS256"), &github_claims(t)),
            "HMAC algorithm \"HS256\" is refused",
        ),
        (
            "oversized",
            "deploy",
            with(&|c| c["padding"] = "x".repeat(20_000).into()),
            "token is larger than 16384 bytes",
        ),
        (
            "unknown role",
            "nope",
            issuer.sign_rs256(&github_claims(t)),
            "no role named \"nope\"",
        ),
        (
            "a role name no role can have",
            "x/../y",
            issuer.sign_rs256(&github_claims(t)),
            "role: use 1 to 64 of A-Z a-z 0-9 _ . -",
        ),
    ];
    for (name, role, jwt, want) in cases {
        let e = login(&h, role, jwt).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().contains(want), "{name}: {}", e.message());
    }
    // Every refusal is audited with its reason.
    let log = std::fs::read_to_string(h.tmp.path().join("data/audit.log")).unwrap();
    assert!(log.contains("alg none is refused"), "{log}");
    assert!(log.contains("\"auth.login\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_logs_in_and_reads_with_sigil_token() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let jwt_file = h.tmp.path().join("jwt");
    std::fs::write(&jwt_file, issuer.sign_rs256(&github_claims(now()))).unwrap();
    let addr = h.server.addr.to_string();
    let bundle = bundle(&h);
    let base = [
        ("SIGIL_SERVER", addr.as_str()),
        ("SIGIL_CA_BUNDLE", bundle.to_str().unwrap()),
    ];
    let token = ok(sigil(
        &[
            "login",
            "oidc",
            "--role",
            "deploy",
            "--jwt-file",
            jwt_file.to_str().unwrap(),
        ],
        &base,
    ));
    let token = token.trim();
    let mut env = base.to_vec();
    env.push(("SIGIL_TOKEN", token));
    let password = ok(sigil(
        &["secret", "get", "ci/app/db", "--field", "password"],
        &env,
    ));
    assert_eq!(password.trim(), "hunter2");
    let looked = ok(sigil(&["--json", "token", "lookup"], &env));
    let looked: serde_json::Value = serde_json::from_str(&looked).unwrap();
    assert_eq!(looked["spiffe_id"], "spiffe://example.org/ci/acme/app");
    assert_eq!(looked["grants"], serde_json::json!(["read:ci/app/*"]));
    ok(sigil(&["token", "revoke"], &env));
    let out = sigil(&["secret", "get", "ci/app/db"], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn the_issue_config_example_parses() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
trust_domain = "example.org"
data_dir = "data"
listen = "127.0.0.1:0"
admin_socket = "admin.sock"
[policy]
dir = "policies"

[[oidc.issuer]]
name = "github"
issuer = "https://token.actions.githubusercontent.com"
jwks_file = "/etc/sigil/github-jwks.json"
audiences = ["sigil"]
algorithms = ["RS256", "ES256"]
[[oidc.role]]
name = "deploy"
issuer = "github"
bound_claims = { repository = "acme/app", ref = "refs/heads/main" }
spiffe_id = "spiffe://example.org/ci/{repository}"
grants = ["read:ci/app/*"]
ttl = "15m"
"#;
    let path: &Path = &dir.path().join("server.toml");
    let c = sigil::config::ServerConfig::parse(path, text).unwrap();
    let expected = oidc_config(PathBuf::from("/etc/sigil/github-jwks.json"));
    assert_eq!(c.oidc.issuers, expected.issuers);
    assert_eq!(c.oidc.roles[0], expected.roles[0]);

    for (bad, want) in [
        (
            text.replace("issuer = \"github\"\nbound", "issuer = \"gitlab\"\nbound"),
            "no [[oidc.issuer]] is named \"gitlab\"",
        ),
        (
            text.replace("read:ci/app/*", "reed:ci/app/*"),
            "oidc.role.grants",
        ),
        (
            text.replace("ES256\"]", "HS256\"]"),
            "oidc.issuer.algorithms",
        ),
        (
            text.replace("{repository}\"", "{repository\""),
            "oidc.role.spiffe_id",
        ),
        (
            text.replace("ttl = \"15m\"", "ttl = \"24h\""),
            "at most 12h",
        ),
        (
            text.replace("jwks_file = \"/etc/sigil/github-jwks.json\"", ""),
            "set exactly one of jwks_file or jwks_url",
        ),
        (
            text.replace(
                "bound_claims = { repository = \"acme/app\", ref = \"refs/heads/main\" }\n",
                "",
            ),
            "bind at least one claim",
        ),
        (
            text.replace("repository = \"acme/app\"", "repository = \"*\""),
            "\"repository\" matches anything",
        ),
        (
            text.replace(
                "audiences = [\"sigil\"]",
                "audiences = [\"sigil\"]\nleeway = \"1h\"",
            ),
            "oidc.issuer.leeway",
        ),
    ] {
        let e = sigil::config::ServerConfig::parse(path, &bad).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
}

/// Serves `doc` (changeable) over HTTPS with the operator certificate in
/// `dir`; returns the URL and how many times it was fetched.
async fn jwks_endpoint(
    dir: &Path,
    doc: std::sync::Arc<std::sync::Mutex<String>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    crate::federation::web::operator_certificate(dir);
    let chain =
        sigil::tls::certs_from_pem("cert.pem", &std::fs::read(dir.join("cert.pem")).unwrap())
            .unwrap();
    let key =
        sigil::tls::key_from_pem("key.pem", &std::fs::read(dir.join("key.pem")).unwrap()).unwrap();
    let config = std::sync::Arc::new(sigil::tls::https_single_cert_config(&chain, &key).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/jwks",
        listener.local_addr().unwrap().port()
    );
    let fetched = std::sync::Arc::new(AtomicUsize::new(0));
    let count = fetched.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (config, doc, count) = (config.clone(), doc.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = doc.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, fetched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_cached_and_fetched_again_for_a_new_key_at_a_bounded_rate() {
    use std::sync::atomic::Ordering;
    let issuer = Issuer::new();
    let tmp = tempfile::tempdir().unwrap();
    // At first the platform publishes only its RSA key.
    let rsa_only = serde_json::json!({"keys": [issuer.rsa_jwk()]}).to_string();
    let doc = std::sync::Arc::new(std::sync::Mutex::new(rsa_only));
    let (url, fetched) = jwks_endpoint(tmp.path(), doc.clone()).await;
    let ca = tmp.path().join("ca.pem");
    let h = Harness::start_with(serde_json::json!({}), |mut c| {
        c.oidc = oidc_config(PathBuf::new());
        c.oidc.issuers[0].jwks = JwksSource::Url {
            url: url.clone(),
            ca_file: Some(ca.clone()),
        };
        c
    })
    .await;
    let t = now();
    login(&h, "deploy", issuer.sign_rs256(&github_claims(t)))
        .await
        .unwrap();
    login(&h, "deploy", issuer.sign_rs256(&github_claims(t)))
        .await
        .unwrap();
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        1,
        "kept after the first login"
    );

    // The platform rotates to a new key: tokens name a kid sigil lacks. Within
    // the refresh interval, unknown kids do not make sigil fetch again.
    *doc.lock().unwrap() = issuer.jwks_json();
    for _ in 0..5 {
        let e = login(&h, "deploy", issuer.sign_es256(&github_claims(t)))
            .await
            .unwrap_err();
        assert!(e.message().contains("unknown key id \"ec-1\""), "{e:?}");
    }
    assert_eq!(fetched.load(Ordering::SeqCst), 1, "rate-limited");
    tokio::time::sleep(sigil::server::login::REFRESH_EVERY).await;
    let r = login(&h, "deploy", issuer.sign_es256(&github_claims(t)))
        .await
        .unwrap();
    assert_eq!(
        r.info.unwrap().spiffe_id,
        "spiffe://example.org/ci/acme/app"
    );
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        2,
        "fetched again for the new kid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_nothing_while_sealed_and_works_again_after_unseal() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let token = login(&h, "deploy", issuer.sign_rs256(&github_claims(now())))
        .await
        .unwrap()
        .token;
    let mut ops = h.server.clients().await;
    ops.operator.seal(pb::SealRequest {}).await.unwrap();
    assert!(
        h.server
            .server
            .tokens()
            .authenticate(token.as_bytes(), now())
            .is_none(),
        "no token is held while sealed"
    );
    unseal(&mut ops).await;
    // Loaded again from the store at unseal: the same token reads again.
    let mut c = anonymous(&h, Some(&token)).await;
    let v = c
        .secrets
        .get(get("ci/app/db", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(crate::secrets::field(&v, "password"), "hunter2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_token_is_refused_where_the_policy_requires_binding() {
    let issuer = Issuer::new();
    let h = harness(&issuer).await;
    let r = login(&h, "deploy", issuer.sign_rs256(&github_claims(now())))
        .await
        .unwrap();
    let mut c = anonymous(&h, Some(&r.token)).await;
    c.secrets.get(get("ci/app/db", 0)).await.unwrap();

    // The policy data names secret.get as taking bound tokens only.
    let data = h.tmp.path().join("policies/grants.json");
    let doc = serde_json::json!({"sigil": {"grants": {}, "bound_only": ["secret.get"]}});
    std::fs::write(&data, doc.to_string()).unwrap();
    let mut op = h.server.clients().await;
    op.policy.reload(pb::ReloadRequest {}).await.unwrap();
    let e = c.secrets.get(get("ci/app/db", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "secret.get needs a token bound to the caller's certificate"
    );
    // Lookup is not on the list: the same token still looks itself up.
    c.auth.lookup_self(pb::LookupSelfRequest {}).await.unwrap();

    // A name that is no action refuses the whole data set, naming it.
    let doc = serde_json::json!({"sigil": {"bound_only": ["secret.gte"]}});
    std::fs::write(&data, doc.to_string()).unwrap();
    let e = op.policy.reload(pb::ReloadRequest {}).await.unwrap_err();
    assert!(
        e.message()
            .contains("sigil.bound_only: \"secret.gte\" is not an action name"),
        "{}",
        e.message()
    );
}
