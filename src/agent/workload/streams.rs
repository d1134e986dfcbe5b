//! The follow loop behind every Workload API stream (SPEC §3.1): after the
//! first snapshot, wait for a change, re-resolve, and send only what differs
//! from what was last sent.

use super::{WorkloadError, to_status};
use futures::stream::{self, BoxStream, StreamExt};
use std::future::Future;
use tokio::sync::watch;
use tonic::Status;

/// A Workload API response stream.
pub(super) type Updates<T> = BoxStream<'static, Result<T, Status>>;

/// A stream whose first message is `first`, followed by a new message each
/// time `resolve` (run after every bump of `changes`) yields a fingerprint
/// different from the last one sent.
///
/// The stream is driven by the connection that sends it, not by a task of
/// its own: the first message goes out as soon as the response does, and
/// the next change is resolved only when the transport can take another
/// message, so a slow reader holds the loop, not memory, and always gets
/// the latest snapshot rather than a queue of stale ones. The stream is
/// dropped, and the loop with it, when the caller goes away.
///
/// The fingerprint is compared instead of the message so the loop never
/// keeps a copy of a private key. When the caller stops matching any entry
/// the stream ends with `PermissionDenied`; other failures are logged and
/// the stream keeps the last snapshot until the next change.
pub(super) fn follow<T, K, F, Fut>(
    changes: watch::Receiver<u64>,
    (first, last): (T, K),
    resolve: F,
) -> Updates<T>
where
    T: Send + 'static,
    K: PartialEq + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(T, K), WorkloadError>> + Send + 'static,
{
    let state = Follow {
        changes,
        last,
        resolve,
    };
    let rest = stream::unfold(Some(state), |state| async move {
        let (item, state) = state?.next().await;
        Some((item, state))
    });
    stream::once(async { Ok(first) }).chain(rest).boxed()
}

/// What the loop carries between messages.
struct Follow<K, F> {
    changes: watch::Receiver<u64>,
    last: K,
    resolve: F,
}

impl<K: PartialEq, F> Follow<K, F> {
    /// The next message to send, and the state to continue from (`None`
    /// after a message that ends the stream).
    async fn next<T, Fut>(mut self) -> (Result<T, Status>, Option<Self>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, K), WorkloadError>>,
    {
        loop {
            if self.changes.changed().await.is_err() {
                return (Err(Status::unavailable("the agent is stopping")), None);
            }
            match (self.resolve)().await {
                Ok((message, key)) => {
                    if key == self.last {
                        continue;
                    }
                    self.last = key;
                    return (Ok(message), Some(self));
                }
                Err(e @ WorkloadError::NoIdentityIssued) => return (Err(to_status(&e)), None),
                Err(e) => {
                    tracing::warn!(error = %e, "workload api: update failed; keeping the last snapshot");
                }
            }
        }
    }
}
