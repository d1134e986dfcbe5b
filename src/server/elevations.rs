//! Just-in-time elevation requests held by the server (SPEC §3.3
//! `sigil jit`): every request and what happened to it, in the sealed store
//! (table `grants`) and in memory, with an index of the grants active per
//! subject that the gate reads on every request.
//!
//! The rules are `crate::jit`'s; this module stores their outcome. Changes
//! to one request are made one at a time (a lock held across the durable
//! write), so two approvals arriving together are both counted, and memory
//! changes only after the store has the new state.

use super::blocking;
use crate::jit::{self, JitError, JitRole, Request, State};
use crate::store::{SealError, SealedStore, Table};
use crate::sync::{read, write};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// A grant an approved request gives its subject, as the policy sees it
/// (`input.grants`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveGrant {
    /// `VERB:PATTERN`.
    pub grant: String,
    /// The request it comes from.
    pub request: String,
    /// When it ends, Unix seconds.
    pub expires_at: u64,
}

/// Why an elevation operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ElevationError {
    /// A rule of the workflow refused the step.
    #[error(transparent)]
    Rule(#[from] JitError),
    /// No request has this ID.
    #[error("no JIT request {0}")]
    NotFound(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] SealError),
    /// A stored request does not decode.
    #[error("JIT request {id} is corrupt: {message}")]
    Corrupt {
        /// The request's key.
        id: String,
        /// What failed.
        message: String,
    },
    /// The store work did not complete.
    #[error("JIT store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// No random bytes for an ID.
    #[error("no randomness for a request ID")]
    Random,
    /// The step's audit record could not be written, so nothing changed.
    #[error("audit log unavailable; nothing changed")]
    Audit,
}

#[derive(Default)]
struct Held {
    requests: BTreeMap<String, Arc<Request>>,
    /// Subject → the grants its active requests give, rebuilt at each change.
    active: HashMap<String, Vec<ActiveGrant>>,
}

impl Held {
    /// Rebuilds the index from the grants each request stored when it was
    /// made (what its approvers approved), not from the roles as configured
    /// now.
    fn reindex(&mut self) {
        let mut active: HashMap<String, Vec<ActiveGrant>> = HashMap::new();
        for r in self.requests.values() {
            let (State::Active, Some(expires_at)) = (r.state, r.expires_at) else {
                continue;
            };
            active
                .entry(r.subject.clone())
                .or_default()
                .extend(r.grants.iter().map(|g| ActiveGrant {
                    grant: g.clone(),
                    request: r.id.clone(),
                    expires_at,
                }));
        }
        self.active = active;
    }
}

/// Most requests one requester may have waiting at once.
pub const MAX_PENDING_PER_REQUESTER: usize = 16;

/// Elevation requests. Cheap to clone.
#[derive(Clone)]
pub struct Elevations {
    store: Arc<SealedStore>,
    roles: Arc<Vec<JitRole>>,
    held: Arc<RwLock<Held>>,
    /// One change at a time, across its durable write.
    changing: Arc<tokio::sync::Mutex<()>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for Elevations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elevations")
            .field("requests", &read(&self.held).requests.len())
            .finish_non_exhaustive()
    }
}

fn put(store: &SealedStore, r: &Request) -> Result<(), ElevationError> {
    let json = serde_json::to_vec(r).map_err(|e| ElevationError::Corrupt {
        id: r.id.clone(),
        message: e.to_string(),
    })?;
    store.put(Table::GRANTS, r.id.as_bytes(), &json)?;
    Ok(())
}

/// A new request ID: `jit-` and 16 hex digits, random so that IDs reveal
/// nothing about how many requests there were.
fn new_id() -> Result<String, ElevationError> {
    let mut raw = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| ElevationError::Random)?;
    Ok(format!("jit-{}", hex::encode(raw)))
}

impl Elevations {
    /// Requests recorded in `store`, for `roles`.
    pub fn new(store: Arc<SealedStore>, roles: Vec<JitRole>) -> Self {
        Self {
            store,
            roles: Arc::new(roles),
            held: Arc::new(RwLock::new(Held::default())),
            changing: Arc::new(tokio::sync::Mutex::new(())),
            changed: Arc::new(Notify::new()),
        }
    }

    /// The configured roles.
    pub fn roles(&self) -> &[JitRole] {
        &self.roles
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Result<&JitRole, JitError> {
        self.roles
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| JitError::UnknownRole(name.to_owned()))
    }

