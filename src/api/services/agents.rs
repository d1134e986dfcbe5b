//! `sigil.v1.Agents`: join tokens, the agent list, bans.

use crate::api::ApiError;
use crate::api::convert::wire_time;
use crate::api::gate::Gate;
use crate::api::pb::{self, agents_server::Agents};
use crate::id::{SpiffeId, Ttl};
use crate::policy::{Action, Resource};
use crate::server::Server;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Join tokens live ten minutes unless asked otherwise.
const DEFAULT_TOKEN_TTL_SECS: u64 = 600;

#[derive(Debug)]
pub(super) struct AgentsService {
    gate: Gate,
    server: Arc<Server>,
}

impl AgentsService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl Agents for AgentsService {
    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        // Handing an active agent's name to a new node is its own action, so
        // policy can restrict it and the audit record says it happened.
        let action = if req.get_ref().replace {
            Action::JoinTokenReplace
        } else {
            Action::JoinTokenCreate
        };
        let name = Some(req.get_ref().agent_name.clone()).filter(|n| !n.is_empty());
        self.gate
            .authorize(&req, action, Resource::new("join_token", name))
            .await?;
        let msg = req.into_inner();
        let ttl = if msg.ttl_seconds == 0 {
            Ttl::from_secs(DEFAULT_TOKEN_TTL_SECS)
        } else {
            Ttl::from_wire(msg.ttl_seconds)
        }
        .map_err(|e| ApiError::InvalidArgument(format!("ttl: {e}")))?;
        let name = Some(msg.agent_name.as_str()).filter(|n| !n.is_empty());
        let t = self
            .server
            .agents()
            .create_join_token(ttl.as_duration(), name, msg.replace, self.server.now())
            .await?;
        let token = String::from_utf8(t.token.expose().to_vec())
            .map_err(|_| ApiError::Internal("token is not UTF-8".into()))?;
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token,
            agent_id: t.agent_id.to_string(),
            expires_at: wire_time(t.expires_at),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.gate
            .authorize(&req, Action::AgentList, Resource::new("agent", None))
            .await?;
        let agents = self
            .server
            .agents()
            .list()
            .into_iter()
            .map(|a| pb::Agent {
                spiffe_id: a.spiffe_id,
                attested_at: secs(a.attested_at),
                last_seen: secs(a.last_seen),
                svid_expires_at: secs(a.svid_expires_at),
                banned: a.banned,
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn ban(
        &self,
        req: Request<pb::BanAgentRequest>,
    ) -> Result<Response<pb::BanAgentResponse>, Status> {
        let target = req.get_ref().spiffe_id.clone();
        self.gate
            .authorize(
                &req,
                Action::AgentBan,
                Resource::new("agent", Some(target.clone())),
            )
            .await?;
        let id = SpiffeId::parse(&target)
            .map_err(|e| ApiError::InvalidArgument(format!("spiffe_id: {e}")))?;
        self.server.agents().ban(&id).await?;
        Ok(Response::new(pb::BanAgentResponse {}))
    }
}
