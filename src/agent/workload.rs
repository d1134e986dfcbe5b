//! The SPIFFE Workload API on the agent's Unix socket (SPEC §3.1): attests
//! each caller from its peer credentials, resolves the identities it is
//! entitled to through [`IdentityProvider`], and serves X.509-SVIDs,
//! JWT-SVIDs, bundles and JWT validation, plus gRPC health and reflection.
//!
//! What a caller is told is decided in one place, [`to_status`].

pub mod claims;
mod federated;
mod rpc;
mod socket;
mod streams;
#[cfg(test)]
pub(crate) mod tests;

pub use socket::{WorkloadConn, WorkloadPeer, bind_workload_socket, serve_workload_api};

use super::{AgentError, IdentityProvider};
use crate::api::workload as wpb;
use crate::api::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::attest::{AttestError, PeerPin};
use crate::authority::{AudienceError, Bundle, JwtError};
use crate::id::{IdError, Selector, SpiffeId, TrustDomain};
use crate::registry::Entry;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::net::unix::UCred;
use tonic::service::Routes;
use tonic::{Request, Status};

/// The metadata key every Workload API request must carry with value `true`;
/// it marks the request as coming from a local workload, not a browser or a
/// proxied caller (SSRF protection).
const SECURITY_HEADER: &str = "workload.spiffe.io";

/// How long a call made before the agent's first push from the server waits
/// for it. A workload started together with its agent (at boot, in `sigil
/// dev`) then gets its identity instead of a refusal that would be wrong: an
/// agent that has not synced cannot know whether the caller has an entry.
/// Past the wait the call fails with Unavailable, which clients retry.
const FIRST_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Turns a caller's Unix peer credentials, pinned by its pidfd, into
/// selectors. Implemented over the real workload attestor by the agent;
/// tests use fixed selectors.
pub trait Attest: Send + Sync + 'static {
    /// The caller's selectors, or why it could not be attested. May block.
    fn attest(&self, cred: &UCred, pin: &PeerPin) -> Result<Arc<[Selector]>, AttestError>;

    /// The caller's selectors if a cached attestation still holds, checked
    /// without blocking (no filesystem waits, no hashing); `None` sends the
    /// caller to [`Attest::attest`].
    fn attest_cached(&self, _cred: &UCred, _pin: &PeerPin) -> Option<Arc<[Selector]>> {
        None
    }
}

/// Why a Workload API request failed. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The request lacks metadata `workload.spiffe.io: true`.
    #[error("security header missing from request")]
    MissingSecurityHeader,
    /// The connection carries no peer credentials to attest. The caller is
    /// told only that attestation failed.
    #[error("workload attestation failed")]
    NoPeerCredentials,
    /// The attestor could not attest the caller. The caller is told only
    /// that; who it is and why go to the log (see [`to_status`]).
    #[error("workload attestation failed")]
    AttestationFailed {
        /// The caller's pid from `SO_PEERCRED`, if it had one.
        pid: Option<i32>,
        /// The caller's uid from `SO_PEERCRED`.
        uid: u32,
        /// Why attestation failed.
        cause: AttestError,
    },
    /// The attestation task itself failed (it panicked or was cancelled).
    #[error("workload attestation failed")]
    AttestorFailed,
    /// The caller matches no registration entry (or not the requested one).
    #[error("no identity issued")]
    NoIdentityIssued,
    /// The agent has not heard from the server since it started: it cannot
    /// tell yet whether the caller has an identity.
    #[error("the agent has not received its registration entries from the server yet")]
    NotSynced,
    /// The agent does not know its trust bundle yet.
    #[error("trust bundle is not available yet")]
    BundleUnknown,
    /// No audience was given, or an empty one.
    #[error("audience must be specified")]
    MissingAudience,
    /// The audiences break a size limit or hold a control character.
    #[error("audience: {0}")]
    BadAudience(AudienceError),
    /// The token to validate is empty.
    #[error("svid must be specified")]
    MissingToken,
    /// The requested SPIFFE ID does not parse.
    #[error("invalid spiffe_id: {0}")]
    BadSpiffeId(IdError),
    /// The token's subject belongs to a trust domain with no known bundle.
    #[error("no bundle for trust domain {0:?}")]
    UnknownTrustDomain(String),
    /// The token is signed by a key of this trust domain that an operator
    /// marked compromised (`sigil operator taint-jwt-key`).
    #[error("invalid JWT-SVID: signed by key {0}, which is marked compromised")]
    TaintedKey(String),
    /// The token is not a valid JWT-SVID for the audience.
    #[error("invalid JWT-SVID: {0}")]
    InvalidToken(JwtError),
    /// The agent could not provide a credential.
    #[error(transparent)]
    Agent(AgentError),
}

