//! The agent's identity cache (SPEC §2 "agent", §7): the entries the server
//! pushed, the trust bundle, and the SVIDs issued for them. Implements
//! [`IdentityProvider`] for the Workload API.
//!
//! X.509-SVIDs are issued lazily — on a workload's first request, never
//! pre-minted for every entry — and renewed at ½ lifetime ±10% by
//! [`IdentityCache::run_rotation`], which applies the pure
//! [`rotation::plan`]. A cached SVID keeps being served while the server is
//! unreachable, until it expires. JWT-SVIDs live in the `jwt` submodule: served from cache
//! and refreshed in the background past half-life, so a slow server does not
//! stall fetches.
//!
//! Concurrency: `matching` reads an `Arc` snapshot (no issuance ever blocks
//! it); each entry has its own issuance lock so concurrent first requests
//! trigger one signing. Std locks are held only for map operations, never
//! across an `.await`.

mod federated;
mod issued;
mod jwt;
mod taint;
#[cfg(test)]
mod tests;

use issued::check_issued;

use super::{AgentError, IdentityProvider, Issuer, JwtIdentity, X509Identity, rotation};
use crate::authority::{Bundle, generate_key_and_csr, signing_ca_id};
use crate::clock;
use crate::id::{Selector, SpiffeId, TrustDomain};
use crate::registry::Entry;
use crate::sync::{lock, read, write};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::{Notify, watch};

/// Where the cache reads the time; `clock::now` outside tests.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The assigned entries, by ID and in the order workloads see them.
#[derive(Default)]
struct EntrySet {
    /// Sorted by (SPIFFE ID, entry ID): the first match is the stable default.
    sorted: Arc<Vec<Arc<Entry>>>,
    by_id: HashMap<String, Arc<Entry>>,
    /// Positions in `sorted` by each entry's first selector. An entry
    /// matches only callers that have all its selectors, its first among
    /// them, so a caller's candidates are found through its own few
    /// selectors instead of by testing every entry the agent holds.
    by_first_selector: HashMap<Selector, Vec<usize>>,
    /// Positions of entries without selectors (they match every caller).
    unconditional: Vec<usize>,
}

impl EntrySet {
    fn new(by_id: HashMap<String, Arc<Entry>>) -> Self {
        let mut sorted: Vec<Arc<Entry>> = by_id.values().cloned().collect();
        sorted.sort_by(|a, b| (&a.spiffe_id, &a.id).cmp(&(&b.spiffe_id, &b.id)));
        let mut by_first_selector: HashMap<Selector, Vec<usize>> = HashMap::new();
        let mut unconditional = Vec::new();
        for (i, e) in sorted.iter().enumerate() {
            match e.selectors.first() {
                Some(s) => by_first_selector.entry(s.clone()).or_default().push(i),
                None => unconditional.push(i),
            }
        }
        Self {
            sorted: Arc::new(sorted),
            by_id,
            by_first_selector,
            unconditional,
        }
    }

    /// The entries whose selectors are all among `selectors`, in default
    /// order.
    fn matching(&self, selectors: &[Selector]) -> Vec<Arc<Entry>> {
        let mut candidates: Vec<usize> = self.unconditional.clone();
        for s in selectors {
            if let Some(at) = self.by_first_selector.get(s) {
                candidates.extend_from_slice(at);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .filter_map(|i| self.sorted.get(i))
            .filter(|e| e.matches(selectors))
            .cloned()
            .collect()
    }

    fn revision_of(&self, entry_id: &str) -> Option<u64> {
        self.by_id.get(entry_id).map(|e| e.revision)
    }

    fn same_as(&self, other: &EntrySet) -> bool {
        self.by_id.len() == other.by_id.len()
            && self
                .by_id
                .iter()
                .all(|(id, e)| other.by_id.get(id).is_some_and(|o| **o == **e))
    }
}

/// An issued X.509-SVID and when to renew it.
#[derive(Clone)]
struct CachedX509 {
    identity: Arc<X509Identity>,
    renew_at: SystemTime,
    /// The id of the CA that signed it ([`signing_ca_id`]).
    issuer: Option<String>,
}

/// The SVID state of one entry at one revision.
struct X509Slot {
    revision: u64,
    current: RwLock<Option<CachedX509>>,
    /// Serializes issuance for this entry: concurrent first requests and the
    /// rotation task sign once, not once each.
    issuing: tokio::sync::Mutex<()>,
}

impl X509Slot {
    fn usable(&self, now: SystemTime) -> Option<Arc<X509Identity>> {
        read(&self.current)
            .as_ref()
            .filter(|c| now < c.identity.expires_at)
            .map(|c| Arc::clone(&c.identity))
    }

    /// True when this slot must no longer be served: its entry is gone or
    /// at another revision, or its SVID expired.
    fn stale(&self, set: &EntrySet, entry_id: &str, now: SystemTime) -> bool {
        set.revision_of(entry_id) != Some(self.revision) || self.usable(now).is_none()
    }

    /// Stores `fresh`; true when it replaced an earlier SVID.
    fn store(&self, fresh: CachedX509) -> bool {
        write(&self.current).replace(fresh).is_some()
    }
}

/// The agent's cache of entries, bundle and SVIDs. Share it as `Arc`.
pub struct IdentityCache {
    issuer: Arc<dyn Issuer>,
    clock: Clock,
    rng: SystemRandom,
    entries: RwLock<Arc<EntrySet>>,
    x509: Mutex<HashMap<String, Arc<X509Slot>>>,
    jwt: Arc<jwt::JwtCache>,
    bundle: RwLock<Option<Arc<Bundle>>>,
    federated: federated::Federated,
    /// Keys the server says are compromised.
    taints: RwLock<taint::Taints>,
    changes: watch::Sender<u64>,
    /// Set once the server's first push has been applied.
    synced: watch::Sender<bool>,
    /// Wakes the rotation task when its schedule may have moved earlier.
    reschedule: Notify,
}

impl std::fmt::Debug for IdentityCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.snapshot().by_id.len();
        f.debug_struct("IdentityCache")
            .field("entries", &entries)
            .field("cached_x509", &self.cached_x509_count())
            .field("cached_jwt", &self.cached_jwt_count())
            .finish_non_exhaustive()
    }
}

