//! Tests for the keyed chain: linking, verification, tamper detection, and
//! the rules for records written while sealed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use proptest::prelude::*;

use super::*;
use crate::secret::Secret;

fn key() -> ChainKey {
    ChainKey::new(Secret::from_slice(&[7u8; 32]))
}

fn other_key() -> ChainKey {
    ChainKey::new(Secret::from_slice(&[8u8; 32]))
}

fn event(i: u64) -> Event {
    Event {
        time: 1_700_000_000 + i,
        subject: format!("spiffe://example.org/w{i}"),
        authn: "mtls".to_string(),
        action: "entry.create".to_string(),
        resource: format!("entry:{i}"),
        decision: Verdict::from(!i.is_multiple_of(3)),
        reasons: vec![
            "admin workload".to_string(),
            "line\nbreak \"quoted\"".to_string(),
        ],
        source: "tcp:127.0.0.1:5555".to_string(),
        token: None,
    }
}

/// A record a sealed server writes: an unseal attempt.
fn sealed_event(i: u64, decision: Verdict) -> Event {
    Event {
        action: "operator.unseal".to_string(),
        decision,
        ..event(i)
    }
}

/// Builds a log: the bytes, each record's byte range, and the head.
#[derive(Default)]
struct Log {
    bytes: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    head: ChainHead,
    generation: u64,
}

impl Log {
    fn push(&mut self, event: &Event, mode: Mode<'_>) -> &mut Self {
        let (line, next) = link(&self.head, event, self.generation, mode).unwrap();
        self.ranges
            .push(self.bytes.len()..self.bytes.len() + line.len());
        self.bytes.extend_from_slice(&line);
        self.head = next;
        self.generation += 1;
        self
    }

    fn keyed(&mut self, event: &Event) -> &mut Self {
        let k = key();
        self.push(
            event,
            Mode::Keyed {
                key: &k,
                sealed_records: None,
            },
        )
    }

    fn sealed(&mut self, event: &Event) -> &mut Self {
        self.push(event, Mode::Unauthenticated)
    }

    fn anchor(&mut self, sealed_records: u64) -> &mut Self {
        let k = key();
        let e = Event::by_server(1, ANCHOR_ACTION, vec!["unsealed".into()]);
        self.push(
            &e,
            Mode::Keyed {
                key: &k,
                sealed_records: Some(sealed_records),
            },
        )
    }

    /// The record bytes of `records` (1-based), concatenated.
    fn only(&self, records: &[usize]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|r| self.bytes[self.ranges[r - 1].clone()].to_vec())
            .collect()
    }
}

fn keyed_chain(n: u64) -> Log {
    let mut log = Log::default();
    for i in 1..=n {
        log.keyed(&event(i));
    }
    log
}

#[test]
fn first_record_links_to_zeros_and_is_keyed() {
    let k = key();
    let mode = Mode::Keyed {
        key: &k,
        sealed_records: None,
    };
    let (line, head) = link(&ChainHead::GENESIS, &event(1), 5, mode).unwrap();
    let text = std::str::from_utf8(&line).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(text.matches('\n').count(), 1);
    let (tag_hex, body) = text.trim_end().split_once(' ').unwrap();
    assert_eq!(tag_hex, hex::encode(head.hash));
    assert_eq!(head.hash, k.tag(body.as_bytes()));
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["seq"], 1);
    assert_eq!(v["prev"], "0".repeat(64));
    assert_eq!(v["auth"], "hmac");
    assert_eq!(v["gen"], 5);
    assert!(v.get("sealed_records").is_none());
    assert_eq!(v["event"]["decision"], "allow");
}

#[test]
fn sealed_records_are_marked_and_reported_unauthenticated() {
    let mut log = keyed_chain(2);
    log.sealed(&sealed_event(3, Verdict::Allow))
        .sealed(&sealed_event(4, Verdict::Failed));
    let v: serde_json::Value = serde_json::from_slice(&log.only(&[4])[65..]).unwrap();
    assert_eq!(v["auth"], "none");
    assert_eq!(v["event"]["decision"], "failed");
    let report = verify(&log.bytes, Some(&key()), None).unwrap();
    assert_eq!(report.records, 4);
    assert_eq!(report.authenticated, 2);
    assert_eq!(report.unauthenticated(), 2);
    assert_eq!(report.pending_unauthenticated(), 2);
    assert_eq!(
        report.sealed_runs,
        vec![SealedRun {
            first: 3,
            last: 4,
            anchored_by: None
        }]
    );
}

