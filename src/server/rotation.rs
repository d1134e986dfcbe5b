//! The task that rotates the authority's keys (SPEC §7, STYLE §7): a thin loop around
//! the pure plan. It sleeps until the plan's next deadline, applies what is due
//! through [`Server::advance_keys`] (which audits, persists and only then swaps in
//! every change), and plans again.
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
use tokio::sync::watch;

/// Runs until `stop` turns true (or its sender is dropped).
pub async fn run(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    let mut keys = server.key_changes();
    loop {
        // Marked seen before planning: a change made while we plan wakes us again.
        keys.borrow_and_update();
        let (next, failures) = match server.advance_keys().await {
            Ok(next) => {
                server.rotation_succeeded();
                (next, 0)
            }
            // Nothing to rotate while sealed; unseal changes the keys and wakes us.
            Err(LifecycleError::Sealed) => (None, 0),
            Err(e) => {
                let failures = server.rotation_failed();
                tracing::warn!(error = %e, failures,
                    "key rotation failed; the keys in use stay in use; retrying");
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
