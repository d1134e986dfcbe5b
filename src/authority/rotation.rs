//! Rotating the authority's keys (SPEC §7, issue 8 §1–§3): applying the [`plan`]'s
//! actions, the operator's forced rotation and taint, and the key view the operator
//! commands show.
//!
//! Every change is made on `&mut self`; the server makes it on a clone, persists
//! [`Authority::to_sealed_bytes`], and only then swaps the clone in and pushes the
//! bundle, so nothing signs with a key the store does not hold and no key is published
//! that a restart would forget. Each change returns [`KeyEvent`]s for the audit log.

use std::time::SystemTime;

use ring::rand::SecureRandom;

use super::ca::CaKey;
use super::jwt::JwtKey;
use super::keys::{KeyKind, KeyRecord, whole_seconds};
use super::plan::{Action, Plan, plan};
use super::policy::RotationPolicy;
use super::{Authority, AuthorityError, later};

/// How many plan-and-apply rounds [`Authority::advance`] makes at most. Two suffice
/// (a replacement, then nothing); more would mean the plan does not settle, and the
/// loop is told to come back at once rather than spin here.
const MAX_ROUNDS: usize = 4;

/// What happened to one key, for the audit log and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Generated and published.
    Prepared,
    /// Became the signing key; `forced` when before its publish window had passed.
    Activated {
        /// Whether the publish window was skipped.
        forced: bool,
    },
    /// Stopped signing (replaced by an activation); stays published while needed.
    Retired,
    /// Left the bundle.
    Dropped,
    /// Marked compromised; its private part was discarded.
    Tainted,
    /// An operator asked for it to be activated as soon as its window has passed.
    ActivationRequested,
}

impl KeyChange {
    /// Whether the published key set changed (and with it the bundle sequence).
    pub fn changes_bundle(self) -> bool {
        matches!(self, KeyChange::Prepared | KeyChange::Dropped)
    }

    /// A stable name for logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyChange::Prepared => "prepared",
            KeyChange::Activated { forced: false } => "activated",
            KeyChange::Activated { forced: true } => "activated-forced",
            KeyChange::Retired => "retired",
            KeyChange::Dropped => "dropped",
            KeyChange::Tainted => "tainted",
            KeyChange::ActivationRequested => "activation-requested",
        }
    }
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// The kind of key.
    pub kind: KeyKind,
    /// The key's id.
    pub id: String,
    /// What happened.
    pub change: KeyChange,
}

/// The outcome of [`Authority::advance`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance {
    /// Every change made, in order. When not empty, persist before using the authority.
    pub events: Vec<KeyEvent>,
    /// When to plan again (see [`Plan::next_deadline`]).
    pub next_deadline: Option<SystemTime>,
}

impl Advance {
    /// Whether the bundle changed, so it must be pushed to agents.
    pub fn bundle_changed(&self) -> bool {
        self.events.iter().any(|e| e.change.changes_bundle())
    }
}

/// Runs `$body` with `$r` bound to the ring of `$kind`.
macro_rules! with_ring {
    ($self:expr, $kind:expr, |$r:ident| $body:expr) => {
        match $kind {
            KeyKind::X509Ca => {
                let $r = &mut $self.cas;
                $body
            }
            KeyKind::Jwt => {
                let $r = &mut $self.jwt_keys;
                $body
            }
        }
    };
}

fn event(kind: KeyKind, id: &str, change: KeyChange) -> KeyEvent {
    KeyEvent {
        kind,
        id: id.to_owned(),
        change,
    }
}

impl Authority {
    /// Every key's record, CA keys first, each kind in bundle order: what `bundle show`
    /// and `operator status` display and what [`plan`] reads.
    pub fn keys(&self) -> Vec<KeyRecord> {
        self.cas
            .records()
            .chain(self.jwt_keys.records())
            .cloned()
            .collect()
    }

    /// The ids of the tainted keys of `kind` still in the bundle. Agents re-issue at once
    /// every SVID whose issuer (the leaf's AuthorityKeyIdentifier, or the token's `kid`)
    /// is one of them.
    pub fn tainted_ids(&self, kind: KeyKind) -> Vec<String> {
        let tainted = |r: &KeyRecord| r.is_tainted().then(|| r.id.clone());
        match kind {
            KeyKind::X509Ca => self.cas.records().filter_map(tainted).collect(),
            KeyKind::Jwt => self.jwt_keys.records().filter_map(tainted).collect(),
        }
    }

