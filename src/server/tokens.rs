//! Issued sigil tokens (SPEC §3.3 `sigil login`, `sigil token`): each one
//! known by its `jti` with what it may do, so it can be looked up and
//! revoked before it expires.
//!
//! The token itself is never stored. A record keeps the SHA-256 of the
//! token, and a presented bearer token is accepted only when its digest
//! names a live record: that proves it is the token sigil signed (a token is
//! a signed JWT holding a 256-bit signature; its digest reveals nothing that
//! would forge it), costs a hash and a map lookup instead of a signature
//! check, and makes revocation take effect on the next request.
//!
//! # Where records live
//!
//! A token's record is written once, in the durable audit record of its
//! issue ([`crate::audit::IssuedToken`]): the mint or login is answered only
//! after that record is on disk, so every token handed out is known again
//! after a crash, however soon it comes. At unseal the server reads them
//! back from the audit log, which unseal verifies whole under the chain key
//! first: only authenticated records of allowed issues count, and they
//! cannot be forged or altered without the keys. Issuing therefore writes
//! nothing to the store.
//!
//! A revocation is a durable write of the revoked record to the sealed
//! store (table `tokens`), which overrides the issue's record at unseal;
//! the table also holds the records of tokens issued before issue records
//! carried them. Expired records are dropped from memory as new tokens are
//! issued; a row is dropped from the table then or at unseal, a week after
//! its token expired. One thread writes the
//! table (see [`Tokens`]).

use crate::audit::IssuedToken;
use crate::id::SpiffeId;
use crate::secret::Secret;
use crate::store::{SealError, SealedStore, SealedWrite, Table};
use crate::sync::{read, write};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

/// SHA-256 of a token.
pub type Digest = [u8; 32];

/// The digest a record is kept under.
pub fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A token's `jti`. Those sigil issues are 32 lowercase hex digits, kept as
/// the 16 bytes they spell; any other (a record from before, or a test's)
/// is kept as text. Either way it reads back exactly as it was written.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Jti {
    /// 32 lowercase hex digits, as bytes.
    Hex([u8; 16]),
    /// Anything else, as given.
    Text(Box<str>),
}

impl Jti {
    /// The `jti` written as `text`.
    pub fn new(text: &str) -> Jti {
        let lower_hex = text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut bytes = [0u8; 16];
        if lower_hex && hex::decode_to_slice(text, &mut bytes).is_ok() {
            return Jti::Hex(bytes);
        }
        Jti::Text(text.into())
    }
}

impl std::fmt::Display for Jti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Jti::Hex(bytes) => {
                let mut out = [0u8; 32];
                hex::encode_to_slice(bytes, &mut out).map_err(|_| std::fmt::Error)?;
                f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
            }
            Jti::Text(text) => f.write_str(text),
        }
    }
}

impl std::fmt::Debug for Jti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// Who a token speaks for and what it carries: all of its record but its
/// own `jti`, times and revocation. Tokens issued alike (one workload
/// minting the same scopes for the same audience, one role's logins by one
/// identity) share one [`Holder`], so a held token costs a fixed-size
/// entry of the index and no allocation of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The `sub` claim.
    pub spiffe_id: String,
    /// How it was obtained, e.g. `oidc` or `mint`.
    pub method: String,
    /// The role it was issued for (empty for a minted token).
    pub role: String,
    /// What vouched for the holder, e.g. the OIDC issuer's name or `mtls`.
    pub source: String,
    /// Its grants (`VERB:PATTERN`), the `scope` claim.
    pub grants: Vec<String>,
    /// The `aud` claim.
    pub audience: Vec<String>,
    /// For a token bound to its holder's certificate (RFC 8705): the
    /// base64url SHA-256 of that certificate (`cnf.x5t#S256`).
    pub cnf_x5t: Option<String>,
    /// The JIT requests whose grants it carries: it is in force only while
    /// every one of them is active.
    pub jit_requests: Vec<String>,
}

/// The fields of a [`Holder`], borrowed from one or from an issue's record:
/// what holders are hashed and compared by.
#[derive(PartialEq, Eq, Hash)]
struct HolderView<'a> {
    spiffe_id: &'a str,
    method: &'a str,
    role: &'a str,
    source: &'a str,
    grants: &'a [String],
    audience: &'a [String],
    cnf_x5t: Option<&'a str>,
    jit_requests: &'a [String],
}

impl Holder {
    fn view(&self) -> HolderView<'_> {
        HolderView {
            spiffe_id: &self.spiffe_id,
            method: &self.method,
            role: &self.role,
            source: &self.source,
            grants: &self.grants,
            audience: &self.audience,
            cnf_x5t: self.cnf_x5t.as_deref(),
            jit_requests: &self.jit_requests,
        }
    }

    fn of(t: &IssuedToken) -> HolderView<'_> {
        HolderView {
            spiffe_id: &t.spiffe_id,
            method: &t.method,
            role: &t.role,
            source: &t.source,
            grants: &t.grants,
            audience: &t.audience,
            cnf_x5t: t.cnf_x5t.as_deref(),
            jit_requests: &t.jit_requests,
        }
    }
}

/// What sigil remembers about a token it issued: its digest, `jti`, times
/// and revocation, and its [`Holder`] (whose fields it reads as its own).
/// The issue's audit record carries the same, as an [`IssuedToken`].
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    digest: Digest,
    jti: Jti,
    holder: Arc<Holder>,
    /// `iat`, Unix seconds.
    pub issued_at: u64,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
}

impl std::ops::Deref for TokenRecord {
    type Target = Holder;

