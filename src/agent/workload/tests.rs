#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
//! The Workload API served on a real Unix socket, exercised with the
//! off-the-shelf `spiffe` client and a raw tonic client.

pub(crate) mod fixture;
mod peer;
mod raw;

use fixture::{Harness, entry};
use std::sync::Arc;

#[tokio::test]
async fn spiffe_client_fetches_default_svid_and_context_with_unique_hints() {
    let h = Harness::start(vec![
        entry(1, "/web", "web"),
        entry(2, "/db", "db"),
        // A later entry repeating a hint is left out of every response.
        entry(3, "/dup", "web"),
    ])
    .await;
    let client = h.spiffe_client().await;

    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/web");
    assert_eq!(svid.hint(), Some("web"));
    assert_eq!(svid.cert_chain().len(), 1);

    let ctx = client.fetch_x509_context().await.unwrap();
    let ids: Vec<String> = ctx
        .svids()
        .iter()
        .map(|s| s.spiffe_id().to_string())
        .collect();
    assert_eq!(ids, ["spiffe://example.org/web", "spiffe://example.org/db"]);
    let hints: Vec<_> = ctx.svids().iter().map(|s| s.hint()).collect();
    assert_eq!(hints, [Some("web"), Some("db")]);
    assert_eq!(
        ctx.default_svid().unwrap().spiffe_id().to_string(),
        "spiffe://example.org/web"
    );
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let roots = ctx.bundle_set().get(&td).unwrap();
    assert_eq!(roots.authorities().len(), 1);
    assert_eq!(
        roots.authorities()[0].as_bytes(),
        h.provider.authority.ca_cert_der()
    );
}

#[tokio::test]
async fn spiffe_client_fetches_x509_and_jwt_bundles() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    let client = h.spiffe_client().await;
    let td = spiffe::TrustDomain::new("example.org").unwrap();

    let x509 = client.fetch_x509_bundles().await.unwrap();
    assert_eq!(x509.len(), 1);
    assert_eq!(
        x509.get(&td).unwrap().authorities()[0].as_bytes(),
        h.provider.authority.ca_cert_der()
    );

    let jwt = client.fetch_jwt_bundles().await.unwrap();
    let bundle = jwt.get(&td).unwrap();
    let kids: Vec<String> = bundle
        .jwt_authorities()
        .map(|a| a.key_id().to_owned())
        .collect();
    let expected: Vec<String> = h
        .provider
        .authority
        .bundle()
        .jwt_authorities
        .iter()
        .map(|a| a.kid.clone())
        .collect();
    assert_eq!(kids, expected);
}

#[tokio::test]
async fn spiffe_client_fetches_jwt_svids_with_exact_audiences() {
    let h = Harness::start(vec![entry(1, "/web", "web"), entry(2, "/db", "db")]).await;
    let client = h.spiffe_client().await;

    let one = client.fetch_jwt_svid(["aud1"], None).await.unwrap();
    assert_eq!(one.spiffe_id().to_string(), "spiffe://example.org/web");
    assert_eq!(one.audience(), ["aud1"]);

    let two = client.fetch_jwt_svid(["aud1", "aud2"], None).await.unwrap();
    assert_eq!(two.audience(), ["aud1", "aud2"]);

    let all = client.fetch_all_jwt_svids(["aud1"], None).await.unwrap();
    let got: Vec<(String, Option<&str>)> = all
        .iter()
        .map(|s| (s.spiffe_id().to_string(), s.hint()))
        .collect();
    assert_eq!(
        got,
        [
            ("spiffe://example.org/web".to_owned(), Some("web")),
            ("spiffe://example.org/db".to_owned(), Some("db")),
        ]
    );

    let db = spiffe::SpiffeId::new("spiffe://example.org/db").unwrap();
    let only = client
        .fetch_all_jwt_svids(["aud1"], Some(&db))
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].spiffe_id(), &db);
}

