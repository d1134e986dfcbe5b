//! Minted credentials: X.509-SVIDs verified by openssl and checked against
//! the X509-SVID standard, JWT-SVIDs verified independently against the
//! SPIFFE-format bundle, and mTLS with minted SVIDs.

use crate::common::*;
use base64::Engine;
use sigil::api::pb;
use std::path::Path;
use std::process::Command;
use tonic::Code;

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn mint(s: &TestServer, id: &str, dir: &Path, extra: &[&str]) {
    let admin = s.admin.to_str().unwrap();
    let mut args = vec![
        "svid",
        "mint",
        "--spiffe-id",
        id,
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(sigil(&args, &[("SIGIL_ADMIN_SOCKET", admin)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_x509_svid_verifies_with_openssl_and_follows_the_standard() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let out = tmp.path().join("svid");
    mint(
        &s,
        "spiffe://example.org/ns/prod/web",
        &out,
        &["--ttl", "30m", "--dns", "web.example.org"],
    );
    let (svid, bundle, key) = (
        out.join("svid.pem"),
        out.join("bundle.pem"),
        out.join("key.pem"),
    );
    let (good, text) = openssl(&[
        "verify",
        "-CAfile",
        bundle.to_str().unwrap(),
        svid.to_str().unwrap(),
    ]);
    assert!(good, "{text}");
    assert!(text.contains(": OK"), "{text}");

    let (_, x) = openssl(&["x509", "-in", svid.to_str().unwrap(), "-noout", "-text"]);
    assert!(x.contains("URI:spiffe://example.org/ns/prod/web"), "{x}");
    assert_eq!(x.matches("URI:").count(), 1, "exactly one URI SAN: {x}");
    assert!(x.contains("DNS:web.example.org"), "{x}");
    assert!(x.contains("CA:FALSE"), "{x}");
    assert!(x.contains("X509v3 Key Usage: critical"), "{x}");
    assert!(x.contains("Digital Signature"), "{x}");
    assert!(!x.contains("Certificate Sign"), "{x}");
    assert!(!x.contains("CRL Sign"), "{x}");
    assert!(
        x.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{x}"
    );

    // The key file is private and matches the leaf.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_, leaf_pub) = openssl(&["x509", "-in", svid.to_str().unwrap(), "-noout", "-pubkey"]);
    let (_, key_pub) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(leaf_pub, key_pub);

    // 128-bit serial, NotAfter no later than requested.
    let (_, serial) = openssl(&["x509", "-in", svid.to_str().unwrap(), "-noout", "-serial"]);
    let hex = serial.trim().trim_start_matches("serial=");
    assert!(hex.len() >= 30 && hex.len() <= 34, "serial {hex}");

    // The CA: cA=true, keyCertSign, the trust domain's SPIFFE ID.
    let (_, ca) = openssl(&["x509", "-in", bundle.to_str().unwrap(), "-noout", "-text"]);
    assert!(ca.contains("CA:TRUE"), "{ca}");
    assert!(ca.contains("Certificate Sign"), "{ca}");
    assert!(ca.contains("URI:spiffe://example.org"), "{ca}");
    s.stop().await;
}

fn b64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_jwt_verifies_against_the_spiffe_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let admin = s.admin.to_str().unwrap();
    let env = [("SIGIL_ADMIN_SOCKET", admin)];
    let token = ok(sigil(
        &[
            "jwt",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/ci",
            "--audience",
            "vault",
            "--audience",
            "db",
        ],
        &env,
    ));
    let token = token.trim();
    let bundle: serde_json::Value =
        serde_json::from_str(&ok(sigil(&["bundle", "show", "--format", "spiffe"], &env))).unwrap();

    // Verify independently of sigil's own validator: find the key by kid
    // and check the ES256 signature with ring.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    let kid = header["kid"].as_str().unwrap();
    let keys = bundle["keys"].as_array().unwrap();
    // jwt-svid keys carry a kid (JWT-SVID §6.1); x509-svid keys must not (X509-SVID §6.1).
    for k in keys {
        let has_kid = k["kid"].is_string();
        assert_eq!(has_kid, k["use"] == "jwt-svid", "{k}");
    }
    assert!(bundle["spiffe_sequence"].is_u64(), "{bundle}");
    let jwk = keys
        .iter()
        .find(|k| k["use"] == "jwt-svid" && k["kid"] == kid)
        .expect("kid in bundle");
    let mut point = vec![4u8];
    point.extend(b64url(jwk["x"].as_str().unwrap()));
    point.extend(b64url(jwk["y"].as_str().unwrap()));
    let msg = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(msg.as_bytes(), &b64url(parts[2]))
        .expect("signature verifies");
    let claims: serde_json::Value = serde_json::from_slice(&b64url(parts[1])).unwrap();
    assert_eq!(claims["sub"], "spiffe://example.org/ci");
    assert_eq!(claims["aud"], serde_json::json!(["vault", "db"]));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300, "default JWT-SVID TTL is 5m");

    // sigil's own validator agrees, and refuses the wrong audience.
    let parsed = sigil::authority::Bundle::from_spiffe_json(
        &sigil::id::TrustDomain::parse(TD).unwrap(),
        &serde_json::to_string(&bundle).unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now();
    sigil::authority::validate_jwt_svid(token, "vault", &parsed.jwt_bundle(), now).unwrap();
    assert!(matches!(
        sigil::authority::validate_jwt_svid(token, "other", &parsed.jwt_bundle(), now),
        Err(sigil::authority::JwtError::AudienceMismatch)
    ));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_callers_are_authorized_by_their_svid() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let mut ops = entry("/ops", 1234);
    ops.admin = true;
    c.entries
        .create(pb::CreateEntryRequest { entry: Some(ops) })
        .await
        .unwrap();

    let admin_dir = tmp.path().join("ops");
    let user_dir = tmp.path().join("user");
    mint(&s, "spiffe://example.org/ops", &admin_dir, &[]);
    mint(&s, "spiffe://example.org/user", &user_dir, &[]);
    let bundle = admin_dir.join("bundle.pem");

    // An admin identity may list entries over TLS.
    let mut admin = s.tls_clients(&bundle, Some(&admin_dir)).await;
    let listed = list_entries(&mut admin).await;
    assert_eq!(listed.entries.len(), 1);

    // A workload without the admin flag is denied, and so is a caller with
    // no certificate at all.
    let mut user = s.tls_clients(&bundle, Some(&user_dir)).await;
    let e = user
        .entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/evil", 1)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut anon = s.tls_clients(&bundle, None).await;
    let e = anon
        .entries
        .list(pb::ListEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Any authenticated workload may read the bundle.
    user.bundle.get(pb::GetBundleRequest {}).await.unwrap();
    let listed = list_entries(&mut c).await;
    assert_eq!(
        listed.entries.len(),
        1,
        "nothing was stored by denied calls"
    );
    s.stop().await;
}

async fn sequence(c: &mut sigil::cli::client::Clients) -> (u64, serde_json::Value) {
    let b = c
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    let doc: serde_json::Value = serde_json::from_str(&b.spiffe_json).unwrap();
    assert_eq!(doc["spiffe_sequence"], b.sequence);
    (b.sequence, doc["keys"].clone())
}

async fn seal(c: &mut sigil::cli::client::Clients) {
    c.operator.seal(pb::SealRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_sequence_moves_on_whenever_the_keys_change_even_across_restarts() {
    use sigil::clock::ManualClock;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    // Keys of 60 s: successors are prepared when 30 s are left.
    let cfg = short_config(tmp.path());
    let clock = Arc::new(ManualClock::at_wall_time());
    let s = TestServer::start_with_clock(cfg.clone(), clock.clone()).await;
    let mut c = s.clients().await;
    c.operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    let (first, first_keys) = sequence(&mut c).await;
    // Sealed past the point where successors are due: unseal catches up, and
    // the two new keys are two changes of the bundle.
    seal(&mut c).await;
    clock.advance(std::time::Duration::from_secs(31));
    unseal(&mut c).await;
    let (second, second_keys) = sequence(&mut c).await;
    assert_eq!(second, first + 2, "{second_keys}");
    assert_eq!(second_keys.as_array().unwrap().len(), 4, "{second_keys}");
    for key in first_keys.as_array().unwrap() {
        assert!(
            second_keys.as_array().unwrap().contains(key),
            "the first keys stay published: {second_keys}"
        );
    }
    drop(c);
    s.stop().await;

    // After a restart with nothing due, the bundle and its sequence are the
    // stored ones.
    let s = TestServer::start_with_clock(cfg, clock).await;
    let mut c = s.clients().await;
    unseal(&mut c).await;
    assert_eq!(sequence(&mut c).await, (second, second_keys));
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_jwt_requests_are_invalid_before_anything_is_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let mint = |audience: Vec<String>| pb::MintJwtSvidRequest {
        spiffe_id: format!("spiffe://{TD}/w"),
        audience,
        ..Default::default()
    };
    let many = (0..10_000).map(|i| format!("a{i}")).collect();
    let st = c.node.mint_jwt_svid(mint(many)).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert_eq!(
        st.message(),
        "audience: 10000 audiences given; at most 8 are allowed"
    );
    let st = c
        .node
        .mint_jwt_svid(mint(vec!["x".repeat(1 << 20)]))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert_eq!(
        st.message(),
        "audience: an audience is 1048576 bytes long; at most 512 bytes are allowed"
    );
    // The most a request may ask for is minted.
    let most: Vec<String> = (0..8).map(|i| format!("{i}").repeat(512)).collect();
    c.node.mint_jwt_svid(mint(most)).await.unwrap();
    s.stop().await;
}
