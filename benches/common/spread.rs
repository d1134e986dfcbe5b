//! Driving a server from many tasks at once for a while, and the bare gRPC
//! call that is a call's raw limit.

use super::common::BenchResult;
use sigil::api::pb;
use sigil::api::pb::secrets_client::SecretsClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long the load runs before counting starts. A slice of a comparison
/// starts its tasks afresh, and a deep pipeline takes a while to fill:
/// with 512 token mints in flight nothing completes until the first disk
/// sync does, and a mint's round (its CPU turn behind the other 511, then
/// its sync) is about 10 ms. Counting from the start charged every 150 ms
/// slice with that fill, which a server under steady load never pays.
/// Once settled, the window starts and ends with the same number in
/// flight, so the work done before it on operations it counts balances
/// the work done in it on operations it does not. Measured in
/// alternation, mints reached 0.438 of the raw signing rate without
/// settling and 0.476 with it (four pairs); settling 60 ms read the same
/// as 30 ms (0.461 and 0.455, four pairs), so 30 ms reaches the steady
/// state. Both sides of a comparison settle alike; a side with nothing to
/// fill (raw signs, bare calls) completes at once and loses nothing.
pub const SETTLE: Duration = Duration::from_millis(30);

/// Runs `op` on `concurrency` tasks for [`SETTLE`] and then `span`;
/// returns how many completed within `span`, the steady state. What is
/// still in flight when it ends is awaited, so the next measurement starts
/// on an idle server, but neither counted nor timed: with many operations
/// in flight, each waiting for a disk sync, that drain is the cost of
/// stopping the load, not of the operations, and a short measurement
/// charged with it would understate the rate by as much as it lasts
/// (about 4 ms a slice for 512 token mints, 3%).
pub async fn spread<F, Fut>(span: Duration, concurrency: usize, op: F) -> BenchResult<u64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = BenchResult<()>> + Send,
{
    let from = Instant::now() + SETTLE;
    let until = from + span;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    op().await.map_err(|e| e.to_string())?;
                    let done = Instant::now();
                    if from <= done && done <= until {
                        n += 1;
                    }
                }
                Ok::<u64, String>(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// The raw limit of one call: a `Secrets.Get` on the same connection whose
/// request the service refuses before any work (an empty path fails to
/// parse before the chokepoint): TLS, HTTP/2, tonic's routing and decoding
/// and an error reply, nothing of the PDP, the store or the audit log.
pub async fn bare_once(mut c: SecretsClient<Channel>) -> BenchResult<()> {
    match c
        .get(pb::GetSecretRequest {
            path: String::new(),
            version: 0,
        })
        .await
    {
        Err(s) if s.code() == tonic::Code::InvalidArgument => Ok(()),
        Err(s) => Err(format!("bare call: {s}").into()),
        Ok(_) => Err("the bare call was answered with a secret".into()),
    }
}
