//! `sigil.v1.Node`: X.509-SVID signing from CSRs and JWT-SVID minting.

use crate::api::ApiError;
use crate::api::convert::wire_time;
use crate::api::gate::Gate;
use crate::api::pb::{self, node_server::Node};
use crate::clock;
use crate::id::{SpiffeId, Ttl};
use crate::policy::{Action, Resource};
use crate::server::Server;
use std::sync::Arc;
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
}

fn spiffe_id(s: &str) -> Result<SpiffeId, ApiError> {
    SpiffeId::parse(s).map_err(|e| ApiError::InvalidArgument(format!("spiffe_id: {e}")))
}

/// A requested TTL: 0 means the default; anything else must be positive.
fn ttl(secs: i64, default: Ttl) -> Result<Ttl, ApiError> {
    if secs == 0 {
        return Ok(default);
    }
    Ttl::from_wire(secs).map_err(|e| ApiError::InvalidArgument(format!("ttl: {e}")))
}

/// Most DNS names one SVID may carry.
const MAX_DNS_NAMES: usize = 32;
/// Largest CSR accepted, in bytes; a P-256 CSR is a few hundred.
const MAX_CSR_LEN: usize = 16 * 1024;

#[tonic::async_trait]
impl Node for NodeService {
    async fn sign_x509_svid(
        &self,
        req: Request<pb::SignX509SvidRequest>,
    ) -> Result<Response<pb::SignX509SvidResponse>, Status> {
        let target = req.get_ref().spiffe_id.clone();
        self.gate
            .authorize(
                &req,
                Action::SvidMint,
                Resource::new("spiffe_id", Some(target.clone())),
            )
            .await?;
        let msg = req.into_inner();
        let id = spiffe_id(&target)?;
        let ttl = ttl(msg.ttl_seconds, self.server.x509_svid_ttl())?;
        if msg.csr.len() > MAX_CSR_LEN {
            return Err(ApiError::InvalidArgument("csr: larger than 16 KiB".into()).into());
        }
        if msg.dns_names.len() > MAX_DNS_NAMES {
            return Err(ApiError::InvalidArgument("dns_names: at most 32".into()).into());
        }
        let authority = self.server.authority()?;
        let svid = authority
            .sign_x509_svid(
                &msg.csr,
                &id,
                ttl.as_duration(),
                &msg.dns_names,
                clock::now(),
            )
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SignX509SvidResponse {
            chain: svid.chain_der.clone(),
            bundle: authority.bundle().x509_authorities,
            expires_at: wire_time(svid.expires_at),
        }))
    }

    async fn attest_agent(
        &self,
        _req: Request<pb::AttestAgentRequest>,
    ) -> Result<Response<pb::AgentSvidResponse>, Status> {
        Err(Status::unimplemented("agent attestation"))
    }

    async fn renew_agent(
        &self,
        _req: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::AgentSvidResponse>, Status> {
        Err(Status::unimplemented("agent renewal"))
    }

    type SyncEntriesStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::SyncEntriesResponse, Status>> + Send>,
    >;

    async fn sync_entries(
        &self,
        _req: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        Err(Status::unimplemented("entry sync"))
    }

    async fn mint_jwt_svid(
        &self,
        req: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        let target = req.get_ref().spiffe_id.clone();
        self.gate
            .authorize(
                &req,
                Action::JwtMint,
                Resource::new("spiffe_id", Some(target.clone())),
            )
            .await?;
        let msg = req.into_inner();
        let id = spiffe_id(&target)?;
        let ttl = ttl(msg.ttl_seconds, self.server.jwt_svid_ttl())?;
        let jwt = self
            .server
            .authority()?
            .mint_jwt_svid(&id, &msg.audience, ttl.as_duration(), clock::now())
            .map_err(ApiError::from)?;
        let token = String::from_utf8(jwt.token.expose().to_vec())
            .map_err(|_| ApiError::Internal("minted token is not UTF-8".into()))?;
        Ok(Response::new(pb::MintJwtSvidResponse {
            token,
            expires_at: wire_time(jwt.expires_at),
        }))
    }
}
