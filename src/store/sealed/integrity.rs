//! Integrity of the store at rest: per-table digests and the write
//! generation, updated in the same atomic batch as every write and checked
//! at unseal.
//!
//! The record envelope already makes each record fail to decrypt when it is
//! altered or moved, but not when it is deleted, and not when the whole
//! store is swapped for an older copy. So [`Table::INTEGRITY`] holds one
//! encrypted state record (location-bound like any other, so it cannot be
//! forged or moved without the keys) with:
//!
//! - per table, the record count and the sum modulo 2^256 of
//!   HMAC-SHA-256(integrity key, table ‖ key ‖ stored bytes) over its
//!   records. The sum updates incrementally (subtract the old record's MAC,
//!   add the new one's), and unlike XOR it stays sound if a MAC repeats; a
//!   scan that recomputes it finds any record flipped, deleted, added or
//!   restored to an older version. The key is derived from the root key
//!   (`keyring::DerivedKey::StoreIntegrity`), so nobody without the
//!   passphrase can compute a digest that matches altered records.
//! - the write generation, bumped by every write. Audit records carry it
//!   (see `audit`), so an audit log that has seen a higher generation than
//!   the store holds proves the store was rolled back.
//! - the anchor: one short value its writer keeps in the state record
//!   itself rather than in a record of its own (the audit chain head, saved
//!   at every audit sync). Setting only the anchor changes only the state
//!   record, which the backend writes as one compare-and-swap: on sled that
//!   is one log write, where a batch of two records costs two. It is as
//!   safe there as in a record of its own: nobody without the keys can
//!   forge or alter it, and putting back an older state record (an older
//!   anchor) also puts back an older generation, which is the rollback the
//!   audit log's generations reveal.
//!
//! Every write reads the state and the records it replaces, then applies
//! records and new state with [`Store::batch_if_unsynced`] conditioned on
//! both being unchanged, retrying on a conflict, and syncs once it applied
//! (unless the writer asked for [`Durability::Later`]: then the next sync
//! of the store, whoever's, carries it to the disk, records and state
//! together). Writers of one process take turns, and the one whose turn it
//! is applies the writes queued behind it in the same batch ([`commit`]); a
//! writer from elsewhere (another server on a shared database) is caught by
//! the precondition, so no update is ever lost. The sync comes after the
//! turn, so concurrent writers share it. [`Table::SYS`] (the seal metadata) is
//! outside the digests: it is authenticated by the key hierarchy itself.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::{SealError, seal};
use crate::keyring::{DerivedKey, Keys};
use crate::store::{Expect, Store, StoreError, Table, WriteOp};

/// Key of the state record in [`Table::INTEGRITY`].
pub(super) const STATE_KEY: &[u8] = b"state";

/// How often a write re-reads and retries after losing a race before giving
/// up; each attempt costs a few reads, never an fsync.
const MAX_ATTEMPTS: usize = 1000;

/// Count and combined MAC of one table's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableDigest {
    count: u64,
    #[serde(with = "hex32")]
    sum: [u8; 32],
}

impl TableDigest {
    fn add(&mut self, mac: &[u8; 32]) {
        self.count = self.count.wrapping_add(1);
        let mut carry = 0u16;
        for (s, m) in self.sum.iter_mut().zip(mac) {
            let v = u16::from(*s) + u16::from(*m) + carry;
            *s = v.to_le_bytes()[0];
            carry = v >> 8;
        }
    }

    fn remove(&mut self, mac: &[u8; 32]) {
        self.count = self.count.wrapping_sub(1);
        let mut borrow = 0i16;
        for (s, m) in self.sum.iter_mut().zip(mac) {
            let mut v = i16::from(*s) - i16::from(*m) - borrow;
            borrow = i16::from(v < 0);
            if v < 0 {
                v += 256;
            }
            *s = v.to_le_bytes()[0];
        }
    }
}

/// The decrypted state record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct State {
    /// Bumped by every write.
    pub(super) generation: u64,
    /// Digests of non-empty tables, by name.
    tables: BTreeMap<String, TableDigest>,
    /// The anchor, once one was set (see the module notes). Authenticated
    /// and encrypted with the rest of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) anchor: Option<String>,
}

impl State {
    fn digest(&self, table: Table) -> TableDigest {
        self.tables.get(table.name()).copied().unwrap_or_default()
    }

