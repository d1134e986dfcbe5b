//! Status codes and stream behavior, checked with a raw tonic client.

use super::fixture::{Harness, authority, entry, sub_of, with_header};
use crate::api::workload as wpb;
use crate::attest::AttestError;
use crate::id::Selector;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// How long a stream must stay silent to count as "sent nothing".
const QUIET: Duration = Duration::from_millis(300);
/// How long to wait for a message that must arrive.
const PROMPT: Duration = Duration::from_secs(10);

fn jwt_request(aud: &[&str], spiffe_id: &str) -> wpb::JwtsvidRequest {
    wpb::JwtsvidRequest {
        audience: aud.iter().map(|a| (*a).to_owned()).collect(),
        spiffe_id: spiffe_id.to_owned(),
    }
}

#[tokio::test]
async fn requests_without_the_security_header_are_invalid() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    let mut c = h.raw_client().await;
    let e = c.fetch_jwtsvid(jwt_request(&["a"], "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "security header missing from request");
    let e = c.fetch_x509svid(wpb::X509svidRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut req = tonic::Request::new(wpb::X509BundlesRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "false".parse().unwrap());
    let e = c.fetch_x509_bundles(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn unmatched_caller_gets_no_identity_issued() {
    let other = Selector::parse("unix:uid:2000").unwrap();
    let h = Harness::start_with(vec![entry(1, "/web", "")], Ok(vec![other])).await;
    let mut c = h.raw_client().await;
    let e = c
        .fetch_x509svid(with_header(wpb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "no identity issued");
    let e = c
        .fetch_jwt_bundles(with_header(wpb::JwtBundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .fetch_jwtsvid(with_header(jwt_request(&["a"], "")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "no identity issued");
}

#[tokio::test]
async fn a_call_before_the_first_sync_waits_for_it() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    h.provider.synced.send_replace(false);
    let mut c = h.raw_client().await;
    let call = tokio::spawn(async move {
        let mut s = c
            .fetch_x509svid(with_header(wpb::X509svidRequest {}))
            .await?
            .into_inner();
        s.message().await
    });
    tokio::time::sleep(QUIET).await;
    assert!(!call.is_finished(), "answered before the agent synced");
    h.provider.synced.send_replace(true);
    let first = tokio::time::timeout(PROMPT, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, "spiffe://example.org/web");
}

#[tokio::test]
async fn an_agent_that_never_synced_answers_unavailable_not_denied() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    h.provider.synced.send_replace(false);
    let mut c = h.raw_client().await;
    let e = c
        .fetch_jwtsvid(with_header(jwt_request(&["a"], "")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        e.message(),
        "the agent has not received its registration entries from the server yet"
    );
}

#[tokio::test]
async fn attestation_failure_is_unavailable_and_says_nothing_more() {
    let cause = AttestError::CredentialMismatch {
        pid: 4242,
        what: "uid",
        expected: 1000,
        found: 0,
    };
    let h = Harness::start_with(vec![entry(1, "/web", "")], Err(cause)).await;
    let mut c = h.raw_client().await;
    let e = c
        .fetch_x509svid(with_header(wpb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // Neither the pid, the uid nor the cause reaches the caller.
    assert_eq!(e.message(), "workload attestation failed");
    let e = c
        .validate_jwtsvid(with_header(wpb::ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x.y.z".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test]
async fn jwt_request_errors() {
    let h = Harness::start(vec![entry(1, "/web", ""), entry(2, "/db", "")]).await;
    let mut c = h.raw_client().await;
    let e = c
        .fetch_jwtsvid(with_header(jwt_request(&[], "")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "audience must be specified");
    let e = c
        .fetch_jwtsvid(with_header(jwt_request(&["a"], "not-an-id")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .fetch_jwtsvid(with_header(jwt_request(
            &["a"],
            "spiffe://example.org/other",
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "no identity issued");
    let r = c
        .fetch_jwtsvid(with_header(jwt_request(&["a"], "spiffe://example.org/db")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.svids.len(), 1);
    assert_eq!(sub_of(&r.svids[0].svid).as_str(), "spiffe://example.org/db");
}

#[tokio::test]
async fn oversized_jwt_requests_are_refused_before_attestation() {
    // Attestation would fail here, so InvalidArgument shows the limits are checked
    // first: such a request costs no attestation and never reaches the server.
    let gone = AttestError::ProcessGone { pid: 4242 };
    let h = Harness::start_with(vec![entry(1, "/web", "")], Err(gone)).await;
    let mut c = h.raw_client().await;
    let request = |audience: Vec<String>| {
        with_header(wpb::JwtsvidRequest {
            audience,
            spiffe_id: String::new(),
        })
    };
    let many = (0..10_000).map(|i| format!("a{i}")).collect();
    let e = c.fetch_jwtsvid(request(many)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "audience: 10000 audiences given; at most 8 are allowed"
    );
    let e = c
        .fetch_jwtsvid(request(vec!["x".repeat(1 << 20)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "audience: an audience is 1048576 bytes long; at most 512 bytes are allowed"
    );
    // An audience of 4 MiB makes a message larger than gRPC's default 4 MiB limit:
    // the transport refuses it before any handler runs, and says which limit.
    let e = c
        .fetch_jwtsvid(request(vec!["x".repeat(4 << 20)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        e.message().contains("the limit is: 4194304 bytes"),
        "{}",
        e.message()
    );
    // Missing audiences keep SPIRE's message.
    let e = c.fetch_jwtsvid(request(vec![])).await.unwrap_err();
    assert_eq!(e.message(), "audience must be specified");
}

#[tokio::test]
async fn validate_reports_the_broken_rule_and_returns_claims() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    let mut c = h.raw_client().await;
    let token = c
        .fetch_jwtsvid(with_header(jwt_request(&["a1", "a2"], "")))
        .await
        .unwrap()
        .into_inner()
        .svids
        .remove(0)
        .svid;
    let validate = |aud: &str, svid: &str| {
        with_header(wpb::ValidateJwtsvidRequest {
            audience: aud.into(),
            svid: svid.into(),
        })
    };
    let ok = c
        .validate_jwtsvid(validate("a2", &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, "spiffe://example.org/web");
    let claims = crate::agent::workload::claims::from_struct(&ok.claims.unwrap());
    assert_eq!(claims["aud"], serde_json::json!(["a1", "a2"]));
    assert_eq!(claims["sub"], "spiffe://example.org/web");

    let e = c.validate_jwtsvid(validate("b", &token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "invalid JWT-SVID: audience mismatch");
    let e = c.validate_jwtsvid(validate("", &token)).await.unwrap_err();
    assert_eq!(e.message(), "audience must be specified");
    let e = c.validate_jwtsvid(validate("a1", "")).await.unwrap_err();
    assert_eq!(e.message(), "svid must be specified");
    let e = c
        .validate_jwtsvid(validate("a1", "garbage"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let foreign = authority("other.org");
    let id = crate::id::SpiffeId::parse("spiffe://other.org/w").unwrap();
    let t = foreign
        .mint_jwt_svid(
            &id,
            &["a1".into()],
            Duration::from_secs(60),
            std::time::SystemTime::now(),
        )
        .unwrap();
    let e = c
        .validate_jwtsvid(validate("a1", t.token_str()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "no bundle for trust domain \"other.org\"");
}

#[tokio::test]
async fn x509_stream_sends_a_new_snapshot_only_when_something_changed() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    let mut c = h.raw_client().await;
    let mut s = c
        .fetch_x509svid(with_header(wpb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);

    h.provider.bump();
    assert!(tokio::time::timeout(QUIET, s.message()).await.is_err());

    h.provider.rotate();
    let second = tokio::time::timeout(PROMPT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.svids[0].spiffe_id, first.svids[0].spiffe_id);
    assert_ne!(second.svids[0].x509_svid, first.svids[0].x509_svid);
    assert_ne!(second.svids[0].x509_svid_key, first.svids[0].x509_svid_key);

    // The caller stops matching: the stream ends with PermissionDenied.
    h.provider.entries.lock().unwrap().clear();
    h.provider.bump();
    let e = tokio::time::timeout(PROMPT, s.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "no identity issued");
}

#[tokio::test]
async fn bundle_streams_send_only_on_bundle_change() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    let mut c = h.raw_client().await;
    let mut x = c
        .fetch_x509_bundles(with_header(wpb::X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut j = c
        .fetch_jwt_bundles(with_header(wpb::JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = x.message().await.unwrap().unwrap();
    assert_eq!(
        first.bundles["spiffe://example.org"],
        h.provider.authority.ca_cert_der()
    );
    let jwks = j.message().await.unwrap().unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&jwks.bundles["spiffe://example.org"]).unwrap();
    assert!(doc["keys"][0]["kid"].is_string(), "{doc}");

    // An SVID rotation is a change, but not of the bundle.
    h.provider.rotate();
    assert!(tokio::time::timeout(QUIET, x.message()).await.is_err());
    assert!(tokio::time::timeout(QUIET, j.message()).await.is_err());

    let next = authority("example.org");
    *h.provider.bundle.lock().unwrap() = Some(Arc::new(next.bundle()));
    h.provider.bump();
    let second = tokio::time::timeout(PROMPT, x.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.bundles["spiffe://example.org"], next.ca_cert_der());
    let jwks2 = tokio::time::timeout(PROMPT, j.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(jwks2.bundles, jwks.bundles);
}

#[tokio::test]
async fn unknown_bundle_is_unavailable() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    *h.provider.bundle.lock().unwrap() = None;
    let mut c = h.raw_client().await;
    let e = c
        .fetch_x509svid(with_header(wpb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test]
async fn wit_svid_rpcs_are_unimplemented() {
    let h = Harness::start(vec![entry(1, "/web", "")]).await;
    let mut grpc = tonic::client::Grpc::new(h.channel().await);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchWITSVID");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let e = grpc.unary(with_header(()), path, codec).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let h = Harness::start(vec![]).await;
    let mut c = tonic_health::pb::health_client::HealthClient::new(h.channel().await);
    let r = c
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn socket_is_open_to_every_local_user() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::start(vec![]).await;
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o777);
    // Binding again replaces the stale socket; a regular file is refused.
    drop(super::super::bind_workload_socket(&h.socket).unwrap());
    let file = h.socket.with_file_name("file");
    std::fs::write(&file, b"x").unwrap();
    let e = super::super::bind_workload_socket(&file).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
}
