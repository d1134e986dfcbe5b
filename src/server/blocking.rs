//! The one way the server's async code does store work: on tokio's blocking
//! pool, never on an async worker thread.
//!
//! Every store write is durable before it returns (sled plus an fsync), and
//! reads can wait on the disk too. Run on an async worker, each one stalls
//! every other request and stream scheduled on that thread. So the async
//! face of the registry ([`super::Entries`]) and of the agent records
//! ([`super::Agents`]) moves its synchronous store operation, whole, into
//! [`run`]; the request awaits it. Work nobody needs to wait for (recording
//! when an agent was last seen) goes to [`detach`] and is not awaited at all.
//!
//! Why the blocking pool and not one store actor: sled is built for use from
//! many threads, and the rules that need an order already carry it in the
//! store (compare-and-swap on records and index keys). An actor would queue
//! every read behind every fsync of unrelated writes.
//!
//! Cancellation: when a caller goes away, tokio drops the request's future,
//! not the task: the store work runs to completion. Any order that must span
//! a store write and the in-memory cache is therefore taken *inside* the
//! task (a std lock held by the task), never around the `.await`.
//!
//! One exception, [`point_read`]: a secret read, the hottest request there
//! is, is two point lookups that sled answers from its page cache in
//! microseconds, less than the hop to the pool and back costs; it runs in
//! place. A lookup of a page not in the cache reads the file, and holds that
//! one worker for the read: accepted for point reads, never for writes.
//!
//! `init` and `unseal` (Argon2id) and the audit log's reads run on the same
//! pool from the lifecycle code.

/// Runs `work` on the blocking pool and waits for its result. A task that
/// did not complete (it panicked, or the runtime is shutting down) becomes
/// `E::from(JoinError)`. Outside a tokio runtime it runs in place.
pub(crate) async fn run<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<tokio::task::JoinError> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.spawn_blocking(work).await?,
        Err(_) => work(),
    }
}

/// Starts `work` on the blocking pool and returns at once; `work` reports
/// its own failures (to the log). Outside a tokio runtime it runs in place.
pub(crate) fn detach(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            // The handle is not needed: nobody waits for the result.
            drop(rt.spawn_blocking(work));
        }
        Err(_) => work(),
    }
}

/// Runs a few point reads of the store in place, on the calling thread (see
/// the module notes). Never for writes, scans or anything that syncs.
pub(crate) fn point_read<T>(work: impl FnOnce() -> T) -> T {
    work()
}
