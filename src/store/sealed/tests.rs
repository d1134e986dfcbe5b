//! Tests of the sealed store against a real sled database in a temp dir.
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
use crate::keyring::KeyringError;
use crate::store::SledStore;

const PASS: &[u8] = b"operator passphrase";

fn pass() -> Secret {
    Secret::from_slice(PASS)
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A sealed store over a fresh sled database; also returns the raw store.
fn open(dir: &Path) -> (Arc<dyn Store>, SealedStore) {
    let raw: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
    let sealed = SealedStore::new(raw.clone(), KdfCost::FAST_FOR_TESTS);
    (raw, sealed)
}

fn initialized() -> (tempfile::TempDir, Arc<dyn Store>, SealedStore) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, s) = open(dir.path());
    s.init(&pass(), &td(), now()).unwrap();
    (dir, raw, s)
}

/// Every raw record in every table.
pub(super) fn raw_dump(raw: &dyn Store) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    Table::ALL
        .iter()
        .flat_map(|t| {
            raw.scan_prefix(*t, b"")
                .unwrap()
                .into_iter()
                .map(|(k, v)| (*t, k, v))
        })
        .collect()
}

fn get(s: &SealedStore, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    s.get(table, key).unwrap().map(|v| v.expose().to_vec())
}

#[test]
fn uninitialized_store_reports_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_, s) = open(dir.path());
    let status = s.status().unwrap();
    assert_eq!(
        status,
        SealStatus {
            initialized: false,
            sealed: true,
            trust_domain: None,
            key_versions: vec![],
            active_key_version: None,
        }
    );
    assert!(matches!(s.unseal(&pass()), Err(SealError::NotInitialized)));
    assert!(matches!(
        s.get(Table::SECRETS, b"k"),
        Err(SealError::Sealed)
    ));
}

#[test]
fn init_reopen_sealed_then_unseal_finds_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_, s) = open(dir.path());
        s.init(&pass(), &td(), now()).unwrap();
        assert!(!s.status().unwrap().sealed);
        s.put(Table::SECRETS, b"db/password", b"hunter22").unwrap();
    }
    let (_, s) = open(dir.path());
    assert_eq!(
        s.status().unwrap(),
        SealStatus {
            initialized: true,
            sealed: true,
            trust_domain: Some("example.org".into()),
            key_versions: vec![1],
            active_key_version: Some(1),
        }
    );
    assert!(matches!(
        s.get(Table::SECRETS, b"db/password"),
        Err(SealError::Sealed)
    ));
    assert!(matches!(
        s.put(Table::SECRETS, b"x", b"y"),
        Err(SealError::Sealed)
    ));
    s.unseal(&pass()).unwrap();
    assert!(!s.status().unwrap().sealed);
    assert_eq!(
        get(&s, Table::SECRETS, b"db/password"),
        Some(b"hunter22".to_vec())
    );
}

#[test]
fn init_twice_and_short_passphrase_refused() {
    let (_dir, _, s) = initialized();
    assert!(matches!(
        s.init(&pass(), &td(), now()),
        Err(SealError::AlreadyInitialized)
    ));
    let dir = tempfile::tempdir().unwrap();
    let (raw, fresh) = open(dir.path());
    assert!(matches!(
        fresh.init(&Secret::from_slice(b"short"), &td(), now()),
        Err(SealError::PassphraseTooShort)
    ));
    assert!(raw_dump(raw.as_ref()).is_empty());
}

#[test]
fn wrong_passphrase_refused_and_writes_nothing() {
    let (dir, _, s) = initialized();
    s.put(Table::SECRETS, b"k", b"v").unwrap();
    drop(s);
    let (raw, s) = open(dir.path());
    let before = raw_dump(raw.as_ref());
    assert!(matches!(
        s.unseal(&Secret::from_slice(b"not the passphrase")),
        Err(SealError::WrongPassphrase)
    ));
    assert!(s.status().unwrap().sealed);
    assert_eq!(raw_dump(raw.as_ref()), before);
}

#[test]
fn seal_drops_keys() {
    let (_dir, _, s) = initialized();
    s.put(Table::SECRETS, b"k", b"v").unwrap();
    s.seal();
    assert!(s.status().unwrap().sealed);
    assert!(matches!(
        s.get(Table::SECRETS, b"k"),
        Err(SealError::Sealed)
    ));
    assert!(matches!(
        s.delete(Table::SECRETS, b"k"),
        Err(SealError::Sealed)
    ));
    assert!(matches!(s.rotate_data_key(), Err(SealError::Sealed)));
    assert!(matches!(
        s.scan_prefix(Table::SECRETS, b""),
        Err(SealError::Sealed)
    ));
}

