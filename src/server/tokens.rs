//! Issued sigil tokens (SPEC §3.3 `sigil login`, `sigil token`): each one
//! recorded by its `jti` with what it may do, so it can be looked up and
//! revoked before it expires.
//!
//! The token itself is never stored. A record keeps the SHA-256 of the
//! token, and a presented bearer token is accepted only when its digest
//! names a live record: that proves it is the token sigil signed (a token is
//! a signed JWT holding a 256-bit signature; its digest reveals nothing that
//! would forge it), costs a hash and a map lookup instead of a signature
//! check, and makes revocation take effect on the next request.
//!
//! Records live in the sealed store (table `tokens`) and in memory; expired
//! ones are dropped at unseal and as new tokens are issued. One thread
//! writes the table (see [`Tokens`]).

use crate::id::SpiffeId;
use crate::secret::Secret;
use crate::store::{SealError, SealedStore, SealedWrite, Table};
use crate::sync::{read, write};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
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

/// What sigil remembers about a token it issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
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

fn sigil_audience() -> Vec<String> {
    vec![super::login::TOKEN_AUDIENCE.to_owned()]
}

/// A new token's `jti` and the claims every sigil token starts with (`jti`,
/// `scope`); `None` when the random source failed.
pub fn first_claims(
    scopes: &[String],
) -> Option<(String, serde_json::Map<String, serde_json::Value>)> {
    let mut raw = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).ok()?;
    let jti = hex::encode(raw);
    let mut claims = serde_json::Map::new();
    claims.insert("jti".into(), serde_json::Value::from(jti.as_str()));
    claims.insert("scope".into(), serde_json::Value::from(scopes.join(" ")));
    Some((jti, claims))
}

impl TokenRecord {
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
    /// No record has this `jti`.
    #[error("no token has jti {0}")]
    NotFound(String),
    /// A write of the token table failed.
    #[error("cannot write token records: {0}")]
    Write(String),
    /// The store work did not complete.
    #[error("token store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Default)]
struct Index {
    by_digest: HashMap<Digest, Arc<TokenRecord>>,
    by_jti: HashMap<String, Digest>,
    /// `(expires_at, jti)` of every record, so a sweep visits only what
    /// expired rather than every record held.
    by_expiry: BTreeSet<(u64, String)>,
}

impl Index {
    fn insert(&mut self, d: Digest, record: Arc<TokenRecord>) {
        self.by_jti.insert(record.jti.clone(), d);
        self.by_expiry
            .insert((record.expires_at, record.jti.clone()));
        self.by_digest.insert(d, record);
    }

    /// Whether a record has expired at `now`.
    fn any_expired(&self, now: u64) -> bool {
        self.by_expiry.first().is_some_and(|(at, _)| *at <= now)
    }