    /// The rotation plan at `now` (see [`plan`]).
    pub fn plan(&self, now: SystemTime, policy: &RotationPolicy) -> Plan {
        plan(now, &self.keys(), policy)
    }

    /// Plans and applies until nothing is due at `now`. All or nothing: on error `self`
    /// is unchanged. When the returned events are not empty, persist the authority before
    /// it signs or its bundle is pushed.
    pub fn advance(
        &mut self,
        now: SystemTime,
        policy: &RotationPolicy,
        rng: &dyn SecureRandom,
    ) -> Result<Advance, AuthorityError> {
        self.all_or_nothing(|next| {
            let mut events = Vec::new();
            for _ in 0..MAX_ROUNDS {
                let plan = next.plan(now, policy);
                if plan.actions.is_empty() {
                    return Ok(Advance {
                        events,
                        next_deadline: plan.next_deadline,
                    });
                }
                for action in &plan.actions {
                    events.extend(next.apply(action, now, policy, rng)?);
                }
            }
            Ok(Advance {
                events,
                next_deadline: Some(now),
            })
        })
    }

    /// Applies one action at `now`, all or nothing. Preconditions are checked again
    /// here: an unforced activation before the key's publish window has passed is
    /// refused.
    pub fn apply(
        &mut self,
        action: &Action,
        now: SystemTime,
        policy: &RotationPolicy,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<KeyEvent>, AuthorityError> {
        self.all_or_nothing(|next| {
            let events = match action {
                Action::Prepare { kind } => vec![next.prepare(*kind, now, policy, rng)?],
                Action::Activate { kind, id, forced } => {
                    next.activate(*kind, id, *forced, now, policy)?
                }
                Action::ActivateNew { kind } => next.activate_new(*kind, now, policy, rng)?,
                Action::Drop { kind, id } => {
                    with_ring!(next, *kind, |r| r.remove(id))?;
                    vec![event(*kind, id, KeyChange::Dropped)]
                }
            };
            next.bump_for(&events)?;
            Ok(events)
        })
    }

    /// Runs `change` on a copy and keeps the copy only if it succeeds. Copies share
    /// private keys, so this costs a few small allocations.
    fn all_or_nothing<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, AuthorityError>,
    ) -> Result<T, AuthorityError> {
        let mut next = self.clone();
        let out = change(&mut next)?;
        *self = next;
        Ok(out)
    }

