//! Changing the authority's keys while the server runs (SPEC §7, issue 8 §1–§3): the
//! rotation plan when it is due, an operator's rotation and taint, and the plan's
//! catching up at unseal with the time the server was down.
//!
//! Every change follows one path, under the lifecycle lock (so changes, unseal and
//! seal never interleave):
//!
//! 1. the authority in use is cloned and the clone changed (the core's changes are all
//!    or nothing: on error nothing happened);
//! 2. each [`KeyEvent`] is audited with the server as subject, before anything acts on
//!    it (a change the log cannot record does not happen);
//! 3. the clone is persisted in the sealed store, on the blocking pool;
//! 4. only then is it swapped in: nothing signs with a key the store does not hold,
//!    and no key is published that a restart would forget. A server killed between
//!    any two steps comes back with the state of step 3 or the one before it, and
//!    plans again from there;
//! 5. the server's TLS SVID is re-issued when the CA or the bundle changed (it
//!    follows the active CA, and its client roots follow the bundle), and everyone
//!    watching [`Server::key_changes`] (the agents' entry streams, the rotation task)
//!    is woken: the new bundle and taints reach every agent at once.

use super::{LifecycleError, Server};
use crate::audit::Event;
use crate::authority::{Authority, AuthorityError, KeyChange, KeyEvent, KeyKind, RotationPolicy};
use crate::clock;
use crate::server::blocking;
use crate::store::Table;
use ring::rand::SystemRandom;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;
use tokio::sync::watch;

/// Where the authority's sealed state lives in the store.
pub(super) const AUTHORITY_KEY: &[u8] = b"authority";

/// Why a key change was made; the audit records say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCause {
    /// The rotation plan was due.
    Schedule,
    /// At unseal: a new authority, or the plan catching up with the time the server
    /// was down.
    Unseal,
    /// A caller asked (an operator or an admin workload).
    Request {
        /// The caller as audit records name it.
        caller: String,
        /// What was asked, e.g. `operator.taint_signing_key`.
        action: String,
    },
}

impl KeyCause {
    fn reason(&self) -> String {
        match self {
            KeyCause::Schedule => "rotation schedule".to_owned(),
            KeyCause::Unseal => "unseal".to_owned(),
            KeyCause::Request { caller, action } => format!("{action} requested by {caller}"),
        }
    }
}

/// What the server tells the rest of itself about its keys.
#[derive(Debug)]
pub(super) struct KeyWatch {
    /// Bumped whenever the authority in use changes (unseal, rotation, taint).
    changed: watch::Sender<u64>,
    /// Consecutive failed attempts of the rotation task.
    failures: AtomicU32,
}

impl KeyWatch {
    pub(super) fn new() -> Self {
        Self {
            changed: watch::channel(0).0,
            failures: AtomicU32::new(0),
        }
    }

    pub(super) fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// The audit action of a key change: `key.prepared`, `key.activated-forced`, ….
fn action_of(change: KeyChange) -> String {
    format!("key.{}", change.as_str())
}

/// The events that describe a new authority's first keys: generated, and signing at
/// once (there was no earlier bundle for anyone to hold).
fn first_key_events(authority: &Authority) -> Vec<KeyEvent> {
    authority
        .keys()
        .into_iter()
        .flat_map(|k| {
            [KeyChange::Prepared, KeyChange::Activated { forced: true }].map(|change| KeyEvent {
                kind: k.kind,
                id: k.id.clone(),
                change,
            })
        })
        .collect()
}

/// Whether the server's TLS SVID must be re-issued after `events`: a new CA signs, a
/// CA was tainted (the server stops presenting what it signed), or the bundle its
/// client verifier trusts changed.
fn tls_follows(events: &[KeyEvent]) -> bool {
    events.iter().any(|e| {
        e.change.changes_bundle()
            || (e.kind == KeyKind::X509Ca
                && matches!(e.change, KeyChange::Activated { .. } | KeyChange::Tainted))
    })
}

impl Server {
    /// Watches the authority in use: the value changes whenever it does (unseal,
    /// rotation, taint). The agents' entry streams push the new bundle and taints on
    /// every change; the rotation task plans again.
    pub fn key_changes(&self) -> watch::Receiver<u64> {
        self.keys.changed.subscribe()
    }

    /// Consecutive failed attempts of the rotation task (0 while it is healthy).
    pub fn rotation_failures(&self) -> u32 {
        self.keys.failures.load(Ordering::Relaxed)
    }

