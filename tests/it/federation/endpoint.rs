//! The `https_spiffe` bundle endpoint presents the server's own SVID, and follows it
//! when it is renewed.

use super::fixture::*;
use sigil::clock::SystemClock;
use sigil::config::{BundleEndpointConfig, EndpointProfile};
use std::net::SocketAddr;
use std::sync::Arc;

/// The leaf certificate the endpoint at `addr` presents, verified as an X509-SVID for
/// `spiffe://example.org/sigil/server` against `roots`.
async fn presented_leaf(addr: SocketAddr, roots: &[Vec<u8>]) -> Vec<u8> {
    let verifier =
        sigil::tls::SpiffeServerVerifier::new(roots, td("example.org").server_id()).unwrap();
    let config = sigil::tls::https_client_config(Arc::new(verifier)).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("endpoint").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_presents_the_server_svid_and_follows_its_renewal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sub(tmp.path(), "a");
    initialize(&dir, "example.org", &sub(tmp.path(), "a.json")).await;
    let ((grpc, _), (ep, ep_addr)) = (listener().await, listener().await);
    let mut cfg = config_for(&dir, "example.org");
    cfg.federation.bundle_endpoint = Some(BundleEndpointConfig {
        listen: ep_addr,
        profile: EndpointProfile::HttpsSpiffe,
    });
    let side = Side::start(cfg, Arc::new(SystemClock), grpc, ep).await;
    let server = side.inner().clone();
    let roots = server.authority().unwrap().bundle().x509_authorities;

    let first = presented_leaf(ep_addr, &roots).await;
    server.renew_server_svid(server.now()).unwrap();
    let renewed = presented_leaf(ep_addr, &roots).await;
    assert_ne!(first, renewed, "the renewed SVID is presented at once");
    assert_eq!(
        sigil::tls::peer_spiffe_id(&renewed),
        Some(td("example.org").server_id())
    );
    side.server.stop().await;
}