    /// Reads every request (at unseal). Blocks.
    pub fn load(&self) -> Result<usize, ElevationError> {
        let mut held = Held::default();
        for (key, value) in self.store.scan_prefix(Table::GRANTS, b"")? {
            let id = String::from_utf8_lossy(&key).into_owned();
            let r: Request =
                serde_json::from_slice(value.expose()).map_err(|e| ElevationError::Corrupt {
                    id: id.clone(),
                    message: e.to_string(),
                })?;
            held.requests.insert(id, Arc::new(r));
        }
        held.reindex();
        let n = held.requests.len();
        *write(&self.held) = held;
        self.changed.notify_one();
        Ok(n)
    }

    /// Forgets every request (at seal); unseal loads them again.
    pub fn clear(&self) {
        *write(&self.held) = Held::default();
    }

    /// The request `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Request>> {
        read(&self.held).requests.get(id).cloned()
    }

    /// Every request, oldest first.
    pub fn list(&self) -> Vec<Arc<Request>> {
        let mut all: Vec<Arc<Request>> = read(&self.held).requests.values().cloned().collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// The grants active for `subject` at `now`. A grant past its end is
    /// left out here even before the expiry task records it.
    pub fn active_grants(&self, subject: &str, now: u64) -> Vec<ActiveGrant> {
        let held = read(&self.held);
        if held.active.is_empty() {
            return Vec::new();
        }
        held.active
            .get(subject)
            .map(|gs| gs.iter().filter(|g| now < g.expires_at).cloned().collect())
            .unwrap_or_default()
    }

    /// Resolves when a request changed (for the expiry task).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Stores a new pending request made by `requester` and returns it.
    /// `record` is called with the request before it is stored, and must
    /// succeed (it audits the step): a request nobody could trace is never
    /// made.
    #[allow(
        clippy::too_many_arguments,
        reason = "every field a request starts with; named at each call"
    )]
    pub async fn create<F>(
        &self,
        role: &str,
        requester: &str,
        subject: Option<&str>,
        duration: u64,
        reason: &str,
        now: impl Fn() -> u64,
        pending_ttl: u64,
        record: impl FnOnce(Arc<Request>) -> F,
    ) -> Result<Arc<Request>, ElevationError>
    where
        F: std::future::Future<Output = Result<(), ElevationError>>,
    {
        let role = self.role(role)?;
        let _one = self.changing.lock().await;
        let now = now();
        let waiting = read(&self.held)
            .requests
            .values()
            .filter(|r| r.requester == requester && r.state_at(now) == State::Pending)
            .count();
        if waiting >= MAX_PENDING_PER_REQUESTER {
            return Err(JitError::TooManyPending {
                requester: requester.to_owned(),
                max: MAX_PENDING_PER_REQUESTER,
            }
            .into());
        }
        let mut id = new_id()?;
        while self.get(&id).is_some() {
            id = new_id()?;
        }
        let r = Arc::new(Request::new(
            role,
            id,
            requester,
            subject,
            duration,
            reason,
            now,
            pending_ttl,
        )?);
        record(r.clone()).await?;
        self.commit(r).await
    }

    /// Applies `step` to request `id` at the time `now` gives under the
    /// change lock, has `record` audit the result, then stores it. Nothing
    /// changes when the step refuses or the record fails.
    pub async fn update<T, F>(
        &self,
        id: &str,
        now: impl Fn() -> u64,
        step: impl FnOnce(&mut Request, u64) -> Result<T, JitError>,
        record: impl FnOnce(&T, Arc<Request>) -> F,
    ) -> Result<(T, Arc<Request>), ElevationError>
    where
        F: std::future::Future<Output = Result<(), ElevationError>>,
    {
        let _one = self.changing.lock().await;
        let current = self
            .get(id)
            .ok_or_else(|| ElevationError::NotFound(id.to_owned()))?;
        let mut next = (*current).clone();
        let out = step(&mut next, now())?;
        let next = Arc::new(next);
        record(&out, next.clone()).await?;
        let stored = self.commit(next).await?;
        Ok((out, stored))
    }

    /// Records what [`jit::plan`] finds due at `now` among `ids`, checked
    /// again under the change lock (an approval may have landed since the
    /// plan was made): each such request's state becomes expired, after
    /// `record` audited it. Returns the requests changed.
    pub async fn expire<F>(
        &self,
        ids: &[String],
        now: u64,
        record: impl Fn(Arc<Request>) -> F,
    ) -> Result<Vec<Arc<Request>>, ElevationError>
    where
        F: std::future::Future<Output = Result<(), ElevationError>>,
    {
        let _one = self.changing.lock().await;
        let mut done = Vec::new();
        for id in ids {
            let Some(current) = self.get(id) else {
                continue;
            };
            if jit::plan([&*current], now).0.is_empty() {
                continue;
            }
            let mut next = (*current).clone();
            jit::expire(&mut next);
            let next = Arc::new(next);
            record(next.clone()).await?;
            done.push(self.commit(next).await?);
        }
        Ok(done)
    }

    /// Drops the requests `ids` that [`jit::prunable`] still finds ended long
    /// enough at `now`, from the store and from memory. Returns how many.
    pub async fn prune(&self, ids: &[String], now: u64) -> Result<usize, ElevationError> {
        let _one = self.changing.lock().await;
        let gone: Vec<String> = {
            let held = read(&self.held);
            let still = ids.iter().filter_map(|id| held.requests.get(id));
            jit::prunable(still.map(|r| &**r), now)
        };
        if gone.is_empty() {
            return Ok(0);
        }
        let (store, keys) = (self.store.clone(), gone.clone());
        blocking::run(move || {
            for id in &keys {
                store.delete(Table::GRANTS, id.as_bytes())?;
            }
            Ok::<_, ElevationError>(())
        })
        .await?;
        let mut held = write(&self.held);
        for id in &gone {
            held.requests.remove(id);
        }
        held.reindex();
        Ok(gone.len())
    }

    /// Writes `r` durably, then shows it in memory. Called with `changing`
    /// held.
    async fn commit(&self, r: Arc<Request>) -> Result<Arc<Request>, ElevationError> {
        let (store, stored) = (self.store.clone(), r.clone());
        blocking::run(move || put(&store, &stored)).await?;
        {
            let mut held = write(&self.held);
            held.requests.insert(r.id.clone(), r.clone());
            held.reindex();
        }
        self.changed.notify_one();
        Ok(r)
    }
}