#[test]
fn plaintext_and_passphrase_never_reach_disk() {
    let marker = b"MARKER-c0ffee-plaintext-4242";
    let dir = tempfile::tempdir().unwrap();
    {
        let (_, s) = open(dir.path());
        s.init(&pass(), &td(), now()).unwrap();
        s.put(Table::SECRETS, b"a", marker).unwrap();
        s.create(Table::SECRETS, b"b", marker).unwrap();
        s.batch(&[SealedWrite::Put {
            table: Table::ENTRIES,
            key: b"c",
            plaintext: marker,
        }])
        .unwrap();
        s.rotate_data_key().unwrap();
        s.put(Table::SECRETS, b"d", marker).unwrap();
    }
    let mut files = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&p).unwrap();
        for needle in [&marker[..], PASS] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "secret found in {}",
                p.display()
            );
        }
    }
    assert!(files > 0);
    // The data really is there: it is just encrypted.
    let (_, s) = open(dir.path());
    s.unseal(&pass()).unwrap();
    assert_eq!(get(&s, Table::SECRETS, b"d"), Some(marker.to_vec()));
}

#[test]
fn create_twice_reports_already_exists() {
    let (_dir, _, s) = initialized();
    s.create(Table::SECRETS, b"k", b"first").unwrap();
    assert!(matches!(
        s.create(Table::SECRETS, b"k", b"second"),
        Err(SealError::AlreadyExists)
    ));
    assert_eq!(get(&s, Table::SECRETS, b"k"), Some(b"first".to_vec()));
}

#[test]
fn compare_and_put_checks_plaintext() {
    let (_dir, _, s) = initialized();
    let t = Table::META;
    assert!(matches!(
        s.compare_and_put(t, b"k", Some(b"x"), Some(b"1")),
        Err(SealError::Conflict)
    ));
    s.compare_and_put(t, b"k", None, Some(b"1")).unwrap();
    assert!(matches!(
        s.compare_and_put(t, b"k", None, Some(b"2")),
        Err(SealError::Conflict)
    ));
    assert!(matches!(
        s.compare_and_put(t, b"k", Some(b"2"), Some(b"3")),
        Err(SealError::Conflict)
    ));
    s.compare_and_put(t, b"k", Some(b"1"), Some(b"2")).unwrap();
    assert_eq!(get(&s, t, b"k"), Some(b"2".to_vec()));
    s.compare_and_put(t, b"k", Some(b"2"), None).unwrap();
    assert_eq!(get(&s, t, b"k"), None);
}

#[test]
fn rotation_keeps_old_records_readable_after_reopen() {
    let (dir, raw, s) = initialized();
    s.put(Table::SECRETS, b"old", b"one").unwrap();
    assert_eq!(s.rotate_data_key().unwrap(), 2);
    s.put(Table::SECRETS, b"new", b"two").unwrap();
    let stored = raw.get(Table::SECRETS, b"new").unwrap().unwrap();
    assert_eq!(&stored[1..5], &2u32.to_be_bytes());
    drop((raw, s));
    let (_, s) = open(dir.path());
    let status = s.status().unwrap();
    assert_eq!(status.key_versions, vec![1, 2]);
    assert_eq!(status.active_key_version, Some(2));
    s.unseal(&pass()).unwrap();
    assert_eq!(get(&s, Table::SECRETS, b"old"), Some(b"one".to_vec()));
    assert_eq!(get(&s, Table::SECRETS, b"new"), Some(b"two".to_vec()));
}