    fn remove_expired(&mut self, now: u64) -> Vec<String> {
        let mut gone = Vec::new();
        while let Some((at, _)) = self.by_expiry.first() {
            if *at > now {
                break;
            }
            let Some((_, jti)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(d) = self.by_jti.remove(&jti) {
                self.by_digest.remove(&d);
            }
            gone.push(jti);
        }
        gone
    }
}

/// Tokens issued and not yet expired. Cheap to clone.
///
/// Every write of the token table goes through one writer thread, in the
/// order it was made, so a revocation can never be overtaken by the
/// issuing write it revokes. Issuing does not wait for its record to reach
/// the disk: the token is handed out once the mint's audit record is
/// durable (which names the `jti`, holder, scope and expiry), and the
/// record follows in the writer's next batch, moments later, applied
/// without a sync of its own: the store's next durable write carries it to
/// the disk (the audit chain head is saved after every audited change, and
/// the server flushes the writer when it seals or stops). If the server
/// dies in between, the token is unknown after the restart and is refused
/// everywhere: the loss fails closed. A revocation waits until it, and
/// every record before it, is on disk.
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
    /// Store this version of a record; answer the waiter, if any, with the
    /// outcome of the batch that holds it.
    Put(Arc<TokenRecord>, Option<Done>),
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
                Write::Put(r, done) => match serde_json::to_vec(&*r) {
                    Ok(json) => {
                        encoded.push((r.jti.clone(), Some(json)));
                        waiters.extend(done);
                    }
                    Err(e) => {
                        tracing::error!(jti = %r.jti, error = %e, "token record does not encode");
                        let message = format!("token record {} does not encode", r.jti);
                        // Its own waiter hears of it now, whatever the batch does.
                        if let Some(done) = done {
                            let _ = done.send(Err(message.clone()));
                        }
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
        // A record nobody waits for is not synced on its own (see [`Tokens`]):
        // the next durable write of the store carries it to the disk. A
        // revocation or a flush waits for the disk, and for every batch
        // before it.
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

    /// Reads every record (at unseal), deleting expired ones. Blocks.
    pub fn load(&self, now: u64) -> Result<usize, TokenError> {
        let mut index = Index::default();
        for (key, value) in self.store.scan_prefix(Table::TOKENS, b"")? {
            let jti = String::from_utf8_lossy(&key).into_owned();
            let record: TokenRecord =
                serde_json::from_slice(value.expose()).map_err(|e| TokenError::Corrupt {
                    jti: jti.clone(),
                    message: e.to_string(),
                })?;
            if record.expires_at <= now {
                self.store.delete(Table::TOKENS, &key)?;
                continue;
            }
            let d = decode_digest(&record.sha256).ok_or_else(|| TokenError::Corrupt {
                jti: jti.clone(),
                message: "sha256 is not 32 bytes of hex".into(),
            })?;
            index.insert(d, Arc::new(record));
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

    /// Records a token just signed: in memory at once (it authenticates
    /// from the moment this returns) and queued for the store (see
    /// [`Tokens`] for why issuing does not wait for the disk).
    pub async fn record(
        &self,
        token: &Secret,
        mut record: TokenRecord,
        now: u64,
    ) -> Result<Arc<TokenRecord>, TokenError> {
        let d = digest(token.expose());
        record.sha256 = hex::encode(d);
        let record = Arc::new(record);
        let mut index = write(&self.index);
        let gone = if index.by_digest.len() >= SWEEP_AT && index.any_expired(now) {
            index.remove_expired(now)
        } else {
            Vec::new()
        };
        index.insert(d, record.clone());
        // Queued under the index lock, so the store sees writes in the
        // order the index made them.
        for jti in gone {
            self.queue(Write::Delete(jti))?;
        }
        self.queue(Write::Put(record.clone(), None))?;
        drop(index);
        Ok(record)
    }

    /// The live record of a presented token, if it is one sigil issued and
    /// it is neither expired nor revoked at `now`.
    pub fn authenticate(&self, token: &[u8], now: u64) -> Option<Arc<TokenRecord>> {
        let d = digest(token);
        let index = read(&self.index);
        let record = index.by_digest.get(&d)?;
        record.live(now).then(|| record.clone())
    }

    /// The record with `jti`, live or not (until it is swept).
    pub fn get(&self, jti: &str) -> Option<Arc<TokenRecord>> {
        let index = read(&self.index);
        let d = index.by_jti.get(jti)?;
        index.by_digest.get(d).cloned()
    }

    /// The `jti` of every held record that `which` picks and that is not
    /// revoked yet.
    pub fn matching(&self, which: impl Fn(&TokenRecord) -> bool) -> Vec<String> {
        let index = read(&self.index);
        let mut out: Vec<String> = index
            .by_digest
            .values()
            .filter(|r| r.revoked_at.is_none() && which(r))
            .map(|r| r.jti.clone())
            .collect();
        out.sort();
        out
    }

    /// Revokes the token `jti` at `now`, durably. Revoking a revoked token
    /// keeps the first time, and writes it again: the first revocation may
    /// still be on its way to the disk, or may have failed there.
    pub async fn revoke(&self, jti: &str, now: u64) -> Result<Arc<TokenRecord>, TokenError> {
        let (revoked, wait) = {
            let mut index = write(&self.index);
            let d = index
                .by_jti
                .get(jti)
                .copied()
                .ok_or_else(|| TokenError::NotFound(jti.to_owned()))?;
            let current = index
                .by_digest
                .get(&d)
                .cloned()
                .ok_or_else(|| TokenError::NotFound(jti.to_owned()))?;
            let revoked = if current.revoked_at.is_some() {
                current
            } else {
                let mut revoked = (*current).clone();
                revoked.revoked_at = Some(now);
                let revoked = Arc::new(revoked);
                // Refused from here on.
                index.by_digest.insert(d, revoked.clone());
                revoked
            };
            // Queued after every earlier write of this record.
            let (done, wait) = tokio::sync::oneshot::channel();
            self.queue(Write::Put(revoked.clone(), Some(done)))?;
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

    fn record(jti: &str, expires_at: u64) -> Arc<TokenRecord> {
        Arc::new(TokenRecord {
            jti: jti.into(),
            sha256: String::new(),
            spiffe_id: "spiffe://example.org/w".into(),
            method: "mint".into(),
            role: String::new(),
            source: "mtls".into(),
            grants: vec!["read:a".into()],
            issued_at: 0,
            expires_at,
            revoked_at: None,
            audience: sigil_audience(),
            cnf_x5t: None,
            jit_requests: Vec::new(),
        })
    }

    /// The writer applies writes in the order they were made: a revocation
    /// queued right behind the issuing write it revokes is what the store
    /// keeps, and a flush returns once both are on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_keeps_writes_in_the_order_they_were_made() {
        let (_dir, _raw, store) = crate::server::testing::unsealed_store();
        let tokens = Tokens::new(store.clone());
        let (a, b) = (
            Secret::from_slice(b"token a"),
            Secret::from_slice(b"token b"),
        );
        tokens
            .record(&a, (*record("ja", 1_000)).clone(), 10)
            .await
            .unwrap();
        tokens
            .record(&b, (*record("jb", 1_000)).clone(), 10)
            .await
            .unwrap();
        // Issued tokens authenticate at once, before their records are on disk.
        assert!(tokens.authenticate(b"token a", 20).is_some());
        let revoked = tokens.revoke("ja", 30).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(30));
        assert!(tokens.authenticate(b"token a", 40).is_none());
        tokens.flush().await.unwrap();

        let reloaded = Tokens::new(store);
        assert_eq!(reloaded.load(40).unwrap(), 2);
        assert_eq!(reloaded.get("ja").unwrap().revoked_at, Some(30));
        assert!(reloaded.authenticate(b"token a", 40).is_none());
        assert_eq!(reloaded.authenticate(b"token b", 40).unwrap().jti, "jb");
    }

    /// A failed write is reported to the flush after it, whichever batch
    /// the flush lands in, and a revocation whose write failed is written
    /// again when it is retried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_writes_are_reported_and_a_retried_revocation_is_written() {
        let (_dir, _raw, store) = crate::server::testing::unsealed_store();
        let tokens = Tokens::new(store.clone());
        let a = Secret::from_slice(b"token a");
        store.seal();
        tokens
            .record(&a, (*record("ja", 1_000)).clone(), 10)
            .await
            .unwrap();
        let e = tokens.flush().await.unwrap_err();
        assert!(
            matches!(e, TokenError::Write(ref m) if m == "store is sealed"),
            "{e}"
        );
        let e = tokens.revoke("ja", 20).await.unwrap_err();
        assert!(
            matches!(e, TokenError::Write(ref m) if m == "store is sealed"),
            "{e}"
        );
        // Refused in memory at once, though not on disk.
        assert!(tokens.authenticate(b"token a", 30).is_none());

        store
            .unseal(&Secret::from_slice(b"server test passphrase"))
            .unwrap();
        // The revocation's write failed after the last flush: still not on disk.
        assert!(matches!(tokens.flush().await, Err(TokenError::Write(_))));
        tokens.flush().await.unwrap();
        assert_eq!(tokens.revoke("ja", 40).await.unwrap().revoked_at, Some(20));
        let reloaded = Tokens::new(store);
        assert_eq!(reloaded.load(50).unwrap(), 1);
        assert_eq!(reloaded.get("ja").unwrap().revoked_at, Some(20));
    }

    #[test]
    fn a_sweep_removes_exactly_the_expired_records() {
        let mut index = Index::default();
        for (i, exp) in [(1u8, 30), (2, 10), (3, 20), (4, 40)] {
            index.insert([i; 32], record(&format!("j{i}"), exp));
        }
        assert!(!index.any_expired(9));
        assert!(index.remove_expired(9).is_empty());
        assert!(index.any_expired(20));
        assert_eq!(index.remove_expired(20), vec!["j2", "j3"]);
        assert!(!index.any_expired(29));
        let left: BTreeSet<&str> = index.by_jti.keys().map(String::as_str).collect();
        assert_eq!(left, BTreeSet::from(["j1", "j4"]));
        assert_eq!(index.by_digest.len(), 2);
        assert!(index.by_digest.contains_key(&[1; 32]));
        assert!(index.by_digest.contains_key(&[4; 32]));
    }
}
