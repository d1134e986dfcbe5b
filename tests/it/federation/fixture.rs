//! What the federation tests share: servers of any trust domain that unseal themselves,
//! started on bound listeners (so two servers can name each other's endpoints before
//! either starts), fetch statuses, clocks moved to the next fetch, and mTLS between two
//! workloads from their X.509 contexts.

use crate::common::*;
use sigil::api::pb;
use sigil::clock::{Clock, ManualClock};
use sigil::config::{EndpointUrl, ForeignProfile, ForeignTrustDomain, ServerConfig, UnsealConfig};
use sigil::federation::FetchStatus;
use sigil::id::{TrustDomain, Ttl};
use sigil::server::Server;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

/// A configuration for trust domain `name` in `dir` that unseals itself at start.
/// JWT-SVIDs live an hour, so a server whose clock stands behind the wall clock
/// (see [`behind_the_wall`]) still mints tokens that peers checking real time accept.
pub fn config_for(dir: &Path, name: &str) -> ServerConfig {
    let mut c = config(dir);
    c.trust_domain = td(name);
    c.jwt_svid_ttl = Ttl::parse("1h").unwrap();
    c.rotation = sigil::authority::RotationPolicy::for_ttls(
        c.ca_ttl.as_duration(),
        c.x509_svid_ttl.as_duration(),
        c.jwt_svid_ttl.as_duration(),
    );
    std::fs::create_dir_all(dir).unwrap();
    let pass = dir.join("unseal");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    c.unseal = Some(UnsealConfig {
        passphrase_file: Some(pass),
        passphrase_env: None,
    });
    c
}

/// A clock a quarter of an hour behind the wall clock. Tests move it forward to the
/// next planned fetch; what the server issues meanwhile stays valid for peers that
/// check certificates against real time (NotBefore is never in their future).
pub fn behind_the_wall() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        sigil::clock::now() - Duration::from_secs(15 * 60),
    ))
}

/// Initializes a store for trust domain `name` in `dir`, at the time `clock` tells
/// (the server that later runs on it must not read an earlier time: its CA would not be
/// valid yet); returns its bundle (SPIFFE JSON), written to `bootstrap` for the servers
/// that federate with it.
pub async fn initialize_at(
    dir: &Path,
    name: &str,
    bootstrap: &Path,
    clock: Arc<dyn Clock>,
) -> String {
    let mut cfg = config_for(dir, name);
    cfg.unseal = None;
    let s = TestServer::start_with_clock(cfg, clock).await;
    let mut c = s.clients().await;
    c.operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    let json = c
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .spiffe_json;
    s.stop().await;
    std::fs::write(bootstrap, &json).unwrap();
    json
}

/// [`initialize_at`] the wall clock's time.
pub async fn initialize(dir: &Path, name: &str, bootstrap: &Path) -> String {
    initialize_at(dir, name, bootstrap, Arc::new(sigil::clock::SystemClock)).await
}

/// An `https_spiffe` relationship with `name`, whose sigil server serves its bundle at
/// `endpoint`, bootstrapped from `bootstrap`.
pub fn spiffe_relationship(
    name: &str,
    endpoint: SocketAddr,
    bootstrap: &Path,
) -> ForeignTrustDomain {
    ForeignTrustDomain {
        name: td(name),
        url: EndpointUrl::parse(&format!("https://{endpoint}")).unwrap(),
        profile: ForeignProfile::HttpsSpiffe {
            endpoint_spiffe_id: td(name).server_id(),
            bootstrap_bundle: Some(bootstrap.to_owned()),
        },
    }
}

/// A loopback listener on a port of its own.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A running server and the address of its bundle endpoint.
pub struct Side {
    pub server: TestServer,
    pub endpoint: SocketAddr,
}

impl Side {
    /// Starts `config` on `grpc` and its bundle endpoint on `endpoint`.
    pub async fn start(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        grpc: TcpListener,
        endpoint: TcpListener,
    ) -> Side {
        let e = endpoint.local_addr().unwrap();
        let server = TestServer::start_on(config, clock, grpc, Some(endpoint)).await;
        Side {
            server,
            endpoint: e,
        }
    }

    pub fn inner(&self) -> &Arc<Server> {
        &self.server.server
    }
}

