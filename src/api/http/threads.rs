//! The threads that serve the HTTP API's connections: one single-threaded
//! runtime per core, in addition to the server's main runtime, and a
//! connection stays on the thread it was given to for its whole life.
//!
//! A Vault client keeps a connection open and sends one request after
//! another on it. On the main work-stealing runtime each of those requests
//! woke whichever worker was idle and moved between threads with its
//! readiness events, and on a busy machine that scheduling cost as much CPU
//! as a KV read's own work. On its own thread a connection's requests are
//! read and answered without a thread switch (work that waits for the disk,
//! such as a write or a durable audit record, still goes to the threads
//! that do it).
//!
//! The trade-off: a thread busy with one request (a large write, a long
//! list) delays the other connections it serves, and no other thread can
//! take them over. Each new connection goes to the thread serving the
//! fewest connections, so the threads stay evenly loaded as connections
//! come and go.

use super::{Accepted, serve_connection};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Most threads each serving thread's runtime starts for blocking work (a
/// write's sync, a scan).
const MAX_BLOCKING: usize = 64;

/// The serving threads.
pub(super) struct Threads {
    dealer: Dealer<Accepted>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// Starts one thread per core (at least one), each serving the
    /// connections it is given with `router` until `stop` turns true, and
    /// then giving them `grace` to finish.
    pub(super) async fn start(
        router: &axum::Router,
        stop: &watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<Self, std::io::Error> {
        let n = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let mut lanes = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (queue, rx) = mpsc::unbounded_channel();
            let live = Arc::new(AtomicUsize::new(0));
            let (router, stop, load) = (router.clone(), stop.clone(), live.clone());
            let (built, ready) = oneshot::channel();
            // The runtime is built on its own thread and dropped there: a
            // runtime may not be dropped inside another one's task.
            let handle = std::thread::Builder::new()
                .name(format!("sigil-http-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .max_blocking_threads(MAX_BLOCKING)
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            let _ = built.send(Ok(()));
                            runtime.block_on(serve_thread(rx, router, stop, load, grace));
                        }
                        Err(e) => {
                            let _ = built.send(Err(e));
                        }
                    }
                })?;
            match ready.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::other("a serving thread ended at start")),
            }
            lanes.push(Lane { queue, live });
            handles.push(handle);
        }
        Ok(Self {
            dealer: Dealer { lanes, next: 0 },
            handles,
        })
    }

    /// Hands `conn` to the thread serving the fewest connections; gives it
    /// back if every thread has stopped.
    pub(super) fn give(&mut self, conn: Accepted) -> Result<(), Accepted> {
        self.dealer.give(conn)
    }

    /// Stops handing out connections and waits until every thread has
    /// ended: their connections finished, or were cut off after the grace
    /// period.
    pub(super) async fn finish(self) {
        drop(self.dealer);
        for handle in self.handles {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("an HTTP API serving thread panicked"),
            }
        }
    }
}

/// One thread's queue of connections and how many it serves.
struct Lane<T> {
    queue: mpsc::UnboundedSender<T>,
    live: Arc<AtomicUsize>,
}

/// Deals items to lanes: to the open lane with the fewest live items, and
/// in turn among lanes with as few.
struct Dealer<T> {
    lanes: Vec<Lane<T>>,
    next: usize,
}

impl<T> Dealer<T> {
    /// Gives `item` to a lane (see [`Dealer`]), counting it live there until
    /// the lane's reader says it is done; gives it back when every lane's
    /// reader has gone.
    fn give(&mut self, mut item: T) -> Result<(), T> {
        let n = self.lanes.len();
        for _ in 0..n {
            let lane = (0..n)
                .map(|k| (self.next + k) % n)
                .filter_map(|i| self.lanes.get(i).map(|lane| (i, lane)))
                .filter(|(_, lane)| !lane.queue.is_closed())
                // The first of the least loaded, counting from `next`.
                .min_by_key(|(_, lane)| lane.live.load(Ordering::Relaxed));
            let Some((i, lane)) = lane else {
                break;
            };
            self.next = i.wrapping_add(1);
            lane.live.fetch_add(1, Ordering::Relaxed);
            match lane.queue.send(item) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    lane.live.fetch_sub(1, Ordering::Relaxed);
                    item = e.0;
                }
            }
        }
        Err(item)
    }
}

