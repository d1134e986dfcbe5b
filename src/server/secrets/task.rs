//! The task that rotates secrets on schedule (STYLE §7): a thin loop around
//! the pure plan (`crate::secrets::plan`). Each round takes the schedules,
//! asks the plan what is due at `now`, rotates and retires those, audits each
//! outcome, and sleeps until the next deadline or until a schedule changes.
//!
//! A failure is recorded in the secret's rotation state (`rotation show`),
//! audited, and retried with backoff by the plan; the loop never dies on one.

use super::SecretsError;
use crate::audit::{Event, Verdict};
use crate::clock;
use crate::secrets::{RotationAction, SecretPath, plan};
use crate::server::Server;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest sleep: re-planning at least this often bounds the effect of a
/// wall-clock jump.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Shortest sleep between rounds, so a burst of failures cannot spin.
const MIN_SLEEP: Duration = Duration::from_millis(200);

/// Runs until `stop` turns true.
pub async fn run(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = clock::unix_seconds(server.now());
        let planned = plan(now, &server.secrets().schedules());
        for action in planned.actions {
            if *stop.borrow() {
                return;
            }
            match action {
                RotationAction::Rotate(path) => rotate(&server, &path).await,
                RotationAction::Retire(path) => retire(&server, &path).await,
            }
        }
        let now = clock::unix_seconds(server.now());
        let sleep = planned
            .next_wake
            .map_or(MAX_SLEEP, |t| Duration::from_secs(t.saturating_sub(now)))
            .clamp(MIN_SLEEP, MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = server.secrets().schedule_changed() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn audit(
    server: &Server,
    path: &SecretPath,
    action: &str,
    decision: Verdict,
    reason: String,
) {
    let mut event = Event::by_server(clock::unix_seconds(server.now()), action, vec![reason]);
    event.resource = format!("secret:{path}");
    event.decision = decision;
    if let Err(e) = server.audit().append(event).await {
        tracing::error!(error = %e, %path, "audit append for a rotation failed");
    }
}

async fn rotate(server: &Arc<Server>, path: &SecretPath) {
    let clock = server.clone();
    let now = move || clock::unix_seconds(clock.now());
    match server.secrets().rotate_if_due(path, &now).await {
        Ok(None) => {}
        Ok(Some(r)) => {
            tracing::info!(%path, version = r.version, "secret rotated");
            audit(
                server,
                path,
                "secret.rotate",
                Verdict::Allow,
                format!("scheduled rotation wrote version {}", r.version),
            )
            .await;
        }
        Err(SecretsError::Store(crate::store::SealError::Sealed)) => {}
        Err(e) => {
            tracing::warn!(%path, error = %e, "scheduled rotation failed; retrying with backoff");
            audit(
                server,
                path,
                "secret.rotate",
                Verdict::Failed,
                format!("scheduled rotation failed: {e}"),
            )
            .await;
        }
    }
}

async fn retire(server: &Arc<Server>, path: &SecretPath) {
    let now = clock::unix_seconds(server.now());
    match server.secrets().retire_due(path, now).await {
        Ok(versions) if versions.is_empty() => {}
        Ok(versions) => {
            audit(
                server,
                path,
                "secret.retire",
                Verdict::Allow,
                format!("grace over: retired versions {versions:?}"),
            )
            .await;
        }
        Err(SecretsError::Store(crate::store::SealError::Sealed)) => {}
        Err(e) => {
            tracing::warn!(%path, error = %e, "retiring a replaced version failed; retrying with backoff");
            audit(
                server,
                path,
                "secret.retire",
                Verdict::Failed,
                format!("retiring failed: {e}"),
            )
            .await;
        }
    }
}
