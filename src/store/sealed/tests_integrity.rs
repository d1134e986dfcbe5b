//! Tests of the store's integrity record: digests that catch records
//! altered, removed or added behind the server's back, and the write
//! generation that tells an older copy of the store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::store::SledStore;

fn pass() -> Secret {
    Secret::from_slice(b"operator passphrase")
}

fn open(dir: &Path) -> (Arc<dyn Store>, SealedStore) {
    let raw: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
    let sealed = SealedStore::new(raw.clone(), KdfCost::FAST_FOR_TESTS);
    (raw, sealed)
}

fn initialized() -> (tempfile::TempDir, Arc<dyn Store>, SealedStore) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, s) = open(dir.path());
    let td = TrustDomain::parse("example.org").unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    s.init(&pass(), &td, now).unwrap();
    (dir, raw, s)
}

/// A fresh sealed store over the same backing store, as after a restart.
fn restarted(raw: &Arc<dyn Store>) -> SealedStore {
    SealedStore::new(raw.clone(), KdfCost::FAST_FOR_TESTS)
}

fn tampered(result: Result<Unsealing<'_>, SealError>) -> (Table, u64, u64) {
    match result {
        Err(SealError::TableTampered {
            table,
            stored,
            found,
        }) => (table, stored, found),
        other => panic!("expected TableTampered, got {other:?}"),
    }
}

#[test]
fn an_untouched_store_passes_and_every_write_bumps_the_generation() {
    let (_dir, raw, s) = initialized();
    assert_eq!(s.generation(), 0);
    s.put(Table::ENTRIES, b"a", b"1").unwrap();
    s.create(Table::AGENTS, b"b", b"2").unwrap();
    s.compare_and_put(Table::ENTRIES, b"a", Some(b"1"), Some(b"3"))
        .unwrap();
    assert!(s.delete(Table::AGENTS, b"b").unwrap());
    s.batch(&[
        SealedWrite::Put {
            table: Table::SECRETS,
            key: b"x",
            plaintext: b"4",
        },
        SealedWrite::Delete {
            table: Table::SECRETS,
            key: b"x",
        },
        SealedWrite::Put {
            table: Table::SECRETS,
            key: b"y",
            plaintext: b"5",
        },
    ])
    .unwrap();
    assert_eq!(s.generation(), 5);
    // Refused writes change nothing.
    assert!(matches!(
        s.create(Table::ENTRIES, b"a", b"again"),
        Err(SealError::AlreadyExists)
    ));
    assert_eq!(s.generation(), 5);
    let s = restarted(&raw);
    assert_eq!(s.open_keys(&pass()).unwrap().generation(), 5);
}

/// An unsynced batch applies at once with its digests, but the generation
/// the store publishes (the one audit records carry) stays at the last one
/// known to be on disk until a durable write covers it: a crash before then
/// must not leave an audit log ahead of the store, which unseal would take
/// for a rolled-back store.
#[test]
fn an_unsynced_batch_publishes_its_generation_only_once_a_sync_covers_it() {
    let (_dir, raw, s) = initialized();
    s.put(Table::ENTRIES, b"a", b"1").unwrap();
    assert_eq!(s.generation(), 1);
    s.batch_unsynced(&[SealedWrite::Put {
        table: Table::TOKENS,
        key: b"t1",
        plaintext: b"record",
    }])
    .unwrap();
    let stored = s.get(Table::TOKENS, b"t1").unwrap().unwrap();
    assert_eq!(stored.expose(), b"record");
    assert_eq!(s.generation(), 1, "not published before it is on disk");
    s.sync().unwrap();
    assert_eq!(s.generation(), 2, "published once a sync covered it");
    s.batch_unsynced(&[SealedWrite::Delete {
        table: Table::TOKENS,
        key: b"t1",
    }])
    .unwrap();
    s.put(Table::ENTRIES, b"b", b"2").unwrap();
    assert_eq!(
        s.generation(),
        4,
        "the durable write covers the unsynced one"
    );
    // The digests include the unsynced writes: the store verifies whole.
    let s = restarted(&raw);
    assert_eq!(s.open_keys(&pass()).unwrap().generation(), 4);
}

