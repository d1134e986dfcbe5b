//! Scoped tokens bound to their holder (SPEC §3.3 `sigil token mint`,
//! `introspect`, `revoke`): a token carries only grants its holder has,
//! never outlives the JIT grant it needs, speaks only over a connection
//! with the certificate it is bound to (RFC 8705), and introspects (RFC
//! 7662) as inactive once anything it relies on ends.

use super::{
    ALICE, approve, approved, ask, asked, cli_as, cli_request, read_code, run, shown, workflow_with,
};
use crate::common::*;
use crate::quarantine::{lift_request, put_request};
use crate::secrets::{Harness, get};
use sigil::api::pb;
use sigil::cli::client::{Clients, Credential, Target};
use sigil::clock::ManualClock;
use sigil::secret::Secret;
use std::sync::Arc;
use tonic::Code;

fn grants() -> serde_json::Value {
    serde_json::json!({ ALICE: ["read:app/alice/*"] })
}

fn mint(scopes: &[&str], audience: &str, ttl: i64) -> pb::MintTokenRequest {
    pb::MintTokenRequest {
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        audience: audience.into(),
        ttl_seconds: ttl,
    }
}

/// A token `alice` mints for herself with her standing grant.
async fn alice_token(alice: &mut Clients, audience: &str) -> pb::LoginResponse {
    alice
        .auth
        .mint(mint(&["read:app/alice/*"], audience, 0))
        .await
        .unwrap()
        .into_inner()
}

/// Clients presenting `token` over a connection with the certificate of
/// `path` (or with none).
async fn with_token(h: &Harness, path: Option<&str>, token: &str) -> Clients {
    let svid_dir = path.map(|p| h.svid_dir(p));
    let ca_bundle = h.svid_dir("/ops/bob").join("bundle.pem");
    let channel = sigil::cli::client::connect(&Target::Tls {
        addr: h.server.addr.to_string(),
        ca_bundle,
        svid_dir,
    })
    .await
    .unwrap();
    let credential = Credential::bearer(&Secret::from(token.to_owned())).unwrap();
    Clients::with_credential(channel, credential)
}

