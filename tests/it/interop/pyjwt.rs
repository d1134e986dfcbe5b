//! A sigil token checked by a JWT library of another stack: PyJWT (with
//! the `cryptography` backend, installed into target/pyenv by
//! scripts/test.sh) runs tests/python/jwt_check.py as a resource server
//! would, with the key picked by `kid` from the JWT authorities of the
//! SPIFFE bundle, ES256 only and its own audience, and must read the claims
//! sigil reports for the token.

use super::grpcio::{python, root};
use crate::jit::ALICE;
use crate::secrets::Harness;
use serde_json::{Value, json};
use sigil::api::pb;

const PYJWT: &str = "2.15.1";

async fn run_check(h: &Harness, bundle: &str, cases: &Value) -> Value {
    let bundle_file = h.tmp.path().join("bundle.jwks.json");
    std::fs::write(&bundle_file, bundle).unwrap();
    let cases_file = h.tmp.path().join("jwt-cases.json");
    std::fs::write(&cases_file, cases.to_string()).unwrap();
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(root().join("tests/python/jwt_check.py"))
        .arg("--bundle")
        .arg(&bundle_file)
        .arg("--cases")
        .arg(&cases_file);
    crate::common::client_json(cmd, "PyJWT").await
}

/// `token` with the claims part of `other` and its own signature.
fn spliced(token: &str, other: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let claims = other.split('.').nth(1).unwrap();
    format!("{}.{claims}.{}", parts[0], parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_a_minted_token_against_the_spiffe_bundle() {
    let h = Harness::start(json!({ ALICE: ["read:app/alice/*"] })).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mint = |audience: &str| pb::MintTokenRequest {
        scopes: vec!["read:app/alice/*".into()],
        audience: audience.into(),
        ttl_seconds: 600,
    };
    let payments = alice
        .auth
        .mint(mint("payments"))
        .await
        .unwrap()
        .into_inner();
    let other = alice
        .auth
        .mint(mint("payments"))
        .await
        .unwrap()
        .into_inner();
    let bundle = h
        .server
        .clients()
        .await
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .spiffe_json;
    let cases = json!([
        {"name": "minted", "token": payments.token, "audience": "payments"},
        {"name": "other_audience", "token": payments.token, "audience": "billing"},
        {"name": "spliced", "token": spliced(&payments.token, &other.token), "audience": "payments"},
    ]);
    let py = run_check(&h, &bundle, &cases).await;
    assert_eq!(py["pyjwt"], PYJWT);

    let info = payments.info.unwrap();
    let ok = &py["minted"]["ok"];
    assert_eq!(ok["header"]["alg"], "ES256", "{py:#}");
    assert_eq!(ok["header"]["typ"], "sigil+jwt");
    let claims = &ok["claims"];
    assert_eq!(claims["sub"], ALICE);
    assert_eq!(claims["aud"], json!(["payments"]));
    assert_eq!(claims["scope"], "read:app/alice/*");
    assert_eq!(claims["jti"], info.jti.as_str());
    assert_eq!(claims["exp"], info.expires_at);
    assert_eq!(claims["iat"], info.issued_at);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(claims["cnf"]["x5t#S256"], info.cnf_x5t_s256.as_str());

    assert_eq!(
        py["other_audience"]["error"], "InvalidAudienceError",
        "{py:#}"
    );
    assert_eq!(py["spliced"]["error"], "InvalidSignatureError", "{py:#}");
}
