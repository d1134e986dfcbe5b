//! The follow loop behind every Workload API stream (SPEC §3.1): after the
//! first snapshot, wait for a change, re-resolve, and send only what differs
//! from what was last sent.

use super::{WorkloadError, to_status};
use std::future::Future;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Messages buffered per stream; a slow reader holds the loop, not memory.
const STREAM_BUFFER: usize = 2;

/// A stream whose first message is `first`, followed by a new message each
/// time `resolve` (run after every bump of `changes`) yields a fingerprint
/// different from the last one sent.
///
/// The fingerprint is compared instead of the message so the loop never
/// keeps a copy of a private key. When the caller stops matching any entry
/// the stream ends with `PermissionDenied`; other failures are logged and
/// the stream keeps the last snapshot until the next change.
pub(super) fn follow<T, K, F, Fut>(
    changes: watch::Receiver<u64>,
    first: (T, K),
    resolve: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    K: PartialEq + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(T, K), WorkloadError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(run(changes, first, resolve, tx));
    ReceiverStream::new(rx)
}

async fn run<T, K, F, Fut>(
    mut changes: watch::Receiver<u64>,
    (message, mut last): (T, K),
    mut resolve: F,
    tx: mpsc::Sender<Result<T, Status>>,
) where
    K: PartialEq,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(T, K), WorkloadError>>,
{
    if tx.send(Ok(message)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    let _ = tx.send(Err(Status::unavailable("the agent is stopping"))).await;
                    return;
                }
            }
            () = tx.closed() => return,
        }
        match resolve().await {
            Ok((message, key)) => {
                if key == last {
                    continue;
                }
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
                last = key;
            }
            Err(e @ WorkloadError::NoIdentityIssued) => {
                let _ = tx.send(Err(to_status(&e))).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "workload api: update failed; keeping the last snapshot");
            }
        }
    }
}
