//! Verifying a stored chain: every record's hash, sequence and link, and the
//! end of the chain against the stored head.

use serde::Deserialize;

use super::chain::{ChainHead, GENESIS_HASH, sha256};
use super::event::Event;

/// What a successful verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records.
    pub records: u64,
    /// The last record's head ([`ChainHead::GENESIS`] when empty).
    pub head: ChainHead,
    /// Records after the expected head. They verify as a chain but the head
    /// was not yet saved for them: a crash between fsync and saving the head
    /// leaves this, and none of them were acknowledged. Without a newer head
    /// they are not protected against removal or rewriting.
    pub unanchored: u64,
}

/// The first rule a stored chain breaks. `record` is 1-based: line N of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The line is not `<64 lowercase hex> <json body>` or the body is not a record.
    #[error("audit record {record}: malformed")]
    Malformed {
        /// The bad record.
        record: u64,
    },
    /// The last line has no terminating newline (a torn or altered write).
    #[error("audit record {record}: not terminated by a newline")]
    Unterminated {
        /// The bad record.
        record: u64,
    },
    /// The stored hash is not the SHA-256 of the stored body.
    #[error("audit record {record}: hash does not match its contents")]
    BadHash {
        /// The bad record.
        record: u64,
    },
    /// `seq` is not the record's position in the file.
    #[error("audit record {record}: sequence number out of order")]
    BadSequence {
        /// The bad record.
        record: u64,
    },
    /// `prev` is not the hash of the previous record.
    #[error("audit record {record}: does not link to the previous record")]
    BrokenLink {
        /// The bad record.
        record: u64,
    },
    /// The log ends before the stored head: records were removed from the end.
    #[error("audit record {}: missing; the log was truncated (expected at least {expected_records} records, found {found})", found + 1)]
    Truncated {
        /// The stored head's `seq`.
        expected_records: u64,
        /// Records present.
        found: u64,
    },
    /// The record at the stored head's position is not the one the head names.
    #[error("audit record {record}: does not match the stored chain head")]
    HeadMismatch {
        /// The stored head's `seq`.
        record: u64,
    },
}

impl VerifyError {
    /// The record the error names, when it names one.
    pub fn record(&self) -> Option<u64> {
        match *self {
            VerifyError::Malformed { record }
            | VerifyError::Unterminated { record }
            | VerifyError::BadHash { record }
            | VerifyError::BadSequence { record }
            | VerifyError::BrokenLink { record }
            | VerifyError::HeadMismatch { record } => Some(record),
            // The first record that should be there and is not.
            VerifyError::Truncated { found, .. } => Some(found.saturating_add(1)),
        }
    }
}

/// A parsed record body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1-based position in the chain.
    pub seq: u64,
    /// Hex hash of the previous record's body.
    pub prev: String,
    /// The event.
    pub event: Event,
}

/// Splits one line (without its newline) into its verified hash and the body
/// bytes, and parses the body. `record` only labels errors.
pub fn parse_line(line: &[u8], record: u64) -> Result<([u8; 32], &[u8], Record), VerifyError> {
    let malformed = VerifyError::Malformed { record };
    let (hash_hex, rest) = line.split_at_checked(64).ok_or(malformed)?;
    let body = rest.strip_prefix(b" ").ok_or(malformed)?;
    let hash = sha256(body);
    // Compare the text, not decoded bytes: "AB" and "ab" decode alike, and
    // every stored byte must be covered by a check.
    if hash_hex != hex::encode(hash).as_bytes() {
        return Err(VerifyError::BadHash { record });
    }
    let parsed: Record = serde_json::from_slice(body).map_err(|_| malformed)?;
    Ok((hash, body, parsed))
}

/// Verifies the records in `bytes` and, when `expected_head` is given, that
/// the chain reaches it. Stops at the first broken rule.
pub fn verify(
    bytes: &[u8],
    expected_head: Option<&ChainHead>,
) -> Result<VerifyReport, VerifyError> {
    let mut head = ChainHead::GENESIS;
    let mut at_expected: Option<[u8; 32]> = None;
    let mut rest = bytes;
    while !rest.is_empty() {
        let record = head.seq.saturating_add(1);
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(VerifyError::Unterminated { record });
        };
        let (line, tail) = rest.split_at(nl);
        rest = tail.get(1..).unwrap_or_default();
        let (hash, _, body) = parse_line(line, record)?;
        if body.seq != record {
            return Err(VerifyError::BadSequence { record });
        }
        if body.prev.as_bytes() != hex::encode(head.hash).as_bytes() {
            return Err(VerifyError::BrokenLink { record });
        }
        head = ChainHead { seq: record, hash };
        if expected_head.is_some_and(|h| h.seq == record) {
            at_expected = Some(hash);
        }
    }
    let unanchored = match expected_head {
        None => 0,
        Some(expected) => check_head(expected, &head, at_expected)?,
    };
    Ok(VerifyReport {
        records: head.seq,
        head,
        unanchored,
    })
}

/// Checks the chain against the stored head; returns how many records lie beyond it.
fn check_head(
    expected: &ChainHead,
    last: &ChainHead,
    at_expected: Option<[u8; 32]>,
) -> Result<u64, VerifyError> {
    if last.seq < expected.seq {
        return Err(VerifyError::Truncated {
            expected_records: expected.seq,
            found: last.seq,
        });
    }
    let found = if expected.seq == 0 {
        GENESIS_HASH
    } else {
        at_expected.unwrap_or(GENESIS_HASH)
    };
    if found != expected.hash {
        return Err(VerifyError::HeadMismatch {
            record: expected.seq,
        });
    }
    Ok(last.seq.saturating_sub(expected.seq))
}
