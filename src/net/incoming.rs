//! The accept side for listeners whose connections need no handshake (the
//! Unix sockets): every accepted stream passes its listener's caps or is
//! closed at once, and a failing accept (no descriptors left) backs off
//! instead of spinning.

use super::conn::Limited;
use super::limits::{Limiter, Peer};
use futures::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait after a failed accept before the next: a full
/// descriptor table does not empty by retrying at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Admits the streams `incoming` yields under `limiter`, identifying each
/// stream's peer with `peer_of`. Refused streams are dropped (closed) here;
/// the result yields only admitted connections and never an error, so tonic
/// sees a listener that simply has fewer clients.
pub fn limit_incoming<S, E, F>(
    incoming: impl Stream<Item = Result<S, E>> + Send + 'static,
    limiter: Arc<Limiter>,
    peer_of: F,
) -> impl Stream<Item = Result<Limited<S>, std::io::Error>> + Send + 'static
where
    S: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: Fn(&S) -> Peer + Send + Sync + 'static,
{
    let state = (Box::pin(incoming), limiter, peer_of);
    futures::stream::unfold(state, |(mut incoming, limiter, peer_of)| async move {
        loop {
            match incoming.next().await? {
                Ok(stream) => {
                    // A refusal has been logged; dropping the stream closes it.
                    if let Ok(admission) = limiter.admit(peer_of(&stream)) {
                        let conn = Limited::new(stream, admission);
                        return Some((Ok(conn), (incoming, limiter, peer_of)));
                    }
                }
                Err(e) => {
                    limiter.accept_failed(&e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}
