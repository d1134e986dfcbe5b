//! Key lifecycle state (SPEC §7, issue 8 §1–§3): what the authority knows about each CA
//! key and JWT signing key — its kind, its stable id, its state (prepared, active, old),
//! the times that matter, and its taint — and the ring of keys of one kind.
//!
//! [`KeyRecord`] is plain data: the rotation plan reads only records, the operator view
//! shows them, and the sealed state stores them. A [`Ring`] pairs each record with the
//! public part that goes into the bundle and, only while the key may still sign, its
//! private part: an old or tainted key holds none (kanidm's habit), so a retired key
//! cannot sign by mistake and is never written to the store again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::policy::RotationPolicy;
use super::{AuthorityError, from_unix, later, unix};

/// The two kinds of signing key an authority rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// An X.509 CA key with its self-signed root; its id is the hex SubjectKeyIdentifier,
    /// which every leaf it signs carries as its AuthorityKeyIdentifier.
    X509Ca,
    /// A JWT-SVID signing key; its id is the `kid` in the bundle and in every token.
    Jwt,
}

impl KeyKind {
    /// Both kinds, CA first.
    pub const ALL: [KeyKind; 2] = [KeyKind::X509Ca, KeyKind::Jwt];

    /// A stable name for logs, audit records and the operator view.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::X509Ca => "x509-ca",
            KeyKind::Jwt => "jwt",
        }
    }
}

/// Where a key is in its life. Every state is published in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not signing yet: consumers learn it before it signs anything.
    Prepared,
    /// The one key of its kind that signs.
    Active,
    /// Signs nothing any more; published only until nothing valid depends on it.
    Old,
}

impl KeyState {
    /// A stable name for logs, audit records and the operator view.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Prepared => "prepared",
            KeyState::Active => "active",
            KeyState::Old => "old",
        }
    }
}

/// Everything the plan and the operator need to know about one key. Times are whole
/// seconds, as persisted, so a plan made from reloaded state equals the plan made before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The kind of key.
    pub kind: KeyKind,
    /// The stable id: the CA's hex SubjectKeyIdentifier, or the JWT `kid`.
    pub id: String,
    /// Its state.
    pub state: KeyState,
    /// When it was generated; its life, for the prepare and activate points, runs from
    /// here to `not_after`.
    pub created_at: SystemTime,
    /// When it entered the bundle. The bundle holding it is persisted and pushed right
    /// after the change that added it, so the publish window counts from here.
    pub published_at: SystemTime,
    /// When it became the signing key.
    pub activated_at: Option<SystemTime>,
    /// Whether it was activated before its publish window had passed: a forced rotation,
    /// a taint, an expired predecessor — or the first key of a new authority, which
    /// signs at once because there was no earlier bundle for anyone to hold.
    pub forced_activation: bool,
    /// When it stopped signing (became old).
    pub retired_at: Option<SystemTime>,
    /// When the key expires: the CA certificate's NotAfter, or the JWT key's end of life.
    /// Nothing it signs outlives it.
    pub not_after: SystemTime,
    /// When an operator marked it compromised.
    pub tainted_at: Option<SystemTime>,
    /// The operator asked (`rotate-ca` without `--force`) that this prepared key become
    /// active as soon as its publish window has passed, instead of at the usual point.
    pub activate_early: bool,
}

impl KeyRecord {
    /// A key generated at `now`: published at once, valid until `not_after`.
    pub(super) fn new(kind: KeyKind, id: String, now: SystemTime, not_after: SystemTime) -> Self {
        let now = whole_seconds(now);
        Self {
            kind,
            id,
            state: KeyState::Prepared,
            created_at: now,
            published_at: now,
            activated_at: None,
            forced_activation: false,
            retired_at: None,
            not_after: whole_seconds(not_after),
            tainted_at: None,
            activate_early: false,
        }
    }

    /// Whether an operator marked the key compromised.
    pub fn is_tainted(&self) -> bool {
        self.tainted_at.is_some()
    }

    /// The latest expiry of anything the key may have signed.
    ///
    /// This is a bound, not a tally: every certificate and token is capped at the key's
    /// `not_after` when it is issued, so nothing the key signed outlives it. Tallying the
    /// latest expiry at issuance would shorten an old key's stay in the bundle, but it
    /// survives a SIGKILL only if every issuance is written durably first; the bound
    /// needs no write and is what SPIRE keeps old CAs in the bundle for.
    pub fn signed_until(&self) -> SystemTime {
        self.not_after
    }

