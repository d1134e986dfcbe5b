//! `sigil.v1.Node`: X.509-SVID signing from CSRs, JWT-SVID minting, agent
//! attestation and renewal, and the entry push stream to agents.

use crate::api::ApiError;
use crate::api::convert::{entry_to_pb, wire_time};
use crate::api::gate::{Caller, Gate};
use crate::api::pb::{self, node_server::Node};
use crate::authority::{Authority, AuthorityError, KeyKind, check_audiences};
use crate::id::{IdError, SpiffeId, Ttl};
use crate::policy::{Action, Resource};
use crate::registry::{Entry, EntryId, MAX_DNS_NAMES};
use crate::server::{AgentsError, Server};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct NodeService {
    gate: Gate,
    server: Arc<Server>,
}

impl NodeService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }

    /// The entry an agent asks to issue for: it must be one the agent is
    /// authorized for, and its SPIFFE ID must be the one requested.
    fn agent_entry(
        &self,
        agent: &SpiffeId,
        entry_id: &str,
        spiffe_id: &SpiffeId,
    ) -> Result<Entry, ApiError> {
        let id = EntryId::parse(entry_id)?;
        let entry = self
            .server
            .entries()
            .get_for_agent(agent, &id)
            .ok_or_else(|| {
                ApiError::Denied(format!("entry {entry_id} is not authorized for {agent}"))
            })?;
        if &entry.spiffe_id != spiffe_id {
            return Err(ApiError::Denied(format!(
                "entry {entry_id} does not issue {spiffe_id}"
            )));
        }
        self.server.agents().touch(agent, self.server.now());
        Ok(entry)
    }

    async fn agent_svid(
        &self,
        id: &SpiffeId,
        csr: &[u8],
    ) -> Result<pb::AgentSvidResponse, ApiError> {
        check_csr(csr)?;
        let now = self.server.now();
        let authority = self.server.authority()?;
        let svid = authority.sign_x509_svid(
            csr,
            id,
            self.server.x509_svid_ttl().as_duration(),
            &[],
            now,
        )?;
        self.server
            .agents()
            .record_svid(
                id,
                svid.chain_der.first().map_or(&[][..], Vec::as_slice),
                svid.expires_at,
                now,
            )
            .await?;
        Ok(pb::AgentSvidResponse {
            spiffe_id: id.to_string(),
            chain: svid.chain_der,
            expires_at: wire_time(svid.expires_at),
            bundle_json: authority.bundle().to_spiffe_json(),
        })
    }
}

fn spiffe_id(s: &str) -> Result<SpiffeId, ApiError> {
    workload_id(s).map_err(|e| ApiError::InvalidArgument(format!("spiffe_id: {e}")))
}

/// `s` as a workload's SPIFFE ID, or why it cannot be one (shared with
/// the JIT service's `for`).
pub(super) fn workload_id(s: &str) -> Result<SpiffeId, String> {
    let invalid = |e: IdError| e.to_string();
    let id = SpiffeId::parse(s).map_err(invalid)?;
    // SVIDs name workloads: the bare trust domain ID is the CA's, never a leaf's
    // (X509-SVID §3.1) nor a JWT-SVID's `sub` (JWT-SVID §3.1).
    id.check_workload().map_err(invalid)?;
    // sigil's own identities (the server, agents) are issued only by sigil:
    // an SVID for /sigil/server would let its holder impersonate the server
    // to agents, and one under /sigil/agent/ would make it an agent.
    if id.is_reserved() {
        return Err(format!("{id} is reserved for sigil's own components"));
    }
    Ok(id)
}

/// A requested TTL: 0 means the default; anything else must be positive.
fn ttl(secs: i64, default: Ttl) -> Result<Ttl, ApiError> {
    if secs == 0 {
        return Ok(default);
    }
    Ttl::from_wire(secs).map_err(|e| ApiError::InvalidArgument(format!("ttl: {e}")))
}

/// An entry's TTL when it sets one, else `default`.
fn entry_ttl(secs: Option<u64>, default: Ttl) -> Ttl {
    secs.and_then(|s| Ttl::from_secs(s).ok()).unwrap_or(default)
}

/// Largest CSR accepted, in bytes; a P-256 CSR is a few hundred.
const MAX_CSR_LEN: usize = 16 * 1024;

fn check_csr(csr: &[u8]) -> Result<(), ApiError> {
    if csr.len() > MAX_CSR_LEN {
        return Err(ApiError::InvalidArgument("csr: larger than 16 KiB".into()));
    }
    Ok(())
}

/// Nothing is issued for a quarantined identity.
fn not_quarantined(server: &Server, id: &SpiffeId) -> Result<(), ApiError> {
    match server.quarantined(id) {
        Some(q) => Err(ApiError::Denied(q.denial())),
        None => Ok(()),
    }
}

