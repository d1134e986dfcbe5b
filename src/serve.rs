//! Serving the server: the gRPC API (from `api`) on the TLS accept loop and
//! the admin Unix socket, under the connection limits, the bundle endpoint
//! when one is configured, and the background tasks: the one that rotates
//! the authority's keys and renews the server's own SVID (`server::rotation`)
//! and the refresh of foreign bundles (`federation`). It sits above both
//! `server` and `api`, so the server's state never depends on the transport
//! that serves it.
//! `run` takes bound listeners so tests can bind port 0 and temporary sockets.

use crate::net::{Limited, Limiter, Peer, limit_incoming};
use crate::server::Server;
use crate::tls::{TlsConn, TlsConnInfo};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::server::UdsConnectInfo;

/// The listeners the server serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC over TLS.
    pub tcp: TcpListener,
    /// The admin socket.
    pub admin: UnixListener,
    /// The SPIFFE bundle endpoint, when `[federation.bundle_endpoint]` is configured.
    pub bundle_endpoint: Option<TcpListener>,
    /// The Vault-compatible HTTP API, when `[http]` is configured.
    pub http: Option<TcpListener>,
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP API's certificate could not be loaded.
    #[error("[http]: {0}")]
    Http(String),
}

/// Binds the admin socket at `path`, creating its directory and replacing a
/// stale socket file. Any local user may connect: the server identifies
/// callers by their kernel credentials and refuses non-operators, so file
/// permissions are not the access control (and a refusal is audited).
pub fn bind_admin_socket(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        // Only a stale socket is replaced; any other file at the configured
        // path is a configuration mistake that must not be deleted.
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the admin socket path exists and is not a socket",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Serves until `shutdown` completes, then drains in-flight requests (long
/// streams are told to end; anything still open after a short grace period
/// is cut off).
pub async fn run(
    server: Arc<Server>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let routes = crate::api::router(server.clone())?;
    let http_tls = match server.config().http.as_ref().map(|h| &h.cert) {
        Some(crate::config::HttpCert::Files {
            cert_file,
            key_file,
        }) => Some(crate::api::http::fixed_tls(cert_file, key_file).map_err(ServeError::Http)?),
        Some(crate::config::HttpCert::Issued(_)) => {
            Some(crate::api::http::HttpTls::Issued(server.http_tls_config()))
        }
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = server.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.begin_shutdown();
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let limits = server.config().limits;
    let tcp_limiter = Limiter::new("TLS listener", limits.tcp);
    let operators = server.clone();
    // Operators keep a reserve on the admin socket that other local users
    // cannot take, so a flood never locks them out.
    let admin_limiter = Limiter::with_operators(
        "admin socket",
        limits.admin,
        move |peer| matches!(peer, Peer::Uid(uid) if operators.is_operator_uid(uid)),
    );

    let (conn_tx, conn_rx) = mpsc::channel(64);
    tokio::spawn(accept_tls(
        listeners.tcp,
        server.clone(),
        tcp_limiter,
        conn_tx,
        stop_rx.clone(),
    ));
    tokio::spawn(crate::federation::refresh::run(
        server.clone(),
        stop_rx.clone(),
    ));
    if let Some(listener) = listeners.bundle_endpoint {
        tokio::spawn(crate::federation::endpoint::serve(
            listener,
            server.clone(),
            stop_rx.clone(),
        ));
    }
    let http = if let (Some(listener), Some(tls)) = (listeners.http, http_tls) {
        Some(tokio::spawn(crate::api::http::serve(
            listener,
            server.clone(),
            tls,
            stop_rx.clone(),
            DRAIN_GRACE,
        )))
    } else {
        None
    };
    tokio::spawn(crate::server::rotation::run(
        server.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::server::secrets::task::run(
        server.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::server::elevations::run(
        server.clone(),
        stop_rx.clone(),
    ));

    let tcp = crate::net::builder::<TlsConnInfo>(&limits.tcp)
        .add_routes(routes.clone())
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stopped(stop_rx.clone()));
    let admin_incoming = limit_incoming(
        UnixListenerStream::new(listeners.admin),
        admin_limiter,
        Peer::of_unix,
    );
    let admin = crate::net::builder::<UdsConnectInfo>(&limits.admin)
        .add_routes(routes)
        .serve_with_incoming_shutdown(admin_incoming, stopped(stop_rx.clone()));
    let both = async { tokio::join!(tcp, admin) };
    let deadline = async {
        stopped(stop_rx).await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        (a, b) = both => {
            a?;
            b?;
        }
        () = deadline => tracing::warn!("requests still open after the drain period were cut off"),
    }
    // The HTTP API drains alongside (its connections are cut off after
    // DRAIN_GRACE too), and is done before the token table's last queued
    // writes are flushed.
    if let Some(http) = http
        && http.await.is_err()
    {
        tracing::error!("the HTTP API's listener task panicked");
    }
    // Token-table writes still queued (deletions of expired rows) reach the
    // store before the process ends.
    if let Err(e) = server.tokens().flush().await {
        tracing::error!(error = %e, "token rows queued at shutdown were not written");
    }
    Ok(())
}

/// Accepts TCP connections and completes TLS handshakes with the current
/// server configuration. While sealed there is no server certificate, so
/// connections are closed at once: the admin socket is the only way in.
/// Connections beyond the listener's cap, or arriving while the handshake
/// cap is taken, are closed at once too.
async fn accept_tls(
    listener: TcpListener,
    server: Arc<Server>,
    limiter: Arc<Limiter>,
    conns: mpsc::Sender<Result<Limited<TlsConn>, std::io::Error>>,
    mut stop: watch::Receiver<bool>,
) {
    let tls = server.tls_config();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                limiter.accept_failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(admission) = limiter.admit(Peer::Addr(peer.ip())) else {
            continue;
        };
        // Small gRPC frames must not wait for delayed ACKs (Nagle).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let Some(config) = tls.borrow().clone() else {
            tracing::debug!(%peer, "refusing TLS connection while sealed");
            continue;
        };
        let Ok(handshake) = limiter.begin_handshake(Peer::Addr(peer.ip())) else {
            continue;
        };
        let conns = conns.clone();
        let timeout = limiter.limits().handshake_timeout;
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let done = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
            drop(handshake);
            match done {
                Ok(Ok(stream)) => {
                    let conn = Limited::new(TlsConn::new(stream), admission);
                    let _ = conns.send(Ok(conn)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