/// Longest sleep of the expiry task: a clock that jumps (or a manual clock
/// in tests) is noticed within this.
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(5);
/// Shortest sleep between rounds, so a failing store cannot make it spin.
const MIN_SLEEP: std::time::Duration = std::time::Duration::from_millis(100);

/// The task that records expiry (STYLE §7): a thin loop around
/// [`jit::plan`]. A grant past its end gives nothing even before this runs
/// (the gate asks for grants active at the request's time); the task makes
/// the stored state say so, and audits each expiry. Runs until `stop`.
pub async fn run(server: Arc<super::Server>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let now = crate::clock::unix_seconds(server.now());
        let requests = server.elevations().list();
        let (due, next) = jit::plan(requests.iter().map(|r| &**r), now);
        let ids: Vec<String> = due
            .into_iter()
            .map(|d| match d {
                jit::Due::PendingExpired(id) | jit::Due::GrantExpired(id) => id,
            })
            .collect();
        if !ids.is_empty() {
            let audited = |r: Arc<Request>| audit_expiry(&server, r);
            if let Err(e) = server.elevations().expire(&ids, now, audited).await {
                tracing::error!(error = %e, "recording JIT expiry failed; retrying");
            }
        }
        let old = jit::prunable(requests.iter().map(|r| &**r), now);
        if !old.is_empty() {
            match server.elevations().prune(&old, now).await {
                Ok(n) => tracing::info!(requests = n, "ended JIT requests past retention dropped"),
                Err(e) => tracing::error!(error = %e, "dropping old JIT requests failed"),
            }
        }
        let sleep = next
            .map_or(MAX_SLEEP, |t| {
                std::time::Duration::from_secs(t.saturating_sub(now))
            })
            .clamp(MIN_SLEEP, MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = server.elevations().changed() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Audits an expiry at the time it took effect (the grant's end, or the
/// end of the wait for approvals), whenever the task records it.
async fn audit_expiry(server: &super::Server, r: Arc<Request>) -> Result<(), ElevationError> {
    let (why, at) = match (r.activated_at, r.expires_at) {
        (Some(_), Some(end)) => (format!("grant {} for {} ended", r.id, r.subject), end),
        _ => (
            format!("request {} expired without enough approvals", r.id),
            r.pending_until,
        ),
    };
    let mut event = crate::audit::Event::by_server(at, "jit.expire", vec![why]);
    event.resource = format!("jit_role:{}", r.role);
    server.audit().append(event).await.map(drop).map_err(|e| {
        tracing::error!(error = %e, id = %r.id, "audit append for a JIT expiry failed");
        ElevationError::Audit
    })
}