impl IdentityCache {
    /// An empty cache that gets credentials signed by `issuer`.
    pub fn new(issuer: Arc<dyn Issuer>) -> Arc<Self> {
        Self::with_clock(issuer, Arc::new(clock::now), jwt::MAX_JWT_ENTRIES)
    }

    fn with_clock(issuer: Arc<dyn Issuer>, clock: Clock, jwt_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            jwt: Arc::new(jwt::JwtCache::new(
                Arc::clone(&issuer),
                Arc::clone(&clock),
                jwt_capacity,
            )),
            issuer,
            clock,
            rng: SystemRandom::new(),
            entries: RwLock::default(),
            x509: Mutex::default(),
            bundle: RwLock::default(),
            federated: federated::Federated::default(),
            taints: RwLock::default(),
            changes: watch::channel(0).0,
            synced: watch::channel(false).0,
            reschedule: Notify::new(),
        })
    }

    /// Replaces the entry set (a full push from the server). Cached SVIDs of
    /// entries that disappeared or changed revision are dropped, so a changed
    /// entry is re-issued on its next request. Returns whether anything
    /// changed; only then is the change counter bumped.
    pub fn set_entries(&self, entries: Vec<Entry>) -> bool {
        let by_id = entries
            .into_iter()
            .map(|e| (e.id.as_str().to_owned(), Arc::new(e)))
            .collect();
        self.replace_entries(|_| by_id)
    }

    /// Records that the server's first push has been applied in full: from
    /// now on a caller matching no entry has none.
    pub fn mark_synced(&self) {
        self.synced
            .send_if_modified(|s| !std::mem::replace(s, true));
    }

    /// Applies an incremental push: inserts or replaces `upserts`, then
    /// removes the entry IDs in `deletes`. Same effects as [`Self::set_entries`].
    pub fn upsert_entries(&self, upserts: Vec<Entry>, deletes: &[String]) -> bool {
        self.replace_entries(|old| {
            let mut by_id = old.by_id.clone();
            for e in upserts {
                by_id.insert(e.id.as_str().to_owned(), Arc::new(e));
            }
            for id in deletes {
                by_id.remove(id);
            }
            by_id
        })
    }

    fn replace_entries(&self, next: impl FnOnce(&EntrySet) -> HashMap<String, Arc<Entry>>) -> bool {
        let next = {
            let mut guard = write(&self.entries);
            let next = EntrySet::new(next(&guard));
            if next.same_as(&guard) {
                return false;
            }
            let next = Arc::new(next);
            *guard = Arc::clone(&next);
            next
        };
        // An SVID outlives neither its entry nor the revision it was issued
        // for: a removed entry must stop being served at once.
        lock(&self.x509).retain(|id, slot| next.revision_of(id) == Some(slot.revision));
        let live: HashSet<&SpiffeId> = next.by_id.values().map(|e| &e.spiffe_id).collect();
        self.jwt.retain_identities(|id| live.contains(id));
        self.bump();
        self.reschedule.notify_one();
        true
    }

    /// The assigned entries, in default order.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.snapshot().sorted.to_vec()
    }

    /// Entry ID → revision of every assigned entry: what the agent reports
    /// when it reconnects so the server sends only the difference.
    pub fn known_revisions(&self) -> HashMap<String, u64> {
        self.snapshot()
            .by_id
            .iter()
            .map(|(id, e)| (id.clone(), e.revision))
            .collect()
    }

    /// Replaces the trust bundle. Returns whether its content (sequence or
    /// authorities) changed; only then is the change counter bumped.
    pub fn set_bundle(&self, bundle: Bundle) -> bool {
        {
            let mut guard = write(&self.bundle);
            let same = guard.as_ref().is_some_and(|old| {
                old.trust_domain == bundle.trust_domain
                    && old.sequence == bundle.sequence
                    && old.x509_authorities == bundle.x509_authorities
                    && old.jwt_authorities == bundle.jwt_authorities
            });
            if same {
                return false;
            }
            *guard = Some(Arc::new(bundle));
        }
        self.bump();
        true
    }

    /// Replaces the foreign trust domains' bundles (a push from the server).
    /// Returns whether they changed; only then is the change counter bumped, so
    /// open Workload API streams get them.
    pub fn set_federated_bundles(&self, bundles: BTreeMap<TrustDomain, Bundle>) -> bool {
        let changed = self.federated.replace(bundles);
        if changed {
            self.bump();
        }
        changed
    }

    /// How many X.509-SVIDs are held (for memory measurements).
    pub fn cached_x509_count(&self) -> usize {
        lock(&self.x509)
            .values()
            .filter(|s| read(&s.current).is_some())
            .count()
    }

    /// How many JWT-SVIDs are held.
    pub fn cached_jwt_count(&self) -> usize {
        self.jwt.len()
    }

    /// Renews due X.509-SVIDs and drops stale ones until `stop` turns true
    /// (or its sender is dropped). Failures are logged and retried with
    /// backoff; the task never exits on one, and the old SVID is served until
    /// it expires.
    pub async fn run_rotation(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            let failed = self.rotate_once().await;
            failures = if failed {
                failures.saturating_add(1)
            } else {
                0
            };
            // Re-plan after the renewals: the fresh SVIDs have new deadlines.
            let now = (self.clock)();
            let next_wake = rotation::plan(now, &self.rotation_states()).next_wake;
            let sleep = rotation::sleep_for(now, next_wake, failures);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.reschedule.notified() => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// One rotation pass at the current time. Returns true if a renewal failed.
    async fn rotate_once(&self) -> bool {
        let now = (self.clock)();
        let plan = rotation::plan(now, &self.rotation_states());
        let mut changed = false;
        if !plan.drop.is_empty() {
            let set = self.snapshot();
            let mut slots = lock(&self.x509);
            for id in &plan.drop {
                // Re-checked under the lock: a request may have re-issued it
                // since the plan was made.
                if slots.get(id).is_some_and(|s| s.stale(&set, id, now)) {
                    slots.remove(id);
                    changed = true;
                }
            }
        }
        let mut failed = false;
        for id in &plan.renew {
            match self.renew(id, now).await {
                Ok(renewed) => changed |= renewed,
                Err(e) => {
                    failed = true;
                    tracing::warn!(entry_id = %id, error = %e,
                        "X.509-SVID renewal failed; the cached one is served until it expires");
                }
            }
        }
        if changed {
            self.bump();
        }
        self.jwt.prune(now);
        failed
    }

    fn rotation_states(&self) -> Vec<rotation::CachedState> {
        let set = self.snapshot();
        let slots = lock(&self.x509);
        slots
            .iter()
            .filter_map(|(id, slot)| {
                let current = read(&slot.current);
                let c = current.as_ref()?;
                Some(rotation::CachedState {
                    entry_id: id.clone(),
                    renew_at: c.renew_at,
                    expires_at: c.identity.expires_at,
                    entry_present: set.revision_of(id) == Some(slot.revision),
                })
            })
            .collect()
    }

    /// Re-issues the SVID of `entry_id` if it is still due at `now`.
    /// Returns whether a new SVID was stored.
    async fn renew(&self, entry_id: &str, now: SystemTime) -> Result<bool, AgentError> {
        let Some(entry) = self.snapshot().by_id.get(entry_id).cloned() else {
            return Ok(false);
        };
        let Some(slot) = lock(&self.x509).get(entry_id).cloned() else {
            return Ok(false);
        };
        if slot.revision != entry.revision {
            return Ok(false);
        }
        let _issuing = slot.issuing.lock().await;
        // A request may have re-issued it while we waited for the lock.
        if read(&slot.current)
            .as_ref()
            .is_some_and(|c| c.renew_at > now)
        {
            return Ok(false);
        }
        let fresh = self.issue_x509(&entry).await?;
        self.store(&slot, fresh);
        Ok(true)
    }

    /// Makes a new key, has its CSR signed and checks what came back.
    async fn issue_x509(&self, entry: &Entry) -> Result<CachedX509, AgentError> {
        // A new key per issuance: the private key is made here, never leaves
        // the node, and is never reused across rotations.
        let (key_pkcs8, csr) = generate_key_and_csr(&entry.spiffe_id)
            .map_err(|e| AgentError::Internal(format!("key generation failed: {e}")))?;
        let issued_at = (self.clock)();
        let (chain_der, expires_at) = self.issuer.sign_x509(entry, csr).await?;
        check_issued(entry, &chain_der, &key_pkcs8, expires_at, (self.clock)())?;
        let jitter = self.draw_jitter()?;
        Ok(CachedX509 {
            renew_at: rotation::renew_at(issued_at, expires_at, jitter),
            issuer: chain_der.first().and_then(|leaf| signing_ca_id(leaf)),
            identity: Arc::new(X509Identity {
                entry_id: entry.id.as_str().to_owned(),
                spiffe_id: entry.spiffe_id.clone(),
                hint: entry.hint.clone(),
                chain_der,
                key_pkcs8,
                issued_at,
                expires_at,
            }),
        })
    }

    fn draw_jitter(&self) -> Result<f64, AgentError> {
        let mut bytes = [0u8; 4];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| AgentError::Internal("random number generator failed".into()))?;
        Ok(rotation::jitter_from_u32(u32::from_be_bytes(bytes)))
    }

    /// The current version of the entry a caller names.
    fn current_entry(&self, entry_id: &str) -> Result<Arc<Entry>, AgentError> {
        self.snapshot()
            .by_id
            .get(entry_id)
            .cloned()
            .ok_or_else(|| AgentError::Denied(format!("entry {entry_id} is not assigned")))
    }

    /// The slot of `entry` at its revision, created empty if needed.
    fn slot_for(&self, entry: &Entry) -> Arc<X509Slot> {
        let mut slots = lock(&self.x509);
        let id = entry.id.as_str();
        if let Some(slot) = slots.get(id).filter(|s| s.revision == entry.revision) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(X509Slot {
            revision: entry.revision,
            current: RwLock::new(None),
            issuing: tokio::sync::Mutex::new(()),
        });
        slots.insert(id.to_owned(), Arc::clone(&slot));
        slot
    }

    fn snapshot(&self) -> Arc<EntrySet> {
        Arc::clone(&read(&self.entries))
    }

    fn bump(&self) {
        self.changes.send_modify(|c| *c = c.wrapping_add(1));
    }
}