/// Counts a connection live on its thread until dropped.
struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A serving thread: serves the connections it is given until the
/// listener stops giving them, then lets those it serves finish (each
/// winds down when `stop` turns true) for at most `grace`.
async fn serve_thread(
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    router: axum::Router,
    stop: watch::Receiver<bool>,
    live: Arc<AtomicUsize>,
    grace: Duration,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            given = rx.recv() => {
                let Some(Accepted { tcp, remote, config, permit }) = given else {
                    break;
                };
                let load = Load(live.clone());
                // A connection that waited here while the server began to
                // stop is closed without a handshake.
                if *stop.borrow() {
                    continue;
                }
                // Registered with this thread's reactor from here on.
                let tcp = match tokio::net::TcpStream::from_std(tcp) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP API connection could not be served");
                        continue;
                    }
                };
                let (router, stop) = (router.clone(), stop.clone());
                conns.spawn(async move {
                    let _held = (permit, load);
                    serve_connection(tcp, remote, config, router, stop).await;
                });
            }
            Some(done) = conns.join_next(), if !conns.is_empty() => ended(done),
        }
    }
    let drain = async {
        while let Some(done) = conns.join_next().await {
            ended(done);
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!("HTTP API connections still open after the drain period were cut off");
        conns.shutdown().await;
    }
}

/// Notes how a connection's task ended: a panic is a bug worth a log line.
fn ended(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("an HTTP API connection's task panicked");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn lanes(n: usize) -> (Dealer<u32>, Vec<mpsc::UnboundedReceiver<u32>>) {
        let mut lanes = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..n {
            let (queue, rx) = mpsc::unbounded_channel();
            lanes.push(Lane {
                queue,
                live: Arc::new(AtomicUsize::new(0)),
            });
            rxs.push(rx);
        }
        (Dealer { lanes, next: 0 }, rxs)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<u32>) -> Vec<u32> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn equally_loaded_threads_take_connections_in_turn() {
        let (mut dealer, mut rxs) = lanes(3);
        for n in 0..6 {
            dealer.give(n).unwrap();
        }
        assert_eq!(drain(&mut rxs[0]), [0, 3]);
        assert_eq!(drain(&mut rxs[1]), [1, 4]);
        assert_eq!(drain(&mut rxs[2]), [2, 5]);
        assert!(
            dealer
                .lanes
                .iter()
                .all(|l| l.live.load(Ordering::Relaxed) == 2)
        );
    }

    #[test]
    fn a_connection_goes_to_the_thread_serving_the_fewest() {
        let (mut dealer, mut rxs) = lanes(3);
        for n in 0..3 {
            dealer.give(n).unwrap();
        }
        // The first two threads' connections end.
        dealer.lanes[0].live.store(0, Ordering::Relaxed);
        dealer.lanes[1].live.store(0, Ordering::Relaxed);
        // The third is busy with five.
        dealer.lanes[2].live.store(5, Ordering::Relaxed);
        for n in 3..6 {
            dealer.give(n).unwrap();
        }
        assert_eq!(drain(&mut rxs[0]), [0, 3, 5]);
        assert_eq!(drain(&mut rxs[1]), [1, 4]);
        assert_eq!(drain(&mut rxs[2]), [2]);
    }

    #[test]
    fn a_stopped_thread_is_skipped_and_none_left_gives_the_connection_back() {
        let (mut dealer, mut rxs) = lanes(3);
        let rx1 = rxs.remove(1);
        drop(rx1);
        for n in 0..4 {
            dealer.give(n).unwrap();
        }
        assert_eq!(drain(&mut rxs[0]), [0, 2]);
        assert_eq!(drain(&mut rxs[1]), [1, 3]);
        assert_eq!(dealer.lanes[1].live.load(Ordering::Relaxed), 0);
        rxs.clear();
        assert_eq!(dealer.give(9), Err(9));
    }
}