fn require_agent(caller: Caller) -> Result<SpiffeId, ApiError> {
    match caller {
        Caller::Agent { id } => Ok(id),
        _ => Err(ApiError::Denied(
            "only an attested agent may call this".into(),
        )),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn sign_x509_svid(
        &self,
        req: Request<pb::SignX509SvidRequest>,
    ) -> Result<Response<pb::SignX509SvidResponse>, Status> {
        let target = req.get_ref().spiffe_id.clone();
        let caller = self
            .gate
            .authorize(
                &req,
                Action::SvidMint,
                Resource::new("spiffe_id", Some(target.clone())),
            )
            .await?;
        let msg = req.into_inner();
        let id = spiffe_id(&target)?;
        not_quarantined(&self.server, &id)?;
        check_csr(&msg.csr)?;
        let (ttl, dns) = match &caller {
            Caller::Agent { id: agent } => {
                let entry = self.agent_entry(agent, &msg.entry_id, &id)?;
                (
                    entry_ttl(entry.x509_ttl_secs, self.server.x509_svid_ttl()),
                    entry.dns_names,
                )
            }
            _ => {
                if msg.dns_names.len() > MAX_DNS_NAMES {
                    return Err(ApiError::InvalidArgument(format!(
                        "dns_names: at most {MAX_DNS_NAMES}"
                    ))
                    .into());
                }
                (
                    ttl(msg.ttl_seconds, self.server.x509_svid_ttl())?,
                    msg.dns_names,
                )
            }
        };
        let authority = self.server.authority()?;
        let svid = authority
            .sign_x509_svid(&msg.csr, &id, ttl.as_duration(), &dns, self.server.now())
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SignX509SvidResponse {
            chain: svid.chain_der,
            bundle: authority.bundle().x509_authorities,
            expires_at: wire_time(svid.expires_at),
        }))
    }

    async fn mint_jwt_svid(
        &self,
        req: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        let target = req.get_ref().spiffe_id.clone();
        let caller = self
            .gate
            .authorize(
                &req,
                Action::JwtMint,
                Resource::new("spiffe_id", Some(target.clone())),
            )
            .await?;
        let msg = req.into_inner();
        let id = spiffe_id(&target)?;
        not_quarantined(&self.server, &id)?;
        // Refused before signing: a token too large for validators would otherwise be
        // signed, fail the authority's own check and reach the caller as an internal
        // error.
        check_audiences(&msg.audience).map_err(|e| ApiError::from(AuthorityError::from(e)))?;
        let ttl = match &caller {
            Caller::Agent { id: agent } => {
                let entry = self.agent_entry(agent, &msg.entry_id, &id)?;
                entry_ttl(entry.jwt_ttl_secs, self.server.jwt_svid_ttl())
            }
            _ => ttl(msg.ttl_seconds, self.server.jwt_svid_ttl())?,
        };
        let jwt = self
            .server
            .authority()?
            .mint_jwt_svid(&id, &msg.audience, ttl.as_duration(), self.server.now())
            .map_err(ApiError::from)?;
        let token = String::from_utf8(jwt.token.expose().to_vec())
            .map_err(|_| ApiError::Internal("minted token is not UTF-8".into()))?;
        Ok(Response::new(pb::MintJwtSvidResponse {
            token,
            expires_at: wire_time(jwt.expires_at),
        }))
    }

    async fn attest_agent(
        &self,
        req: Request<pb::AttestAgentRequest>,
    ) -> Result<Response<pb::AgentSvidResponse>, Status> {
        self.gate
            .authorize(&req, Action::AgentAttest, Resource::new("agent", None))
            .await?;
        let msg = req.into_inner();
        check_csr(&msg.csr)?;
        // A malformed CSR must not burn a valid token: check it first.
        crate::authority::check_csr(&msg.csr).map_err(ApiError::from)?;
        // The token is the proof of identity: it is checked and consumed
        // before anything is signed, and only its hash is ever stored.
        let agent = self
            .server
            .agents()
            .redeem(&msg.join_token, self.server.now())
            .await?;
        // A join token does not bring a quarantined agent back.
        not_quarantined(&self.server, &agent)?;
        let resp = self.agent_svid(&agent, &msg.csr).await?;
        tracing::info!(agent = %agent, "agent attested");
        Ok(Response::new(resp))
    }

    async fn renew_agent(
        &self,
        req: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::AgentSvidResponse>, Status> {
        let caller = self
            .gate
            .authorize(&req, Action::AgentRenew, Resource::new("agent", None))
            .await?;
        let agent = require_agent(caller)?;
        Ok(Response::new(
            self.agent_svid(&agent, &req.into_inner().csr).await?,
        ))
    }

    type SyncEntriesStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::SyncEntriesResponse, Status>> + Send>,
    >;

    async fn sync_entries(
        &self,
        req: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let caller = self
            .gate
            .authorize(&req, Action::AgentSync, Resource::new("agent", None))
            .await?;
        let agent = require_agent(caller)?;
        self.server.agents().touch(&agent, self.server.now());
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(push_entries(
            self.server.clone(),
            agent,
            req.into_inner().known,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type SyncSender = mpsc::Sender<Result<pb::SyncEntriesResponse, Status>>;

/// The tainted keys still in `authority`'s bundle, as pushed to agents.
fn taints_of(authority: &Authority) -> pb::KeyTaints {
    pb::KeyTaints {
        x509_authorities: authority.tainted_ids(KeyKind::X509Ca),
        jwt_authorities: authority.tainted_ids(KeyKind::Jwt),
    }
}

/// Pushes to one agent what changed since what it holds, then every later
/// change as it happens: entries, and the bundle and taints whenever the
/// authority's keys change (before a new key signs, SPEC §7). Ends when the
/// agent goes away, is banned, or the server seals.
async fn push_entries(
    server: Arc<Server>,
    agent: SpiffeId,
    mut sent: HashMap<String, u64>,
    tx: SyncSender,
) {
    let mut changes = server.entries().changes();
    let mut bans = server.agents().bans();
    let mut keys = server.key_changes();
    let mut stopping = server.stopping();
    let mut federation = server.federation().changes();
    let mut quarantines = server.quarantines().changes();
    let mut bundle_sent: Option<String> = None;
    let mut federated_sent = None;
    let mut taints_sent: Option<pb::KeyTaints> = None;
    let mut first = true;
    loop {
        changes.borrow_and_update();
        bans.borrow_and_update();
        federation.borrow_and_update();
        quarantines.borrow_and_update();
        keys.borrow_and_update();
        // Sealed is checked first: sealing also empties the agent records
        // in memory, and a sealed server must say so, not that the agent is
        // banned. It answers as every other call on a sealed server does.
        let Ok(authority) = server.authority() else {
            let _ = tx.send(Err(ApiError::Sealed.into())).await;
            return;
        };
        if !server.agents().is_active(&agent) {
            let _ = tx
                .send(Err(AgentsError::AgentBanned(agent.clone()).into()))
                .await;
            return;
        }
        // A quarantined agent's open stream ends, as its next call would be
        // refused at the gate.
        if let Err(e) = not_quarantined(&server, &agent) {
            let _ = tx.send(Err(e.into())).await;
            return;
        }
        // A quarantined identity's entries are sent as deleted: the agent
        // drops its SVIDs and ends its Workload API streams.
        let mut authorized = server.entries().authorized_for(&agent);
        authorized.retain(|e| server.quarantined(&e.spiffe_id).is_none());
        let mut msg = pb::SyncEntriesResponse {
            synced: first,
            ..Default::default()
        };
        for e in &authorized {
            if sent.get(e.id.as_str()) != Some(&e.revision) {
                msg.upserts.push(entry_to_pb(e));
            }
        }
        let live: std::collections::HashSet<&str> =
            authorized.iter().map(|e| e.id.as_str()).collect();
        msg.deletes = sent
            .keys()
            .filter(|k| !live.contains(k.as_str()))
            .cloned()
            .collect();
        let bundle = authority.bundle().to_spiffe_json();
        if bundle_sent.as_ref() != Some(&bundle) {
            msg.bundle_json = bundle.clone();
        }
        // The foreign bundles the agent's entries federate with, whole, when they
        // changed (a bundle fetched or set, an entry's federates_with edited).
        let federated = server.federation().for_entries(&authorized);
        if federated_sent.as_ref() != Some(&federated) {
            msg.federated_bundles = federated.clone().into_iter().collect();
            msg.federated_bundles_changed = true;
        }
        let taints = taints_of(&authority);
        if taints_sent.as_ref() != Some(&taints) {
            msg.taints = Some(taints.clone());
        }
        if first
            || !msg.upserts.is_empty()
            || !msg.deletes.is_empty()
            || !msg.bundle_json.is_empty()
            || msg.federated_bundles_changed
            || msg.taints.is_some()
        {
            for e in &msg.upserts {
                sent.insert(e.id.clone(), e.revision);
            }
            for d in &msg.deletes {
                sent.remove(d);
            }
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            bundle_sent = Some(bundle);
            federated_sent = Some(federated);
            taints_sent = Some(taints);
        }
        first = false;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            r = bans.changed() => if r.is_err() { return },
            r = federation.changed() => if r.is_err() { return },
            r = quarantines.changed() => if r.is_err() { return },
            r = keys.changed() => if r.is_err() { return },
            () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                let _ = tx.send(Err(ApiError::ShuttingDown.into())).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}
