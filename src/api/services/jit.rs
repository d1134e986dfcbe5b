//! `sigil.v1.Jit`: just-in-time elevation (SPEC §3.3 `sigil jit`).

use crate::api::gate::Gate;
use crate::api::pb::{self, jit_server::Jit};
use crate::policy::{Action, Resource};
use crate::server::Server;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct JitService {
    gate: Gate,
    server: Arc<Server>,
}

impl JitService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

#[tonic::async_trait]
impl Jit for JitService {
    async fn roles(
        &self,
        req: Request<pb::JitRolesRequest>,
    ) -> Result<Response<pb::JitRolesResponse>, Status> {
        self.gate
            .authorize(&req, Action::JitRoles, Resource::kind("jit_role"))
            .await?;
        let roles = self
            .server
            .config()
            .jit
            .roles
            .iter()
            .map(|r| pb::JitRole {
                name: r.name.clone(),
                grants: r.grants.iter().map(ToString::to_string).collect(),
                max_duration_seconds: i64::try_from(r.max_duration).unwrap_or(i64::MAX),
                approvals: r.approvals,
            })
            .collect();
        Ok(Response::new(pb::JitRolesResponse { roles }))
    }
}
