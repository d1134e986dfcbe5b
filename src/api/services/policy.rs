//! `sigil.v1.Policy`: evaluate inputs and reload the policy directory.

use crate::api::ApiError;
use crate::api::gate::Gate;
use crate::api::pb::{self, policy_server::Policy};
use crate::policy::{Action, Input, Resource};
use crate::server::Server;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct PolicyService {
    gate: Gate,
    server: Arc<Server>,
}

impl PolicyService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

/// Largest policy input accepted, in bytes.
const MAX_INPUT_LEN: usize = 64 * 1024;

#[tonic::async_trait]
impl Policy for PolicyService {
    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        self.gate
            .authorize(&req, Action::PolicyCheck, Resource::new("policy", None))
            .await?;
        let text = req.into_inner().input_json;
        if text.len() > MAX_INPUT_LEN {
            return Err(ApiError::InvalidArgument("input_json: larger than 64 KiB".into()).into());
        }
        let input: Input = serde_json::from_str(&text)
            .map_err(|e| ApiError::InvalidArgument(format!("input_json: {e}")))?;
        let d = self.server.pdp().decide(&input);
        Ok(Response::new(pb::CheckResponse {
            allow: d.allow,
            reasons: d.reasons,
        }))
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        self.gate
            .authorize(&req, Action::PolicyReload, Resource::new("policy", None))
            .await?;
        let files = self.server.reload_policy()?;
        Ok(Response::new(pb::ReloadResponse { files }))
    }
}