#[test]
fn moved_ciphertext_is_reported_corrupt_by_location() {
    let (_dir, raw, s) = initialized();
    s.put(Table::SECRETS, b"a", b"value-a").unwrap();
    let bytes = raw.get(Table::SECRETS, b"a").unwrap().unwrap();
    raw.put(Table::SECRETS, b"b", &bytes).unwrap();
    raw.put(Table::ENTRIES, b"a", &bytes).unwrap();
    for (table, key) in [(Table::SECRETS, &b"b"[..]), (Table::ENTRIES, b"a")] {
        match s.get(table, key) {
            Err(SealError::Corrupt {
                table: t,
                key: k,
                cause,
            }) => {
                assert_eq!(t, table);
                assert_eq!(k.as_bytes(), key);
                assert_eq!(cause, KeyringError::RecordAuthenticationFailed);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    let err = s.scan_prefix(Table::SECRETS, b"").unwrap_err();
    assert_eq!(err.to_string(), "record secrets/b is corrupt");
}

#[test]
fn edited_trust_domain_in_stored_meta_fails_unseal() {
    let (dir, raw, s) = initialized();
    drop(s);
    let bytes = raw.get(Table::SYS, SEAL_META_KEY).unwrap().unwrap();
    let mut meta = SealMeta::decode(&bytes).unwrap();
    meta.trust_domain = "evil.org".into();
    raw.put(Table::SYS, SEAL_META_KEY, &meta.encode().unwrap())
        .unwrap();
    drop(raw);
    let (_, s) = open(dir.path());
    assert!(matches!(
        s.unseal(&pass()),
        Err(SealError::MetaInvalid(KeyringError::MetaTampered))
    ));
}

#[test]
fn scan_and_batch_work_on_plaintext() {
    let (_dir, _, s) = initialized();
    s.put(Table::ENTRIES, b"x/gone", b"0").unwrap();
    s.batch(&[
        SealedWrite::Put {
            table: Table::ENTRIES,
            key: b"x/2",
            plaintext: b"two",
        },
        SealedWrite::Put {
            table: Table::ENTRIES,
            key: b"x/1",
            plaintext: b"one",
        },
        SealedWrite::Delete {
            table: Table::ENTRIES,
            key: b"x/gone",
        },
        SealedWrite::Put {
            table: Table::AGENTS,
            key: b"x/3",
            plaintext: b"three",
        },
    ])
    .unwrap();
    let scanned: Vec<(Vec<u8>, Vec<u8>)> = s
        .scan_prefix(Table::ENTRIES, b"x/")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.expose().to_vec()))
        .collect();
    assert_eq!(
        scanned,
        vec![
            (b"x/1".to_vec(), b"one".to_vec()),
            (b"x/2".to_vec(), b"two".to_vec())
        ]
    );
    assert!(s.delete(Table::AGENTS, b"x/3").unwrap());
    assert!(!s.delete(Table::AGENTS, b"x/3").unwrap());
}

#[test]
fn system_table_is_reserved() {
    let (_dir, _, s) = initialized();
    assert!(matches!(
        s.put(Table::SYS, SEAL_META_KEY, b"x"),
        Err(SealError::ReservedTable(Table::SYS))
    ));
    assert!(matches!(
        s.batch(&[SealedWrite::Delete {
            table: Table::SYS,
            key: SEAL_META_KEY
        }]),
        Err(SealError::ReservedTable(Table::SYS))
    ));
    assert!(s.status().unwrap().initialized);
}

#[test]
fn debug_output_hides_keys_and_values() {
    let (_dir, _, s) = initialized();
    assert_eq!(format!("{s:?}"), "SealedStore { sealed: false, .. }");
    let op = SealedWrite::Put {
        table: Table::SECRETS,
        key: b"k",
        plaintext: b"hunter22",
    };
    let shown = format!("{op:?}");
    assert!(!shown.contains("hunter22"), "{shown}");
    assert!(shown.contains("8 bytes"), "{shown}");
}

#[test]
fn get_unless_opens_only_what_changed_and_refuses_while_sealed() {
    let (_dir, raw, s) = initialized();
    assert!(matches!(
        s.get_unless(Table::SECRETS, b"k", None).unwrap(),
        Unless::Absent
    ));
    s.put(Table::SECRETS, b"k", b"one").unwrap();
    let Unless::Changed { raw: first, value } = s.get_unless(Table::SECRETS, b"k", None).unwrap()
    else {
        panic!("a new record is opened");
    };
    assert_eq!(value.expose(), b"one");
    assert_eq!(
        raw.get(Table::SECRETS, b"k").unwrap().as_deref(),
        Some(first.as_slice()),
        "the stored bytes are handed back"
    );
    assert!(matches!(
        s.get_unless(Table::SECRETS, b"k", Some(&first)).unwrap(),
        Unless::Unchanged
    ));
    // The same plaintext written again is sealed under a fresh nonce: the
    // bytes differ, so it is opened again.
    s.put(Table::SECRETS, b"k", b"one").unwrap();
    let Unless::Changed { raw: second, .. } =
        s.get_unless(Table::SECRETS, b"k", Some(&first)).unwrap()
    else {
        panic!("a rewritten record is opened again");
    };
    assert_ne!(first, second);
    s.delete(Table::SECRETS, b"k").unwrap();
    assert!(matches!(
        s.get_unless(Table::SECRETS, b"k", Some(&second)).unwrap(),
        Unless::Absent
    ));
    s.put(Table::SECRETS, b"k", b"two").unwrap();
    let Unless::Changed { raw: third, .. } = s.get_unless(Table::SECRETS, b"k", None).unwrap()
    else {
        panic!("a new record is opened");
    };
    s.seal();
    assert!(
        matches!(
            s.get_unless(Table::SECRETS, b"k", Some(&third)),
            Err(SealError::Sealed)
        ),
        "what the caller knows never answers for a sealed store"
    );
}
