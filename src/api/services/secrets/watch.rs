//! `Secrets.Watch`: pushes each new version of a path to the caller as it is
//! written (no polling). The stream starts after the version the caller last
//! saw (`after_version`; 0 sends the current version first), so a watcher
//! that reconnects misses nothing still readable. Each version sent is
//! decided and recorded like a `get`; a denial ends the stream.

use super::version_to_pb;
use crate::api::ApiError;
use crate::api::gate::Gate;
use crate::api::pb;
use crate::clock;
use crate::policy::{Action, Resource};
use crate::secrets::{SecretPath, VersionState};
use crate::server::Server;
use crate::server::secrets::SecretsError;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Versions in flight to a slow watcher before the sender waits.
const BUFFER: usize = 16;

pub(super) fn start(
    gate: Gate,
    server: Arc<Server>,
    ext: http::Extensions,
    path: SecretPath,
    after: u64,
) -> ReceiverStream<Result<pb::SecretVersion, Status>> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        if let Err(status) = run(&gate, &server, &ext, &path, after, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}

async fn run(
    gate: &Gate,
    server: &Arc<Server>,
    ext: &http::Extensions,
    path: &SecretPath,
    after: u64,
    tx: &mpsc::Sender<Result<pb::SecretVersion, Status>>,
) -> Result<(), Status> {
    // Subscribe before the first read, so nothing written in between is missed.
    let mut changes = server.secrets().changes();
    let mut stopping = server.stopping();
    let mut sent = match after {
        0 => match server.secrets().meta(path).await {
            Ok(m) => m.current.saturating_sub(1),
            Err(SecretsError::NotFound(_)) => 0,
            Err(e) => return Err(e.into()),
        },
        n => n,
    };
    loop {
        sent = send_newer(gate, server, ext, path, sent, tx).await?;
        tokio::select! {
            got = changes.recv() => match got {
                Ok(c) if &c.path != path => continue,
                // Fell behind: re-read below, which finds whatever was missed.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            () = tx.closed() => return Ok(()),
            _ = stopping.wait_for(|s| *s) => return Err(ApiError::ShuttingDown.into()),
        }
    }
}

/// Sends every readable version after `sent`, in order; returns the newest
/// version now sent or skipped.
async fn send_newer(
    gate: &Gate,
    server: &Server,
    ext: &http::Extensions,
    path: &SecretPath,
    sent: u64,
    tx: &mpsc::Sender<Result<pb::SecretVersion, Status>>,
) -> Result<u64, Status> {
    let meta = match server.secrets().meta(path).await {
        Ok(m) => m,
        Err(SecretsError::NotFound(_)) => return Ok(sent),
        Err(e) => return Err(e.into()),
    };
    let current = meta.current;
    let mut last = sent;
    // Only live versions are sent (and decided and recorded): pruned,
    // deleted and destroyed ones are passed over without a store read, so an
    // old `after_version` costs nothing per version it skips.
    let first = sent.max(meta.oldest.saturating_sub(1)).saturating_add(1);
    for version in first..=current {
        if !matches!(meta.state(version), Ok((_, VersionState::Live))) {
            last = version;
            continue;
        }
        let resource = Resource::new("secret", Some(path.to_string()));
        let decided = gate.decide(ext, Action::SecretWatch, resource).await?;
        let now = clock::unix_seconds(server.now());
        match server.secrets().get(path, version, now).await {
            Ok(read) => {
                decided
                    .record(Ok(format!("sent version {version}")))
                    .await?;
                if tx.send(Ok(version_to_pb(path, read))).await.is_err() {
                    return Ok(current);
                }
            }
            // Deleted or destroyed before it could be sent: nothing to send.
            Err(e) => decided.record(Err(format!("skipped: {e}"))).await?,
        }
        last = version;
    }
    Ok(last)
}
