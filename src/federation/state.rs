//! The server's federation state: the configured relationships (their files read), the
//! bundle endpoint's identity, the foreign bundles kept in the sealed store (and in
//! memory while unsealed), each relationship's fetch status, and a change counter the
//! entry push streams follow.
//!
//! A foreign bundle is kept per trust domain, never merged with another (Federation
//! §4.2): the bundle of `other.org` only ever verifies identities of `other.org`.
//! Whoever wrote it last wins, as §4.2 has it: an operator's `bundle set` is the latest
//! until the next successful fetch replaces it.
//!
//! Writes run whole on the blocking pool and are serialized by `writes`, taken inside
//! the task, so the copy in memory follows the store; readers take an `Arc` snapshot.

use super::FederationError;
use super::fetch::FetchError;
use super::foreign::check_foreign_bundle;
use super::plan;
use super::setup::{self, Auth, EndpointIdentity, Relationship, SetupError};
use crate::authority::Bundle;
use crate::config::ServerConfig;
use crate::id::TrustDomain;
use crate::registry::Entry;
use crate::server::blocking;
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{lock, read, write};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::watch;

/// Where a foreign bundle in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Fetched from the trust domain's bundle endpoint.
    Endpoint,
    /// Set by an operator (`sigil bundle set`).
    Operator,
    /// The configured `bootstrap_bundle`, in use until a bundle is fetched or set
    /// (held in memory, never stored).
    Bootstrap,
}

impl Source {
    /// The name `bundle list` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Endpoint => "endpoint",
            Source::Operator => "operator",
            Source::Bootstrap => "bootstrap",
        }
    }
}

/// A foreign bundle in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The bundle.
    pub bundle: Arc<Bundle>,
    /// Its SPIFFE JSON, as pushed to agents.
    pub json: Arc<str>,
    /// Where it came from.
    pub source: Source,
    /// When it was stored, Unix seconds (0 for a bootstrap bundle).
    pub updated_at: u64,
}

impl Kept {
    fn new(bundle: Bundle, source: Source, updated_at: u64) -> Self {
        Self {
            json: bundle.to_spiffe_json().into(),
            bundle: Arc::new(bundle),
            source,
            updated_at,
        }
    }
}

/// A kept bundle as stored (inside the sealed store's envelope).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    bundle: String,
    source: Source,
    updated_at: u64,
}

/// How fetching one relationship's bundle goes (in memory; a restart starts afresh).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStatus {
    /// When a fetch last returned a bundle that was accepted.
    pub last_success: Option<SystemTime>,
    /// When and why a fetch last failed or its bundle was refused.
    pub last_error: Option<(SystemTime, FetchError)>,
    /// When the next fetch is due; `None` before the first.
    pub next_attempt: Option<SystemTime>,
    /// Failures since the last success.
    pub failures: u32,
}

/// One foreign trust domain as `bundle list` and `operator status` show it.
#[derive(Debug, Clone)]
pub struct View {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The bundle in use, if any.
    pub kept: Option<Kept>,
    /// Its relationship, when it is configured.
    pub relationship: Option<Relationship>,
    /// How fetching it goes, when it is configured.
    pub status: Option<FetchStatus>,
}

type Bundles = BTreeMap<TrustDomain, Kept>;

/// Federation with other trust domains. Shared by the server behind an `Arc`.
#[derive(Debug)]
pub struct Federation {
    own: TrustDomain,
    relationships: Vec<Relationship>,
    endpoint: Option<EndpointIdentity>,
    store: Arc<SealedStore>,
    /// Stored foreign bundles; `None` while sealed.
    kept: RwLock<Option<Arc<Bundles>>>,
    status: Mutex<BTreeMap<TrustDomain, FetchStatus>>,
    /// Serializes writes, so the copy in memory follows the store.
    writes: Mutex<()>,
    changes: watch::Sender<u64>,
}

impl Federation {
    /// Reads the files `config`'s `[federation]` names; nothing is loaded from `store`
    /// until [`Federation::load`].
    pub fn open(config: &ServerConfig, store: Arc<SealedStore>) -> Result<Self, SetupError> {
        let own = config.trust_domain.clone();
        let relationships = setup::relationships(&own, &config.federation.trust_domains)?;
        let endpoint = config
            .federation
            .bundle_endpoint
            .as_ref()
            .map(|e| setup::endpoint_identity(&e.profile))
            .transpose()?;
        let status = relationships
            .iter()
            .map(|r| (r.trust_domain().clone(), FetchStatus::default()))
            .collect();
        Ok(Self {
            own,
            relationships,
            endpoint,
            store,
            kept: RwLock::new(None),
            status: Mutex::new(status),
            writes: Mutex::new(()),
            changes: watch::channel(0).0,
        })
    }

    /// How the bundle endpoint presents itself, when one is configured.
    pub fn endpoint(&self) -> Option<&EndpointIdentity> {
        self.endpoint.as_ref()
    }

    /// The configured relationships.
    pub fn relationships(&self) -> &[Relationship] {
        &self.relationships
    }

