//! Verifying a stored chain: every record's tag, sequence and link, the
//! rules tying records written while sealed to the keyed chain, and the end
//! of the chain against the stored head.

use serde::Deserialize;

use super::chain::{Auth, ChainHead, ChainKey, GENESIS_HASH, sha256};
use super::event::{Event, Verdict};
use crate::policy::Action;

/// A run of consecutive records written while sealed (unauthenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedRun {
    /// Its first record.
    pub first: u64,
    /// Its last record.
    pub last: u64,
    /// The keyed record that re-anchored it (stating its length), if one
    /// follows yet. From then on the run cannot be changed unnoticed, but
    /// its contents were never authenticated.
    pub anchored_by: Option<u64>,
}

impl SealedRun {
    /// Number of records in the run.
    pub fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    /// Always false: a run holds at least one record.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records.
    pub records: u64,
    /// The last record's head ([`ChainHead::GENESIS`] when empty).
    pub head: ChainHead,
    /// Keyed records whose HMAC verified.
    pub authenticated: u64,
    /// Keyed records whose HMAC could not be checked (verified without the key).
    pub keyed_unchecked: u64,
    /// The records written while sealed, as runs in file order.
    pub sealed_runs: Vec<SealedRun>,
    /// The highest store write generation a keyed record carries (0 if none).
    pub generation: u64,
    /// Records after the expected head. A crash between fsync and saving the
    /// head leaves keyed ones; records written while sealed always lie here
    /// until the next unseal, because a sealed store cannot save a head.
    pub unanchored: u64,
}

impl VerifyReport {
    /// Records written while sealed, in total.
    pub fn unauthenticated(&self) -> u64 {
        self.sealed_runs.iter().map(SealedRun::len).sum()
    }

    /// Records written while sealed that no keyed record has re-anchored yet.
    pub fn pending_unauthenticated(&self) -> u64 {
        self.sealed_runs
            .last()
            .filter(|r| r.anchored_by.is_none())
            .map_or(0, SealedRun::len)
    }
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
    /// The record is in the unkeyed format of earlier sigil versions (no
    /// `auth` or `gen`), which cannot be authenticated: the data directory
    /// predates the keyed chain and must be replaced, not trusted.
    #[error(
        "audit record {record}: written in the unkeyed format of an earlier sigil, which cannot be authenticated; keep this data directory for reference and start with a new one"
    )]
    LegacyFormat {
        /// The record in the old format.
        record: u64,
    },
    /// The last line has no terminating newline (a torn or altered write).
    #[error("audit record {record}: not terminated by a newline")]
    Unterminated {
        /// The bad record.
        record: u64,
    },
    /// An unauthenticated record's tag is not the SHA-256 of its body.
    #[error("audit record {record}: hash does not match its contents")]
    BadHash {
        /// The bad record.
        record: u64,
    },
    /// A keyed record's tag is not the HMAC of its body under this store's
    /// chain key: it was forged or altered by someone without the key.
    #[error(
        "audit record {record}: keyed HMAC does not verify: the record was forged or altered (or written under another store's keys)"
    )]
    BadMac {
        /// The bad record.
        record: u64,
    },
    /// `seq` is not the record's position in the file.
    #[error(
        "audit record {record}: sequence number out of order (records were removed or inserted)"
    )]
    BadSequence {
        /// The bad record.
        record: u64,
    },
    /// `prev` is not the tag of the previous record.
    #[error("audit record {record}: does not link to the previous record")]
    BrokenLink {
        /// The bad record.
        record: u64,
    },
    /// An unauthenticated record says an action was allowed that a sealed
    /// server never allows: the server cannot have written it.
    #[error(
        "audit record {record}: unauthenticated record claims {} was allowed, which a sealed server never allows: it was forged",
        .action.map_or("an unknown action", Action::as_str)
    )]
    UnauthenticatedAllow {
        /// The bad record.
        record: u64,
        /// The action it names, if it is one.
        action: Option<Action>,
    },
    /// The first keyed record after records written while sealed must state
    /// how many there are (the re-anchor); this one states another number.
    #[error(
        "audit record {record}: re-anchors {stated} records written while sealed but follows {found}: records were inserted or removed"
    )]
    AnchorMismatch {
        /// The bad record.
        record: u64,
        /// Records written while sealed directly before it.
        found: u64,
        /// What it states.
        stated: u64,
    },
    /// A keyed record carries a lower store generation than an earlier one.
    #[error("audit record {record}: store generation goes backwards")]
    GenerationBackwards {
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
            | VerifyError::LegacyFormat { record }
            | VerifyError::Unterminated { record }
            | VerifyError::BadHash { record }
            | VerifyError::BadMac { record }
            | VerifyError::BadSequence { record }
            | VerifyError::BrokenLink { record }
            | VerifyError::UnauthenticatedAllow { record, .. }
            | VerifyError::AnchorMismatch { record, .. }
            | VerifyError::GenerationBackwards { record }
            | VerifyError::HeadMismatch { record } => Some(record),
            // The first record that should be there and is not.
            VerifyError::Truncated { found, .. } => Some(found.saturating_add(1)),
        }
    }
}

