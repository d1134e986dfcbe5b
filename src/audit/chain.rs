//! Linking events into the chain: [`ChainHead`], [`ChainKey`] and [`link`].

use std::fmt;

use ring::digest::{SHA256, digest};
use ring::hmac;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::event::Event;
use crate::secret::Secret;

/// The `prev` of the first record: the hash of nothing.
pub(crate) const GENESIS_HASH: [u8; 32] = [0; 32];

/// Where the chain ends: the last record's sequence number and tag.
///
/// The server keeps a copy in its encrypted store after every commit, so a
/// log cut short (records dropped from the end) no longer matches it.
/// Serialized as `{"seq":N,"hash":"<hex>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The last record's `seq`; 0 for an empty chain.
    pub seq: u64,
    /// The last record's tag (its HMAC or SHA-256); all zeros for an empty chain.
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

/// The key that authenticates records written while unsealed.
///
/// It is derived from the store's root key (see `keyring::DerivedKey`), so
/// it exists only while the store is unsealed and is never written anywhere.
/// Whoever can edit the log file but not unseal the store cannot make a
/// record that verifies under it. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ChainKey(Secret);

impl ChainKey {
    /// Wraps key bytes derived for the audit chain.
    pub fn new(key: Secret) -> Self {
        Self(key)
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.expose())
    }

    /// HMAC-SHA-256 of `body`.
    pub(crate) fn tag(&self, body: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.hmac_key(), body);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `tag` is the HMAC of `body`, compared in constant time.
    pub(crate) fn verifies(&self, body: &[u8], tag: &[u8; 32]) -> bool {
        hmac::verify(&self.hmac_key(), body, tag).is_ok()
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// How a record is authenticated; stored in its body as `"auth"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// `"hmac"`: the tag is HMAC-SHA-256 under the [`ChainKey`]. Written
    /// while unsealed; nobody without the key can forge or alter it.
    Hmac,
    /// `"none"`: the tag is plain SHA-256. Written while sealed, when no key
    /// is in memory (status, init and unseal calls and their outcomes).
    /// Anyone who can edit the file can write such a record, so verification
    /// reports these as unauthenticated.
    None,
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

/// How [`link`] authenticates the record it makes.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// Keyed: written while unsealed.
    Keyed {
        /// The chain key.
        key: &'a ChainKey,
        /// On the first keyed record after records written while sealed (the
        /// re-anchor): how many of them precede it. `None` on every other
        /// keyed record.
        sealed_records: Option<u64>,
    },
    /// Plain SHA-256: written while sealed.
    Unauthenticated,
}

/// The body as stored, but for its last field, `event`, which [`link`]
/// appends: field order is fixed by this struct.
#[derive(Serialize)]
struct BodyHead<'a> {
    seq: u64,
    prev: &'a str,
    auth: Auth,
    #[serde(rename = "gen")]
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed_records: Option<u64>,
}

/// Room for a [`BodyHead`] as JSON: its longest form, with both counts at
/// 20 digits, is about 200 bytes.
const BODY_HEAD_ROOM: usize = 256;

/// An event encoded as the JSON its record carries, ahead of linking.
///
/// The appender encodes its event on its own thread and hands the writer
/// one buffer: the writer, which links records one at a time under the
/// chain's lock, then only copies the JSON into the record and tags it, and
/// the event's many small allocations are freed where they were made rather
/// than on the writer's thread.
pub struct EncodedEvent {
    /// The event as serde_json writes it (so valid UTF-8 JSON).
    json: Vec<u8>,
    allowed_unauthenticated: bool,
}

/// The buffer an event is encoded into to begin with: most events, a
/// token's issue with its record among them, fit, so the encoding does not
/// copy itself as its buffer grows.
const EVENT_ROOM: usize = 1024;

impl EncodedEvent {
    /// Encodes `event`.
    pub fn new(event: &Event) -> Result<Self, LinkError> {
        let mut json = Vec::with_capacity(EVENT_ROOM);
        event.write_json(&mut json)?;
        Ok(Self {
            json,
            allowed_unauthenticated: super::verify::allowed_unauthenticated(event),
        })
    }