    fn relationship(&self, td: &TrustDomain) -> Option<&Relationship> {
        self.relationships.iter().find(|r| r.trust_domain() == td)
    }

    /// A receiver that sees every change to the bundles in use.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|c| *c = c.wrapping_add(1));
    }

    /// True while unsealed and loaded.
    pub fn is_loaded(&self) -> bool {
        read(&self.kept).is_some()
    }

    /// Reads the stored foreign bundles (at unseal). Blocks. A record that cannot be
    /// decoded is left in the store, logged and not used: the next fetch or `bundle
    /// set` replaces it.
    pub fn load(&self) -> Result<usize, SealError> {
        let _writes = lock(&self.writes);
        let mut map = Bundles::new();
        for (key, value) in self.store.scan_prefix(Table::FEDERATED_BUNDLES, b"")? {
            match decode(&key, value.expose()) {
                Ok((td, kept)) => {
                    map.insert(td, kept);
                }
                Err(reason) => tracing::error!(
                    key = %String::from_utf8_lossy(&key),
                    reason,
                    "a stored foreign bundle cannot be used; it will be replaced"
                ),
            }
        }
        let n = map.len();
        *write(&self.kept) = Some(Arc::new(map));
        self.bump();
        Ok(n)
    }

    /// Forgets the bundles in memory (at seal).
    pub fn clear(&self) {
        *write(&self.kept) = None;
        self.bump();
    }

    fn snapshot(&self) -> Option<Arc<Bundles>> {
        read(&self.kept).clone()
    }

    /// The bundle in use for `td`: the stored one, else a self-serving relationship's
    /// bootstrap bundle. `None` while sealed.
    pub fn bundle(&self, td: &TrustDomain) -> Option<Kept> {
        let kept = self.snapshot()?;
        kept.get(td).cloned().or_else(|| self.bootstrap_of(td))
    }

    /// The bootstrap bundle of `td`, when its relationship is self-serving (its
    /// endpoint's SPIFFE ID is in `td`): then it is `td`'s bundle.
    fn bootstrap_of(&self, td: &TrustDomain) -> Option<Kept> {
        match &self.relationship(td)?.auth {
            Auth::Spiffe {
                endpoint_id,
                bootstrap: Some(b),
            } if endpoint_id.trust_domain_str() == td.as_str() => {
                Some(Kept::new((**b).clone(), Source::Bootstrap, 0))
            }
            _ => None,
        }
    }

    /// The SPIFFE JSON of every foreign bundle `entries` federate with, by trust domain
    /// name: what the entry push stream sends an agent.
    pub fn for_entries(&self, entries: &[Entry]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for td in entries.iter().flat_map(|e| e.federates_with.iter()) {
            if td == &self.own || out.contains_key(td.as_str()) {
                continue;
            }
            if let Some(k) = self.bundle(td) {
                out.insert(td.to_string(), k.json.to_string());
            }
        }
        out
    }

    /// The roots to authenticate `rel`'s `https_spiffe` endpoint with: the latest
    /// bundle of its SPIFFE ID's trust domain (ours when it is ours), else the
    /// configured bootstrap bundle (Federation §5.2.2.4).
    pub(super) fn auth_roots(&self, rel: &Relationship, own: &Bundle) -> Option<Vec<Vec<u8>>> {
        let Auth::Spiffe {
            endpoint_id,
            bootstrap,
        } = &rel.auth
        else {
            return None;
        };
        let td = endpoint_id.trust_domain();
        if td == self.own {
            return Some(own.x509_authorities.clone());
        }
        let stored = self.snapshot()?.get(&td).map(|k| k.bundle.clone());
        stored
            .or_else(|| bootstrap.clone())
            .map(|b| b.x509_authorities.clone())
    }

    /// Every foreign trust domain with a bundle or a relationship, by name.
    pub fn list(&self) -> Vec<View> {
        let kept = self.snapshot();
        let status = lock(&self.status).clone();
        let mut names: Vec<TrustDomain> = self
            .relationships
            .iter()
            .map(|r| r.trust_domain().clone())
            .collect();
        names.extend(kept.iter().flat_map(|k| k.keys().cloned()));
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|td| View {
                kept: self.bundle(&td),
                relationship: self.relationship(&td).cloned(),
                status: status.get(&td).cloned(),
                trust_domain: td,
            })
            .collect()
    }

    /// Sets the bundle of `name` from an operator's SPIFFE JSON (`bundle set`): checked
    /// by the same rules as a fetched one, refused whole, and the kept one stays.
    pub async fn set(
        self: &Arc<Self>,
        name: &str,
        json: &str,
        now: SystemTime,
    ) -> Result<Kept, FederationError> {
        let td = TrustDomain::parse(name).map_err(FederationError::BadTrustDomain)?;
        let bundle = check_foreign_bundle(&self.own, &td, json)?;
        self.keep(td, bundle, Source::Operator, now).await
    }

    /// Deletes the bundle an operator set for `name` (`bundle delete`). A configured
    /// trust domain is refused: its bundle would be fetched again at once.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), FederationError> {
        let td = TrustDomain::parse(name).map_err(FederationError::BadTrustDomain)?;
        if self.relationship(&td).is_some() {
            return Err(FederationError::Configured(td.to_string()));
        }
        let this = self.clone();
        blocking::run(move || this.delete_now(&td)).await
    }

    fn delete_now(&self, td: &TrustDomain) -> Result<(), FederationError> {
        let _writes = lock(&self.writes);
        let kept = self.snapshot().ok_or(FederationError::Sealed)?;
        if !kept.contains_key(td) {
            return Err(FederationError::NotFound(td.to_string()));
        }
        self.store
            .delete(Table::FEDERATED_BUNDLES, td.as_str().as_bytes())?;
        self.change(|m| {
            m.remove(td);
        });
        Ok(())
    }

    /// Whether keeping `bundle` from `source` for `td` would change what is in use.
    pub(super) fn would_change(&self, td: &TrustDomain, bundle: &Bundle, source: Source) -> bool {
        self.snapshot()
            .and_then(|k| k.get(td).cloned())
            .is_none_or(|k| *k.bundle != *bundle || k.source != source)
    }

    /// Stores `bundle` as `td`'s, from `source`, and starts using it.
    pub(super) async fn keep(
        self: &Arc<Self>,
        td: TrustDomain,
        bundle: Bundle,
        source: Source,
        now: SystemTime,
    ) -> Result<Kept, FederationError> {
        let this = self.clone();
        let kept = Kept::new(bundle, source, crate::unix_time::seconds(now));
        blocking::run(move || this.keep_now(td, kept)).await
    }

    fn keep_now(&self, td: TrustDomain, kept: Kept) -> Result<Kept, FederationError> {
        let _writes = lock(&self.writes);
        if self.snapshot().is_none() {
            return Err(FederationError::Sealed);
        }
        let record = Record {
            bundle: kept.json.to_string(),
            source: kept.source,
            updated_at: kept.updated_at,
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| FederationError::RecordUnencodable(e.to_string()))?;
        self.store
            .put(Table::FEDERATED_BUNDLES, td.as_str().as_bytes(), &bytes)?;
        self.change(|m| {
            m.insert(td, kept.clone());
        });
        Ok(kept)
    }

    /// Applies `f` to the bundles in memory, unless sealed meanwhile, and tells the
    /// push streams.
    fn change(&self, f: impl FnOnce(&mut Bundles)) {
        {
            let mut guard = write(&self.kept);
            if let Some(current) = guard.as_ref() {
                let mut next = (**current).clone();
                f(&mut next);
                *guard = Some(Arc::new(next));
            }
        }
        self.bump();
    }

    /// When each relationship's next fetch is due (at once before the first).
    pub(super) fn next_attempts(&self) -> Vec<(TrustDomain, SystemTime)> {
        lock(&self.status)
            .iter()
            .map(|(td, s)| (td.clone(), s.next_attempt.unwrap_or(SystemTime::UNIX_EPOCH)))
            .collect()
    }

    /// Records a fetch at `now` that returned an accepted bundle with `hint_secs`.
    pub(super) fn record_success(&self, td: &TrustDomain, now: SystemTime, hint_secs: u64) {
        if let Some(s) = lock(&self.status).get_mut(td) {
            s.last_success = Some(now);
            s.failures = 0;
            s.next_attempt = Some(plan::after_success(now, hint_secs));
        }
    }

    /// Records a fetch at `now` that failed or whose bundle was refused.
    pub(super) fn record_failure(&self, td: &TrustDomain, now: SystemTime, error: FetchError) {
        let hint = self.bundle(td).map(|k| k.bundle.refresh_hint_secs);
        if let Some(s) = lock(&self.status).get_mut(td) {
            s.failures = s.failures.saturating_add(1);
            s.last_error = Some((now, error));
            s.next_attempt = Some(plan::after_failure(now, s.failures, hint));
        }
    }

    /// Every relationship's status, in configuration order.
    pub fn status(&self) -> Vec<(Relationship, FetchStatus, Option<Kept>)> {
        let status = lock(&self.status).clone();
        self.relationships
            .iter()
            .map(|r| {
                let td = r.trust_domain();
                let s = status.get(td).cloned().unwrap_or_default();
                (r.clone(), s, self.bundle(td))
            })
            .collect()
    }

    /// This server's trust domain.
    pub fn own_trust_domain(&self) -> &TrustDomain {
        &self.own
    }
}

/// A stored record: its trust domain and the bundle it holds.
fn decode(key: &[u8], value: &[u8]) -> Result<(TrustDomain, Kept), &'static str> {
    let name = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8")?;
    let td = TrustDomain::parse(name).map_err(|_| "the key is not a trust domain")?;
    let record: Record = serde_json::from_slice(value).map_err(|_| "the record is not JSON")?;
    let bundle = Bundle::from_spiffe_json(&td, &record.bundle)
        .map_err(|_| "the record's bundle does not parse")?;
    Ok((td, Kept::new(bundle, record.source, record.updated_at)))
}