/// A record body of the unkeyed format sigil wrote before the keyed chain,
/// recognised only to say so instead of "malformed".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyRecord {
    #[serde(rename = "seq")]
    _seq: u64,
    #[serde(rename = "prev")]
    _prev: String,
    #[serde(rename = "event")]
    _event: Event,
}

/// A parsed record body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1-based position in the chain.
    pub seq: u64,
    /// Hex tag of the previous record.
    pub prev: String,
    /// How this record is authenticated.
    pub auth: Auth,
    /// The store's write generation when the record was written (`"gen"`).
    #[serde(rename = "gen")]
    pub generation: u64,
    /// On a re-anchor: the records written while sealed directly before it.
    #[serde(default)]
    pub sealed_records: Option<u64>,
    /// The event.
    pub event: Event,
}

/// Whether a record written without the key may say what `event` says: a
/// sealed server allows only what gets it unsealed (and probes), so an
/// unauthenticated "allow" of anything else is a forgery. The audit writer
/// refuses to write one, so a request racing a seal fails instead.
pub fn allowed_unauthenticated(event: &Event) -> bool {
    event.decision != Verdict::Allow
        || Action::from_name(&event.action).is_some_and(Action::allowed_while_sealed)
}

/// A parsed line: its tag, its body, and whether the tag was checked.
#[derive(Debug)]
pub struct Parsed {
    /// The stored tag.
    pub tag: [u8; 32],
    /// The parsed body.
    pub record: Record,
    /// False for a keyed record read without the key.
    pub checked: bool,
}

/// Splits one line (without its newline) into its tag and body, parses the
/// body and checks the tag (a keyed one only when `key` is given). `record`
/// only labels errors.
pub fn parse_line(line: &[u8], record: u64, key: Option<&ChainKey>) -> Result<Parsed, VerifyError> {
    let malformed = VerifyError::Malformed { record };
    let (tag_hex, rest) = line.split_at_checked(64).ok_or(malformed)?;
    let body = rest.strip_prefix(b" ").ok_or(malformed)?;
    // Only lowercase hex: "AB" and "ab" decode alike, and every stored byte
    // must be covered by a check.
    if !tag_hex
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed);
    }
    let mut tag = [0u8; 32];
    hex::decode_to_slice(tag_hex, &mut tag).map_err(|_| malformed)?;
    let parsed: Record = serde_json::from_slice(body).map_err(|_| {
        if serde_json::from_slice::<LegacyRecord>(body).is_ok() {
            VerifyError::LegacyFormat { record }
        } else {
            malformed
        }
    })?;
    let checked = match (parsed.auth, key) {
        (Auth::None, _) => {
            if sha256(body) != tag {
                return Err(VerifyError::BadHash { record });
            }
            true
        }
        (Auth::Hmac, Some(key)) => {
            if !key.verifies(body, &tag) {
                return Err(VerifyError::BadMac { record });
            }
            true
        }
        (Auth::Hmac, None) => false,
    };
    Ok(Parsed {
        tag,
        record: parsed,
        checked,
    })
}

/// The state of a walk along the chain.
#[derive(Debug, Default)]
struct Walk {
    head: ChainHead,
    authenticated: u64,
    keyed_unchecked: u64,
    runs: Vec<SealedRun>,
    generation: u64,
}