    fn change(
        &mut self,
        mac: &MacKey,
        table: Table,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) {
        let digest = self.tables.entry(table.name().to_owned()).or_default();
        if let Some(old) = old {
            digest.remove(&mac.record(table, key, old));
        }
        if let Some(new) = new {
            digest.add(&mac.record(table, key, new));
        }
        if digest.count == 0 {
            self.tables.remove(table.name());
        }
    }

    fn seal(&self, keys: &Keys) -> Result<Vec<u8>, SealError> {
        let json = serde_json::to_vec(self).map_err(|_| SealError::IntegrityInvalid)?;
        seal(keys, Table::INTEGRITY, STATE_KEY, &json)
    }

    fn open(keys: &Keys, raw: &[u8]) -> Result<State, SealError> {
        let plain = super::open(keys, Table::INTEGRITY, STATE_KEY, raw)?;
        serde_json::from_slice(plain.expose()).map_err(|_| SealError::IntegrityInvalid)
    }
}

/// The integrity HMAC key, derived from the root key for one operation.
struct MacKey(hmac::Key);

impl MacKey {
    fn new(keys: &Keys) -> Result<MacKey, SealError> {
        let secret = keys
            .derive(DerivedKey::StoreIntegrity)
            .map_err(SealError::Keyring)?;
        Ok(MacKey(hmac::Key::new(hmac::HMAC_SHA256, secret.expose())))
    }

    /// The MAC of one stored record; table and key are length-prefixed so
    /// that no two locations feed the same bytes.
    fn record(&self, table: Table, key: &[u8], value: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in [table.name().as_bytes(), key] {
            let len = u64::try_from(part.len()).unwrap_or(u64::MAX);
            ctx.update(&len.to_be_bytes());
            ctx.update(part);
        }
        ctx.update(value);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

/// The first state record of a new store (generation 0, no records), sealed
/// under `keys`.
pub(super) fn initial_state(keys: &Keys) -> Result<Vec<u8>, SealError> {
    State::default().seal(keys)
}

/// Recomputes every table's digest from the stored bytes and compares it
/// with the state record; returns the store's generation and its anchor.
pub(super) fn check(store: &dyn Store, keys: &Keys) -> Result<(u64, Option<String>), SealError> {
    let state = read_state(store, keys)?;
    let mac = MacKey::new(keys)?;
    for table in Table::ALL {
        if table == Table::SYS || table == Table::INTEGRITY {
            continue;
        }
        let records = store
            .scan_prefix(table, b"")
            .map_err(|source| SealError::TableUnreadable { table, source })?;
        let mut found = TableDigest::default();
        for (key, value) in &records {
            found.add(&mac.record(table, key, value));
        }
        let stored = state.digest(table);
        if found != stored {
            return Err(SealError::TableTampered {
                table,
                stored: stored.count,
                found: found.count,
            });
        }
    }
    Ok((state.generation, state.anchor))
}

/// The anchor the state record holds now.
pub(super) fn anchor(store: &dyn Store, keys: &Keys) -> Result<Option<String>, SealError> {
    Ok(read_state(store, keys)?.anchor)
}

/// The state record as stored now, decrypted.
fn read_state(store: &dyn Store, keys: &Keys) -> Result<State, SealError> {
    let raw = store
        .get(Table::INTEGRITY, STATE_KEY)?
        .ok_or(SealError::IntegrityMissing)?;
    State::open(keys, &raw)
}

/// One change in a [`commit`].
#[derive(Debug)]
pub(super) struct Change<'a> {
    /// Table of the record.
    pub(super) table: Table,
    /// Record key.
    pub(super) key: &'a [u8],
    /// The new stored (sealed) bytes; `None` deletes.
    pub(super) new: Option<Vec<u8>>,
    /// When set, the stored bytes the record must hold now (`Some(None)`:
    /// absent); otherwise the change applies whatever is there.
    pub(super) expect: Option<Option<&'a [u8]>>,
}

/// What a [`commit`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Commit {
    /// Written; for each change, whether a record was there before.
    Applied {
        /// Per change: a record existed before it.
        existed: Vec<bool>,
        /// The generation the write made.
        generation: u64,
    },
    /// The change at this index expected other stored bytes; nothing written.
    Stale(usize),
}

/// Sealed writes waiting for their turn (see [`commit`]).
#[derive(Debug, Default)]
pub(super) struct Writers {
    /// Held by the writer applying a group.
    turn: Mutex<()>,
    /// Writes not yet applied, in arrival order.
    queue: Mutex<Vec<Arc<Waiting>>>,
}

impl Writers {
    /// Writes waiting in the queue.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        lock(&self.queue).len()
    }
}

