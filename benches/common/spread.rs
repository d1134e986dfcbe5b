//! Running one operation from many tasks at once for a while.

use super::common::BenchResult;
use std::time::{Duration, Instant};

/// Runs `op` on `concurrency` tasks until `span` has passed; returns how many completed.
pub async fn spread<F, Fut>(span: Duration, concurrency: usize, op: F) -> BenchResult<u64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = BenchResult<()>> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < span {
                    op().await.map_err(|e| e.to_string())?;
                    n += 1;
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
