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
//! ones are dropped at unseal and as new tokens are issued.

use super::blocking;
use crate::id::SpiffeId;
use crate::secret::Secret;
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{read, write};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
    /// The store work did not complete.
    #[error("token store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Default)]
struct Index {
    by_digest: HashMap<Digest, Arc<TokenRecord>>,
    by_jti: HashMap<String, Digest>,
}

impl Index {
    fn insert(&mut self, d: Digest, record: Arc<TokenRecord>) {
        self.by_jti.insert(record.jti.clone(), d);
        self.by_digest.insert(d, record);
    }

    fn remove_expired(&mut self, now: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .by_digest
            .values()
            .filter(|r| r.expires_at <= now)
            .map(|r| r.jti.clone())
            .collect();
        for jti in &gone {
            if let Some(d) = self.by_jti.remove(jti) {
                self.by_digest.remove(&d);
            }
        }
        gone
    }
}

/// Tokens issued and not yet expired. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<SealedStore>,
    index: Arc<RwLock<Index>>,
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

/// Writes `record` under its `jti`, durably. Blocks.
fn put_record(store: &SealedStore, record: &TokenRecord) -> Result<(), TokenError> {
    let json = serde_json::to_vec(record).map_err(|e| TokenError::Corrupt {
        jti: record.jti.clone(),
        message: e.to_string(),
    })?;
    store.put(Table::TOKENS, record.jti.as_bytes(), &json)?;
    Ok(())
}

/// Issued tokens are swept from memory and the store once this many are
/// held, at the next issue.
const SWEEP_AT: usize = 1024;

impl Tokens {
    /// Tokens recorded in `store`.
    pub fn new(store: Arc<SealedStore>) -> Self {
        Self {
            store,
            index: Arc::new(RwLock::new(Index::default())),
        }
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

    /// Records a token just signed, durably, before it is handed out.
    pub async fn record(
        &self,
        token: &Secret,
        mut record: TokenRecord,
        now: u64,
    ) -> Result<Arc<TokenRecord>, TokenError> {
        let d = digest(token.expose());
        record.sha256 = hex::encode(d);
        let record = Arc::new(record);
        let (store, stored) = (self.store.clone(), record.clone());
        let sweep = read(&self.index).by_digest.len() >= SWEEP_AT;
        let index = self.index.clone();
        blocking::run(move || {
            put_record(&store, &stored)?;
            if sweep {
                let gone = write(&index).remove_expired(now);
                for jti in gone {
                    store.delete(Table::TOKENS, jti.as_bytes())?;
                }
            }
            Ok::<_, TokenError>(())
        })
        .await?;
        write(&self.index).insert(d, record.clone());
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
    /// keeps the first time.
    pub async fn revoke(&self, jti: &str, now: u64) -> Result<Arc<TokenRecord>, TokenError> {
        let current = self
            .get(jti)
            .ok_or_else(|| TokenError::NotFound(jti.to_owned()))?;
        if current.revoked_at.is_some() {
            return Ok(current);
        }
        let mut revoked = (*current).clone();
        revoked.revoked_at = Some(now);
        let revoked = Arc::new(revoked);
        let (store, stored) = (self.store.clone(), revoked.clone());
        blocking::run(move || put_record(&store, &stored)).await?;
        let mut index = write(&self.index);
        if let Some(d) = index.by_jti.get(jti).copied() {
            index.by_digest.insert(d, revoked.clone());
        }
        Ok(revoked)
    }
}