/// One write in the queue, with its own copy of its changes.
#[derive(Debug)]
struct Waiting {
    changes: Vec<Owned>,
    /// The anchor to set, if this write sets it.
    anchor: Option<String>,
    min_generation: u64,
    /// Filled by the writer that applied it.
    done: Mutex<Option<Result<Commit, SealError>>>,
}

#[derive(Debug)]
struct Owned {
    table: Table,
    key: Vec<u8>,
    new: Option<Vec<u8>>,
    expect: Option<Option<Vec<u8>>>,
}

/// Applies `changes` with the digests and generation they imply, atomically,
/// and sets the state's anchor to `anchor` if given. The generation becomes
/// at least `min_generation`.
///
/// Every sealed write replaces the one state record, so writers of this
/// process take turns instead of racing (a race loses all but one attempt).
/// Each write queues itself, then waits for the turn; the writer that gets
/// it applies every queued write, its own and those of the writers waiting
/// behind it, as one batch: the backend's cost per atomic batch (sled rolls
/// its log buffer for each) and the sync that follows are paid once per
/// group, not once per write. Each write in a group still stands alone: one
/// whose precondition fails is left out and reported `Stale`, and the
/// others apply. The turn ends before the sync, so writers that arrive
/// meanwhile form the next group while the disk works. The batch's own
/// precondition still catches a writer from elsewhere.
pub(super) fn commit(
    store: &dyn Store,
    writers: &Writers,
    keys: &Keys,
    changes: &[Change<'_>],
    anchor: Option<&str>,
    min_generation: u64,
    sync: Durability,
) -> Result<Commit, SealError> {
    let mine = Arc::new(Waiting {
        anchor: anchor.map(str::to_owned),
        changes: changes
            .iter()
            .map(|c| Owned {
                table: c.table,
                key: c.key.to_vec(),
                new: c.new.clone(),
                expect: c.expect.map(|e| e.map(<[u8]>::to_vec)),
            })
            .collect(),
        min_generation,
        done: Mutex::new(None),
    });
    lock(&writers.queue).push(mine.clone());
    let done = {
        let _turn = lock(&writers.turn);
        // Applied by the writer that held the turn before, or apply the
        // group now: it holds this write, since it was queued before.
        let earlier = lock(&mine.done).take();
        match earlier {
            Some(done) => done,
            None => {
                let group = std::mem::take(&mut *lock(&writers.queue));
                apply_group(store, keys, &group, &mine)
            }
        }
    }?;
    if sync == Durability::Now && matches!(done, Commit::Applied { .. }) {
        store.sync()?;
    }
    Ok(done)
}

/// Whether a [`commit`] waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Durable on return.
    Now,
    /// Applied atomically on return, durable with the next sync of the
    /// store (any durable write's, or the backend's own periodic flush).
    Later,
}

