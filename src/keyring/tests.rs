//! Tests of the key hierarchy and record envelope.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::id::TrustDomain;
use crate::secret::Secret;

fn pass() -> Secret {
    Secret::from_slice(b"correct horse battery")
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn fresh() -> (SealMeta, Keys) {
    let td = TrustDomain::parse("example.org").unwrap();
    Keys::create(&pass(), &td, now(), KdfCost::FAST_FOR_TESTS).unwrap()
}

/// One hierarchy shared by the property tests, so Argon2 runs once.
fn shared() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| fresh().1)
}

#[test]
fn create_then_open_round_trips_records() {
    let (meta, keys) = fresh();
    assert_eq!(meta.trust_domain, "example.org");
    assert_eq!(meta.created, 1_700_000_000);
    assert_eq!(meta.key_versions, vec![1]);
    let sealed = keys
        .seal_record("secrets", b"db/password", b"s3cret")
        .unwrap();
    assert_eq!(sealed[0], RECORD_FORMAT);
    assert_eq!(&sealed[1..5], &1u32.to_be_bytes());
    let reopened = Keys::open(&meta, &pass()).unwrap();
    let plain = reopened
        .open_record("secrets", b"db/password", &sealed)
        .unwrap();
    assert_eq!(plain.expose(), b"s3cret");
}

#[test]
fn record_moved_to_another_key_or_table_fails() {
    let keys = shared();
    let sealed = keys.seal_record("secrets", b"a", b"value").unwrap();
    assert_eq!(
        keys.open_record("secrets", b"b", &sealed),
        Err(KeyringError::RecordAuthenticationFailed)
    );
    assert_eq!(
        keys.open_record("entries", b"a", &sealed),
        Err(KeyringError::RecordAuthenticationFailed)
    );
}

#[test]
fn aad_is_length_prefixed() {
    let keys = shared();
    let sealed = keys.seal_record("ab", b"c", b"value").unwrap();
    assert_eq!(
        keys.open_record("a", b"bc", &sealed),
        Err(KeyringError::RecordAuthenticationFailed)
    );
}

#[test]
fn malformed_records_name_the_fault() {
    let keys = shared();
    let sealed = keys.seal_record("t", b"k", b"").unwrap();
    assert_eq!(keys.open_record("t", b"k", &sealed).unwrap().len(), 0);
    assert_eq!(
        keys.open_record("t", b"k", &sealed[..sealed.len() - 1]),
        Err(KeyringError::RecordTruncated)
    );
    assert_eq!(
        keys.open_record("t", b"k", &[]),
        Err(KeyringError::RecordTruncated)
    );
    let mut other_format = sealed.clone();
    other_format[0] = 2;
    assert_eq!(
        keys.open_record("t", b"k", &other_format),
        Err(KeyringError::UnsupportedRecordFormat(2))
    );
    let mut other_version = sealed.clone();
    other_version[1..5].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(
        keys.open_record("t", b"k", &other_version),
        Err(KeyringError::UnknownKeyVersion(7))
    );
}

#[test]
fn wrong_passphrase_is_reported_as_such() {
    let (meta, _) = fresh();
    let r = Keys::open(&meta, &Secret::from_slice(b"incorrect horse"));
    assert_eq!(r.err(), Some(KeyringError::WrongPassphrase));
}

#[test]
fn short_passphrase_refused() {
    let td = TrustDomain::parse("example.org").unwrap();
    let r = Keys::create(
        &Secret::from_slice(b"short"),
        &td,
        now(),
        KdfCost::FAST_FOR_TESTS,
    );
    assert_eq!(r.err(), Some(KeyringError::PassphraseTooShort));
}

#[test]
fn edited_metadata_fails_unseal() {
    let (meta, _) = fresh();
    let mut td = meta.clone();
    td.trust_domain = "evil.org".into();
    assert_eq!(
        Keys::open(&td, &pass()).err(),
        Some(KeyringError::MetaTampered)
    );
    let mut created = meta.clone();
    created.created += 1;
    assert_eq!(
        Keys::open(&created, &pass()).err(),
        Some(KeyringError::MetaTampered)
    );
    let mut versions = meta.clone();
    versions.key_versions = vec![5];
    versions.active_key_version = 5;
    assert_eq!(
        Keys::open(&versions, &pass()).err(),
        Some(KeyringError::MetaTampered)
    );
    let mut active = meta.clone();
    active.active_key_version = 9;
    assert_eq!(
        Keys::open(&active, &pass()).err(),
        Some(KeyringError::RingMalformed)
    );
    let mut format = meta.clone();
    format.format = 2;
    assert_eq!(
        Keys::open(&format, &pass()).err(),
        Some(KeyringError::UnsupportedMetaFormat(2))
    );
}