#[tonic::async_trait]
impl IdentityProvider for IdentityCache {
    fn matching(&self, selectors: &[Selector]) -> Vec<Arc<Entry>> {
        self.snapshot().matching(selectors)
    }

    async fn x509_svid(&self, entry: &Entry) -> Result<Arc<X509Identity>, AgentError> {
        let entry = self.current_entry(entry.id.as_str())?;
        let slot = self.slot_for(&entry);
        if let Some(identity) = slot.usable((self.clock)()) {
            return Ok(identity);
        }
        let _issuing = slot.issuing.lock().await;
        // Whoever held the lock before us may have issued it: one signing
        // per entry however many requests arrive together.
        if let Some(identity) = slot.usable((self.clock)()) {
            return Ok(identity);
        }
        let fresh = self.issue_x509(&entry).await?;
        let identity = Arc::clone(&fresh.identity);
        if self.store(&slot, fresh) {
            // An expired SVID was replaced: watchers must see the new one.
            self.bump();
        }
        self.reschedule.notify_one();
        Ok(identity)
    }

    async fn jwt_svid(
        &self,
        entry: &Entry,
        audiences: &[String],
    ) -> Result<Arc<JwtIdentity>, AgentError> {
        let entry = self.current_entry(entry.id.as_str())?;
        self.jwt.get(entry, audiences).await
    }

    fn bundle(&self) -> Option<Arc<Bundle>> {
        read(&self.bundle).clone()
    }

    fn federated_bundle(&self, td: &TrustDomain) -> Option<Arc<Bundle>> {
        self.federated.get(td)
    }

    fn jwt_key_tainted(&self, kid: &str) -> bool {
        read(&self.taints).jwt.contains(kid)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    async fn wait_synced(&self) {
        // The sender lives as long as the cache, so this only ends synced.
        let _ = self.synced.subscribe().wait_for(|s| *s).await;
    }
}