#[tokio::test]
async fn spiffe_client_validates_a_token() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    let client = h.spiffe_client().await;
    let token = client.fetch_jwt_token(["aud1"], None).await.unwrap();
    let svid = client.validate_jwt_token("aud1", &token).await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/web");
    assert_eq!(svid.audience(), ["aud1"]);
}

#[test]
fn status_mapping_is_fixed() {
    use super::{WorkloadError as E, to_status};
    use crate::agent::AgentError;
    use tonic::Code;
    let cases = [
        (E::MissingSecurityHeader, Code::InvalidArgument),
        (E::NoPeerCredentials, Code::Unavailable),
        (
            E::AttestationFailed {
                pid: Some(4242),
                uid: 1000,
                cause: crate::attest::AttestError::PidReused { pid: 4242 },
            },
            Code::Unavailable,
        ),
        (E::AttestorFailed, Code::Unavailable),
        (E::NoIdentityIssued, Code::PermissionDenied),
        (E::BundleUnknown, Code::Unavailable),
        (E::NotSynced, Code::Unavailable),
        (E::MissingAudience, Code::InvalidArgument),
        (E::MissingToken, Code::InvalidArgument),
        (E::UnknownTrustDomain("x".into()), Code::InvalidArgument),
        (
            E::Agent(AgentError::ServerUnavailable("down".into())),
            Code::Unavailable,
        ),
        (
            E::Agent(AgentError::Denied("no".into())),
            Code::PermissionDenied,
        ),
        (
            E::Agent(AgentError::Internal("secret detail".into())),
            Code::Internal,
        ),
    ];
    for (e, code) in cases {
        let s = to_status(&e);
        assert_eq!(s.code(), code, "{e:?}");
        assert!(!s.message().contains("secret detail"), "{e:?}");
    }
    assert_eq!(
        to_status(&E::NoIdentityIssued).message(),
        "no identity issued"
    );
    assert_eq!(
        to_status(&E::MissingSecurityHeader).message(),
        "security header missing from request"
    );
    let failed = E::AttestationFailed {
        pid: Some(4242),
        uid: 1000,
        cause: crate::attest::AttestError::ProcRead {
            pid: 4242,
            what: "status",
            message: "Permission denied".into(),
        },
    };
    assert_eq!(to_status(&failed).message(), "workload attestation failed");
    for e in [E::NoPeerCredentials, E::AttestorFailed] {
        assert_eq!(to_status(&e).message(), "workload attestation failed");
    }
}

#[test]
fn unverified_trust_domain_reads_sub_only() {
    use base64::Engine as _;
    let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let token = format!(
        "{}.{}.sig",
        enc(r#"{"alg":"ES256"}"#),
        enc(r#"{"sub":"spiffe://other.org/w"}"#)
    );
    assert_eq!(
        super::unverified_trust_domain(&token).unwrap().as_str(),
        "other.org"
    );
    assert_eq!(super::unverified_trust_domain("not-a-token"), None);
    assert_eq!(super::unverified_trust_domain("a.!!!.c"), None);
}

#[test]
fn unique_hints_keeps_the_first_and_all_empty_hints() {
    let kept = super::unique_hints(vec![
        Arc::new(entry(1, "/a", "x")),
        Arc::new(entry(2, "/b", "")),
        Arc::new(entry(3, "/c", "x")),
        Arc::new(entry(4, "/d", "")),
    ]);
    let paths: Vec<&str> = kept.iter().map(|e| e.spiffe_id.path()).collect();
    assert_eq!(paths, ["/a", "/b", "/d"]);
}

#[test]
fn debug_does_not_show_key_material() {
    let svid = crate::api::workload::X509svid {
        spiffe_id: "spiffe://example.org/w".into(),
        x509_svid: vec![],
        x509_svid_key: b"marker-key-bytes".to_vec(),
        bundle: vec![],
        hint: String::new(),
    };
    let shown = format!("{svid:?}");
    assert!(!shown.contains("marker"), "{shown}");
}