impl Walk {
    /// The length of the run of sealed records directly before the next one.
    fn open_run(&self) -> u64 {
        self.runs
            .last()
            .filter(|r| r.anchored_by.is_none() && r.last == self.head.seq)
            .map_or(0, SealedRun::len)
    }

    fn step(&mut self, record: u64, parsed: &Parsed) -> Result<(), VerifyError> {
        let body = &parsed.record;
        if body.seq != record {
            return Err(VerifyError::BadSequence { record });
        }
        if body.prev.as_bytes() != hex::encode(self.head.hash).as_bytes() {
            return Err(VerifyError::BrokenLink { record });
        }
        match body.auth {
            Auth::None => {
                if body.sealed_records.is_some() {
                    return Err(VerifyError::Malformed { record });
                }
                if !allowed_unauthenticated(&body.event) {
                    return Err(VerifyError::UnauthenticatedAllow {
                        record,
                        action: Action::from_name(&body.event.action),
                    });
                }
                match self.runs.last_mut() {
                    Some(run) if run.anchored_by.is_none() && run.last == self.head.seq => {
                        run.last = record;
                    }
                    _ => self.runs.push(SealedRun {
                        first: record,
                        last: record,
                        anchored_by: None,
                    }),
                }
            }
            Auth::Hmac => self.keyed(record, parsed)?,
        }
        self.head = ChainHead {
            seq: record,
            hash: parsed.tag,
        };
        Ok(())
    }

    fn keyed(&mut self, record: u64, parsed: &Parsed) -> Result<(), VerifyError> {
        let body = &parsed.record;
        let found = self.open_run();
        let stated = body.sealed_records.unwrap_or(0);
        if stated != found {
            return Err(VerifyError::AnchorMismatch {
                record,
                found,
                stated,
            });
        }
        if found > 0
            && let Some(run) = self.runs.last_mut()
        {
            run.anchored_by = Some(record);
        }
        if body.generation < self.generation {
            return Err(VerifyError::GenerationBackwards { record });
        }
        self.generation = body.generation;
        if parsed.checked {
            self.authenticated += 1;
        } else {
            self.keyed_unchecked += 1;
        }
        Ok(())
    }
}

/// Verifies the records in `bytes` and, when `expected_head` is given, that
/// the chain reaches it. Keyed records are authenticated when `key` is
/// given; without it only their links and structure are checked. Stops at
/// the first broken rule.
pub fn verify(
    bytes: &[u8],
    key: Option<&ChainKey>,
    expected_head: Option<&ChainHead>,
) -> Result<VerifyReport, VerifyError> {
    verify_visiting(bytes, key, expected_head, &mut |_| {})
}

/// [`verify`], showing `visit` every record whose tag was checked (keyed
/// records only when `key` is given), in file order, as it goes. A record
/// shown may still be followed by one that fails: act on what was shown
/// only once the whole verification has succeeded.
pub fn verify_visiting(
    bytes: &[u8],
    key: Option<&ChainKey>,
    expected_head: Option<&ChainHead>,
    visit: &mut dyn FnMut(&Parsed),
) -> Result<VerifyReport, VerifyError> {
    let mut walk = Walk::default();
    let mut at_expected: Option<[u8; 32]> = None;
    let mut rest = bytes;
    while !rest.is_empty() {
        let record = walk.head.seq.saturating_add(1);
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(VerifyError::Unterminated { record });
        };
        let (line, tail) = rest.split_at(nl);
        rest = tail.get(1..).unwrap_or_default();
        let parsed = parse_line(line, record, key)?;
        walk.step(record, &parsed)?;
        if parsed.checked {
            visit(&parsed);
        }
        if expected_head.is_some_and(|h| h.seq == record) {
            at_expected = Some(parsed.tag);
        }
    }
    let unanchored = match expected_head {
        None => 0,
        Some(expected) => check_head(expected, &walk.head, at_expected)?,
    };
    Ok(VerifyReport {
        records: walk.head.seq,
        head: walk.head,
        authenticated: walk.authenticated,
        keyed_unchecked: walk.keyed_unchecked,
        sealed_runs: walk.runs,
        generation: walk.generation,
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
