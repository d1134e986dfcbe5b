//! Binding and serving the Workload API socket (SPEC §3.1).

use crate::net::{Limiter, Limits, Peer, limit_incoming};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tonic::transport::server::UdsConnectInfo;

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

/// Serves `routes` on `listener` until `shutdown` completes. Connections
/// carry the caller's peer credentials for attestation. Every local user
/// may connect, so connections are capped per uid and in all, and idle or
/// half-open ones are closed (`limits`).
pub async fn serve_workload_api(
    listener: UnixListener,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let limiter = Limiter::new("Workload API socket", limits);
    let incoming = limit_incoming(UnixListenerStream::new(listener), limiter, Peer::of_unix);
    crate::net::builder::<UdsConnectInfo>(&limits)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