    /// Counts a failed attempt of the rotation task; returns the count.
    pub(in crate::server) fn rotation_failed(&self) -> u32 {
        self.keys
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// Clears the failure count after a successful attempt.
    pub(in crate::server) fn rotation_succeeded(&self) {
        self.keys.failures.store(0, Ordering::Relaxed);
    }

    /// Whether a tainted CA key signed `leaf_der` (see [`crate::authority::signing_ca_id`]).
    pub fn signed_by_tainted_ca(&self, leaf_der: &[u8]) -> bool {
        let Ok(authority) = self.authority() else {
            return false;
        };
        let tainted = authority.tainted_ids(KeyKind::X509Ca);
        // Most of the time nothing is tainted, and the leaf need not be parsed.
        !tainted.is_empty()
            && crate::authority::signing_ca_id(leaf_der).is_some_and(|id| tainted.contains(&id))
    }

    /// The rotation timings in force.
    pub fn rotation_policy(&self) -> &RotationPolicy {
        &self.config.rotation
    }

    /// Applies whatever the rotation plan has due now. Returns when to look again.
    pub async fn advance_keys(&self) -> Result<Option<SystemTime>, LifecycleError> {
        let (_, next) = self
            .change_keys(&KeyCause::Schedule, |a, now, policy, rng| {
                let advanced = a.advance(now, policy, rng)?;
                Ok(advanced.events)
            })
            .await?;
        Ok(next)
    }

    /// `rotate-ca` (and the JWT key's): see [`Authority::rotate`]. Returns every change
    /// made, including what the plan then did at once.
    pub async fn rotate_signing_key(
        &self,
        kind: KeyKind,
        force: bool,
        cause: &KeyCause,
    ) -> Result<Vec<KeyEvent>, LifecycleError> {
        let (events, _) = self
            .change_keys(cause, |a, now, policy, rng| {
                let mut events = a.rotate(kind, force, now, policy, rng)?;
                events.extend(a.advance(now, policy, rng)?.events);
                Ok(events)
            })
            .await?;
        Ok(events)
    }

    /// `taint-ca` / `taint-jwt-key`: see [`Authority::taint`]. An active key is replaced
    /// in the same change, so the push that tells agents of the taint also brings the
    /// key that signs their re-issued SVIDs.
    pub async fn taint_signing_key(
        &self,
        kind: KeyKind,
        id: &str,
        cause: &KeyCause,
    ) -> Result<Vec<KeyEvent>, LifecycleError> {
        let (events, _) = self
            .change_keys(cause, |a, now, policy, rng| {
                let mut events = vec![a.taint(kind, id, now)?];
                events.extend(a.advance(now, policy, rng)?.events);
                Ok(events)
            })
            .await?;
        Ok(events)
    }

    /// The one path of every change while unsealed (see the module docs). Returns the
    /// events and the plan's next deadline afterwards.
    async fn change_keys(
        &self,
        cause: &KeyCause,
        change: impl FnOnce(
            &mut Authority,
            SystemTime,
            &RotationPolicy,
            &SystemRandom,
        ) -> Result<Vec<KeyEvent>, AuthorityError>,
    ) -> Result<(Vec<KeyEvent>, Option<SystemTime>), LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        let current = self.authority()?;
        let (now, policy) = (self.now(), self.config.rotation);
        let mut next = (*current).clone();
        let events = change(&mut next, now, &policy, &SystemRandom::new())?;
        let deadline = next.plan(now, &policy).next_deadline;
        if events.is_empty() {
            return Ok((events, deadline));
        }
        self.record_and_store(&next, now, cause, &events).await?;
        self.install_authority(next, now, &events)?;
        Ok((events, deadline))
    }

    /// Steps 2 and 3: audits `events`, then persists `next`. A failed write is audited
    /// too, so the log does not claim a change that did not happen.
    async fn record_and_store(
        &self,
        next: &Authority,
        now: SystemTime,
        cause: &KeyCause,
        events: &[KeyEvent],
    ) -> Result<(), LifecycleError> {
        let time = clock::unix_seconds(now);
        for e in events {
            let mut record = Event::by_server(time, &action_of(e.change), vec![cause.reason()]);
            record.resource = format!("{}:{}", e.kind.as_str(), e.id);
            self.audit.append(record).await?;
        }
        let bytes = next.to_sealed_bytes();
        let store = self.store.clone();
        let stored = blocking::run(move || {
            store
                .put(Table::AUTHORITY, AUTHORITY_KEY, bytes.expose())
                .map_err(LifecycleError::from)
        })
        .await;
        if let Err(e) = &stored {
            tracing::error!(error = %e, "the changed keys could not be stored; the current keys stay in use");
            let mut record = Event::by_server(time, "key.store", vec![e.to_string()]);
            record.decision = crate::audit::Verdict::Failed;
            record.resource = "authority".to_owned();
            if let Err(a) = self.audit.append(record).await {
                tracing::error!(error = %a, "audit of the failed key store failed");
            }
        }
        stored
    }