/// Attack: bytes of a stored record flipped with the server stopped.
#[test]
fn a_flipped_record_names_its_table() {
    let (_dir, raw, s) = initialized();
    s.put(Table::ENTRIES, b"e1", b"entry one").unwrap();
    s.put(Table::AGENTS, b"a1", b"agent one").unwrap();
    let mut bytes = raw.get(Table::AGENTS, b"a1").unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    raw.put(Table::AGENTS, b"a1", &bytes).unwrap();
    let s = restarted(&raw);
    assert_eq!(tampered(s.open_keys(&pass())), (Table::AGENTS, 1, 1));
    assert!(s.status().unwrap().sealed);
    let shown = s.open_keys(&pass()).unwrap_err().to_string();
    assert!(
        shown.contains("store table agents does not match its digest"),
        "{shown}"
    );
}

/// Attack: records deleted (the effect of truncating the store).
#[test]
fn a_deleted_record_names_its_table() {
    let (_dir, raw, s) = initialized();
    for k in [b"1", b"2", b"3"] {
        s.put(Table::JOIN_TOKENS, k, b"token record").unwrap();
    }
    raw.delete(Table::JOIN_TOKENS, b"2").unwrap();
    let s = restarted(&raw);
    assert_eq!(tampered(s.open_keys(&pass())), (Table::JOIN_TOKENS, 3, 2));
}

#[test]
fn an_added_or_older_record_names_its_table() {
    let (_dir, raw, s) = initialized();
    s.put(Table::ENTRIES, b"a", b"old").unwrap();
    let old = raw.get(Table::ENTRIES, b"a").unwrap().unwrap();
    s.put(Table::ENTRIES, b"a", b"new").unwrap();
    // The older version of the record, put back: it still decrypts.
    raw.put(Table::ENTRIES, b"a", &old).unwrap();
    assert_eq!(
        tampered(restarted(&raw).open_keys(&pass())),
        (Table::ENTRIES, 1, 1)
    );
    // Once tampered, later writes do not make it match again.
    s.put(Table::ENTRIES, b"a", b"newer").unwrap();
    assert_eq!(
        tampered(restarted(&raw).open_keys(&pass())),
        (Table::ENTRIES, 1, 1)
    );

    let (_dir, raw, s) = initialized();
    s.put(Table::ENTRIES, b"a", b"one").unwrap();
    let old = raw.get(Table::ENTRIES, b"a").unwrap().unwrap();
    raw.put(Table::META, b"extra", &old).unwrap();
    assert_eq!(
        tampered(restarted(&raw).open_keys(&pass())),
        (Table::META, 0, 1)
    );
}

#[test]
fn a_deleted_integrity_record_refuses_unseal() {
    let (_dir, raw, s) = initialized();
    s.put(Table::ENTRIES, b"a", b"1").unwrap();
    raw.delete(Table::INTEGRITY, integrity::STATE_KEY).unwrap();
    assert!(matches!(
        restarted(&raw).open_keys(&pass()),
        Err(SealError::IntegrityMissing)
    ));
}

/// Attack: the whole store swapped for an older copy. Its digests match, so
/// only its lower generation tells (the server compares it with the log).
#[test]
fn an_older_copy_is_consistent_but_behind() {
    let (_dir, raw, s) = initialized();
    s.put(Table::AGENTS, b"node1", b"active").unwrap();
    let snapshot: Vec<(Table, Vec<u8>, Vec<u8>)> = Table::ALL
        .iter()
        .flat_map(|t| {
            raw.scan_prefix(*t, b"")
                .unwrap()
                .into_iter()
                .map(|(k, v)| (*t, k, v))
        })
        .collect();
    s.put(Table::AGENTS, b"node1", b"banned").unwrap();
    assert_eq!(s.generation(), 2);
    for (t, k, v) in &snapshot {
        raw.put(*t, k, v).unwrap();
    }
    let s = restarted(&raw);
    let opened = s.open_keys(&pass()).unwrap();
    assert_eq!(opened.generation(), 1);
}