#[test]
fn rotation_keeps_old_records_and_seals_new_ones_under_new_version() {
    let (mut meta, mut keys) = fresh();
    let old = keys.seal_record("t", b"k", b"old").unwrap();
    assert_eq!(keys.rotate_data_key(&mut meta).unwrap(), 2);
    assert_eq!(meta.key_versions, vec![1, 2]);
    assert_eq!(meta.active_key_version, 2);
    assert_eq!(keys.key_versions(), vec![1, 2]);
    let new = keys.seal_record("t", b"k", b"new").unwrap();
    assert_eq!(&new[1..5], &2u32.to_be_bytes());
    let reopened = Keys::open(&meta, &pass()).unwrap();
    assert_eq!(reopened.active_key_version(), 2);
    assert_eq!(
        reopened.open_record("t", b"k", &old).unwrap().expose(),
        b"old"
    );
    assert_eq!(
        reopened.open_record("t", b"k", &new).unwrap().expose(),
        b"new"
    );
    // Relabelling a new record as the old version must not verify.
    let mut relabelled = new.clone();
    relabelled[1..5].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(
        reopened.open_record("t", b"k", &relabelled),
        Err(KeyringError::RecordAuthenticationFailed)
    );
}

#[test]
fn rotation_refuses_foreign_metadata_and_changes_nothing() {
    let (_, mut keys) = fresh();
    let (mut other_meta, _) = fresh();
    let before = other_meta.clone();
    assert_eq!(
        keys.rotate_data_key(&mut other_meta),
        Err(KeyringError::MetaNotForTheseKeys)
    );
    assert_eq!(other_meta, before);
    assert_eq!(keys.key_versions(), vec![1]);
}

#[test]
fn meta_encodes_and_decodes_strictly() {
    let (meta, _) = fresh();
    let bytes = meta.encode().unwrap();
    assert_eq!(SealMeta::decode(&bytes).unwrap(), meta);
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    value["extra"] = serde_json::json!(1);
    let extra = serde_json::to_vec(&value).unwrap();
    assert_eq!(SealMeta::decode(&extra), Err(KeyringError::MetaMalformed));
    assert_eq!(SealMeta::decode(b"{"), Err(KeyringError::MetaMalformed));
}

#[test]
fn debug_never_shows_key_material() {
    let (mut meta, mut keys) = fresh();
    keys.rotate_data_key(&mut meta).unwrap();
    let shown = format!("{keys:?} {keys:#?}");
    assert!(
        shown.starts_with("Keys { key_versions: [1, 2], active_key_version: 2, .. }"),
        "{shown}"
    );
}

proptest! {
    #[test]
    fn prop_round_trip(
        table in "[a-z_]{1,12}",
        key in proptest::collection::vec(any::<u8>(), 0..64),
        plain in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let keys = shared();
        let sealed = keys.seal_record(&table, &key, &plain).unwrap();
        let opened = keys.open_record(&table, &key, &sealed).unwrap();
        prop_assert_eq!(opened.expose(), &plain[..]);
    }

    #[test]
    fn prop_any_flipped_byte_fails(
        plain in proptest::collection::vec(any::<u8>(), 0..128),
        index in any::<proptest::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let keys = shared();
        let mut sealed = keys.seal_record("t", b"k", &plain).unwrap();
        let at = index.index(sealed.len());
        sealed[at] ^= mask;
        let expected = match at {
            0 => KeyringError::UnsupportedRecordFormat(RECORD_FORMAT ^ mask),
            1..=4 => KeyringError::UnknownKeyVersion(u32::from_be_bytes(
                sealed[1..5].try_into().unwrap(),
            )),
            _ => KeyringError::RecordAuthenticationFailed,
        };
        prop_assert_eq!(keys.open_record("t", b"k", &sealed), Err(expected));
    }
}