    fn deref(&self) -> &Holder {
        &self.holder
    }
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("jti", &self.jti)
            .field("sha256", &hex::encode(self.digest))
            .field("holder", &self.holder)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// A [`TokenRecord`] as a row of the `tokens` table stores it.
#[derive(Serialize, Deserialize)]
struct Row {
    /// The `jti` claim.
    pub jti: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// The `sub` claim.
    pub spiffe_id: String,
    /// How it was obtained, e.g. `oidc`.
    pub method: String,
    /// The role it was issued for.
    pub role: String,
    /// The issuer (or other source) that vouched for the holder, e.g. the
    /// OIDC issuer's name.
    pub source: String,
    /// The grants it carries (`VERB:PATTERN`), its `scope` claim.
    pub grants: Vec<String>,
    /// `iat`, Unix seconds.
    pub issued_at: u64,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
    /// Its `aud` claim. Records from before audiences were kept had only
    /// sigil's own.
    #[serde(default = "sigil_audience")]
    pub audience: Vec<String>,
    /// For a token bound to its holder's certificate (RFC 8705): the
    /// base64url SHA-256 of that certificate (`cnf.x5t#S256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf_x5t: Option<String>,
    /// The JIT requests whose grants it carries: it is in force only while
    /// every one of them is active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jit_requests: Vec<String>,
}

impl Row {
    /// The token as its issue's record has it, and when it was revoked.
    fn into_issued(self) -> (IssuedToken, Option<u64>) {
        let issued = IssuedToken {
            jti: self.jti,
            sha256: self.sha256,
            spiffe_id: self.spiffe_id,
            method: self.method,
            role: self.role,
            source: self.source,
            grants: self.grants,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            audience: self.audience,
            cnf_x5t: self.cnf_x5t,
            jit_requests: self.jit_requests,
        };
        (issued, self.revoked_at)
    }
}

impl From<&TokenRecord> for Row {
    fn from(r: &TokenRecord) -> Self {
        let h = &*r.holder;
        Row {
            jti: r.jti.to_string(),
            sha256: r.sha256(),
            spiffe_id: h.spiffe_id.clone(),
            method: h.method.clone(),
            role: h.role.clone(),
            source: h.source.clone(),
            grants: h.grants.clone(),
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            audience: h.audience.clone(),
            cnf_x5t: h.cnf_x5t.clone(),
            jit_requests: h.jit_requests.clone(),
        }
    }
}

fn sigil_audience() -> Vec<String> {
    vec![super::login::TOKEN_AUDIENCE.to_owned()]
}

/// A new token's `jti` and the claims every sigil token starts with (`jti`,
/// `scope`); `None` when the random source failed.
pub fn first_claims(
    scopes: &[String],
) -> Option<(String, serde_json::Map<String, serde_json::Value>)> {
    let jti = new_jti()?;
    let mut claims = serde_json::Map::new();
    claims.insert("jti".into(), serde_json::Value::from(jti.as_str()));
    claims.insert("scope".into(), serde_json::Value::from(scopes.join(" ")));
    Some((jti, claims))
}

/// A fresh `jti`, 32 hex digits; `None` when the random source failed (it
/// is read for the key of [`JtiSource`], until that succeeds once).
pub fn new_jti() -> Option<String> {
    static SOURCE: std::sync::OnceLock<JtiSource> = std::sync::OnceLock::new();
    if let Some(source) = SOURCE.get() {
        return Some(source.next());
    }
    // Only a key that was read is kept: a random source that failed once
    // is asked again at the next token, not given up on for good.
    let source = JtiSource::new()?;
    Some(SOURCE.get_or_init(|| source).next())
}

/// Where `jti`s come from: a counter encrypted with AES-128 under a key
/// drawn from the system's random source. A `jti` must be unique (RFC 7519
/// §4.1.7) and, as it names the token in revocations and the audit log, it
/// should give nothing away. A block cipher is a permutation, so distinct
/// counters give distinct `jti`s: unique by construction, not by chance.
/// The key never leaves the process (it is read into a buffer cleared
/// once the cipher's round keys are made, and the cipher's `Debug` shows
/// none of them), so the outputs are unpredictable and unlinked to how
/// many tokens came before (AES is a pseudorandom permutation). A fresh
/// key per process keeps `jti`s from two processes as unlikely to meet as
/// random ones. One block of AES costs less than a system call, or a hash.
struct JtiSource {
    cipher: aes_gcm::aes::Aes128Enc,
    counter: std::sync::atomic::AtomicU64,
}

impl JtiSource {
    fn new() -> Option<Self> {
        use aes_gcm::aes::cipher::KeyInit;
        let mut key = zeroize::Zeroizing::new([0u8; 16]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), key.as_mut()).ok()?;
        let cipher = aes_gcm::aes::Aes128Enc::new_from_slice(key.as_ref()).ok()?;
        Some(Self {
            cipher,
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn next(&self) -> String {
        use aes_gcm::aes::cipher::BlockCipherEncrypt;
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut block = aes_gcm::aes::Block::from(u128::from(n).to_le_bytes());
        self.cipher.encrypt_block(&mut block);
        hex_string(block.into())
    }
}

/// `bytes` in lowercase hex. `hex::encode` builds its string a character
/// at a time; this writes the digits into a buffer and copies it once,
/// which matters on the path of every token issued.
fn hex_string<const N: usize>(bytes: [u8; N]) -> String {
    let mut out = vec![0u8; N * 2];
    // Cannot fail: the buffer is twice the input's length.
    if hex::encode_to_slice(bytes, &mut out).is_err() {
        return hex::encode(bytes);
    }
    String::from_utf8(out).unwrap_or_else(|_| hex::encode(bytes))
}

impl TokenRecord {
    /// Its `jti`.
    pub fn jti(&self) -> &Jti {
        &self.jti
    }

    /// SHA-256 of the token, hex.
    pub fn sha256(&self) -> String {
        hex_string(self.digest)
    }

    /// Whether the token is usable at `now`.
    pub fn live(&self, now: u64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    /// Whether sigil's own API is among its audiences.
    pub fn for_sigil(&self) -> bool {
        self.audience
            .iter()
            .any(|a| a == super::login::TOKEN_AUDIENCE)
    }

    /// The holder's SPIFFE ID, if the record's is valid.
    pub fn subject(&self) -> Option<SpiffeId> {
        SpiffeId::parse(&self.spiffe_id).ok()
    }
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The store refused.
    #[error(transparent)]
    Store(#[from] SealError),
    /// A stored record does not decode.
    #[error("token record {jti} is corrupt: {message}")]
    Corrupt {
        /// The record's key.
        jti: String,
        /// What failed.
        message: String,
    },
    /// The token with this `jti` is not held: unknown, or expired and
    /// swept.
    #[error("no token with jti {0} is held")]
    NotFound(String),
    /// A write of the token table failed.
    #[error("cannot write token records: {0}")]
    Write(String),
    /// The store work did not complete.
    #[error("token store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where a digest goes in the index. Digests (SHA-256) of tokens sigil
/// signed are already uniformly random, so a keyed SipHash of every key on
/// every mint, lookup and table resize would buy nothing: flooding a table
/// with colliding keys needs control over the keys inserted, and only
/// sigil's own tokens are inserted. A caller can choose the keys it looks
/// up, but a lookup probes the table as filled by those random keys, so a
/// chosen key costs no more than any other miss.
///
/// Folds the digest, eight bytes at a time, with one multiply each (the
/// multiply-rotate step of the Firefox hash): the high bits, which the
/// table's tags use, depend on every byte.
fn slot(d: &Digest) -> u64 {
    d.chunks_exact(8).fold(0u64, |h, w| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
    })
}

/// Where a holder goes in [`Holders`]. A holder's fields come from callers
/// (scopes, audiences), so they are hashed with SipHash under a key drawn
/// once per process: no caller can make holders collide on purpose.
fn holder_hash(view: &HolderView<'_>) -> u64 {
    static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(std::hash::RandomState::new).hash_one(view)
}

/// The holders of the tokens held, each once (see [`Holder`]).
#[derive(Default)]
struct Holders {
    table: HashTable<Arc<Holder>>,
    /// Size at which holders no token refers to any more are dropped, on
    /// the next new one: twice what was left by the last pruning, so the
    /// pruning's cost is spread over the holders added in between.
    prune_at: usize,
}

/// Fewest holders kept before any pruning.
const HOLDERS_KEPT: usize = 64;

impl Holders {
    /// The holder of `t`, whose [`holder_hash`] is `hash`: the one already
    /// kept, or a new one.
    fn get(&mut self, hash: u64, t: &IssuedToken) -> Arc<Holder> {
        let view = Holder::of(t);
        if let Some(h) = self.table.find(hash, |h| h.view() == view) {
            return h.clone();
        }
        if self.table.len() >= self.prune_at {
            // The table's own reference is the last one.
            self.table.retain(|h| Arc::strong_count(h) > 1);
            self.prune_at = (2 * self.table.len()).max(HOLDERS_KEPT);
        }
        let h = Arc::new(Holder {
            spiffe_id: t.spiffe_id.clone(),
            method: t.method.clone(),
            role: t.role.clone(),
            source: t.source.clone(),
            grants: t.grants.clone(),
            audience: t.audience.clone(),
            cnf_x5t: t.cnf_x5t.clone(),
            jit_requests: t.jit_requests.clone(),
        });
        self.table
            .insert_unique(hash, h.clone(), |h| holder_hash(&h.view()));
        h
    }
}

#[derive(Default)]
struct Index {
    /// Every record held, by its token's digest ([`slot`]): the one lookup
    /// of a presented token. There is no second table by `jti`: it would
    /// cost every mint another insertion at a random place in a table as
    /// large as this one, while only a revocation needs a record by
    /// anything but its token, and a revocation starts from a record whose
    /// digest it has: the presented token's own, or one a scan by holder,
    /// `jti` or grant found ([`Tokens::revoke_matching`]).
    by_digest: HashTable<TokenRecord>,
    /// The digests of the records expiring in each second, so a sweep
    /// visits only what expired rather than every record held. The tree
    /// has a key per second, not per token: an insertion finds its
    /// second among few keys and appends to that second's list, in the
    /// order tokens were issued.
    by_expiry: BTreeMap<u64, Vec<Digest>>,
    /// `(expires_at, jti)` of the records that have a row in the `tokens`
    /// table (revoked, or issued before issue records carried them): only
    /// these are deleted from the store, [`ROW_KEPT`] after they expire.
    stored: BTreeSet<(u64, String)>,
    /// The records' holders.
    holders: Holders,
}

/// How long a row of the `tokens` table outlives its token's expiry. A
/// revoked token's issue record stays in the audit log: if the row went at
/// `exp` and the clock were then set back before it, the token would load
/// again unrevoked. A week covers any clock correction short of a gross
/// misconfiguration.
const ROW_KEPT: u64 = 7 * 24 * 3600;

impl Index {
    /// Holds the record of the token with digest `d` whose issue record
    /// is `t` (the [`holder_hash`] of its holder is `hash`), revoked at
    /// `revoked_at` if it was; replaces any record of that token.
    fn insert(
        &mut self,
        d: Digest,
        t: &IssuedToken,
        hash: u64,
        revoked_at: Option<u64>,
    ) -> TokenRecord {
        let record = TokenRecord {
            digest: d,
            jti: Jti::new(&t.jti),
            holder: self.holders.get(hash, t),
            issued_at: t.issued_at,
            expires_at: t.expires_at,
            revoked_at,
        };
        let replaced = match self
            .by_digest
            .entry(slot(&d), |r| r.digest == d, |r| slot(&r.digest))
        {
            Entry::Occupied(mut held) => Some(std::mem::replace(held.get_mut(), record.clone())),
            Entry::Vacant(free) => {
                free.insert(record.clone());
                None
            }
        };
        if let Some(old) = replaced {
            self.unlist(&d, old.expires_at);
        }
        self.by_expiry.entry(record.expires_at).or_default().push(d);
        record
    }

    /// Drops `d` from the list of the records expiring at `at`.
    fn unlist(&mut self, d: &Digest, at: u64) {
        if let Some(second) = self.by_expiry.get_mut(&at) {
            second.retain(|x| x != d);
            if second.is_empty() {
                self.by_expiry.remove(&at);
            }
        }
    }

    /// The record of the token with digest `d`.
    fn get(&self, d: &Digest) -> Option<&TokenRecord> {
        self.by_digest.find(slot(d), |r| r.digest == *d)
    }

    /// Drops the record with digest `d` and its expiry entry. Looks among
    /// the records expiring that second: only for a token loaded twice,
    /// which sigil never issues.
    fn remove(&mut self, d: &Digest) {
        let Ok(entry) = self.by_digest.find_entry(slot(d), |r| r.digest == *d) else {
            return;
        };
        let (old, _) = entry.remove();
        self.unlist(d, old.expires_at);
    }

    /// Whether a record has expired at `now`.
    fn any_expired(&self, now: u64) -> bool {
        self.by_expiry
            .first_key_value()
            .is_some_and(|(at, _)| *at <= now)
    }

    /// Drops the records expired at `now`; returns the rows of the store
    /// whose token expired [`ROW_KEPT`] ago, which are dropped too.
    fn remove_expired(&mut self, now: u64) -> Vec<String> {
        let mut gone = Vec::new();
        while let Some((at, _)) = self.stored.first() {
            if at.saturating_add(ROW_KEPT) > now {
                break;
            }
            if let Some((_, jti)) = self.stored.pop_first() {
                gone.push(jti);
            }
        }
        while let Some(second) = self.by_expiry.first_entry() {
            if *second.key() > now {
                break;
            }
            for d in second.remove() {
                if let Ok(entry) = self.by_digest.find_entry(slot(&d), |r| r.digest == d) {
                    entry.remove();
                }
            }
        }
        gone
    }
}

/// Tokens issued and not yet expired. Cheap to clone.
///
/// Issuing records a token in memory only: its durable record is the audit
/// record of the issue (see the module notes). Every write of the `tokens`
/// table (revocations, and deletions of expired rows) goes through one
/// writer thread, in the order it was made, so a deletion can never
/// overtake the revocation it follows. A revocation waits until it, and
/// every write before it, is on disk.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<SealedStore>,
    index: Arc<RwLock<Index>>,
    writes: std::sync::mpsc::Sender<Write>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("live", &read(&self.index).by_digest.len())
            .finish_non_exhaustive()
    }
}

fn decode_digest(hex_digest: &str) -> Option<Digest> {
    let bytes = hex::decode(hex_digest).ok()?;
    bytes.try_into().ok()
}

type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A write of the token table, in the order the writer applies them.
enum Write {
    /// Store this version of a record durably; answer the waiter with the
    /// outcome of the batch that holds it.
    Put(TokenRecord, Done),
    /// Remove the record with this `jti`.
    Delete(String),
    /// Answer once every write before it is durable, or with the last
    /// failure since the previous flush.
    Flush(Done),
}

/// What the writer said of a write, or that it stopped.
async fn answered(
    wait: tokio::sync::oneshot::Receiver<Result<(), String>>,
) -> Result<(), TokenError> {
    match wait.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(TokenError::Write(e)),
        Err(_) => Err(TokenError::Write(WRITER_STOPPED.into())),
    }
}

const WRITER_STOPPED: &str = "the token writer has stopped";

/// Most writes applied in one batch.
const MAX_GROUP: usize = 1024;

/// The writer thread: applies queued writes in arrival order, everything
/// waiting at once as one batch of the sealed store (one integrity update),
/// synced only when a revocation or a flush in it waits for the disk, then
/// answers the waiters among them.
fn write_loop(store: Arc<SealedStore>, rx: std::sync::mpsc::Receiver<Write>) {
    // The last failure since the last flush: a flush vouches for every
    // write before it, not only for those in its own batch.
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter().take(MAX_GROUP));
        let mut encoded: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(group.len());
        let mut waiters = Vec::new();
        let mut flushes = Vec::new();
        for w in group {
            match w {
                Write::Put(r, done) => match serde_json::to_vec(&Row::from(&r)) {
                    Ok(json) => {
                        encoded.push((r.jti.to_string(), Some(json)));
                        waiters.push(done);
                    }
                    Err(e) => {
                        tracing::error!(jti = %r.jti, error = %e, "token record does not encode");
                        let message = format!("token record {} does not encode", r.jti);
                        // Its own waiter hears of it now, whatever the batch does.
                        let _ = done.send(Err(message.clone()));
                        failed = Some(message);
                    }
                },
                Write::Delete(jti) => encoded.push((jti, None)),
                Write::Flush(done) => flushes.push(done),
            }
        }
        let ops: Vec<SealedWrite<'_>> = encoded
            .iter()
            .map(|(jti, json)| match json {
                Some(json) => SealedWrite::Put {
                    table: Table::TOKENS,
                    key: jti.as_bytes(),
                    plaintext: json,
                },
                None => SealedWrite::Delete {
                    table: Table::TOKENS,
                    key: jti.as_bytes(),
                },
            })
            .collect();
        // A deletion nobody waits for is not synced on its own: the next
        // durable write of the store carries it to the disk (an expired row
        // that comes back after a crash is deleted again). A revocation or a
        // flush waits for the disk, and for every batch before it.
        let durable = !waiters.is_empty() || !flushes.is_empty();
        let result = match (ops.is_empty(), durable) {
            (true, false) => Ok(()),
            (true, true) => store.sync().map_err(|e| e.to_string()),
            (false, true) => store.batch(&ops).map_err(|e| e.to_string()),
            (false, false) => store.batch_unsynced(&ops).map_err(|e| e.to_string()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, records = ops.len(), "token records not written");
            failed = Some(e.clone());
        }
        // A waiter that gave up is not an error.
        for done in waiters {
            let _ = done.send(result.clone());
        }
        if !flushes.is_empty() {
            let since = failed.take().map_or(Ok(()), Err);
            for done in flushes {
                let _ = done.send(since.clone());
            }
        }
    }
}

