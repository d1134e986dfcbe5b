//! The task that keeps the server's key material current (SPEC §7, STYLE §7): the
//! authority's keys, through a thin loop around the pure plan, and the server's own
//! TLS SVID, renewed at half its life.
//!
//! Each round applies what the plan has due through [`Server::advance_keys`] (which
//! audits, persists and only then swaps in every change, and re-issues the server's
//! SVID when the CA changes), renews the server's SVID if it is due, then sleeps until
//! the earlier of the two next deadlines.
//!
//! It shares its shape with the agent's SVID rotation: the same sleep bounds (at least
//! a second, so nothing spins; at most a minute, so a wall-clock jump is noticed) and
//! the same backoff after failures ([`crate::agent::rotation::sleep_for`]). A failure
//! keeps the keys in use, is counted (`operator status` shows the count) and retried;
//! the task never exits on one. It also wakes when the keys change under it (unseal,
//! an operator's rotation or taint), since the next deadline may then be earlier.

use crate::agent::rotation::sleep_for;
use crate::server::{LifecycleError, Server};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// Runs until `stop` turns true (or its sender is dropped).
pub async fn run(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    let mut keys = server.key_changes();
    loop {
        // Marked seen before the round: a change made meanwhile wakes us again.
        keys.borrow_and_update();
        let (next, failures) = match round(&server).await {
            Ok(next) => {
                server.rotation_succeeded();
                (next, 0)
            }
            // Nothing to do while sealed; unseal changes the keys and wakes us.
            Err(LifecycleError::Sealed) => (None, 0),
            Err(e) => {
                let failures = server.rotation_failed();
                tracing::warn!(error = %e, failures,
                    "key rotation or server SVID renewal failed; what is in use stays in use; retrying");
                (None, failures)
            }
        };
        let sleep = sleep_for(server.now(), next, failures);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            changed = keys.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One round: the plan's due changes, then the server's SVID if due. Returns the next
/// deadline of either.
async fn round(server: &Server) -> Result<Option<SystemTime>, LifecycleError> {
    let plan_next = server.advance_keys().await?;
    let now = server.now();
    if server
        .server_svid_renewal_due()
        .is_some_and(|due| due <= now)
    {
        server.renew_server_svid(now)?;
    }
    let renewal = server.server_svid_renewal_due();
    Ok(match (plan_next, renewal) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
