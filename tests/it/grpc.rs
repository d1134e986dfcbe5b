//! gRPC health and reflection on both listeners, behind the chokepoint.

use crate::common::*;
use sigil::api::pb;
use sigil::cli::client::{Target, connect};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn health(target: &Target) -> i32 {
    let mut h = HealthClient::new(connect(target).await.unwrap());
    h.check(HealthCheckRequest {
        service: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .status
}

async fn services(target: &Target) -> Vec<String> {
    let mut r = ServerReflectionClient::new(connect(target).await.unwrap());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_seal_and_reflection_lists_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(tmp.path()).await;
    let admin = Target::Admin(s.admin.clone());
    assert_eq!(health(&admin).await, ServingStatus::NotServing as i32);
    let mut c = s.clients().await;
    c.operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    // The reporter is updated asynchronously.
    let mut status = 0;
    for _ in 0..50 {
        status = health(&admin).await;
        if status == ServingStatus::Serving as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, ServingStatus::Serving as i32);
    let names = services(&admin).await;
    for want in [
        "sigil.v1.Operator",
        "sigil.v1.Entries",
        "sigil.v1.Node",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // The same over TLS, for a caller with no certificate.
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        c.bundle
            .get(pb::GetBundleRequest {})
            .await
            .unwrap()
            .into_inner()
            .pem,
    )
    .unwrap();
    let tls = Target::Tls {
        addr: s.addr.to_string(),
        ca_bundle: bundle,
        svid_dir: None,
    };
    assert_eq!(health(&tls).await, ServingStatus::Serving as i32);
    assert!(services(&tls).await.iter().any(|n| n == "sigil.v1.Bundle"));

    // Health checks are decisions too: they are audited.
    let tail = c
        .audit
        .tail(pb::TailAuditRequest { count: 100 })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(tail.iter().any(|r| r.contains("\"health\"")), "{tail:?}");
    drop(c);
    s.stop().await;
}