/// Expired tokens are swept from memory and the store at the next issue once
/// this many are held.
const SWEEP_AT: usize = 1024;

impl Tokens {
    /// Tokens recorded in `store`.
    pub fn new(store: Arc<SealedStore>) -> Self {
        let (writes, rx) = std::sync::mpsc::channel();
        let writer = store.clone();
        // The thread ends when the last clone of this value is dropped.
        if let Err(e) = std::thread::Builder::new()
            .name("token-writer".into())
            .spawn(move || write_loop(writer, rx))
        {
            tracing::error!(error = %e, "cannot start the token writer; token writes will fail");
        }
        Self {
            store,
            index: Arc::new(RwLock::new(Index::default())),
            writes,
        }
    }

    fn queue(&self, w: Write) -> Result<(), TokenError> {
        self.writes
            .send(w)
            .map_err(|_| TokenError::Write(WRITER_STOPPED.into()))
    }

    /// Waits until every write queued before it is durable.
    pub async fn flush(&self) -> Result<(), TokenError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.queue(Write::Flush(done))?;
        answered(wait).await
    }

    /// Loads the records at unseal: `issued`, the tokens the verified audit
    /// log says were issued (in log order), overridden by the rows of the
    /// `tokens` table (revocations, and tokens issued before issue records
    /// carried them). Skips what expired by `now`, and deletes expired rows.
    /// Blocks.
    pub fn load(
        &self,
        now: u64,
        issued: impl IntoIterator<Item = Arc<IssuedToken>>,
    ) -> Result<usize, TokenError> {
        let mut index = Index::default();
        // Two issue records of one `jti` (sigil never issues one twice):
        // the later one stands. Kept for the load only.
        let mut by_jti: HashMap<String, Digest> = HashMap::new();
        let mut put = |index: &mut Index, t: &IssuedToken, revoked_at: Option<u64>| {
            let d = decode_digest(&t.sha256).ok_or_else(|| TokenError::Corrupt {
                jti: t.jti.clone(),
                message: "sha256 is not 32 bytes of hex".into(),
            })?;
            if let Some(old) = by_jti.insert(t.jti.clone(), d) {
                index.remove(&old);
            }
            index.insert(d, t, holder_hash(&Holder::of(t)), revoked_at);
            Ok::<(), TokenError>(())
        };
        // The table's rows first: a row replaces the issue record of its
        // token (a revocation), so that issue record is skipped rather than
        // loaded and then replaced.
        let mut rows = Vec::new();
        for (key, value) in self.store.scan_prefix(Table::TOKENS, b"")? {
            let jti = String::from_utf8_lossy(&key).into_owned();
            let row: Row =
                serde_json::from_slice(value.expose()).map_err(|e| TokenError::Corrupt {
                    jti: jti.clone(),
                    message: e.to_string(),
                })?;
            if row.expires_at.saturating_add(ROW_KEPT) <= now {
                self.store.delete(Table::TOKENS, &key)?;
                continue;
            }
            index.stored.insert((row.expires_at, row.jti.clone()));
            if row.expires_at > now {
                rows.push(row.into_issued());
            }
        }
        let replaced: std::collections::HashSet<&str> =
            rows.iter().map(|(t, _)| t.jti.as_str()).collect();
        for t in issued {
            if t.expires_at > now && !replaced.contains(t.jti.as_str()) {
                put(&mut index, &t, None)?;
            }
        }
        for (t, revoked_at) in &rows {
            put(&mut index, t, *revoked_at)?;
        }
        let n = index.by_digest.len();
        *write(&self.index) = index;
        Ok(n)
    }

    /// Forgets every record (at seal): nothing authenticates while sealed,
    /// and unseal loads them again.
    pub fn clear(&self) {
        *write(&self.index) = Index::default();
    }

    /// Records a token just signed, in memory: it authenticates from the
    /// moment this returns. Its durable record is the audit record of its
    /// issue, which the caller writes before handing the token out (see the
    /// module notes): the [`IssuedToken`] returned beside the record, which
    /// is `issued` with its `sha256` filled in.
    pub fn record(
        &self,
        token: &Secret,
        mut issued: IssuedToken,
        now: u64,
    ) -> Result<(TokenRecord, Arc<IssuedToken>), TokenError> {
        let d = digest(token.expose());
        issued.sha256 = hex_string(d);
        // Hashed before the lock is taken: the lock is held for the
        // lookups alone.
        let hash = holder_hash(&Holder::of(&issued));
        let mut index = write(&self.index);
        let gone = if index.by_digest.len() >= SWEEP_AT && index.any_expired(now) {
            index.remove_expired(now)
        } else {
            Vec::new()
        };
        let record = index.insert(d, &issued, hash, None);
        // Queued under the index lock, so the store sees writes in the
        // order the index made them.
        for jti in gone {
            self.queue(Write::Delete(jti))?;
        }
        drop(index);
        Ok((record, Arc::new(issued)))
    }

    /// The live record of a presented token, if it is one sigil issued and
    /// it is neither expired nor revoked at `now`.
    pub fn authenticate(&self, token: &[u8], now: u64) -> Option<TokenRecord> {
        let d = digest(token);
        let index = read(&self.index);
        let record = index.get(&d)?;
        record.live(now).then(|| record.clone())
    }

    /// Every held record that `which` picks and that is not revoked yet,
    /// in `jti` order.
    fn matching(&self, which: impl Fn(&TokenRecord) -> bool) -> Vec<TokenRecord> {
        let index = read(&self.index);
        let mut out: Vec<TokenRecord> = index
            .by_digest
            .iter()
            .filter(|r| r.revoked_at.is_none() && which(r))
            .cloned()
            .collect();
        drop(index);
        out.sort_by_cached_key(|r| r.jti.to_string());
        out
    }

    /// Revokes every held token `which` picks that is not revoked yet, at
    /// `now`, durably; their `jti`s, in order. A token that expired and
    /// was swept between the scan and its turn is skipped: there is
    /// nothing left to revoke.
    pub async fn revoke_matching(
        &self,
        which: impl Fn(&TokenRecord) -> bool,
        now: u64,
    ) -> Result<Vec<String>, TokenError> {
        let mut jtis = Vec::new();
        for record in self.matching(which) {
            match self.revoke(&record, now).await {
                Ok(_) => jtis.push(record.jti.to_string()),
                Err(TokenError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(jtis)
    }

    /// Revokes the token of `record` (one this index handed out) at `now`,
    /// durably. Revoking a revoked token keeps the first time, and writes
    /// it again: the first revocation may still be on its way to the disk,
    /// or may have failed there. [`TokenError::NotFound`] if the token is
    /// no longer held (it expired and was swept).
    pub async fn revoke(&self, record: &TokenRecord, now: u64) -> Result<TokenRecord, TokenError> {
        let (revoked, wait) = {
            let mut index = write(&self.index);
            let d = record.digest;
            let current = index
                .by_digest
                .find_mut(slot(&d), |r| r.digest == d && r.jti == record.jti)
                .ok_or_else(|| TokenError::NotFound(record.jti.to_string()))?;
            // Refused from here on.
            current.revoked_at = current.revoked_at.or(Some(now));
            let revoked = current.clone();
            // Queued after every earlier write of this record.
            let (done, wait) = tokio::sync::oneshot::channel();
            self.queue(Write::Put(revoked.clone(), done))?;
            index
                .stored
                .insert((revoked.expires_at, revoked.jti.to_string()));
            (revoked, wait)
        };
        answered(wait).await?;
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// `jti`s are 32 lowercase hex digits, never repeat, and two processes
    /// (two keys) do not produce the same sequence.
    #[test]
    fn jtis_are_distinct_hex_and_keyed() {
        let mut seen = BTreeSet::new();
        for _ in 0..10_000 {
            let jti = new_jti().unwrap();
            assert_eq!(jti.len(), 32);
            assert!(
                jti.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(seen.insert(jti));
        }
        let (a, b) = (JtiSource::new().unwrap(), JtiSource::new().unwrap());
        assert_ne!(a.next(), b.next());
        // The counter, not the key, changes between two of one source.
        assert_ne!(a.next(), a.next());
    }

    /// A `jti` reads back exactly as it was written, whether kept as
    /// bytes (sigil's own, 32 lowercase hex digits) or as text.
    #[test]
    fn a_jti_reads_back_as_written() {
        let own = new_jti().unwrap();
        assert!(matches!(Jti::new(&own), Jti::Hex(_)));
        assert_eq!(Jti::new(&own).to_string(), own);
        let upper = own.to_uppercase();
        for text in [
            upper.as_str(),
            "ja",
            "",
            &own[..31],
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert!(matches!(Jti::new(text), Jti::Text(_)), "{text}");
            assert_eq!(Jti::new(text).to_string(), text);
        }
        assert_ne!(Jti::new(&own), Jti::new(&upper));
        assert_eq!(format!("{:?}", Jti::new("ja")), "\"ja\"");
    }

    /// Tokens issued alike share one holder, a held record is a fixed-size
    /// entry, and holders no token refers to any more are dropped as new
    /// ones come: the holders kept stay within twice those in use.
    #[test]
    fn tokens_issued_alike_share_a_holder_and_unused_holders_go() {
        assert!(std::mem::size_of::<TokenRecord>() <= 96);
        let mut index = Index::default();
        let a = put(&mut index, [1; 32], &issued("ja", 50));
        let b = put(&mut index, [2; 32], &issued("jb", 60));
        assert!(Arc::ptr_eq(&a.holder, &b.holder));
        let mut other = issued("jc", 50);
        other.audience = vec!["https://db.example.org".into()];
        let c = put(&mut index, [3; 32], &other);
        assert!(!Arc::ptr_eq(&a.holder, &c.holder));
        assert_eq!(c.audience, ["https://db.example.org"]);
        assert_eq!(index.holders.table.len(), 2);
        drop((a, b, c));

        let alike = |i: u32, exp: u64| {
            let mut t = issued(&format!("j{i}"), exp);
            t.audience = vec![format!("aud-{i}")];
            t
        };
        // Distinct digests for the `i`th token.
        let nth = |i: u32| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            d[31] = 1;
            d
        };
        for i in 0..200u32 {
            put(&mut index, nth(i), &alike(i, 50));
        }
        assert_eq!(index.holders.table.len(), 202);
        index.remove_expired(50);
        assert_eq!(jtis(&index), BTreeSet::from(["jb".to_owned()]));
        for i in 1000..1100u32 {
            put(&mut index, nth(i), &alike(i, 90));
        }
        // jb's holder and the hundred new ones.
        assert_eq!(index.holders.table.len(), 101);
    }

    /// The record with `jti`, live or not (until it is swept).
    fn held(tokens: &Tokens, jti: &str) -> Option<TokenRecord> {
        let index = read(&tokens.index);
        index
            .by_digest
            .iter()
            .find(|r| r.jti.to_string() == jti)
            .cloned()
    }

    fn issued(jti: &str, expires_at: u64) -> IssuedToken {
        IssuedToken {
            jti: jti.into(),
            sha256: String::new(),
            spiffe_id: "spiffe://example.org/w".into(),
            method: "mint".into(),
            role: String::new(),
            source: "mtls".into(),
            grants: vec!["read:a".into()],
            issued_at: 0,
            expires_at,
            audience: sigil_audience(),
            cnf_x5t: None,
            jit_requests: Vec::new(),
        }
    }

    /// The issue record of `jti` for the token with digest `sha256`.
    fn issued_as(jti: &str, expires_at: u64, sha256: Digest) -> Arc<IssuedToken> {
        let mut t = issued(jti, expires_at);
        t.sha256 = hex::encode(sha256);
        Arc::new(t)
    }

    /// Holds the token with digest `d` issued as `t` in `index`.
    fn put(index: &mut Index, d: Digest, t: &IssuedToken) -> TokenRecord {
        index.insert(d, t, holder_hash(&Holder::of(t)), None)
    }

    fn jtis(index: &Index) -> BTreeSet<String> {
        index.by_digest.iter().map(|r| r.jti.to_string()).collect()
    }

    /// At unseal the records come from the issues' audit records, and a
    /// revocation's row overrides its token's: the revoked token stays
    /// refused, the other authenticates, and an expired one is left out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_takes_the_issues_records_and_the_revocations_over_them() {
        let (_dir, _raw, store) = crate::server::testing::unsealed_store();
        let tokens = Tokens::new(store.clone());
        let (a, b) = (
            Secret::from_slice(b"token a"),
            Secret::from_slice(b"token b"),
        );
        let (ra, ia) = tokens.record(&a, issued("ja", 1_000), 10).unwrap();
        let (_, ib) = tokens.record(&b, issued("jb", 1_000), 10).unwrap();
        assert_eq!(ia.sha256, hex::encode(digest(b"token a")));
        // Issued tokens authenticate at once.
        assert!(tokens.authenticate(b"token a", 20).is_some());
        let revoked = tokens.revoke(&ra, 30).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(30));
        assert!(tokens.authenticate(b"token a", 40).is_none());
        tokens.flush().await.unwrap();
        // Nothing but the revocation was written to the store.
        let rows = store.scan_prefix(Table::TOKENS, b"").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, b"ja");

        let expired = issued_as("jc", 35, [7; 32]);
        let issued = [ia, ib, expired];
        let reloaded = Tokens::new(store);
        assert_eq!(reloaded.load(40, issued).unwrap(), 2);
        // The revocation's row replaced ja's issue record: one expiry entry
        // for each record held.
        let expiring: usize = read(&reloaded.index).by_expiry.values().map(Vec::len).sum();
        assert_eq!(expiring, 2);
        assert_eq!(held(&reloaded, "ja").unwrap().revoked_at, Some(30));
        assert!(reloaded.authenticate(b"token a", 40).is_none());
        let rb = reloaded.authenticate(b"token b", 40).unwrap();
        assert_eq!(rb.jti().to_string(), "jb");
        assert_eq!(rb.grants, ["read:a"]);
        assert!(held(&reloaded, "jc").is_none());
    }

    /// A failed write is reported to the flush after it, whichever batch
    /// the flush lands in, and a revocation whose write failed is written
    /// again when it is retried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_writes_are_reported_and_a_retried_revocation_is_written() {
        let (_dir, _raw, store) = crate::server::testing::unsealed_store();
        let tokens = Tokens::new(store.clone());
        let a = Secret::from_slice(b"token a");
        let (ra, ia) = tokens.record(&a, issued("ja", 1_000), 10).unwrap();
        store.seal();
        let e = tokens.revoke(&ra, 20).await.unwrap_err();
        assert!(
            matches!(e, TokenError::Write(ref m) if m == "store is sealed"),
            "{e}"
        );
        // Refused in memory at once, though not on disk.
        assert!(tokens.authenticate(b"token a", 30).is_none());

        store
            .unseal(&Secret::from_slice(b"server test passphrase"))
            .unwrap();
        // The revocation's write failed after the last flush: not on disk.
        assert!(matches!(tokens.flush().await, Err(TokenError::Write(_))));
        tokens.flush().await.unwrap();
        assert_eq!(tokens.revoke(&ra, 40).await.unwrap().revoked_at, Some(20));
        let reloaded = Tokens::new(store);
        assert_eq!(reloaded.load(50, [ia]).unwrap(), 1);
        assert_eq!(held(&reloaded, "ja").unwrap().revoked_at, Some(20));
    }

    /// Revoking a token that expired and was swept since its record was
    /// found answers `NotFound`, and a record whose digest names another
    /// token's is not taken for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoking_a_token_no_longer_held_is_not_found() {
        let (_dir, _raw, store) = crate::server::testing::unsealed_store();
        let tokens = Tokens::new(store);
        let a = Secret::from_slice(b"token a");
        let (ra, _) = tokens.record(&a, issued("ja", 100), 10).unwrap();
        let mut other = ra.clone();
        other.jti = Jti::new("jb");
        assert!(matches!(
            tokens.revoke(&other, 20).await,
            Err(TokenError::NotFound(j)) if j == "jb"
        ));
        write(&tokens.index).remove_expired(100);
        assert!(matches!(
            tokens.revoke(&ra, 120).await,
            Err(TokenError::NotFound(j)) if j == "ja"
        ));
    }

    /// A row of the `tokens` table is the record's fields in one flat
    /// object, `revoked_at` among them, and reads back as the same record;
    /// a row from before audiences were kept has sigil's own.
    #[test]
    fn a_row_is_the_flat_record() {
        let t = issued_as("ja", 1_000, [7; 32]);
        let mut revoked = put(&mut Index::default(), [7; 32], &t);
        revoked.revoked_at = Some(30);
        let row = serde_json::to_value(Row::from(&revoked)).unwrap();
        assert_eq!(row["jti"], "ja");
        assert_eq!(row["sha256"], hex::encode([7; 32]));
        assert_eq!(row["spiffe_id"], "spiffe://example.org/w");
        assert_eq!(row["revoked_at"], 30);
        assert_eq!(row["grants"], serde_json::json!(["read:a"]));
        assert!(row.get("cnf_x5t").is_none());
        let back: Row = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(back.into_issued(), ((*t).clone(), Some(30)));
        let mut old = row;
        old.as_object_mut().unwrap().remove("audience");
        let back: Row = serde_json::from_value(old).unwrap();
        assert_eq!(back.audience, sigil_audience());
    }

    /// Two issue records of one `jti` at unseal: the later one stands, and
    /// the earlier one's token neither authenticates nor stays in the
    /// expiry list.
    #[test]
    fn a_jti_loaded_twice_keeps_its_later_record() {
        let (_dir, _raw, store) = crate::server::testing::unsealed_store();
        let tokens = Tokens::new(store);
        let issued = [
            issued_as("ja", 1_000, digest(b"token 1")),
            issued_as("jb", 1_000, digest(b"token 3")),
            issued_as("ja", 2_000, digest(b"token 2")),
        ];
        assert_eq!(tokens.load(10, issued).unwrap(), 2);
        assert!(tokens.authenticate(b"token 1", 20).is_none());
        assert_eq!(
            tokens.authenticate(b"token 2", 20).unwrap().expires_at,
            2_000
        );
        assert_eq!(
            tokens
                .authenticate(b"token 3", 20)
                .unwrap()
                .jti()
                .to_string(),
            "jb"
        );
        assert_eq!(
            read(&tokens.index).by_expiry,
            BTreeMap::from([
                (1_000, vec![digest(b"token 3")]),
                (2_000, vec![digest(b"token 2")])
            ])
        );
    }

    /// Records expiring in one second are listed in issue order and swept
    /// together.
    #[test]
    fn records_expiring_in_one_second_are_swept_together() {
        let mut index = Index::default();
        for i in 1..=3u8 {
            put(&mut index, [i; 32], &issued(&format!("j{i}"), 50));
        }
        put(&mut index, [9; 32], &issued("j9", 51));
        assert_eq!(
            index.by_expiry.get(&50),
            Some(&vec![[1; 32], [2; 32], [3; 32]])
        );
        assert!(!index.any_expired(49));
        index.remove_expired(50);
        assert_eq!(jtis(&index), BTreeSet::from(["j9".to_owned()]));
        assert!(index.get(&[9; 32]).is_some());
        assert_eq!(index.by_expiry, BTreeMap::from([(51, vec![[9; 32]])]));
    }

    #[test]
    fn a_sweep_removes_exactly_the_expired_records() {
        let mut index = Index::default();
        for (i, exp) in [(1u8, 30), (2, 10), (3, 20), (4, 40)] {
            put(&mut index, [i; 32], &issued(&format!("j{i}"), exp));
        }
        assert!(!index.any_expired(9));
        assert!(index.remove_expired(9).is_empty());
        // Only j2 has a row in the store; it goes a week after j2 expired.
        index.stored.insert((10, "j2".into()));
        assert!(index.any_expired(20));
        assert!(index.remove_expired(20).is_empty());
        assert!(!index.any_expired(29));
        assert_eq!(
            jtis(&index),
            BTreeSet::from(["j1".to_owned(), "j4".to_owned()])
        );
        assert_eq!(
            index.by_expiry,
            BTreeMap::from([(30, vec![[1; 32]]), (40, vec![[4; 32]])])
        );
        assert!(index.get(&[1; 32]).is_some());
        assert!(index.get(&[4; 32]).is_some());
        // j2's row goes a week after j2 expired, not before.
        assert!(index.remove_expired(10 + ROW_KEPT - 1).is_empty());
        assert_eq!(index.remove_expired(10 + ROW_KEPT), vec!["j2"]);
    }
}
