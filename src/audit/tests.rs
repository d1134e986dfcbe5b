//! Tests for the hash chain: linking, verification, and tamper detection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use proptest::prelude::*;

use super::*;

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
    }
}

/// A chain of `n` records: the bytes, each record's byte range, and the head.
fn chain(n: u64) -> (Vec<u8>, Vec<std::ops::Range<usize>>, ChainHead) {
    let mut head = ChainHead::GENESIS;
    let mut bytes = Vec::new();
    let mut ranges = Vec::new();
    for i in 1..=n {
        let (line, next) = link(&head, &event(i)).unwrap();
        ranges.push(bytes.len()..bytes.len() + line.len());
        bytes.extend_from_slice(&line);
        head = next;
    }
    (bytes, ranges, head)
}

#[test]
fn first_record_links_to_zeros() {
    let (line, head) = link(&ChainHead::GENESIS, &event(1)).unwrap();
    let text = std::str::from_utf8(&line).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(text.matches('\n').count(), 1);
    let (hash_hex, body) = text.trim_end().split_once(' ').unwrap();
    assert_eq!(hash_hex, hex::encode(head.hash));
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["seq"], 1);
    assert_eq!(v["prev"], "0".repeat(64));
    assert_eq!(v["event"]["decision"], "allow");
    assert_eq!(head.seq, 1);
}

#[test]
fn chain_verifies_with_and_without_head() {
    let (bytes, _, head) = chain(5);
    let report = verify(&bytes, None).unwrap();
    assert_eq!(
        report,
        VerifyReport {
            records: 5,
            head,
            unanchored: 0
        }
    );
    assert_eq!(verify(&bytes, Some(&head)).unwrap().head, head);
}

#[test]
fn empty_log_verifies_only_against_genesis() {
    assert_eq!(verify(b"", None).unwrap().head, ChainHead::GENESIS);
    assert_eq!(verify(b"", Some(&ChainHead::GENESIS)).unwrap().records, 0);
    let (_, _, head) = chain(1);
    assert_eq!(
        verify(b"", Some(&head)).unwrap_err(),
        VerifyError::Truncated {
            expected_records: 1,
            found: 0
        }
    );
}

#[test]
fn dropping_the_last_record_is_truncation() {
    let (bytes, ranges, head) = chain(4);
    let cut = &bytes[..ranges[3].start];
    assert_eq!(verify(cut, None).unwrap().records, 3);
    assert_eq!(
        verify(cut, Some(&head)).unwrap_err(),
        VerifyError::Truncated {
            expected_records: 4,
            found: 3
        }
    );
}

#[test]
fn rewritten_tail_does_not_match_head() {
    let (bytes, ranges, head) = chain(3);
    // Rebuild record 3 with another event: a valid chain, but not the stored one.
    let two = verify(&bytes[..ranges[2].start], None).unwrap().head;
    let (line, _) = link(&two, &event(99)).unwrap();
    let mut forged = bytes[..ranges[2].start].to_vec();
    forged.extend_from_slice(&line);
    assert_eq!(
        verify(&forged, Some(&head)).unwrap_err(),
        VerifyError::HeadMismatch { record: 3 }
    );
}

#[test]
fn records_beyond_the_head_are_reported() {
    let (bytes, _, _) = chain(5);
    let (_, _, head3) = chain(3);
    assert_eq!(verify(&bytes, Some(&head3)).unwrap().unanchored, 2);
}

#[test]
fn reordered_records_break_the_sequence() {
    let (bytes, ranges, _) = chain(3);
    let mut swapped = bytes[ranges[0].clone()].to_vec();
    swapped.extend_from_slice(&bytes[ranges[2].clone()]);
    swapped.extend_from_slice(&bytes[ranges[1].clone()]);
    assert_eq!(
        verify(&swapped, None).unwrap_err(),
        VerifyError::BadSequence { record: 2 }
    );
}

#[test]
fn removed_middle_record_breaks_the_chain() {
    let (bytes, ranges, _) = chain(3);
    let mut cut = bytes[ranges[0].clone()].to_vec();
    cut.extend_from_slice(&bytes[ranges[2].clone()]);
    assert_eq!(
        verify(&cut, None).unwrap_err(),
        VerifyError::BadSequence { record: 2 }
    );
}

#[test]
fn relinked_record_with_wrong_prev_is_a_broken_link() {
    // A self-consistent record 2 whose prev is not record 1's hash.
    let (one, _, _) = chain(1);
    let bogus = ChainHead {
        seq: 1,
        hash: [7; 32],
    };
    let (line, _) = link(&bogus, &event(2)).unwrap();
    let mut bytes = one;
    bytes.extend_from_slice(&line);
    assert_eq!(
        verify(&bytes, None).unwrap_err(),
        VerifyError::BrokenLink { record: 2 }
    );
}

#[test]
fn uppercase_hash_is_detected() {
    let (mut bytes, _, _) = chain(1);
    let pos = bytes[..64].iter().position(u8::is_ascii_lowercase).unwrap();
    bytes[pos] = bytes[pos].to_ascii_uppercase();
    assert_eq!(
        verify(&bytes, None).unwrap_err(),
        VerifyError::BadHash { record: 1 }
    );
}

#[test]
fn chain_head_serializes_as_hex() {
    let (_, _, head) = chain(2);
    let json = serde_json::to_string(&head).unwrap();
    assert_eq!(
        json,
        format!("{{\"seq\":2,\"hash\":\"{}\"}}", hex::encode(head.hash))
    );
    assert_eq!(serde_json::from_str::<ChainHead>(&json).unwrap(), head);
}

#[test]
fn parse_line_round_trips_the_event() {
    let (line, head) = link(&ChainHead::GENESIS, &event(7)).unwrap();
    let (hash, _, record) = parse_line(&line[..line.len() - 1], 1).unwrap();
    assert_eq!(hash, head.hash);
    assert_eq!(record.event, event(7));
    assert_eq!(record.seq, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Changing any one byte anywhere is detected and names the record that
    /// holds the byte.
    #[test]
    fn any_flipped_byte_names_its_record(pos in 0usize..10_000, mask in 1u8..=255) {
        let (mut bytes, ranges, head) = chain(4);
        let pos = pos % bytes.len();
        bytes[pos] ^= mask;
        let record = ranges.iter().position(|r| r.contains(&pos)).unwrap() as u64 + 1;
        let err = verify(&bytes, Some(&head)).unwrap_err();
        prop_assert_eq!(err.record(), Some(record), "{:?}", err);
    }

    /// Arbitrary bytes never panic the verifier.
    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = verify(&bytes, None);
    }
}