#[test]
fn the_re_anchor_states_the_run_and_closes_it() {
    let mut log = keyed_chain(1);
    log.sealed(&sealed_event(2, Verdict::Deny))
        .sealed(&sealed_event(3, Verdict::Allow))
        .anchor(2)
        .keyed(&event(5));
    let v: serde_json::Value = serde_json::from_slice(&log.only(&[4])[65..]).unwrap();
    assert_eq!(v["sealed_records"], 2);
    assert_eq!(v["event"]["action"], ANCHOR_ACTION);
    let report = verify(&log.bytes, Some(&key()), Some(&log.head)).unwrap();
    assert_eq!(report.authenticated, 3);
    assert_eq!(report.pending_unauthenticated(), 0);
    assert_eq!(
        report.sealed_runs,
        vec![SealedRun {
            first: 2,
            last: 3,
            anchored_by: Some(4)
        }]
    );
    assert_eq!(report.generation, 4);
}

#[test]
fn a_re_anchor_with_the_wrong_count_is_refused() {
    let mut log = keyed_chain(1);
    log.sealed(&sealed_event(2, Verdict::Deny)).anchor(3);
    assert_eq!(
        verify(&log.bytes, Some(&key()), None).unwrap_err(),
        VerifyError::AnchorMismatch {
            record: 3,
            found: 1,
            stated: 3
        }
    );
    // A keyed record straight after sealed ones must be a re-anchor.
    let mut log = keyed_chain(1);
    log.sealed(&sealed_event(2, Verdict::Deny)).keyed(&event(3));
    assert_eq!(
        verify(&log.bytes, Some(&key()), None).unwrap_err(),
        VerifyError::AnchorMismatch {
            record: 3,
            found: 1,
            stated: 0
        }
    );
}

/// Attack: append a forged "entry.delete allow" with a valid plain link.
#[test]
fn forged_append_with_a_plain_link_is_refused() {
    let log = keyed_chain(3);
    let forged = Event {
        action: "entry.delete".into(),
        decision: Verdict::Allow,
        ..event(4)
    };
    // Marked keyed, but the forger has no key: a SHA-256 or any other tag.
    let mut as_keyed = log.bytes.clone();
    let k = other_key();
    let mode = Mode::Keyed {
        key: &k,
        sealed_records: None,
    };
    as_keyed.extend(link(&log.head, &forged, 9, mode).unwrap().0);
    assert_eq!(
        verify(&as_keyed, Some(&key()), None).unwrap_err(),
        VerifyError::BadMac { record: 4 }
    );
    // Marked as written while sealed: a sealed server never allows that.
    let mut as_sealed = log.bytes.clone();
    as_sealed.extend(
        link(&log.head, &forged, 9, Mode::Unauthenticated)
            .unwrap()
            .0,
    );
    assert_eq!(
        verify(&as_sealed, Some(&key()), None).unwrap_err(),
        VerifyError::UnauthenticatedAllow {
            record: 4,
            action: Some(crate::policy::Action::EntryDelete)
        }
    );
    assert!(
        verify(&as_sealed, None, None)
            .unwrap_err()
            .to_string()
            .contains("entry.delete was allowed")
    );
}

/// Attack: erase a run of wrong-passphrase records and re-link the rest.
#[test]
fn erased_records_are_refused_even_when_re_linked() {
    let mut log = keyed_chain(2);
    for i in 3..=6 {
        log.sealed(&sealed_event(i, Verdict::Failed));
    }
    log.anchor(4).keyed(&event(8));
    assert!(verify(&log.bytes, Some(&key()), Some(&log.head)).is_ok());
    // Drop records 3-6 and rebuild what follows with fixed sequence numbers
    // and links; the keyed records can only be re-tagged without the key.
    let mut forged = Log {
        bytes: log.only(&[1, 2]),
        ranges: vec![],
        head: verify(&log.only(&[1, 2]), None, None).unwrap().head,
        generation: 3,
    };
    let k = other_key();
    let anchor = Event::by_server(1, ANCHOR_ACTION, vec!["unsealed".into()]);
    forged.push(
        &anchor,
        Mode::Keyed {
            key: &k,
            sealed_records: Some(0),
        },
    );
    assert_eq!(
        verify(&forged.bytes, Some(&key()), None).unwrap_err(),
        VerifyError::BadMac { record: 3 }
    );
    // Cut without re-linking: the numbering breaks.
    let cut = log.only(&[1, 2, 7, 8]);
    assert_eq!(
        verify(&cut, Some(&key()), None).unwrap_err(),
        VerifyError::BadSequence { record: 3 }
    );
}

#[test]
fn another_stores_key_does_not_verify() {
    let log = keyed_chain(2);
    assert_eq!(
        verify(&log.bytes, Some(&other_key()), None).unwrap_err(),
        VerifyError::BadMac { record: 1 }
    );
    let without = verify(&log.bytes, None, None).unwrap();
    assert_eq!((without.authenticated, without.keyed_unchecked), (0, 2));
}