/// Applies `group` as one batch, hands every other member its outcome and
/// returns the outcome of `mine`. A failure of the batch fails every write
/// in it.
fn apply_group(
    store: &dyn Store,
    keys: &Keys,
    group: &[Arc<Waiting>],
    mine: &Arc<Waiting>,
) -> Result<Commit, SealError> {
    let outcome = MacKey::new(keys).and_then(|mac| {
        for _ in 0..MAX_ATTEMPTS {
            if let Some(done) = attempt(store, keys, &mac, group)? {
                return Ok(done);
            }
        }
        Err(SealError::Contended)
    });
    let mut own = None;
    match outcome {
        Ok(done) => {
            for (w, d) in group.iter().zip(done) {
                if Arc::ptr_eq(w, mine) {
                    own = Some(Ok(d));
                } else {
                    *lock(&w.done) = Some(Ok(d));
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            for w in group.iter().filter(|w| !Arc::ptr_eq(w, mine)) {
                *lock(&w.done) = Some(Err(SealError::Backend(StoreError::Backend(format!(
                    "the write grouped with this one failed: {message}"
                )))));
            }
            own = Some(Err(e));
        }
    }
    own.unwrap_or(Err(SealError::Contended))
}

/// One read-compute-apply round for a group; `None` when another write got
/// in between.
fn attempt(
    store: &dyn Store,
    keys: &Keys,
    mac: &MacKey,
    group: &[Arc<Waiting>],
) -> Result<Option<Vec<Commit>>, SealError> {
    let state_raw = store
        .get(Table::INTEGRITY, STATE_KEY)?
        .ok_or(SealError::IntegrityMissing)?;
    let mut state = State::open(keys, &state_raw)?;
    // What the store held for each record the group touches (read once;
    // the batch is conditioned on it), and what the group has made of it
    // so far.
    let mut stored: BTreeMap<(Table, &[u8]), Option<Vec<u8>>> = BTreeMap::new();
    let mut now: BTreeMap<(Table, &[u8]), Option<&[u8]>> = BTreeMap::new();
    let mut results = Vec::with_capacity(group.len());
    let mut applied_any = false;
    let mut min_generation = 0;
    for w in group {
        // First check every precondition of this write, against the
        // group's view including its own earlier changes.
        let mut olds: Vec<Option<Vec<u8>>> = Vec::with_capacity(w.changes.len());
        let mut stale = None;
        for (i, c) in w.changes.iter().enumerate() {
            let at = (c.table, c.key.as_slice());
            let earlier = w
                .changes
                .get(..i)
                .unwrap_or_default()
                .iter()
                .rposition(|e| e.table == c.table && e.key == c.key);
            let old = match earlier {
                Some(j) => w.changes.get(j).and_then(|e| e.new.clone()),
                None => match now.get(&at) {
                    Some(v) => v.map(<[u8]>::to_vec),
                    None => {
                        let v = store.get(c.table, &c.key)?;
                        stored.insert(at, v.clone());
                        v
                    }
                },
            };
            if let Some(expected) = &c.expect
                && old.as_deref() != expected.as_deref()
            {
                stale = Some(i);
                break;
            }
            olds.push(old);
        }
        if let Some(i) = stale {
            results.push(Commit::Stale(i));
            continue;
        }
        for (c, old) in w.changes.iter().zip(&olds) {
            state.change(mac, c.table, &c.key, old.as_deref(), c.new.as_deref());
            now.insert((c.table, c.key.as_slice()), c.new.as_deref());
        }
        if let Some(anchor) = &w.anchor {
            state.anchor = Some(anchor.clone());
        }
        applied_any = true;
        min_generation = min_generation.max(w.min_generation);
        results.push(Commit::Applied {
            existed: olds.iter().map(Option::is_some).collect(),
            generation: 0,
        });
    }
    if !applied_any {
        return Ok(Some(results));
    }
    state.generation = state.generation.saturating_add(1).max(min_generation);
    let new_state = state.seal(keys)?;
    let mut expect = vec![Expect {
        table: Table::INTEGRITY,
        key: STATE_KEY,
        value: Some(&state_raw),
    }];
    expect.extend(stored.iter().map(|((table, key), value)| Expect {
        table: *table,
        key,
        value: value.as_deref(),
    }));
    let mut ops: Vec<WriteOp<'_>> = now
        .iter()
        .map(|((table, key), value)| match value {
            Some(value) => WriteOp::Put {
                table: *table,
                key,
                value,
            },
            None => WriteOp::Delete { table: *table, key },
        })
        .collect();
    ops.push(WriteOp::Put {
        table: Table::INTEGRITY,
        key: STATE_KEY,
        value: &new_state,
    });
    if store.batch_if_unsynced(&expect, &ops)?.is_err() {
        return Ok(None);
    }
    for r in &mut results {
        if let Commit::Applied { generation, .. } = r {
            *generation = state.generation;
        }
    }
    Ok(Some(results))
}

/// Serde helper: 32 bytes as a hex string.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(String::deserialize(d)?, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, reason = "tests")]

    use super::TableDigest;
    use proptest::prelude::*;

    proptest! {
        /// Removing a record's MAC undoes adding it, whatever came between,
        /// so the digest depends only on the records present.
        #[test]
        fn remove_undoes_add(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), c in any::<[u8; 32]>()) {
            let mut only_b = TableDigest::default();
            only_b.add(&b);
            let mut d = TableDigest::default();
            d.add(&a);
            d.add(&b);
            d.add(&c);
            d.remove(&a);
            d.remove(&c);
            prop_assert_eq!(d, only_b);
            // Order does not matter.
            let mut e = TableDigest::default();
            e.add(&c);
            e.add(&b);
            e.add(&a);
            e.remove(&c);
            e.remove(&a);
            prop_assert_eq!(e, only_b);
        }
    }

    #[test]
    fn the_sum_carries_and_wraps() {
        let mut d = TableDigest::default();
        d.add(&[0xff; 32]);
        d.add(&[0x01; 32]);
        let mut want = [0x01; 32];
        want[0] = 0x00;
        assert_eq!(d.sum, want);
        assert_eq!(d.count, 2);
    }
}
