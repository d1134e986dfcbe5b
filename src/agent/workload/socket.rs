//! Binding and serving the Workload API socket (SPEC §3.1), and the
//! connection type that carries what the kernel says about each caller from
//! accept to the handlers.

use crate::attest::PeerPin;
use crate::net::{Limiter, Limits, Peer, limit_incoming};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::UCred;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tonic::transport::server::Connected;

/// Binds the Workload API socket at `path`: creates the parent directory
/// (mode 0755), removes a stale socket, binds, and opens the socket to every
/// local user (0777).
///
/// The socket is world-connectable on purpose: a caller's identity comes
/// from attesting its peer credentials, never from file permissions, and a
/// caller that matches no entry gets nothing.
pub fn bind_workload_socket(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            // Remove only a stale socket, never a file that happens to be there.
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

/// Serves `routes` on `listener` until `shutdown` completes. Every accepted
/// connection becomes a [`WorkloadConn`], so handlers find its
/// [`WorkloadPeer`] in the request extensions. Every local user may connect,
/// so connections are capped per uid and in all, and idle or half-open ones
/// are closed (`limits`).
pub async fn serve_workload_api(
    listener: UnixListener,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let limiter = Limiter::new("Workload API socket", limits);
    let conns = UnixListenerStream::new(listener).map(|r| r.map(WorkloadConn::accept));
    let incoming = limit_incoming(conns, limiter, |c: &WorkloadConn| {
        c.peer
            .cred
            .map_or(Peer::Unknown, |cred| Peer::Uid(cred.uid()))
    });
    crate::net::builder::<WorkloadPeer>(&limits)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// What the kernel reported about the process at the other end of a
/// Workload API connection, read once at accept.
#[derive(Debug, Clone)]
pub struct WorkloadPeer {
    /// `SO_PEERCRED`: pid, effective uid and gid at `connect()`; `None` if
    /// the kernel gave none.
    pub cred: Option<UCred>,
    /// `SO_PEERPIDFD`: the connecting process itself, so a recycled pid
    /// cannot stand in for it during attestation.
    pub pin: PeerPin,
}

/// An accepted Workload API connection. It reads the peer's credentials and
/// pidfd at accept, before any request: the pidfd then names the process
/// that connected for as long as the connection lives, and tonic copies the
/// [`WorkloadPeer`] into every request's extensions.
#[derive(Debug)]
pub struct WorkloadConn {
    stream: UnixStream,
    peer: WorkloadPeer,
}

impl WorkloadConn {
    /// Wraps an accepted stream, reading its peer's credentials and pidfd.
    pub fn accept(stream: UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        let pin = PeerPin::of_socket(&stream);
        Self {
            stream,
            peer: WorkloadPeer { cred, pin },
        }
    }
}

impl Connected for WorkloadConn {
    type ConnectInfo = WorkloadPeer;

    fn connect_info(&self) -> WorkloadPeer {
        self.peer.clone()
    }
}

impl AsyncRead for WorkloadConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WorkloadConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
