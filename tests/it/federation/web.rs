//! The `https_web` profile: a bundle endpoint presenting an operator's certificate,
//! fetched by a server that checks it against an operator-supplied CA (`ca_file`).

use super::fixture::*;
use crate::common::*;
use sigil::api::pb;
use sigil::clock::{ManualClock, SystemClock};
use sigil::config::{
    BundleEndpointConfig, ConfigError, EndpointProfile, EndpointUrl, ForeignProfile,
    ForeignTrustDomain,
};
use sigil::federation::{FetchError, SetupError, Source};
use sigil::server::{Server, ServerError};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// A private CA and a certificate from it for 127.0.0.1, written as `ca.pem`,
/// `cert.pem` (leaf, then CA) and `key.pem` (mode 0600) in `dir`.
pub(crate) fn operator_certificate(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "federation test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let leaf = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem() + &ca.pem()).unwrap();
    let key_file = dir.join("key.pem");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_web_endpoint_with_an_operator_certificate_is_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    operator_certificate(tmp.path());
    let web = EndpointProfile::HttpsWeb {
        cert_file: tmp.path().join("cert.pem"),
        key_file: tmp.path().join("key.pem"),
    };

    // B serves its bundle with the operator's certificate.
    let b_dir = sub(tmp.path(), "b");
    let b_json = initialize(&b_dir, "other.org", &sub(tmp.path(), "b.json")).await;
    let ((b_grpc, _), (b_ep, b_ep_addr)) = (listener().await, listener().await);
    let mut b_cfg = config_for(&b_dir, "other.org");
    b_cfg.federation.bundle_endpoint = Some(BundleEndpointConfig {
        listen: b_ep_addr,
        profile: web.clone(),
    });
    let b = Side::start(b_cfg.clone(), Arc::new(SystemClock), b_grpc, b_ep).await;

    // A fetches it, trusting the operator's CA for the URL's host.
    let a_dir = sub(tmp.path(), "a");
    initialize(&a_dir, "example.org", &sub(tmp.path(), "a.json")).await;
    let mut a_cfg = config_for(&a_dir, "example.org");
    a_cfg.federation.trust_domains = vec![ForeignTrustDomain {
        name: td("other.org"),
        url: EndpointUrl::parse(&format!("https://{b_ep_addr}")).unwrap(),
        profile: ForeignProfile::HttpsWeb {
            ca_file: Some(tmp.path().join("ca.pem")),
        },
    }];
    let clock = Arc::new(ManualClock::at_wall_time());
    let (a_grpc, _) = listener().await;
    let a = TestServer::start_on(a_cfg, clock.clone(), a_grpc, None).await;
    let first = settled(&a.server, "other.org").await;
    assert!(first.last_success.is_some(), "{first:?}");
    let kept = a.server.federation().bundle(&td("other.org")).unwrap();
    assert_eq!(kept.source, Source::Endpoint);
    // B's bundle as its endpoint serves it: with a refresh hint of a third of B's
    // publish window (five minutes by default), so A sees a new CA in time.
    let mut served: serde_json::Value = serde_json::from_str(&b_json).unwrap();
    served["spiffe_refresh_hint"] = 100.into();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&kept.json).unwrap(),
        served
    );
    assert_eq!(kept.bundle.refresh_hint_secs, 100);

    // Sealed, B's endpoint has nothing to vouch for: 503, and A keeps B's bundle.
    b.server
        .clients()
        .await
        .operator
        .seal(pb::SealRequest {})
        .await
        .unwrap();
    let st = fetch_again(&a.server, &clock, "other.org").await;
    assert_eq!(
        st.last_error.map(|(_, e)| e),
        Some(FetchError::HttpStatus { status: 503 })
    );
    assert_eq!(a.server.federation().bundle(&td("other.org")), Some(kept));

    // The endpoint's key is a secret: a key file others can read stops the server.
    let loose = tmp.path().join("loose.pem");
    std::fs::copy(tmp.path().join("key.pem"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c_cfg = config_for(&sub(tmp.path(), "c"), "third.org");
    c_cfg.federation.bundle_endpoint = Some(BundleEndpointConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        profile: EndpointProfile::HttpsWeb {
            cert_file: tmp.path().join("cert.pem"),
            key_file: loose,
        },
    });
    c_cfg.unseal = None;
    let refused = Server::open(c_cfg).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ServerError::Federation(SetupError::UnsafeKeyFile(ConfigError::InsecureMode {
                mode: 0o644,
                ..
            }))
        ),
        "{refused:?}"
    );
    a.stop().await;
    b.server.stop().await;
}