/// The one mapping from errors to what a workload is told. Internal detail
/// goes to the log, never to the caller.
pub fn to_status(e: &WorkloadError) -> Status {
    use WorkloadError as E;
    match e {
        E::MissingSecurityHeader
        | E::MissingAudience
        | E::BadAudience(_)
        | E::MissingToken
        | E::BadSpiffeId(_)
        | E::UnknownTrustDomain(_)
        | E::InvalidToken(_)
        | E::TaintedKey(_) => Status::invalid_argument(e.to_string()),
        // The pid, uid and cause say which local processes exist and what
        // they run; they are for the operator, not for the caller.
        E::AttestationFailed { pid, uid, cause } => {
            tracing::warn!(pid, uid, %cause, "workload api: attestation failed");
            Status::unavailable(e.to_string())
        }
        E::AttestorFailed => {
            tracing::error!("workload api: the attestation task failed");
            Status::unavailable(e.to_string())
        }
        E::NoPeerCredentials => {
            tracing::warn!("workload api: the connection carries no peer credentials");
            Status::unavailable(e.to_string())
        }
        E::BundleUnknown | E::NotSynced => Status::unavailable(e.to_string()),
        E::NoIdentityIssued => Status::permission_denied(e.to_string()),
        E::Agent(a) => agent_status(a),
    }
}

fn agent_status(e: &AgentError) -> Status {
    match e {
        AgentError::ServerUnavailable(_) => {
            tracing::warn!(error = %e, "workload api: cannot issue");
            Status::unavailable("the sigil server is unavailable")
        }
        AgentError::Denied(_) => Status::permission_denied("no identity issued"),
        AgentError::Invalid(m) => Status::invalid_argument(m.clone()),
        AgentError::Internal(_) => {
            tracing::error!(error = %e, "workload api: internal error");
            Status::internal("internal error")
        }
    }
}

/// The Workload API service. Cloning is cheap (two `Arc`s).
#[derive(Clone)]
pub struct WorkloadApi {
    provider: Arc<dyn IdentityProvider>,
    attest: Arc<dyn Attest>,
}

impl std::fmt::Debug for WorkloadApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadApi").finish_non_exhaustive()
    }
}

/// The Workload API with gRPC health (overall status SERVING) and reflection.
pub fn workload_routes(api: WorkloadApi) -> Result<Routes, tonic_reflection::server::Error> {
    // A fresh reporter reports the server ("") as SERVING.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(wpb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(Routes::default()
        .add_service(SpiffeWorkloadApiServer::new(api))
        .add_service(health)
        .add_service(reflection))
}

impl WorkloadApi {
    /// A service answering from `provider`, attesting callers with `attest`.
    pub fn new(provider: Arc<dyn IdentityProvider>, attest: Arc<dyn Attest>) -> Self {
        Self { provider, attest }
    }

    /// Checks the security header, waits for the agent's first sync (see
    /// [`FIRST_SYNC_WAIT`]), and attests the caller from the peer
    /// credentials and pidfd its connection carries (see [`WorkloadConn`]).
    async fn caller<T>(&self, req: &Request<T>) -> Result<Arc<[Selector]>, WorkloadError> {
        check_header(req)?;
        if !self.provider.synced() {
            tokio::time::timeout(FIRST_SYNC_WAIT, self.provider.wait_synced())
                .await
                .map_err(|_| WorkloadError::NotSynced)?;
        }
        let peer = req
            .extensions()
            .get::<WorkloadPeer>()
            .ok_or(WorkloadError::NoPeerCredentials)?;
        let cred = peer.cred.ok_or(WorkloadError::NoPeerCredentials)?;
        // A cached attestation is checked in place: it only reads /proc and
        // never waits on a filesystem, and handing it to a blocking thread
        // and back would cost more than the check itself.
        if let Some(selectors) = self.attest.attest_cached(&cred, &peer.pin) {
            return Ok(selectors);
        }
        let pin = peer.pin.clone();
        let attest = self.attest.clone();
        // A full attestation hashes executables and may block: keep it off
        // the reactor.
        tokio::task::spawn_blocking(move || attest.attest(&cred, &pin))
            .await
            .map_err(|_| WorkloadError::AttestorFailed)?
            .map_err(|cause| WorkloadError::AttestationFailed {
                pid: cred.pid(),
                uid: cred.uid(),
                cause,
            })
    }

