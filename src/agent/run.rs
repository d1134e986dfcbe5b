//! Running the agent: the server session, the entry push stream, renewal of
//! the agent's own SVID, workload SVID rotation, and the Workload API on its
//! socket. `run` takes a bound listener so tests can use temporary sockets.

use super::cache::IdentityCache;
use super::rotation;
use super::session::{NodeIssuer, Session, SessionError};
use super::workload::{Attest, WorkloadApi, serve_workload_api, workload_routes};
use crate::api::pb;
use crate::attest::{AttestConfig, AttestError, Attestor, PeerCred, PeerPin};
use crate::authority::Bundle;
use crate::clock;
use crate::id::{Selector, TrustDomain};
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// How long open Workload API streams may stay after shutdown begins.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The server's `HOST:PORT`.
    pub server: String,
    /// PEM bundle trusted for the first connection.
    pub trust_bundle: PathBuf,
    /// Where the agent keeps its SVID and bundle.
    pub data_dir: PathBuf,
    /// Workload attestation settings.
    pub attest: AttestConfig,
    /// Connection limits of the Workload API socket.
    pub limits: crate::net::Limits,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentRunError {
    /// The session could not start.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Serving the Workload API failed.
    #[error("workload API: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Attests callers from their kernel peer credentials, pidfd and /proc.
#[derive(Debug)]
struct UnixAttest(Attestor);

impl Attest for UnixAttest {
    fn attest(
        &self,
        cred: &tokio::net::unix::UCred,
        pin: &PeerPin,
    ) -> Result<Arc<[Selector]>, AttestError> {
        self.0.attest(&PeerCred::try_from(*cred)?, pin)
    }

    fn attest_cached(
        &self,
        cred: &tokio::net::unix::UCred,
        pin: &PeerPin,
    ) -> Option<Arc<[Selector]>> {
        self.0.attest_cached(&PeerCred::try_from(*cred).ok()?, pin)
    }
}

/// A started agent: its session and cache, for callers that embed it.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The server session.
    pub session: Arc<Session>,
    /// The identity cache behind the Workload API.
    pub cache: Arc<IdentityCache>,
}

impl Agent {
    /// Starts the session (attesting with `join_token` if there is no usable
    /// stored SVID) and fills the cache with the last known bundle.
    pub async fn start(
        opts: &AgentOptions,
        join_token: Option<&Secret>,
    ) -> Result<Agent, AgentRunError> {
        let session =
            Session::start(&opts.server, &opts.data_dir, &opts.trust_bundle, join_token).await?;
        let cache = IdentityCache::new(Arc::new(NodeIssuer(session.clone())));
        if let Some(b) = session.bundle() {
            cache.set_bundle((*b).clone());
        }
        Ok(Agent { session, cache })
    }