#[test]
fn advancing_the_generation_survives_a_restart() {
    let (_dir, raw, s) = initialized();
    s.put(Table::ENTRIES, b"a", b"1").unwrap();
    s.seal();
    let mut opened = s.open_keys(&pass()).unwrap();
    opened.advance_generation(40, &[]).unwrap();
    assert_eq!(opened.generation(), 40);
    opened.publish();
    assert_eq!(s.generation(), 40);
    assert!(!s.status().unwrap().sealed);
    assert_eq!(restarted(&raw).open_keys(&pass()).unwrap().generation(), 40);
}

#[test]
fn opened_keys_are_not_in_use_until_published() {
    let (_dir, _raw, s) = initialized();
    s.put(Table::STATE, b"head", b"h").unwrap();
    s.seal();
    let opened = s.open_keys(&pass()).unwrap();
    assert_eq!(
        opened.get(Table::STATE, b"head").unwrap().unwrap().expose(),
        b"h"
    );
    assert!(matches!(
        s.put(Table::STATE, b"head", b"x"),
        Err(SealError::Sealed)
    ));
    drop(opened);
    assert!(s.status().unwrap().sealed);
}

#[test]
fn the_integrity_table_is_reserved() {
    let (_dir, _raw, s) = initialized();
    assert!(matches!(
        s.put(Table::INTEGRITY, b"state", b"x"),
        Err(SealError::ReservedTable(Table::INTEGRITY))
    ));
}

/// Writers on many threads never lose a digest update: afterwards the
/// store still matches its digests and every write counted.
#[test]
fn concurrent_writers_lose_no_digest_update() {
    let (_dir, raw, s) = initialized();
    let s = Arc::new(s);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..15u8 {
                    s.put(Table::ENTRIES, &[t, i], &[i]).unwrap();
                    if i % 3 == 0 {
                        s.delete(Table::ENTRIES, &[t, i]).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // One generation per applied batch: each write bumped it, alone or in
    // a group with others.
    let generation = s.generation();
    assert!((1..=80).contains(&generation), "{generation}");
    assert_eq!(s.scan_prefix(Table::ENTRIES, b"").unwrap().len(), 4 * 10);
    let again = restarted(&raw);
    assert_eq!(again.open_keys(&pass()).unwrap().generation(), generation);
}

/// Writes queued behind a writer's turn are applied together, and each
/// still stands alone: one whose precondition fails is refused, the others
/// apply.
#[test]
fn writes_queued_behind_a_turn_apply_as_one_group_each_on_its_own_terms() {
    let dir = tempfile::tempdir().unwrap();
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (resume, resume_rx) = std::sync::mpsc::channel();
    let holding = Arc::new(HoldNextBatch {
        inner: SledStore::open(dir.path()).unwrap(),
        hold: std::sync::Mutex::new(None),
    });
    let raw: Arc<dyn Store> = holding.clone();
    let s = Arc::new(SealedStore::new(raw.clone(), KdfCost::FAST_FOR_TESTS));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    s.init(&pass(), &TrustDomain::parse("example.org").unwrap(), now)
        .unwrap();
    s.create(Table::ENTRIES, b"a", b"1").unwrap();
    let before = s.generation();
    // The first writer's batch stops while it holds the turn.
    *holding.hold.lock().unwrap() = Some((reached_tx, resume_rx));
    let first = std::thread::spawn({
        let s = s.clone();
        move || s.put(Table::ENTRIES, b"first", b"f")
    });
    reached.recv_timeout(Duration::from_secs(30)).unwrap();
    let queued: Vec<_> = [
        (Table::AGENTS, &b"x"[..], false),
        (Table::ENTRIES, &b"a"[..], true),
        (Table::ENTRIES, &b"c"[..], false),
    ]
    .into_iter()
    .map(|(table, key, create)| {
        let s = s.clone();
        std::thread::spawn(move || {
            if create {
                s.create(table, key, b"2")
            } else {
                s.put(table, key, b"2")
            }
        })
    })
    .collect();
    while s.writers.queued() < 3 {
        std::thread::yield_now();
    }
    resume.send(()).unwrap();
    first.join().unwrap().unwrap();
    let outcomes: Vec<_> = queued.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(SealError::AlreadyExists)),
        "{:?}",
        outcomes[1]
    );
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    // The first batch, then the group.
    assert_eq!(s.generation(), before + 2);
    assert_eq!(s.get(Table::ENTRIES, b"a").unwrap().unwrap().expose(), b"1");
    assert_eq!(s.get(Table::ENTRIES, b"c").unwrap().unwrap().expose(), b"2");
    assert_eq!(s.get(Table::AGENTS, b"x").unwrap().unwrap().expose(), b"2");
    let again = restarted(&raw);
    assert_eq!(again.open_keys(&pass()).unwrap().generation(), before + 2);
}

