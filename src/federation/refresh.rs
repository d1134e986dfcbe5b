//! The thin loop that keeps foreign bundles fresh (STYLE §7): it asks [`super::plan`]
//! which relationships are due, fetches those together, checks what they return, keeps
//! what changed (audited first, like every change to whom this server trusts), records
//! the outcome, and sleeps until the next is due. It never ends on a failure: a failed
//! fetch or a refused bundle is logged, shown in `operator status`, and retried as the
//! plan says, while the last good bundle stays in use (Federation §6.2).
//!
//! Time comes from the server's clock. The loop wakes at least every [`RECHECK`], so a
//! clock that moves on its own (a wall-clock jump, a test's manual clock) is noticed
//! promptly; a wake-up with nothing due costs one comparison per trust domain.

use super::fetch::{self, FetchError};
use super::foreign::check_foreign_bundle;
use super::plan;
use super::setup::Relationship;
use super::state::Source;
use crate::audit::{Event, SERVER_SUBJECT, Verdict};
use crate::authority::Bundle;
use crate::server::Server;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The longest the loop sleeps between two looks at the plan.
const RECHECK: Duration = Duration::from_secs(1);

/// The audit action of a foreign bundle the server took from its endpoint.
pub const UPDATE_ACTION: &str = "federation.bundle.update";

/// Keeps every configured relationship's bundle fresh until `stop` turns true. Does
/// nothing while the server is sealed.
pub async fn run(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    let federation = server.federation().clone();
    if federation.relationships().is_empty() {
        return;
    }
    loop {
        let now = server.now();
        let mut next_wake = None;
        if federation.is_loaded() {
            let due = plan::plan(now, &federation.next_attempts());
            let rounds = federation
                .relationships()
                .iter()
                .filter(|r| due.fetch.contains(r.trust_domain()))
                .map(|r| refresh(&server, r));
            tokio::select! {
                _ = futures::future::join_all(rounds) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            next_wake = plan::plan(server.now(), &federation.next_attempts()).next_wake;
        }
        let sleep = next_wake
            .and_then(|w| w.duration_since(server.now()).ok())
            .map_or(RECHECK, |d| d.min(RECHECK));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One fetch of `rel`'s bundle, its outcome recorded.
async fn refresh(server: &Server, rel: &Relationship) {
    let federation = server.federation();
    let td = rel.trust_domain();
    let started = server.now();
    match fetch_and_keep(server, rel).await {
        Ok(hint) => federation.record_success(td, started, hint),
        Err(e) => {
            tracing::warn!(
                trust_domain = %td,
                url = rel.config.url.as_str(),
                error = %e,
                "foreign bundle not updated; the last good one stays in use"
            );
            federation.record_failure(td, started, e);
        }
    }
}

/// Fetches, checks and (when it changed) keeps `rel`'s bundle; returns its refresh hint.
async fn fetch_and_keep(server: &Server, rel: &Relationship) -> Result<u64, FetchError> {
    let federation = server.federation();
    let td = rel.trust_domain();
    let keep_err = |e: &dyn std::fmt::Display| FetchError::Keep {
        message: e.to_string(),
    };
    let own = server.authority().map_err(|e| keep_err(&e))?.bundle();
    let verifier = fetch::verifier(&rel.auth, federation.auth_roots(rel, &own))?;
    let body = fetch::fetch(&rel.config.url, verifier).await?;
    let bundle = check_foreign_bundle(federation.own_trust_domain(), td, &body)?;
    let hint = bundle.refresh_hint_secs;
    if !federation.would_change(td, &bundle, Source::Endpoint) {
        tracing::debug!(trust_domain = %td, "foreign bundle unchanged");
        return Ok(hint);
    }
    // Recorded before it is used: if the audit log cannot say that this server now
    // trusts these keys, it does not trust them.
    server
        .audit()
        .append(update_event(server, rel, &bundle))
        .await
        .map_err(|e| keep_err(&e))?;
    let (sequence, x509, jwt) = (
        bundle.sequence,
        bundle.x509_authorities.len(),
        bundle.jwt_authorities.len(),
    );
    federation
        .keep(td.clone(), bundle, Source::Endpoint, server.now())
        .await
        .map_err(|e| keep_err(&e))?;
    tracing::info!(
        trust_domain = %td,
        sequence,
        x509_authorities = x509,
        jwt_authorities = jwt,
        "foreign bundle updated from its endpoint"
    );
    Ok(hint)
}

fn update_event(server: &Server, rel: &Relationship, bundle: &Bundle) -> Event {
    Event {
        time: crate::clock::unix_seconds(server.now()),
        subject: SERVER_SUBJECT.to_owned(),
        authn: "internal".to_owned(),
        action: UPDATE_ACTION.to_owned(),
        resource: format!("bundle:{}", rel.trust_domain()),
        decision: Verdict::Allow,
        reasons: vec![
            format!(
                "fetched from {} ({})",
                rel.config.url.as_str(),
                rel.config.profile.name()
            ),
            format!(
                "sequence {}: {} X.509 authorities, {} JWT keys",
                bundle.sequence,
                bundle.x509_authorities.len(),
                bundle.jwt_authorities.len()
            ),
        ],
        source: "internal".to_owned(),
        token: None,
    }
}
