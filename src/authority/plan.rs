//! The rotation plan (STYLE §7, SPEC §7, issue 8 §1–§3): a pure function of `now`, the
//! key records and the policy, saying which keys to prepare, activate and drop, and when
//! to look again. The thin loop that applies it is the server's; the actions are applied
//! by [`super::Authority::apply`].
//!
//! For each kind of key, independently:
//!
//! 1. **Drop** every key whose [`KeyRecord::leaves_bundle_at`] has come.
//! 2. If no key may sign — the active key is tainted, or has expired (a server that was
//!    down too long) — **activate now**: the prepared key if there is one and the active
//!    key merely expired, else a new key ([`Action::ActivateNew`]). After a taint the
//!    prepared key is not used: whatever exposed the active key's private part (the same
//!    store, the same host) exposed the prepared key's too, so a fresh key replaces both.
//!    Such an activation is *forced* when the key has not been published for its window:
//!    a short verification gap for peers with a stale bundle is the lesser harm than
//!    signing with a compromised key or signing nothing.
//! 3. Otherwise, with no prepared key, **prepare** one when the active key has
//!    `prepare_before` of its life left.
//! 4. With a prepared key, **activate** it when the active key has `activate_before`
//!    left (or at once if an operator asked for an early rotation), but never before it
//!    has been published for [`RotationPolicy::publish_wait`].
//!
//! The plan also returns the next deadline: the earliest time at which, without an
//! operator's request, the plan would differ. The loop sleeps until then (capped, so a
//! wall-clock jump is noticed), applies the actions, persists, pushes the bundle, and
//! plans again.

use std::time::SystemTime;

use super::keys::{KeyKind, KeyRecord, KeyState};
use super::later;
use super::policy::RotationPolicy;

/// One step of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Generate a key of `kind` and publish it as prepared.
    Prepare {
        /// The kind.
        kind: KeyKind,
    },
    /// Make prepared key `id` the signing key; the active key becomes old.
    Activate {
        /// The kind.
        kind: KeyKind,
        /// The prepared key.
        id: String,
        /// True when its publish window has not passed yet (see the module docs).
        forced: bool,
    },
    /// Generate a key of `kind` and make it the signing key at once; the active key
    /// becomes old and any prepared key is dropped (it never signed).
    ActivateNew {
        /// The kind.
        kind: KeyKind,
    },
    /// Remove key `id` from the bundle: nothing valid depends on it any more.
    Drop {
        /// The kind.
        kind: KeyKind,
        /// The key.
        id: String,
    },
}

/// What to do now and when to look again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Actions to apply now, in order.
    pub actions: Vec<Action>,
    /// The earliest future time at which the plan changes, if any.
    pub next_deadline: Option<SystemTime>,
}

impl Plan {
    fn wake_at(&mut self, now: SystemTime, at: SystemTime) {
        if at > now {
            self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
        }
    }
}

/// The plan at `now` for `keys` (of both kinds, as [`super::Authority::keys`] lists them).
pub fn plan(now: SystemTime, keys: &[KeyRecord], policy: &RotationPolicy) -> Plan {
    let mut out = Plan::default();
    for kind in KeyKind::ALL {
        let ring: Vec<&KeyRecord> = keys.iter().filter(|k| k.kind == kind).collect();
        plan_kind(now, kind, &ring, policy, &mut out);
    }
    out
}

/// When the active key `a` reaches the point where `left` of its life remains; never
/// before it was created (a key whose life is shorter than `left`).
fn point(a: &KeyRecord, left: std::time::Duration) -> SystemTime {
    a.not_after
        .checked_sub(left)
        .unwrap_or(a.created_at)
        .max(a.created_at)
}

fn plan_kind(
    now: SystemTime,
    kind: KeyKind,
    keys: &[&KeyRecord],
    policy: &RotationPolicy,
    out: &mut Plan,
) {
    let mut kept = Vec::with_capacity(keys.len());
    for key in keys {
        match key.leaves_bundle_at(policy) {
            Some(at) if now >= at => out.actions.push(Action::Drop {
                kind,
                id: key.id.clone(),
            }),
            Some(at) => {
                out.wake_at(now, at);
                kept.push(*key);
            }
            None => kept.push(*key),
        }
    }
    let active = kept.iter().find(|k| k.state == KeyState::Active);
    let prepared = kept
        .iter()
        .find(|k| k.state == KeyState::Prepared && !k.is_tainted() && now < k.not_after);
    let wait = policy.publish_wait(kind);

    let Some(active) = active.filter(|a| !a.is_tainted() && now < a.not_after) else {
        // Nothing may sign: replace the active key now.
        let tainted = active.is_some_and(|a| a.is_tainted());
        out.actions.push(match prepared {
            Some(p) if !tainted => Action::Activate {
                kind,
                id: p.id.clone(),
                forced: now < later(p.published_at, wait),
            },
            _ => Action::ActivateNew { kind },
        });
        return;
    };
    // The active key's expiry forces a replacement if nothing happened before.
    out.wake_at(now, active.not_after);
    match prepared {
        None => {
            let at = point(active, policy.prepare_before);
            if now >= at {
                out.actions.push(Action::Prepare { kind });
            } else {
                out.wake_at(now, at);
            }
        }
        Some(p) => {
            let due = if p.activate_early {
                p.published_at
            } else {
                point(active, policy.activate_before)
            };
            let at = due.max(later(p.published_at, wait));
            if now >= at {
                out.actions.push(Action::Activate {
                    kind,
                    id: p.id.clone(),
                    forced: false,
                });
            } else {
                out.wake_at(now, at);
            }
        }
    }
}