#[test]
fn generation_going_backwards_is_refused() {
    let mut log = keyed_chain(2);
    log.generation = 0;
    log.keyed(&event(3));
    assert_eq!(
        verify(&log.bytes, Some(&key()), None).unwrap_err(),
        VerifyError::GenerationBackwards { record: 3 }
    );
}

#[test]
fn the_writer_rule_for_sealed_records() {
    assert!(allowed_unauthenticated(&sealed_event(1, Verdict::Allow)));
    assert!(allowed_unauthenticated(&event(3))); // a denial
    assert!(!allowed_unauthenticated(&event(1))); // entry.create allowed
    let unknown = Event {
        action: "no.such".into(),
        decision: Verdict::Allow,
        ..event(1)
    };
    assert!(!allowed_unauthenticated(&unknown));
    // An encoded event carries the same rule.
    for e in [sealed_event(1, Verdict::Allow), event(3), event(1), unknown] {
        let encoded = EncodedEvent::new(&e).unwrap();
        assert_eq!(
            encoded.allowed_unauthenticated(),
            allowed_unauthenticated(&e)
        );
    }
}

/// A record linked from an event encoded ahead of time is the record linked
/// from the event, byte for byte, keyed or not, with a token or without.
#[test]
fn an_encoded_event_links_to_the_same_record() {
    let key = key();
    let mut with_token = event(2);
    with_token.token = Some(std::sync::Arc::new(IssuedToken {
        jti: "0123456789abcdef0123456789abcdef".into(),
        sha256: "ab".repeat(32),
        spiffe_id: "spiffe://example.org/w".into(),
        method: "mint".into(),
        role: String::new(),
        source: "mtls".into(),
        grants: vec!["read:a/*".into()],
        issued_at: 1,
        expires_at: 2,
        audience: vec!["db".into()],
        cnf_x5t: Some("x5t".into()),
        jit_requests: vec!["r1".into()],
    }));
    let prev = ChainHead {
        seq: 41,
        hash: [9; 32],
    };
    for e in [event(1), with_token] {
        let encoded = EncodedEvent::new(&e).unwrap();
        for mode in [
            Mode::Keyed {
                key: &key,
                sealed_records: None,
            },
            Mode::Keyed {
                key: &key,
                sealed_records: Some(7),
            },
            Mode::Unauthenticated,
        ] {
            let (line, head) = link(&prev, &encoded, 3, mode).unwrap();
            assert_eq!((line.clone(), head), link(&prev, &e, 3, mode).unwrap());
            // The body is the whole record serialized as one object, its
            // fields in the stored order, the event last.
            let (auth, sealed_records) = match mode {
                Mode::Keyed { sealed_records, .. } => ("hmac", sealed_records),
                Mode::Unauthenticated => ("none", None),
            };
            let whole = WholeBody {
                seq: 42,
                prev: &"09".repeat(32),
                auth,
                generation: 3,
                sealed_records,
                event: &e,
            };
            let mut expected = serde_json::to_vec(&whole).unwrap();
            expected.push(b'\n');
            assert_eq!(line.get(65..).unwrap(), expected.as_slice());
        }
    }
}

/// A record's body as one serialized struct, for comparison.
#[derive(serde::Serialize)]
struct WholeBody<'a> {
    seq: u64,
    prev: &'a str,
    auth: &'a str,
    #[serde(rename = "gen")]
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed_records: Option<u64>,
    event: &'a Event,
}

#[test]
fn empty_log_verifies_only_against_genesis() {
    assert_eq!(verify(b"", None, None).unwrap().head, ChainHead::GENESIS);
    let report = verify(b"", None, Some(&ChainHead::GENESIS)).unwrap();
    assert_eq!(report.records, 0);
    let head = keyed_chain(1).head;
    assert_eq!(
        verify(b"", None, Some(&head)).unwrap_err(),
        VerifyError::Truncated {
            expected_records: 1,
            found: 0
        }
    );
}

#[test]
fn dropping_the_last_record_is_truncation() {
    let log = keyed_chain(4);
    let cut = &log.bytes[..log.ranges[3].start];
    assert_eq!(verify(cut, Some(&key()), None).unwrap().records, 3);
    assert_eq!(
        verify(cut, Some(&key()), Some(&log.head)).unwrap_err(),
        VerifyError::Truncated {
            expected_records: 4,
            found: 3
        }
    );
}

#[test]
fn records_beyond_the_head_are_reported() {
    let log = keyed_chain(5);
    let head3 = keyed_chain(3).head;
    assert_eq!(
        verify(&log.bytes, Some(&key()), Some(&head3))
            .unwrap()
            .unanchored,
        2
    );
}