/// A sled store whose next conditional batch stops until the test lets it
/// go.
struct HoldNextBatch {
    inner: SledStore,
    hold: std::sync::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl Store for HoldNextBatch {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner.put(table, key, value)
    }
    fn delete(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        self.inner.delete(table, key)
    }
    fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), crate::store::CasConflict>, StoreError> {
        self.inner.compare_and_swap(table, key, expected, new)
    }
    fn batch(&self, ops: &[WriteOp<'_>]) -> Result<(), StoreError> {
        self.inner.batch(ops)
    }
    fn batch_if(
        &self,
        expect: &[Expect<'_>],
        ops: &[WriteOp<'_>],
    ) -> Result<Result<(), crate::store::BatchConflict>, StoreError> {
        let held = self.hold.lock().unwrap().take();
        if let Some((reached, resume)) = held {
            reached.send(()).unwrap();
            resume.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        self.inner.batch_if(expect, ops)
    }
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<crate::store::Records, StoreError> {
        self.inner.scan_prefix(table, prefix)
    }
}

#[test]
fn the_anchor_is_one_authenticated_write_that_moves_the_generation_and_survives_restart() {
    let (_dir, raw, s) = initialized();
    assert_eq!(s.anchor().unwrap(), None);
    s.put(Table::STATE, b"former", b"old home").unwrap();
    let before = s.generation();
    // Setting it alone touches only the integrity record.
    let records = super::tests::raw_dump(raw.as_ref());
    s.set_anchor("first", None).unwrap();
    assert_eq!(s.anchor().unwrap().as_deref(), Some("first"));
    assert_eq!(s.generation(), before + 1);
    let after: Vec<_> = super::tests::raw_dump(raw.as_ref())
        .into_iter()
        .filter(|(t, _, _)| *t != Table::INTEGRITY)
        .collect();
    let expected: Vec<_> = records
        .into_iter()
        .filter(|(t, _, _)| *t != Table::INTEGRITY)
        .collect();
    assert_eq!(after, expected);
    // With the record it replaces, that record goes in the same write.
    s.set_anchor("second", Some((Table::STATE, b"former")))
        .unwrap();
    assert_eq!(
        s.get(Table::STATE, b"former")
            .unwrap()
            .map(|v| v.expose().to_vec()),
        None
    );
    assert_eq!(s.generation(), before + 2);
    // Sealed, it is neither read nor written.
    s.seal();
    assert!(matches!(s.anchor(), Err(SealError::Sealed)));
    assert!(matches!(s.set_anchor("x", None), Err(SealError::Sealed)));
    // After a restart the checks pass, and the unsealing store reads it.
    let again = restarted(&raw);
    let opened = again.open_keys(&pass()).unwrap();
    assert_eq!(opened.anchor(), Some("second"));
    assert_eq!(opened.generation(), before + 2);
}

#[test]
fn an_anchor_restored_from_an_older_copy_of_the_integrity_record_is_a_rollback() {
    let (_dir, raw, s) = initialized();
    s.set_anchor("old", None).unwrap();
    let old_state = raw.get(Table::INTEGRITY, b"state").unwrap().unwrap();
    let old_generation = s.generation();
    s.set_anchor("new", None).unwrap();
    // Someone with the files puts the older integrity record back: it
    // authenticates (it is a record the store wrote), so what tells it is
    // the generation, which the audit log has seen go past it.
    raw.put(Table::INTEGRITY, b"state", &old_state).unwrap();
    let again = restarted(&raw);
    let opened = again.open_keys(&pass()).unwrap();
    assert_eq!(opened.anchor(), Some("old"));
    assert_eq!(opened.generation(), old_generation);
}