    /// Whether the event may be written while sealed
    /// ([`super::allowed_unauthenticated`]).
    pub fn allowed_unauthenticated(&self) -> bool {
        self.allowed_unauthenticated
    }
}

impl fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedEvent")
            .field("json", &String::from_utf8_lossy(&self.json))
            .field("allowed_unauthenticated", &self.allowed_unauthenticated)
            .finish()
    }
}

mod sealed {
    /// Keeps [`super::Linkable`] to the two kinds below: what it writes
    /// goes into a tagged record as is, so only a JSON value may.
    pub trait Sealed {}
    impl Sealed for super::Event {}
    impl Sealed for super::EncodedEvent {}
}

/// Something [`link`] can put in a record's `event` field: an [`Event`],
/// or one already encoded ([`EncodedEvent`]). Both write the same bytes.
/// Sealed: nothing else may write into a record's body.
pub trait Linkable: sealed::Sealed {
    /// Appends the event's JSON to `out`.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), LinkError>;

    /// About how long that JSON is, to size the record's buffer.
    fn len_hint(&self) -> usize;
}

impl Linkable for Event {
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), LinkError> {
        serde_json::to_writer(out, self).map_err(|e| LinkError::Encode(e.to_string()))
    }

    fn len_hint(&self) -> usize {
        EVENT_ROOM
    }
}

impl Linkable for EncodedEvent {
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), LinkError> {
        out.extend_from_slice(&self.json);
        Ok(())
    }

    fn len_hint(&self) -> usize {
        self.json.len()
    }
}

/// Makes the record that follows `prev`: the full line, newline included, and
/// the new head. `generation` is the store's write generation as last made
/// durable (see `store::sealed`), which lets unseal tell a restored store.
pub fn link(
    prev: &ChainHead,
    event: &impl Linkable,
    generation: u64,
    mode: Mode<'_>,
) -> Result<(Vec<u8>, ChainHead), LinkError> {
    let seq = prev
        .seq
        .checked_add(1)
        .ok_or(LinkError::SequenceExhausted)?;
    let (auth, sealed_records) = match mode {
        Mode::Keyed { sealed_records, .. } => (Auth::Hmac, sealed_records),
        Mode::Unauthenticated => (Auth::None, None),
    };
    // The previous tag in hex, written on the stack.
    let mut prev_hex = [0u8; 64];
    hex::encode_to_slice(prev.hash, &mut prev_hex).map_err(|e| LinkError::Encode(e.to_string()))?;
    let prev_hex = std::str::from_utf8(&prev_hex).map_err(|e| LinkError::Encode(e.to_string()))?;
    let head = BodyHead {
        seq,
        prev: prev_hex,
        auth,
        generation,
        sealed_records,
    };
    // The line is `<hex tag> <body>\n`: the body is written in place after
    // room for the tag, which is filled in once the body is known.
    const TAG_HEX: usize = 64;
    let mut line = Vec::with_capacity(TAG_HEX + 1 + BODY_HEAD_ROOM + event.len_hint() + 2);
    line.resize(TAG_HEX + 1, b' ');
    // serde_json escapes control characters, so the body never contains '\n'.
    serde_json::to_writer(&mut line, &head).map_err(|e| LinkError::Encode(e.to_string()))?;
    // `{…}` becomes `{…,"event":<event>}`: the event is the body's last
    // field, as if the whole body had been serialized at once.
    if line.pop() != Some(b'}') {
        return Err(LinkError::Encode(
            "record head is not a JSON object".to_owned(),
        ));
    }
    line.extend_from_slice(b",\"event\":");
    event.write_json(&mut line)?;
    line.push(b'}');
    let short = || LinkError::Encode("record line shorter than its tag".to_owned());
    let written = line.get(TAG_HEX + 1..).ok_or_else(short)?;
    let tag = match mode {
        Mode::Keyed { key, .. } => key.tag(written),
        Mode::Unauthenticated => sha256(written),
    };
    let room = line.get_mut(..TAG_HEX).ok_or_else(short)?;
    hex::encode_to_slice(tag, room).map_err(|e| LinkError::Encode(e.to_string()))?;
    line.push(b'\n');
    Ok((line, ChainHead { seq, hash: tag }))
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