    /// Serves the Workload API on `listener` until `shutdown` completes,
    /// running the background loops alongside.
    pub async fn run(
        self,
        opts: &AgentOptions,
        listener: UnixListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentRunError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(sync_entries(
            self.session.clone(),
            self.cache.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(renew_agent(self.session.clone(), stop_rx.clone()));
        tokio::spawn(self.cache.clone().run_rotation(stop_rx.clone()));
        let api = WorkloadApi::new(
            self.cache.clone(),
            Arc::new(UnixAttest(Attestor::new(opts.attest.clone()))),
        );
        let routes = workload_routes(api)?;
        let (begin_tx, mut begin_rx) = watch::channel(false);
        let mut stopped = stop_rx;
        let serve = serve_workload_api(listener, routes, opts.limits, async move {
            tokio::select! {
                () = shutdown => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
            let _ = begin_tx.send(true);
        });
        // Workload streams stay open for as long as clients hold them; after
        // a short grace period they are cut off so shutdown completes.
        let deadline = async {
            let _ = begin_rx.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_GRACE).await;
        };
        let result = tokio::select! {
            r = serve => r,
            () = deadline => Ok(()),
        };
        let _ = stop_tx.send(true);
        Ok(result?)
    }
}

fn apply(session: &Session, cache: &IdentityCache, msg: pb::SyncEntriesResponse) {
    if msg.federated_bundles_changed {
        cache.set_federated_bundles(federated_bundles(&msg.federated_bundles));
    }
    if !msg.bundle_json.is_empty() {
        match Bundle::from_spiffe_json(session.trust_domain(), &msg.bundle_json) {
            Ok(b) => {
                session.set_bundle(&b);
                cache.set_bundle(b);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unusable bundle from the server"),
        }
    }
    let upserts = msg
        .upserts
        .iter()
        .filter_map(|e| match session.entry_from_wire(e) {
            Ok(entry) => Some(entry),
            Err(err) => {
                tracing::warn!(entry = %e.id, error = %err, "ignoring an unusable entry");
                None
            }
        })
        .collect();
    cache.upsert_entries(upserts, &msg.deletes);
    // After the bundle: the keys that replace the tainted ones are in it.
    if let Some(t) = msg.taints {
        session.set_tainted_cas(t.x509_authorities.clone());
        cache.set_taints(t.x509_authorities, t.jwt_authorities);
    }
    if msg.synced {
        cache.mark_synced();
    }
}

/// The foreign bundles of a push, each parsed as its trust domain's. The
/// server checked them before keeping them; one that does not parse here is
/// left out (its workloads then see no bundle for that trust domain, rather
/// than a wrong one).
fn federated_bundles(pushed: &HashMap<String, String>) -> BTreeMap<TrustDomain, Bundle> {
    let mut out = BTreeMap::new();
    for (name, json) in pushed {
        let parsed = TrustDomain::parse(name)
            .map_err(|e| e.to_string())
            .and_then(|td| {
                Bundle::from_spiffe_json(&td, json)
                    .map(|b| (td, b))
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok((td, b)) => {
                out.insert(td, b);
            }
            Err(e) => {
                tracing::warn!(trust_domain = %name, error = %e, "ignoring an unusable foreign bundle from the server");
            }
        }
    }
    out
}

/// Keeps the entry stream open: resumes from what the cache holds after
/// every disconnect, with backoff, and never exits on a failure.
async fn sync_entries(
    session: Arc<Session>,
    cache: Arc<IdentityCache>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = std::sync::atomic::AtomicBool::new(false);
        let attempt = async {
            let known = cache.known_revisions();
            let mut stream = session
                .node()
                .sync_entries(pb::SyncEntriesRequest { known })
                .await?
                .into_inner();
            while let Some(msg) = stream.message().await? {
                connected.store(true, std::sync::atomic::Ordering::Relaxed);
                apply(&session, &cache, msg);
            }
            Ok::<_, tonic::Status>(())
        };
        tokio::select! {
            r = attempt => match r {
                Ok(()) => tracing::info!("entry stream closed by the server; reconnecting"),
                Err(s) => tracing::warn!(code = ?s.code(), message = s.message(), "entry stream failed; retrying"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        if connected.load(std::sync::atomic::Ordering::Relaxed) {
            // The stream worked for a while: reconnect quickly.
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Renews the agent's SVID at half its life, or at once when the server says
/// its CA is tainted; retries with backoff and keeps the current one until
/// then. The same shape as every rotation loop ([`rotation::sleep_for`]).
async fn renew_agent(session: Arc<Session>, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        let due = session.renew_at() <= clock::now();
        if due {
            match session.renew().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "agent SVID renewal failed; retrying");
                }
            }
        }
        // A renewal still due after a failure waits for the backoff; otherwise
        // until the renewal time.
        let renew_at = session.renew_at();
        let now = clock::now();
        let next = (renew_at > now || failures == 0).then_some(renew_at);
        let sleep = rotation::sleep_for(now, next, failures);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = session.renewal_requested() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