    /// When the key leaves the bundle; `None` for the active key, which stays until a
    /// successor replaces it.
    ///
    /// - An old key stays until everything it signed has expired: one second past
    ///   `not_after`, because an X.509 certificate is still valid during its notAfter
    ///   second (RFC 5280 §4.1.2.5).
    /// - A tainted key leaves when its taint grace has passed — agents re-issue
    ///   everything it signed as soon as they hear of the taint, and the grace covers
    ///   hearing and re-issuing — or earlier, when everything it signed has expired.
    /// - A prepared key never signed: it leaves at once when tainted, and when it
    ///   expires unused.
    pub fn leaves_bundle_at(&self, policy: &RotationPolicy) -> Option<SystemTime> {
        let expired = later(self.signed_until(), Duration::from_secs(1));
        match (self.state, self.tainted_at) {
            (KeyState::Active, _) => None,
            (KeyState::Prepared, Some(tainted)) => Some(tainted),
            (KeyState::Prepared, None) => Some(self.not_after),
            (KeyState::Old, None) => Some(expired),
            (KeyState::Old, Some(tainted)) => Some(expired.min(later(tainted, policy.taint_grace))),
        }
    }
}

/// `t` without its fraction of a second, as the sealed state stores it.
pub(super) fn whole_seconds(t: SystemTime) -> SystemTime {
    from_unix(unix(t))
}

/// One key of a ring: its record, its bundle entry, and its private part while it may
/// still sign. Holds a private key, so it has no `Debug`.
pub(super) struct Slot<P, S> {
    pub(super) record: KeyRecord,
    pub(super) public: P,
    pub(super) signer: Option<Arc<S>>,
}

impl<P: Clone, S> Clone for Slot<P, S> {
    fn clone(&self) -> Self {
        Self {
            record: self.record.clone(),
            public: self.public.clone(),
            signer: self.signer.clone(),
        }
    }
}

/// The keys of one kind in the order they were created, which is also their order in
/// the bundle: activation changes no published byte.
///
/// Invariants (checked on load, kept by every change): exactly one active key, at most
/// one prepared key, and a private part exactly on the untainted prepared and active keys.
pub(super) struct Ring<P, S> {
    pub(super) kind: KeyKind,
    pub(super) slots: Vec<Slot<P, S>>,
}

impl<P: Clone, S> Clone for Ring<P, S> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind,
            slots: self.slots.clone(),
        }
    }
}

impl<P, S> Ring<P, S> {
    /// A ring holding the first key of a new authority, active since its creation.
    pub(super) fn with_active(mut record: KeyRecord, public: P, signer: S) -> Self {
        record.state = KeyState::Active;
        record.activated_at = Some(record.created_at);
        record.forced_activation = true;
        Self {
            kind: record.kind,
            slots: vec![Slot {
                record,
                public,
                signer: Some(Arc::new(signer)),
            }],
        }
    }