    /// Steps 4 and 5: swaps `next` in, makes the TLS SVID follow, wakes the watchers.
    fn install_authority(
        &self,
        next: Authority,
        now: SystemTime,
        events: &[KeyEvent],
    ) -> Result<(), LifecycleError> {
        {
            let mut active = crate::sync::write(&self.active);
            let active = active.as_mut().ok_or(LifecycleError::Sealed)?;
            active.authority = Arc::new(next);
        }
        for e in events {
            tracing::info!(kind = e.kind.as_str(), id = %e.id, change = e.change.as_str(), "key changed");
        }
        if tls_follows(events)
            && let Err(e) = self.renew_server_svid(now)
        {
            // The current SVID stays valid: its CA stays in the bundle until
            // everything it signed has expired, and renewal retries at half-life.
            tracing::warn!(error = %e, "server SVID not re-issued after a key change");
        }
        self.keys.bump();
        Ok(())
    }

    /// At unseal (the lifecycle lock is held): a new authority for a fresh store, or
    /// the stored one with the plan applied up to `now`; the changes are audited and
    /// persisted before the authority is put to use, as every change is.
    pub(super) async fn settle_authority(
        &self,
        stored: Option<Authority>,
        now: SystemTime,
    ) -> Result<Authority, LifecycleError> {
        let (policy, rng) = (self.config.rotation, SystemRandom::new());
        let (mut authority, mut events) = match stored {
            Some(a) => (a, Vec::new()),
            None => {
                let a = Authority::generate(&self.config.trust_domain, now, policy.ca_ttl, &rng)?;
                let events = first_key_events(&a);
                (a, events)
            }
        };
        // A server that stayed down past a deadline catches up now: a key due is
        // activated, one whose predecessor expired meanwhile is replaced at once (and
        // the expired one kept in the bundle while anything it signed may be valid).
        events.extend(authority.advance(now, &policy, &rng)?.events);
        if !events.is_empty() {
            self.record_and_store(&authority, now, &KeyCause::Unseal, &events)
                .await?;
        }
        Ok(authority)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::id::TrustDomain;
    use std::time::Duration;

    fn event(kind: KeyKind, change: KeyChange) -> KeyEvent {
        KeyEvent {
            kind,
            id: "k".into(),
            change,
        }
    }

    #[test]
    fn the_tls_svid_follows_the_ca_and_the_bundle() {
        use KeyChange::*;
        use KeyKind::{Jwt, X509Ca};
        let rows = [
            (X509Ca, Prepared, true),
            (Jwt, Prepared, true),
            (X509Ca, Dropped, true),
            (Jwt, Dropped, true),
            (X509Ca, Activated { forced: false }, true),
            (X509Ca, Activated { forced: true }, true),
            (Jwt, Activated { forced: true }, false),
            (X509Ca, Tainted, true),
            (Jwt, Tainted, false),
            (X509Ca, Retired, false),
            (X509Ca, ActivationRequested, false),
        ];
        for (kind, change, want) in rows {
            assert_eq!(
                tls_follows(&[event(kind, change)]),
                want,
                "{kind:?} {change:?}"
            );
        }
        assert!(!tls_follows(&[]));
    }

    #[test]
    fn a_new_authority_is_audited_as_prepared_and_signing_at_once() {
        let td = TrustDomain::parse("example.org").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a =
            Authority::generate(&td, now, Duration::from_secs(3600), &SystemRandom::new()).unwrap();
        let got: Vec<(KeyKind, String)> = first_key_events(&a)
            .iter()
            .map(|e| (e.kind, action_of(e.change)))
            .collect();
        let want = [
            (KeyKind::X509Ca, "key.prepared"),
            (KeyKind::X509Ca, "key.activated-forced"),
            (KeyKind::Jwt, "key.prepared"),
            (KeyKind::Jwt, "key.activated-forced"),
        ]
        .map(|(k, a)| (k, a.to_owned()));
        assert_eq!(got, want);
    }

    #[test]
    fn causes_name_who_asked() {
        assert_eq!(KeyCause::Schedule.reason(), "rotation schedule");
        assert_eq!(KeyCause::Unseal.reason(), "unseal");
        let asked = KeyCause::Request {
            caller: "uid:0".into(),
            action: "operator.taint_signing_key".into(),
        };
        assert_eq!(
            asked.reason(),
            "operator.taint_signing_key requested by uid:0"
        );
    }
}