    /// `rotate-ca` / `rotate-jwt-key`. Without `force`, a successor is prepared now (or
    /// the prepared one kept) and activated as soon as it has been published for its
    /// window — rotation as soon as it is safe for every consumer. With `force`, a new
    /// key signs at once, whoever has not received it yet: for a compromise, where
    /// signing with the old key any longer is the greater harm. Run
    /// [`Authority::advance`] afterwards. All or nothing.
    pub fn rotate(
        &mut self,
        kind: KeyKind,
        force: bool,
        now: SystemTime,
        policy: &RotationPolicy,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<KeyEvent>, AuthorityError> {
        self.all_or_nothing(|next| next.rotate_now(kind, force, now, policy, rng))
    }

    fn rotate_now(
        &mut self,
        kind: KeyKind,
        force: bool,
        now: SystemTime,
        policy: &RotationPolicy,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<KeyEvent>, AuthorityError> {
        if force {
            let events = self.activate_new(kind, now, policy, rng)?;
            self.bump_for(&events)?;
            return Ok(events);
        }
        match with_ring!(self, kind, |r| r.prepared_id()) {
            Some(id) => {
                with_ring!(self, kind, |r| r.request_activation(&id))?;
                Ok(vec![event(kind, &id, KeyChange::ActivationRequested)])
            }
            None => {
                // A tainted prepared key (not dropped yet) makes way for the new one.
                let mut events = self.drop_prepared(kind)?;
                let prepared = self.prepare(kind, now, policy, rng)?;
                with_ring!(self, kind, |r| r.request_activation(&prepared.id))?;
                events.push(prepared.clone());
                events.push(event(kind, &prepared.id, KeyChange::ActivationRequested));
                self.bump_for(&events)?;
                Ok(events)
            }
        }
    }

    /// `taint-ca` / `taint-jwt-key`: marks key `id` compromised. It stops signing at once
    /// (its private part is discarded); [`Authority::advance`] then replaces it if it was
    /// active and drops it when its taint grace has passed (at once if it was prepared).
    pub fn taint(
        &mut self,
        kind: KeyKind,
        id: &str,
        now: SystemTime,
    ) -> Result<KeyEvent, AuthorityError> {
        with_ring!(self, kind, |r| r.taint(id, now))?;
        Ok(event(kind, id, KeyChange::Tainted))
    }

    fn prepare(
        &mut self,
        kind: KeyKind,
        now: SystemTime,
        policy: &RotationPolicy,
        rng: &dyn SecureRandom,
    ) -> Result<KeyEvent, AuthorityError> {
        if let Some(id) = with_ring!(self, kind, |r| r.all_prepared_ids()).first() {
            // At most one prepared key per kind; the plan never asks for a second.
            return Err(AuthorityError::KeyNotPrepared {
                kind,
                id: id.clone(),
            });
        }
        let id = match kind {
            KeyKind::X509Ca => {
                let key = CaKey::generate(&self.trust_domain, now, policy.ca_ttl, rng)?;
                let record = KeyRecord::new(kind, key.id(), now, key.not_after);
                let id = record.id.clone();
                self.cas.push_prepared(record, key.cert_der.clone(), key);
                id
            }
            KeyKind::Jwt => {
                let key = JwtKey::generate(later(whole_seconds(now), policy.ca_ttl), rng)?;
                let record = KeyRecord::new(kind, key.kid.clone(), now, key.not_after);
                let id = record.id.clone();
                self.jwt_keys.push_prepared(record, key.authority(), key);
                id
            }
        };
        Ok(event(kind, &id, KeyChange::Prepared))
    }

    fn activate(
        &mut self,
        kind: KeyKind,
        id: &str,
        forced: bool,
        now: SystemTime,
        policy: &RotationPolicy,
    ) -> Result<Vec<KeyEvent>, AuthorityError> {
        let record = with_ring!(self, kind, |r| r.record(id).cloned())?;
        let early = whole_seconds(now) < later(record.published_at, policy.publish_wait(kind));
        if early && !forced {
            return Err(AuthorityError::PublishWindowOpen {
                kind,
                id: id.to_owned(),
            });
        }
        let retired = with_ring!(self, kind, |r| r.activate(id, now, early))?;
        let mut events = vec![event(kind, id, KeyChange::Activated { forced: early })];
        events.extend(retired.map(|old| event(kind, &old, KeyChange::Retired)));
        Ok(events)
    }

    /// A new key that signs at once; prepared keys of the kind are dropped (they never
    /// signed, and were exposed with whatever exposed the active key).
    fn activate_new(
        &mut self,
        kind: KeyKind,
        now: SystemTime,
        policy: &RotationPolicy,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<KeyEvent>, AuthorityError> {
        let mut events = self.drop_prepared(kind)?;
        let prepared = self.prepare(kind, now, policy, rng)?;
        let id = prepared.id.clone();
        events.push(prepared);
        events.extend(self.activate(kind, &id, true, now, policy)?);
        Ok(events)
    }

    /// Removes every prepared key of `kind` from the bundle.
    fn drop_prepared(&mut self, kind: KeyKind) -> Result<Vec<KeyEvent>, AuthorityError> {
        let mut events = Vec::new();
        for id in with_ring!(self, kind, |r| r.all_prepared_ids()) {
            with_ring!(self, kind, |r| r.remove(&id))?;
            events.push(event(kind, &id, KeyChange::Dropped));
        }
        Ok(events)
    }

    /// Moves `spiffe_sequence` on once for each change of the published key set: the
    /// sequence "MUST be changed whenever the contents of the bundle are updated"
    /// (Trust Domain and Bundle §4.1.1).
    fn bump_for(&mut self, events: &[KeyEvent]) -> Result<(), AuthorityError> {
        for _ in events.iter().filter(|e| e.change.changes_bundle()) {
            self.sequence = self
                .sequence
                .checked_add(1)
                .ok_or(AuthorityError::SequenceExhausted)?;
        }
        Ok(())
    }
}