    /// The records, in bundle order.
    pub(super) fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.slots.iter().map(|s| &s.record)
    }

    /// The active key's slot.
    pub(super) fn active(&self) -> Option<&Slot<P, S>> {
        self.slots
            .iter()
            .find(|s| s.record.state == KeyState::Active)
    }

    /// The key that signs, or why none may.
    pub(super) fn signer(&self) -> Result<&S, AuthorityError> {
        let active = self
            .active()
            .ok_or(AuthorityError::NoActiveKey { kind: self.kind })?;
        active
            .signer
            .as_deref()
            .ok_or(AuthorityError::ActiveKeyTainted { kind: self.kind })
    }

    fn index(&self, id: &str) -> Result<usize, AuthorityError> {
        self.slots
            .iter()
            .position(|s| s.record.id == id)
            .ok_or_else(|| AuthorityError::UnknownKey {
                kind: self.kind,
                id: id.to_owned(),
            })
    }

    /// The record of key `id`.
    pub(super) fn record(&self, id: &str) -> Result<&KeyRecord, AuthorityError> {
        let i = self.index(id)?;
        self.slots
            .get(i)
            .map(|s| &s.record)
            .ok_or(AuthorityError::UnknownKey {
                kind: self.kind,
                id: id.to_owned(),
            })
    }

    fn slot_mut(&mut self, id: &str) -> Result<&mut Slot<P, S>, AuthorityError> {
        let i = self.index(id)?;
        let kind = self.kind;
        self.slots
            .get_mut(i)
            .ok_or_else(|| AuthorityError::UnknownKey {
                kind,
                id: id.to_owned(),
            })
    }

    /// Adds a freshly generated key as prepared.
    pub(super) fn push_prepared(&mut self, record: KeyRecord, public: P, signer: S) {
        self.slots.push(Slot {
            record,
            public,
            signer: Some(Arc::new(signer)),
        });
    }

    /// Makes prepared key `id` the signing key at `now`; the active key becomes old and
    /// loses its private part. Returns the id of the key it replaced.
    pub(super) fn activate(
        &mut self,
        id: &str,
        now: SystemTime,
        forced: bool,
    ) -> Result<Option<String>, AuthorityError> {
        let kind = self.kind;
        let next = self.record(id)?;
        if next.state != KeyState::Prepared || next.is_tainted() {
            return Err(AuthorityError::KeyNotPrepared {
                kind,
                id: id.to_owned(),
            });
        }
        let now = whole_seconds(now);
        let mut retired = None;
        for slot in &mut self.slots {
            if slot.record.state == KeyState::Active {
                slot.record.state = KeyState::Old;
                slot.record.retired_at = Some(now);
                slot.signer = None;
                retired = Some(slot.record.id.clone());
            }
        }
        let slot = self.slot_mut(id)?;
        slot.record.state = KeyState::Active;
        slot.record.activated_at = Some(now);
        slot.record.forced_activation = forced;
        slot.record.activate_early = false;
        Ok(retired)
    }

    /// Removes key `id` from the ring (and so from the bundle). The active key cannot be
    /// removed: it is retired by an activation first.
    pub(super) fn remove(&mut self, id: &str) -> Result<(), AuthorityError> {
        let i = self.index(id)?;
        if self.slots.get(i).map(|s| s.record.state) == Some(KeyState::Active) {
            return Err(AuthorityError::KeyIsActive {
                kind: self.kind,
                id: id.to_owned(),
            });
        }
        self.slots.remove(i);
        Ok(())
    }

    /// Marks key `id` compromised at `now` and discards its private part at once: a
    /// tainted key never signs again, even before its replacement is active.
    pub(super) fn taint(&mut self, id: &str, now: SystemTime) -> Result<(), AuthorityError> {
        let kind = self.kind;
        let slot = self.slot_mut(id)?;
        if slot.record.is_tainted() {
            return Err(AuthorityError::KeyAlreadyTainted {
                kind,
                id: id.to_owned(),
            });
        }
        slot.record.tainted_at = Some(whole_seconds(now));
        slot.record.activate_early = false;
        slot.signer = None;
        Ok(())
    }

    /// Marks prepared key `id` for activation as soon as its publish window has passed.
    pub(super) fn request_activation(&mut self, id: &str) -> Result<(), AuthorityError> {
        let kind = self.kind;
        let slot = self.slot_mut(id)?;
        if slot.record.state != KeyState::Prepared || slot.record.is_tainted() {
            return Err(AuthorityError::KeyNotPrepared {
                kind,
                id: id.to_owned(),
            });
        }
        slot.record.activate_early = true;
        Ok(())
    }

    /// The untainted prepared key, if any.
    pub(super) fn prepared_id(&self) -> Option<String> {
        self.slots
            .iter()
            .find(|s| s.record.state == KeyState::Prepared && !s.record.is_tainted())
            .map(|s| s.record.id.clone())
    }

    /// The ids of every prepared key, tainted or not.
    pub(super) fn all_prepared_ids(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.record.state == KeyState::Prepared)
            .map(|s| s.record.id.clone())
            .collect()
    }

    /// Checks the ring's invariants; the reason names the broken one.
    pub(super) fn check(&self) -> Result<(), &'static str> {
        let count = |state| {
            self.slots
                .iter()
                .filter(|s| s.record.state == state)
                .count()
        };
        if count(KeyState::Active) != 1 {
            return Err("exactly one key of each kind must be active");
        }
        if count(KeyState::Prepared) > 1 {
            return Err("at most one key of each kind may be prepared");
        }
        for slot in &self.slots {
            if slot.record.kind != self.kind {
                return Err("a key is filed under the wrong kind");
            }
            let may_sign = slot.record.state != KeyState::Old && !slot.record.is_tainted();
            if may_sign != slot.signer.is_some() {
                return Err(if may_sign {
                    "a prepared or active key has no private key"
                } else {
                    "an old or tainted key still holds its private key"
                });
            }
        }
        let mut ids: Vec<&str> = self.slots.iter().map(|s| s.record.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w.first() == w.get(1)) {
            return Err("two keys share an id");
        }
        Ok(())
    }
}