    /// The caller's entries; an error when there are none.
    fn entries(&self, selectors: &[Selector]) -> Result<Vec<Arc<Entry>>, WorkloadError> {
        let entries = self.provider.matching(selectors);
        if entries.is_empty() {
            return Err(WorkloadError::NoIdentityIssued);
        }
        Ok(entries)
    }

    fn bundle(&self) -> Result<Arc<Bundle>, WorkloadError> {
        self.provider.bundle().ok_or(WorkloadError::BundleUnknown)
    }

    /// The full X.509 snapshot for `selectors`, default identity first.
    async fn x509_snapshot(
        &self,
        selectors: &[Selector],
    ) -> Result<wpb::X509svidResponse, WorkloadError> {
        let entries = unique_hints(self.entries(selectors)?);
        let own = self.bundle()?;
        let bundle = own.x509_concat_der();
        // A bundle value is never empty: with no roots there is nothing to send.
        if bundle.is_empty() {
            return Err(WorkloadError::BundleUnknown);
        }
        let federated_bundles = federated::bundles(
            &*self.provider,
            &own.trust_domain,
            &entries,
            Bundle::x509_concat_der,
        );
        let mut svids = Vec::with_capacity(entries.len());
        let mut first_error = None;
        for entry in entries {
            // One identity that cannot be issued right now (the server is
            // away and it was never cached) must not hide the cached ones.
            let id = match self.provider.x509_svid(&entry).await {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(entry = %entry.id.as_str(), error = %e, "SVID unavailable; left out of the response");
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            svids.push(wpb::X509svid {
                spiffe_id: id.spiffe_id.to_string(),
                x509_svid: id.chain_der.concat(),
                x509_svid_key: id.key_pkcs8.expose().to_vec(),
                bundle: bundle.clone(),
                hint: entry.hint.clone(),
            });
        }
        if svids.is_empty()
            && let Some(e) = first_error
        {
            return Err(WorkloadError::Agent(e));
        }
        Ok(wpb::X509svidResponse {
            svids,
            federated_bundles: federated_bundles.into_iter().collect(),
            ..Default::default()
        })
    }

    /// The bundle map for a caller that must still match an entry: its own
    /// trust domain's, and those its entries federate with.
    fn bundle_map(
        &self,
        selectors: &[Selector],
        encode: fn(&Bundle) -> Vec<u8>,
    ) -> Result<BTreeMap<String, Vec<u8>>, WorkloadError> {
        let entries = self.entries(selectors)?;
        let bundle = self.bundle()?;
        let value = encode(&bundle);
        if value.is_empty() {
            return Err(WorkloadError::BundleUnknown);
        }
        let mut map = federated::bundles(&*self.provider, &bundle.trust_domain, &entries, encode);
        map.insert(bundle.trust_domain.id_string(), value);
        Ok(map)
    }
}

/// Requires metadata `workload.spiffe.io: true`.
fn check_header<T>(req: &Request<T>) -> Result<(), WorkloadError> {
    match req.metadata().get(SECURITY_HEADER) {
        Some(v) if v.as_bytes() == b"true" => Ok(()),
        _ => Err(WorkloadError::MissingSecurityHeader),
    }
}

/// Keeps hints unique within a response: a later entry whose non-empty hint
/// repeats an earlier one is dropped, so a workload choosing by hint never
/// gets an ambiguous answer.
fn unique_hints(entries: Vec<Arc<Entry>>) -> Vec<Arc<Entry>> {
    let mut seen = HashSet::new();
    entries
        .into_iter()
        .filter(|e| {
            let keep = e.hint.is_empty() || seen.insert(e.hint.clone());
            if !keep {
                tracing::warn!(
                    entry = e.id.as_str(),
                    hint = %e.hint,
                    "workload api: dropping an identity with a duplicate hint"
                );
            }
            keep
        })
        .collect()
}

/// The trust domain named by an unverified token's `sub`, used only to pick
/// the bundle to verify against; `None` when the token does not decode (the
/// validator then reports the broken rule).
fn unverified_trust_domain(token: &str) -> Option<TrustDomain> {
    use base64::Engine as _;
    // The validator refuses longer tokens before decoding; so do we.
    if token.len() > 16 * 1024 {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let sub = claims.get("sub")?.as_str()?;
    Some(SpiffeId::parse(sub).ok()?.trust_domain())
}
