//! Quarantine of a compromised identity (SPEC §3.3 `sigil quarantine`): one
//! operation that cuts a SPIFFE ID off everywhere at once, and the one
//! everything that responds automatically will call.
//!
//! While an ID is quarantined: the gate denies every request it makes, over
//! mTLS or with a token, naming the quarantine's reason; no X.509- or
//! JWT-SVID is issued for it; agents are sent its entries as deleted (like
//! any entry change), so they drop its SVIDs and end its open Workload API
//! streams with PermissionDenied; and, when it is put in quarantine, its
//! tokens and JIT requests are revoked. Records live in the sealed store
//! (table `quarantine`), so a quarantine survives restarts; lifting it
//! restores issuance (tokens and grants stay revoked).

use super::Server;
use super::blocking;
use crate::id::SpiffeId;
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{read, write};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// The longest reason kept, in bytes.
pub const MAX_REASON: usize = 1024;

/// One quarantined identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The identity.
    pub spiffe_id: String,
    /// Why.
    pub reason: String,
    /// Who put it there (`uid:N` or a SPIFFE ID).
    pub by: String,
    /// When, Unix seconds.
    pub at: u64,
}

impl QuarantineRecord {
    /// What a refusal because of it says: the identity and the reason.
    pub fn denial(&self) -> String {
        format!("{} is quarantined: {}", self.spiffe_id, self.reason)
    }
}

/// Why a quarantine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The ID is not one sigil could quarantine.
    #[error("spiffe_id: {0}")]
    BadId(String),
    /// A reason is required, printable, at most [`MAX_REASON`] bytes.
    #[error("reason: give 1 to {MAX_REASON} bytes without control characters")]
    BadReason,
    /// Lifting an ID that is not quarantined.
    #[error("{0} is not quarantined")]
    NotQuarantined(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] SealError),
    /// A stored record does not decode.
    #[error("quarantine record {id} is corrupt: {message}")]
    Corrupt {
        /// The record's key.
        id: String,
        /// What failed.
        message: String,
    },
    /// Revoking the identity's tokens or requests failed (the quarantine
    /// itself is in force).
    #[error("quarantined, but revoking its tokens or grants failed: {0}")]
    Revocation(String),
    /// The store work did not complete.
    #[error("quarantine store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Quarantined identities. Cheap to clone.
#[derive(Clone)]
pub struct Quarantines {
    store: Arc<SealedStore>,
    held: Arc<RwLock<BTreeMap<String, Arc<QuarantineRecord>>>>,
    /// True when any identity is quarantined: the gate's check on every
    /// request is one atomic load while none is.
    any: Arc<AtomicBool>,
    changes: watch::Sender<u64>,
    /// Held across a put's or a removal's store write and memory update, so
    /// concurrent changes apply whole, one after the other: the store and
    /// the set in memory end up agreeing, and no change is lost.
    changing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Quarantines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quarantines")
            .field("held", &read(&self.held).len())
            .finish_non_exhaustive()
    }
}

