//! This server's bundle endpoint (Federation §4, §5.2): HTTPS that answers `GET /` with
//! the trust domain's current SPIFFE bundle (`spiffe_sequence`, and a
//! `spiffe_refresh_hint` of a third of the key publish window, see
//! [`super::plan::advertised_hint_secs`]),
//! as `application/json`, to anyone: the bundle is public, and servers "MUST NOT require
//! client authentication".
//!
//! `https_spiffe` presents the server's own X509-SVID. The certificate is taken from the
//! gRPC listener's current TLS configuration at every handshake, so the endpoint follows
//! every renewal of that SVID with nothing to restart; while sealed there is none, and
//! the handshake fails as it does on the gRPC listener. `https_web` presents the
//! operator's certificate and answers 503 while sealed.
//!
//! Like every listener it has caps ([`LIMITS`]) and timeouts: the TLS handshake, the
//! request head, and the connection as a whole. A connection carries one request: a
//! bundle fetch is one `GET` every few minutes.

use super::setup::EndpointIdentity;
use crate::net::{Admission, Limiter, Limits, Peer};
use crate::server::Server;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The path the bundle is served at.
pub const PATH: &str = "/";

/// The endpoint's caps: fetches are rare and small, so a small budget suffices, and one
/// address cannot take all of it.
pub const LIMITS: Limits = Limits {
    max_connections: 1024,
    max_per_peer: Some(32),
    max_handshakes: 64,
    idle_timeout: Duration::from_secs(30),
    ..Limits::tcp()
};

/// How long a client has to send its request head once TLS is up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's current SVID, read from the gRPC listener's TLS configuration.
#[derive(Debug)]
struct FollowServerSvid(watch::Receiver<Option<Arc<rustls::ServerConfig>>>);

impl ResolvesServerCert for FollowServerSvid {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.0.borrow().clone()?;
        current.cert_resolver.resolve(hello)
    }
}

/// The operator's certificate.
struct Fixed(Arc<CertifiedKey>);

impl std::fmt::Debug for Fixed {
    // The certified key holds the private key: only the chain's length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixed")
            .field("chain_len", &self.0.cert.len())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Serves the bundle on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    let Some(identity) = server.federation().endpoint().cloned() else {
        tracing::warn!("a bundle endpoint listener was given but none is configured");
        return;
    };
    let certs: Arc<dyn ResolvesServerCert> = match identity {
        EndpointIdentity::ServerSvid => Arc::new(FollowServerSvid(server.tls_config())),
        EndpointIdentity::Web(key) => Arc::new(Fixed(key)),
    };
    let config = match crate::tls::https_server_config(certs) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "bundle endpoint TLS configuration refused; not serving");
            return;
        }
    };
    let limiter = Limiter::new("bundle endpoint", LIMITS);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                limiter.accept_failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = Peer::Addr(addr.ip());
        let Ok(admission) = limiter.admit(peer) else {
            continue;
        };
        let Ok(handshake) = limiter.begin_handshake(peer) else {
            continue;
        };
        tokio::spawn(connection(
            Accepted {
                tcp,
                addr,
                admission,
                handshake,
            },
            server.clone(),
            config.clone(),
            stop.clone(),
        ));
    }
}

/// A connection admitted under the caps, with its handshake slot.
struct Accepted {
    tcp: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    admission: Admission,
    handshake: tokio::sync::OwnedSemaphorePermit,
}

/// Serves one connection: the TLS handshake (its slot given back when it ends), then
/// one request, within the time limits or until shutdown.
async fn connection(
    accepted: Accepted,
    server: Arc<Server>,
    config: Arc<rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let Accepted {
        tcp,
        addr,
        admission,
        handshake,
    } = accepted;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let done = tokio::time::timeout(LIMITS.handshake_timeout, acceptor.accept(tcp)).await;
    drop(handshake);
    let tls = match done {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "bundle endpoint: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "bundle endpoint: TLS handshake timed out");
            return;
        }
    };
    let service = hyper::service::service_fn(move |req| answer(server.clone(), req));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = http.serve_connection(TokioIo::new(tls), service);
    // Shutdown cuts the connection too: it holds the server.
    tokio::select! {
        done = tokio::time::timeout(LIMITS.idle_timeout, conn) => match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "bundle endpoint: connection failed"),
            Err(_) => tracing::debug!(%addr, "bundle endpoint: connection cut at its time limit"),
        },
        _ = stop.wait_for(|s| *s) => {}
    }
    drop(admission);
}

/// The answer to one request: the bundle, or why not.
async fn answer(
    server: Arc<Server>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let reply = |status: http::StatusCode, kind: &'static str, body: String| {
        let mut r = http::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(kind),
        );
        r
    };
    if req.uri().path() != PATH {
        return Ok(reply(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".into(),
        ));
    }
    if req.method() != http::Method::GET {
        let mut r = reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
        r.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return Ok(r);
    }
    Ok(match server.authority() {
        Ok(authority) => {
            let mut bundle = authority.bundle();
            bundle.refresh_hint_secs =
                super::plan::advertised_hint_secs(server.rotation_policy().publish_window);
            reply(
                http::StatusCode::OK,
                "application/json",
                bundle.to_spiffe_json(),
            )
        }
        // Sealed: there is no bundle to vouch for.
        Err(_) => reply(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "sealed\n".into(),
        ),
    })
}