#[test]
fn rewritten_tail_does_not_match_head() {
    let log = keyed_chain(3);
    let mut forged = Log {
        bytes: log.only(&[1, 2]),
        head: keyed_chain(2).head,
        generation: 2,
        ..Log::default()
    };
    forged.keyed(&event(99));
    assert_eq!(
        verify(&forged.bytes, Some(&key()), Some(&log.head)).unwrap_err(),
        VerifyError::HeadMismatch { record: 3 }
    );
}

#[test]
fn reordered_records_break_the_sequence() {
    let log = keyed_chain(3);
    assert_eq!(
        verify(&log.only(&[1, 3, 2]), None, None).unwrap_err(),
        VerifyError::BadSequence { record: 2 }
    );
}

#[test]
fn relinked_record_with_wrong_prev_is_a_broken_link() {
    let mut bytes = keyed_chain(1).bytes;
    let bogus = ChainHead {
        seq: 1,
        hash: [7; 32],
    };
    let (line, _) = link(
        &bogus,
        &sealed_event(2, Verdict::Deny),
        0,
        Mode::Unauthenticated,
    )
    .unwrap();
    bytes.extend_from_slice(&line);
    assert_eq!(
        verify(&bytes, None, None).unwrap_err(),
        VerifyError::BrokenLink { record: 2 }
    );
}

#[test]
fn uppercase_tag_is_malformed() {
    let mut bytes = keyed_chain(1).bytes;
    let pos = bytes[..64].iter().position(u8::is_ascii_lowercase).unwrap();
    bytes[pos] = bytes[pos].to_ascii_uppercase();
    assert_eq!(
        verify(&bytes, Some(&key()), None).unwrap_err(),
        VerifyError::Malformed { record: 1 }
    );
}

#[test]
fn chain_head_serializes_as_hex() {
    let head = keyed_chain(2).head;
    let json = serde_json::to_string(&head).unwrap();
    assert_eq!(
        json,
        format!("{{\"seq\":2,\"hash\":\"{}\"}}", hex::encode(head.hash))
    );
    assert_eq!(serde_json::from_str::<ChainHead>(&json).unwrap(), head);
}

#[test]
fn parse_line_round_trips_the_event() {
    let log = keyed_chain(1);
    let line = &log.bytes[..log.bytes.len() - 1];
    let parsed = parse_line(line, 1, Some(&key())).unwrap();
    assert_eq!(parsed.tag, log.head.hash);
    assert!(parsed.checked);
    assert_eq!(parsed.record.event, event(1));
    assert_eq!(parsed.record.seq, 1);
}

#[test]
fn the_chain_key_never_shows_in_debug() {
    let shown = format!("{:?}", key());
    assert_eq!(shown, "ChainKey(..)");
}

/// A mixed log: keyed, a sealed run, its re-anchor, keyed.
fn mixed() -> Log {
    let mut log = keyed_chain(2);
    log.sealed(&sealed_event(3, Verdict::Deny))
        .sealed(&sealed_event(4, Verdict::Failed))
        .anchor(2)
        .keyed(&event(6));
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Changing any one byte anywhere is detected and names the record that
    /// holds the byte.
    #[test]
    fn any_flipped_byte_names_its_record(pos in 0usize..10_000, mask in 1u8..=255) {
        let log = mixed();
        let mut bytes = log.bytes.clone();
        let pos = pos % bytes.len();
        bytes[pos] ^= mask;
        let record = log.ranges.iter().position(|r| r.contains(&pos)).unwrap() as u64 + 1;
        let err = verify(&bytes, Some(&key()), Some(&log.head)).unwrap_err();
        prop_assert_eq!(err.record(), Some(record), "{:?}", err);
    }

    /// Arbitrary bytes never panic the verifier.
    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = verify(&bytes, Some(&key()), None);
    }
}

#[test]
fn a_log_from_before_the_keyed_chain_is_named_as_such() {
    // A record exactly as the unkeyed format wrote it.
    let body = br#"{"seq":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","event":{"time":1,"subject":"uid:0","authn":"admin_socket","action":"entry.create","resource":"entry","decision":"allow","reasons":[],"source":"unix:uid=0"}}"#;
    let mut bytes = hex::encode(super::chain::sha256(body)).into_bytes();
    bytes.push(b' ');
    bytes.extend_from_slice(body);
    bytes.push(b'\n');
    let err = verify(&bytes, Some(&key()), None).unwrap_err();
    assert_eq!(err, VerifyError::LegacyFormat { record: 1 });
    assert!(err.to_string().contains("start with a new one"), "{err}");
}