impl Quarantines {
    /// Quarantines recorded in `store`.
    pub fn new(store: Arc<SealedStore>) -> Self {
        Self {
            store,
            held: Arc::new(RwLock::new(BTreeMap::new())),
            any: Arc::new(AtomicBool::new(false)),
            changes: watch::channel(0).0,
            changing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Changes the set in memory and tells its watchers. `any` is set under
    /// the same write lock as the set, so it always says what the last
    /// change left.
    fn publish(&self, change: impl FnOnce(&mut BTreeMap<String, Arc<QuarantineRecord>>)) {
        {
            let mut held = write(&self.held);
            change(&mut held);
            self.any.store(!held.is_empty(), Ordering::Release);
        }
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Reads every record (at unseal). Blocks.
    pub fn load(&self) -> Result<usize, QuarantineError> {
        let mut held = BTreeMap::new();
        for (key, value) in self.store.scan_prefix(Table::QUARANTINE, b"")? {
            let id = String::from_utf8_lossy(&key).into_owned();
            let r: QuarantineRecord =
                serde_json::from_slice(value.expose()).map_err(|e| QuarantineError::Corrupt {
                    id: id.clone(),
                    message: e.to_string(),
                })?;
            held.insert(id, Arc::new(r));
        }
        let n = held.len();
        self.publish(|h| *h = held);
        Ok(n)
    }

    /// Forgets every record (at seal): nothing is answered while sealed.
    pub fn clear(&self) {
        self.publish(BTreeMap::clear);
    }

    /// The record of `id`, if it is quarantined.
    pub fn get(&self, id: &str) -> Option<Arc<QuarantineRecord>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        read(&self.held).get(id).cloned()
    }

    /// Every quarantined identity, by ID.
    pub fn list(&self) -> Vec<Arc<QuarantineRecord>> {
        read(&self.held).values().cloned().collect()
    }

    /// Bumps whenever the set changes (agents' entry pushes follow it).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn put(&self, r: QuarantineRecord) -> Result<(), QuarantineError> {
        let json = serde_json::to_vec(&r).map_err(|e| QuarantineError::Corrupt {
            id: r.spiffe_id.clone(),
            message: e.to_string(),
        })?;
        let store = self.store.clone();
        let key = r.spiffe_id.clone();
        let _turn = self.changing.lock().await;
        blocking::run(move || {
            store.put(Table::QUARANTINE, key.as_bytes(), &json)?;
            Ok::<_, QuarantineError>(())
        })
        .await?;
        self.publish(|h| {
            h.insert(r.spiffe_id.clone(), Arc::new(r));
        });
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<Arc<QuarantineRecord>, QuarantineError> {
        let _turn = self.changing.lock().await;
        let current = self
            .get(id)
            .ok_or_else(|| QuarantineError::NotQuarantined(id.to_owned()))?;
        let store = self.store.clone();
        let key = id.to_owned();
        blocking::run(move || {
            store.delete(Table::QUARANTINE, key.as_bytes())?;
            Ok::<_, QuarantineError>(())
        })
        .await?;
        self.publish(|h| {
            h.remove(id);
        });
        Ok(current)
    }
}

fn check_reason(reason: &str) -> Result<String, QuarantineError> {
    let r = reason.trim();
    if r.is_empty() || r.len() > MAX_REASON || r.chars().any(char::is_control) {
        return Err(QuarantineError::BadReason);
    }
    Ok(r.to_owned())
}

/// What putting an identity in quarantine did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The record.
    pub record: Arc<QuarantineRecord>,
    /// The `jti`s of the tokens it held, now revoked.
    pub tokens: Vec<String>,
    /// The JIT requests by or for it, now revoked.
    pub requests: Vec<String>,
}

impl Server {
    /// Puts `id` in quarantine for `reason`, as `by` decided: in force at
    /// once for the gate and issuance, pushed to agents, then its tokens and
    /// its pending or active JIT requests revoked. Quarantining it again
    /// replaces the reason and revokes what it obtained since.
    pub async fn quarantine(
        &self,
        id: &str,
        reason: &str,
        by: &str,
    ) -> Result<Quarantined, QuarantineError> {
        let id = SpiffeId::parse(id).map_err(|e| QuarantineError::BadId(e.to_string()))?;
        if id.trust_domain_str() != self.trust_domain().as_str() {
            return Err(QuarantineError::BadId(format!(
                "{id} is not in trust domain {}",
                self.trust_domain().as_str()
            )));
        }
        if id.path().is_empty() {
            return Err(QuarantineError::BadId(format!("{id} names no identity")));
        }
        let reason = check_reason(reason)?;
        let now = crate::clock::unix_seconds(self.now());
        let record = QuarantineRecord {
            spiffe_id: id.to_string(),
            reason: reason.clone(),
            by: by.to_owned(),
            at: now,
        };
        self.quarantines().put(record).await?;
        let record = self
            .quarantines()
            .get(id.as_str())
            .ok_or_else(|| QuarantineError::NotQuarantined(id.to_string()))?;
        let (tokens, requests) = self.cut_off(id.as_str(), by, &reason, now).await?;
        Ok(Quarantined {
            record,
            tokens,
            requests,
        })
    }

    /// Revokes the tokens `id` holds and the pending or active JIT requests
    /// made by it or for it, as `by` decided for `reason`; returns their
    /// `jti`s and IDs.
    async fn cut_off(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now: u64,
    ) -> Result<(Vec<String>, Vec<String>), QuarantineError> {
        let fail = |e: &dyn std::fmt::Display| QuarantineError::Revocation(e.to_string());
        let tokens = self
            .tokens()
            .revoke_matching(|r| r.spiffe_id == id, now)
            .await
            .map_err(|e| fail(&e))?;
        let why = format!("quarantined: {reason}");
        let mut requests = Vec::new();
        for r in self.elevations().list() {
            let open = matches!(
                r.state_at(now),
                crate::jit::State::Pending | crate::jit::State::Active
            );
            if open && (r.subject == id || r.requester == id) {
                self.elevations()
                    .update(
                        &r.id,
                        || crate::clock::unix_seconds(self.now()),
                        |req, at| req.revoke(by, &why, at),
                        |(), _| async { Ok(()) },
                    )
                    .await
                    .map_err(|e| fail(&e))?;
                requests.push(r.id.clone());
            }
        }
        Ok((tokens, requests))
    }

    /// Lifts the quarantine of `id`: issuance and access resume (under the
    /// policy as always). Revoked tokens and grants stay revoked. A token or
    /// a JIT request that passed its check in the moment the quarantine was
    /// being put (before it was in force, after its revocations were
    /// listed) is revoked here, before access resumes; the answer names
    /// them.
    pub async fn lift_quarantine(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Quarantined, QuarantineError> {
        check_reason(reason)?;
        let current = self
            .quarantines()
            .get(id)
            .ok_or_else(|| QuarantineError::NotQuarantined(id.to_owned()))?;
        let now = crate::clock::unix_seconds(self.now());
        let (tokens, requests) = self.cut_off(id, &current.by, &current.reason, now).await?;
        let record = self.quarantines().remove(id).await?;
        Ok(Quarantined {
            record,
            tokens,
            requests,
        })
    }

    /// Why `id` may get nothing, if it is quarantined.
    pub fn quarantined(&self, id: &SpiffeId) -> Option<Arc<QuarantineRecord>> {
        self.quarantines().get(id.as_str())
    }
}