/// `server`'s fetch status for foreign trust domain `name`.
pub fn status(server: &Server, name: &str) -> FetchStatus {
    server
        .federation()
        .status()
        .into_iter()
        .find(|(rel, _, _)| rel.trust_domain().as_str() == name)
        .map(|(_, s, _)| s)
        .unwrap()
}

/// Waits for `server`'s first fetch of `name` to have finished.
pub async fn settled(server: &Server, name: &str) -> FetchStatus {
    eventually(20, || async {
        Some(status(server, name)).filter(|s| s.next_attempt.is_some())
    })
    .await
}

/// Moves `clock` to `server`'s next planned fetch of `name` and waits for that fetch
/// to finish; returns the status after it.
pub async fn fetch_again(server: &Server, clock: &ManualClock, name: &str) -> FetchStatus {
    let next = settled(server, name).await.next_attempt.unwrap();
    if clock.now() <= next {
        clock.set(next + Duration::from_secs(1));
    }
    let after = |t: Option<SystemTime>| t.is_some_and(|t| t >= next);
    eventually(20, || async {
        let s = status(server, name);
        (after(s.last_success) || after(s.last_error.as_ref().map(|(t, _)| *t))).then_some(s)
    })
    .await
}

/// The DER of each certificate.
pub fn ders(certs: &[spiffe::Certificate]) -> Vec<Vec<u8>> {
    certs.iter().map(|c| c.as_bytes().to_vec()).collect()
}

/// The authorities an X.509 context holds for trust domain `name`.
pub fn roots_for(ctx: &spiffe::X509Context, name: &str) -> Vec<Vec<u8>> {
    let td = spiffe::TrustDomain::new(name).unwrap();
    ctx.bundle_set()
        .get(&td)
        .map(|b| ders(b.authorities()))
        .unwrap_or_default()
}

/// A TLS 1.3 handshake over loopback between a client holding `client`'s default
/// X.509-SVID and a server holding `server`'s, each trusting only the bundle its own
/// Workload API gave it for the other's trust domain, then one message each way.
/// Returns the SPIFFE IDs the server and the client saw.
pub async fn mtls(
    client: &spiffe::X509Context,
    server: &spiffe::X509Context,
) -> Result<(String, String), String> {
    let csvid = client.default_svid().unwrap();
    let ssvid = server.default_svid().unwrap();
    let key = |s: &spiffe::X509Svid| sigil::secret::Secret::from_slice(s.private_key().as_bytes());
    let server_cfg = sigil::tls::server_config(
        &ders(ssvid.cert_chain()),
        &key(ssvid),
        &roots_for(server, csvid.spiffe_id().trust_domain_name()),
    )
    .map_err(|e| e.to_string())?;
    let expected = sigil::id::SpiffeId::parse(&ssvid.spiffe_id().to_string()).unwrap();
    let client_cfg = sigil::tls::client_config(
        &roots_for(client, ssvid.spiffe_id().trust_domain_name()),
        expected,
        Some((&ders(csvid.cert_chain()), &key(csvid))),
    )
    .map_err(|e| e.to_string())?;
    let (l, addr) = listener().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let served = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (tcp, _) = l.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| sigil::tls::peer_spiffe_id(leaf))
            .ok_or("the client presented no SVID")?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer.to_string())
    });
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("workload").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"pong");
    let seen_by_client = ssvid.spiffe_id().to_string();
    let seen_by_server = served.await.map_err(|e| e.to_string())??;
    Ok((seen_by_server, seen_by_client))
}

/// Creates `entry` on `server` over the admin socket.
pub async fn create_entry(server: &TestServer, entry: pb::Entry) -> pb::Entry {
    server
        .clients()
        .await
        .entries
        .create(pb::CreateEntryRequest { entry: Some(entry) })
        .await
        .unwrap()
        .into_inner()
}

/// An entry for this process (uid 0) as `id` under `parent`, federating with `with`.
pub fn workload_entry(id: &str, parent: &str, with: &[&str]) -> pb::Entry {
    pb::Entry {
        spiffe_id: id.to_owned(),
        parent_id: parent.to_owned(),
        selectors: vec!["unix:uid:0".to_owned()],
        federates_with: with.iter().map(|s| (*s).to_owned()).collect(),
        ..pb::Entry::default()
    }
}

/// A directory path under `base`.
pub fn sub(base: &Path, name: &str) -> PathBuf {
    base.join(name)
}