async fn introspect(c: &mut Clients, token: &str) -> pb::IntrospectResponse {
    c.auth
        .introspect(pb::IntrospectRequest {
            token: token.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_carries_only_held_scopes_and_ends_with_the_grant_it_needs() {
    let clock = Arc::new(ManualClock::at_wall_time());
    let (h, mut op) = workflow_with(grants(), clock.clone()).await;
    op.secrets
        .put(crate::secrets::put("app/alice/key", &[("k", "v")], None))
        .await
        .unwrap();
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;

    // A standing grant, or a narrower scope under it.
    for scope in ["read:app/alice/*", "read:app/alice/key"] {
        let t = alice
            .auth
            .mint(mint(&[scope], "payments", 0))
            .await
            .unwrap()
            .into_inner();
        let info = t.info.unwrap();
        assert_eq!(info.grants, vec![scope.to_owned()]);
        assert_eq!(info.audience, vec!["payments".to_owned()]);
        assert_eq!(info.expires_at - info.issued_at, 15 * 60, "the default");
        assert!(info.jit_requests.is_empty());
        assert_eq!(info.cnf_x5t_s256.len(), 43, "base64url SHA-256");
    }
    // Anything wider, or not held at all, is refused by name.
    for (scope, code, msg) in [
        (
            "read:app/**",
            Code::PermissionDenied,
            "scope \"read:app/**\" is not covered by a standing grant or an active JIT grant of the caller",
        ),
        (
            "read:prod/db/*",
            Code::PermissionDenied,
            "scope \"read:prod/db/*\" is not covered by a standing grant or an active JIT grant of the caller",
        ),
        (
            "raed:app/alice/*",
            Code::InvalidArgument,
            "scope \"raed:app/alice/*\": ",
        ),
    ] {
        let e = alice
            .auth
            .mint(mint(&[scope], "payments", 0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{scope}: {e:?}");
        assert!(e.message().starts_with(msg), "{scope}: {}", e.message());
    }
    let e = alice
        .auth
        .mint(mint(&["read:app/alice/*"], "payments", 13 * 3600))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "ttl: at most 43200s");
    // The operator has no certificate to bind to.
    let e = op
        .auth
        .mint(mint(&["read:app/alice/*"], "payments", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // With a JIT grant, the token needs it: its exp is the grant's end.
    let r = asked(&mut alice, ask("db-read", "", 600, "incident 7")).await;
    let active = approved(&mut bob, approve(&r.id)).await;
    let t = alice
        .auth
        .mint(mint(
            &["read:prod/db/main", "read:app/alice/*"],
            "sigil",
            3600,
        ))
        .await
        .unwrap()
        .into_inner();
    let info = t.info.unwrap();
    assert_eq!(info.expires_at, active.expires_at);
    assert_eq!(info.jit_requests, vec![r.id.clone()]);

    // Presented with Alice's own certificate it reads; with Bob's, or with
    // none, it proves nothing.
    let mut own = with_token(&h, Some("/app/alice"), &t.token).await;
    assert_eq!(read_code(&mut own).await.unwrap(), "s3cret");
    for path in [Some("/ops/bob"), None] {
        let mut other = with_token(&h, path, &t.token).await;
        let e = read_code(&mut other).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{path:?}");
        assert_eq!(
            e.message(),
            "anonymous callers may not perform secret.get",
            "{path:?}"
        );
    }
    // A token for another audience does not speak to sigil at all.
    let payments = alice
        .auth
        .mint(mint(&["read:app/alice/*"], "payments", 0))
        .await
        .unwrap()
        .into_inner()
        .token;
    // It is signed with the JWT-SVID keys but typed `sigil+jwt`: a JWT-SVID
    // validator for that audience refuses it (JWT-SVID §2.3), so a copy
    // cannot be replayed, unbound, as the workload's JWT-SVID.
    let bundle = op
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    let parsed = sigil::authority::Bundle::from_spiffe_json(
        &sigil::id::TrustDomain::parse(TD).unwrap(),
        &bundle.spiffe_json,
    )
    .unwrap();
    assert!(matches!(
        sigil::authority::validate_jwt_svid(
            &payments,
            "payments",
            &parsed.jwt_bundle(),
            std::time::SystemTime::now()
        ),
        Err(sigil::authority::JwtError::BadType)
    ));
    let mut aside = with_token(&h, Some("/app/alice"), &payments).await;
    let e = aside
        .secrets
        .get(get("app/alice/key", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Resource servers introspect.
    let seen = introspect(&mut bob, &t.token).await;
    assert!(seen.active);
    assert_eq!(seen.sub, ALICE);
    assert_eq!(seen.aud, vec!["sigil".to_owned()]);
    assert_eq!(seen.scope, "read:prod/db/main read:app/alice/*");
    assert_eq!(seen.exp, active.expires_at);
    assert_eq!(seen.token_type, "Bearer");
    assert_eq!(seen.sigil_jit, vec![r.id.clone()]);
    assert!(introspect(&mut bob, &payments).await.active);
    assert!(!introspect(&mut bob, "not-a-token").await.active);

    // The grant ends: the token stops introspecting as active and stops
    // reading at once; the token that needs no grant lives on.
    bob.jit
        .revoke(pb::JitRevokeRequest {
            id: r.id.clone(),
            reason: "done".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        introspect(&mut bob, &t.token).await,
        pb::IntrospectResponse::default(),
        "an inactive token shows nothing but active: false"
    );
    assert_eq!(
        read_code(&mut own).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(introspect(&mut bob, &payments).await.active);
    // Time runs out for the rest.
    clock.advance(std::time::Duration::from_secs(15 * 60));
    assert!(!introspect(&mut bob, &payments).await.active);
}

/// A grant that runs out ends the token that needs it on the same clock: up
/// to the grant's last second the token introspects active and reads, from
/// its end on it does neither; a token minted from a standing grant lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_ends_when_the_grant_it_needs_runs_out() {
    let clock = Arc::new(ManualClock::at_wall_time());
    let (h, _op) = workflow_with(grants(), clock.clone()).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let r = asked(&mut alice, ask("db-read", "", 600, "incident 9")).await;
    let active = approved(&mut bob, approve(&r.id)).await;
    let t = alice
        .auth
        .mint(mint(&["read:prod/db/main"], "sigil", 3600))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.info.as_ref().unwrap().expires_at, active.expires_at);
    let standing = alice_token(&mut alice, "payments").await;
    let mut own = with_token(&h, Some("/app/alice"), &t.token).await;

    clock.advance(std::time::Duration::from_secs(599));
    assert!(introspect(&mut bob, &t.token).await.active);
    assert_eq!(read_code(&mut own).await.unwrap(), "s3cret");
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(
        introspect(&mut bob, &t.token).await,
        pb::IntrospectResponse::default()
    );
    let e = read_code(&mut own).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "anonymous callers may not perform secret.get");
    assert!(introspect(&mut bob, &standing.token).await.active);
    // A new token cannot reach past the grant either.
    let e = alice
        .auth
        .mint(mint(&["read:prod/db/main"], "sigil", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

/// Quarantine revokes an active grant with the tokens minted under it, and
/// lifting the quarantine gives neither back: the identity is back to its
/// standing grants, and may mint from them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_revokes_an_active_grant_and_lifting_it_does_not_restore_it() {
    const REASON: &str = "token found in a public gist";
    let (h, mut op) = workflow_with(grants(), Arc::new(ManualClock::at_wall_time())).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let r = asked(&mut alice, ask("db-read", "", 600, "incident 10")).await;
    approved(&mut bob, approve(&r.id)).await;
    assert_eq!(read_code(&mut alice).await.unwrap(), "s3cret");
    let t = alice
        .auth
        .mint(mint(&["read:prod/db/main"], "sigil", 0))
        .await
        .unwrap()
        .into_inner();

    let put = op
        .quarantine
        .put(put_request(ALICE, REASON))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.requests_revoked, vec![r.id.clone()]);
    assert_eq!(
        put.tokens_revoked,
        vec![t.info.as_ref().unwrap().jti.clone()]
    );
    let revoked = shown(&mut bob, &r.id).await;
    assert_eq!(revoked.state, "revoked");
    let ended = revoked.ended.unwrap();
    assert_eq!(
        (ended.by.as_str(), ended.text.as_str()),
        ("uid:0", format!("quarantined: {REASON}").as_str())
    );
    assert!(!introspect(&mut bob, &t.token).await.active);

    op.quarantine.lift(lift_request(ALICE)).await.unwrap();
    let e = read_code(&mut alice).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(!introspect(&mut bob, &t.token).await.active);
    assert_eq!(shown(&mut bob, &r.id).await.state, "revoked");
    let again = alice_token(&mut alice, "payments").await;
    assert!(introspect(&mut bob, &again.token).await.active);
}

/// A minted token's durable record is the audit record of its mint, which
/// carries the token's SHA-256 and claims but never the token. At unseal
/// the server reads the tokens back from those records: a seal drops every
/// token from memory, yet after the unseal the token introspects active
/// and still speaks only over its holder's certificate, and a revoked one
/// stays revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_come_back_from_their_mint_records_at_unseal() {
    let (h, mut op) = workflow_with(grants(), Arc::new(ManualClock::at_wall_time())).await;
    op.secrets
        .put(crate::secrets::put("app/alice/key", &[("k", "v")], None))
        .await
        .unwrap();
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let mut minted = Vec::new();
    for _ in 0..2 {
        minted.push(alice_token(&mut alice, "sigil").await);
    }
    let (kept, revoked) = (&minted[0], &minted[1]);
    let kept_info = kept.info.clone().unwrap();
    let records = crate::audit::tail(&mut op, 4).await;
    let mint_record = records
        .iter()
        .find(|r| {
            r["event"]["action"] == "token.mint" && r["event"]["token"]["jti"] == kept_info.jti
        })
        .unwrap();
    let token = &mint_record["event"]["token"];
    let digest = ring::digest::digest(&ring::digest::SHA256, kept.token.as_bytes());
    assert_eq!(token["sha256"], hex::encode(digest.as_ref()));
    assert_eq!(token["spiffe_id"], ALICE);
    assert_eq!(token["grants"], serde_json::json!(["read:app/alice/*"]));
    assert_eq!(token["cnf_x5t"], kept_info.cnf_x5t_s256);
    assert_eq!(token["expires_at"], kept_info.expires_at);
    assert!(
        !mint_record.to_string().contains(&kept.token),
        "the token itself is never in the log"
    );
    let revoked_jti = revoked.info.as_ref().unwrap().jti.clone();
    bob.auth
        .revoke(pb::RevokeTokensRequest {
            jti: revoked_jti,
            grant: String::new(),
            subject: String::new(),
        })
        .await
        .unwrap();

    op.operator.seal(pb::SealRequest {}).await.unwrap();
    assert!(
        h.server
            .server
            .tokens()
            .authenticate(
                kept.token.as_bytes(),
                sigil::clock::unix_seconds(std::time::SystemTime::now())
            )
            .is_none(),
        "no token is held while sealed"
    );
    unseal(&mut op).await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let r = introspect(&mut bob, &kept.token).await;
    assert!(r.active);
    assert_eq!(r.jti, kept_info.jti);
    assert!(!introspect(&mut bob, &revoked.token).await.active);
    // Still bound to alice's certificate.
    let mut own = with_token(&h, Some("/app/alice"), &kept.token).await;
    own.secrets.get(get("app/alice/key", 0)).await.unwrap();
    let mut other = with_token(&h, Some("/ops/bob"), &kept.token).await;
    let e = other
        .secrets
        .get(get("app/alice/key", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "anonymous callers may not perform secret.get");
}

/// An operator who restores an older copy of the store (unseal with
/// `accept_rollback`) loses the revocations made after the copy. A token
/// issued since the copy therefore does not come back from its mint's
/// record (it was revoked, and the revocation is gone): it stays unknown and
/// introspects inactive, at that unseal and every later one. A token
/// issued before the copy is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_store_rollback_forgets_tokens_issued_since_the_copy() {
    let clock = Arc::new(ManualClock::at_wall_time());
    let (h, op) = workflow_with(grants(), clock.clone()).await;
    drop(op);
    let mut alice = h.workload_clients("/app/alice").await;
    let before = alice_token(&mut alice, "payments").await;
    drop(alice);
    let bob_svid = h.svid_dir("/ops/bob");
    assert!(bob_svid.join("svid.pem").exists());
    let crate::secrets::Harness { tmp, server } = h;
    let config = server.server.config().clone();
    server.stop().await;
    let store = config.data_dir.join("store");
    let copy = tmp.path().join("store-copy");
    crate::at_rest::copy_dir(&store, &copy);

    let server = TestServer::start_with_clock(config.clone(), clock.clone()).await;
    unseal(&mut server.clients().await).await;
    let h = crate::secrets::Harness { tmp, server };
    let mut alice = h.workload_clients("/app/alice").await;
    let after = alice_token(&mut alice, "payments").await;
    let mut bob = h.workload_clients("/ops/bob").await;
    bob.auth
        .revoke(pb::RevokeTokensRequest {
            jti: after.info.as_ref().unwrap().jti.clone(),
            grant: String::new(),
            subject: String::new(),
        })
        .await
        .unwrap();
    drop((alice, bob));
    let crate::secrets::Harness { tmp, server } = h;
    server.stop().await;
    std::fs::remove_dir_all(&store).unwrap();
    crate::at_rest::copy_dir(&copy, &store);

    let server = TestServer::start_with_clock(config, clock).await;
    server
        .clients()
        .await
        .operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            accept_rollback: true,
        })
        .await
        .unwrap();
    let h = crate::secrets::Harness { tmp, server };
    let mut bob = h.workload_clients("/ops/bob").await;
    assert!(introspect(&mut bob, &before.token).await.active);
    assert!(!introspect(&mut bob, &after.token).await.active);
    // The next unseal needs no rollback accepted, and still leaves it out.
    let mut op = h.server.clients().await;
    op.operator.seal(pb::SealRequest {}).await.unwrap();
    unseal(&mut op).await;
    assert!(introspect(&mut bob, &before.token).await.active);
    assert!(!introspect(&mut bob, &after.token).await.active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_revoked_by_jti_by_grant_and_by_subject() {
    let (h, mut op) = workflow_with(grants(), Arc::new(ManualClock::at_wall_time())).await;
    let mut alice = h.workload_clients("/app/alice").await;
    let mut bob = h.workload_clients("/ops/bob").await;
    let mut minted = Vec::new();
    for _ in 0..3 {
        minted.push(alice_token(&mut alice, "payments").await);
    }
    let r = asked(&mut alice, ask("db-read", "", 600, "x")).await;
    bob.jit.approve(approve(&r.id)).await.unwrap();
    let jit_token = alice
        .auth
        .mint(mint(&["read:prod/db/*"], "sigil", 0))
        .await
        .unwrap()
        .into_inner();

    let revoke = |jti: &str, grant: &str, subject: &str| pb::RevokeTokensRequest {
        jti: jti.into(),
        grant: grant.into(),
        subject: subject.into(),
    };
    // Only one selector at a time; only admins and operators.
    let e = op.auth.revoke(revoke("a", "b", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "give exactly one of jti, grant and subject");
    let e = alice.auth.revoke(revoke("", "", ALICE)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let jti0 = minted[0].info.as_ref().unwrap().jti.clone();
    let got = bob
        .auth
        .revoke(revoke(&jti0, "", ""))
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(got, vec![jti0]);
    assert!(!introspect(&mut bob, &minted[0].token).await.active);
    assert!(introspect(&mut bob, &minted[1].token).await.active);

    let got = op
        .auth
        .revoke(revoke("", &r.id, ""))
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(got, vec![jit_token.info.as_ref().unwrap().jti.clone()]);
    assert!(!introspect(&mut bob, &jit_token.token).await.active);

    let mut left: Vec<String> = minted[1..]
        .iter()
        .map(|t| t.info.as_ref().unwrap().jti.clone())
        .collect();
    left.sort();
    let got = op
        .auth
        .revoke(revoke("", "", ALICE))
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(got, left);
    for t in &minted {
        assert!(!introspect(&mut bob, &t.token).await.active);
    }
    // The revocations are in the audit log by selector.
    let records = crate::audit::tail(&mut op, 12).await;
    let outcome = records
        .iter()
        .rfind(|r| r["event"]["action"] == "token.revoke")
        .unwrap();
    assert_eq!(
        outcome["event"]["resource"],
        format!("token:subject:{ALICE}")
    );
    assert_eq!(
        outcome["event"]["reasons"][0],
        format!("revoked {}", left.join(" "))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_mints_and_introspects() {
    let (h, _op) = workflow_with(grants(), Arc::new(ManualClock::at_wall_time())).await;
    let alice = cli_as(&h, "/app/alice");
    let bob = cli_as(&h, "/ops/bob");
    let token = ok(run(
        &alice,
        &[
            "token",
            "mint",
            "--scope",
            "read:app/alice/*",
            "--audience",
            "payments",
            "--ttl",
            "5m",
        ],
    ));
    let token = token.trim();
    let out = ok(run(&bob, &["token", "introspect", token]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["aud"], serde_json::json!(["payments"]));
    assert_eq!(v["exp"].as_i64().unwrap() - v["iat"].as_i64().unwrap(), 300);
    assert!(v["cnf"]["x5t#S256"].is_string());
    let refused = run(
        &alice,
        &[
            "token",
            "mint",
            "--scope",
            "read:prod/**",
            "--audience",
            "payments",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: permission denied: scope \"read:prod/**\" is not covered by a standing grant or an active JIT grant of the caller"
    );
    let jti = v["jti"].as_str().unwrap();
    let out = ok(run(&bob, &["token", "revoke", "--jti", jti]));
    assert_eq!(out.trim(), format!("revoked {jti}"));
    let out = ok(run(&bob, &["token", "introspect", token]));
    assert_eq!(out.trim(), "{\n  \"active\": false\n}");

    // By the grant a token relies on, then by its holder.
    let asked = cli_request(
        &alice,
        &[
            "--role",
            "db-read",
            "--duration",
            "10m",
            "--reason",
            "incident 8",
        ],
    );
    let grant = asked["id"].as_str().unwrap().to_owned();
    ok(run(&bob, &["jit", "approve", &grant]));
    let mint_json = |scope: &str| {
        let out = ok(run(
            &alice,
            &[
                "--json",
                "token",
                "mint",
                "--scope",
                scope,
                "--audience",
                "sigil",
            ],
        ));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let under_grant = mint_json("read:prod/db/main");
    let standing = mint_json("read:app/alice/*");
    let out = ok(run(&bob, &["token", "revoke", "--grant", &grant]));
    assert_eq!(out.trim(), format!("revoked {under_grant}"));
    let out = ok(run(&bob, &["token", "revoke", "--subject", ALICE]));
    assert_eq!(out.trim(), format!("revoked {standing}"));
    let out = ok(run(&bob, &["token", "revoke", "--subject", ALICE]));
    assert_eq!(out.trim(), "no live token matched");
    let refused = run(&alice, &["token", "revoke", "--subject", ALICE]);
    assert_eq!(refused.status.code(), Some(1));
}
