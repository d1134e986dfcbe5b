//! Linking events into the hash chain: [`ChainHead`] and [`link`].

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::event::Event;

/// The `prev` of the first record: the hash of nothing.
pub(crate) const GENESIS_HASH: [u8; 32] = [0; 32];

/// Where the chain ends: the last record's sequence number and hash.
///
/// The server keeps a copy in its encrypted store after every commit, so a
/// log cut short (records dropped from the end) no longer matches it.
/// Serialized as `{"seq":N,"hash":"<hex>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The last record's `seq`; 0 for an empty chain.
    pub seq: u64,
    /// SHA-256 of the last record's body; all zeros for an empty chain.
    #[serde(serialize_with = "hash_to_hex", deserialize_with = "hash_from_hex")]
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty chain.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: GENESIS_HASH,
    };
}

impl Default for ChainHead {
    fn default() -> Self {
        Self::GENESIS
    }
}

fn hash_to_hex<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(hash))
}

fn hash_from_hex<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let text = String::deserialize(d)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
    Ok(out)
}

/// Why an event could not be turned into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The event could not be serialized as JSON (cannot happen for the
    /// current `Event`, but serde's API is fallible and we do not panic).
    #[error("audit event could not be encoded: {0}")]
    Encode(String),
    /// The chain has reached `u64::MAX` records.
    #[error("audit chain sequence exhausted")]
    SequenceExhausted,
}

/// The body as stored: field order is fixed by this struct.
#[derive(Serialize)]
struct BodyRef<'a> {
    seq: u64,
    prev: String,
    event: &'a Event,
}

/// Makes the record that follows `prev`: the full line, newline included, and
/// the new head.
pub fn link(prev: &ChainHead, event: &Event) -> Result<(Vec<u8>, ChainHead), LinkError> {
    let seq = prev
        .seq
        .checked_add(1)
        .ok_or(LinkError::SequenceExhausted)?;
    let body = BodyRef {
        seq,
        prev: hex::encode(prev.hash),
        event,
    };
    // serde_json escapes control characters, so the body never contains '\n'.
    let body = serde_json::to_vec(&body).map_err(|e| LinkError::Encode(e.to_string()))?;
    let hash = sha256(&body);
    let mut line = Vec::with_capacity(64 + 1 + body.len() + 1);
    line.extend_from_slice(hex::encode(hash).as_bytes());
    line.push(b' ');
    line.extend_from_slice(&body);
    line.push(b'\n');
    Ok((line, ChainHead { seq, hash }))
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
