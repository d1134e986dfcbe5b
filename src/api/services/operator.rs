//! `sigil.v1.Operator`: init, unseal, seal, status, key rotation.
//!
//! Init and unseal are audited twice when they fail: the gate records the
//! decision ("allow") before the handler runs, and a second record says the
//! attempt failed and why (a wrong passphrase, a tampered store).

use crate::api::gate::Gate;
use crate::api::pb::{self, operator_server::Operator};
use crate::policy::{Action, Resource};
use crate::secret::Secret;
use crate::server::{LifecycleError, Server};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct OperatorService {
    gate: Gate,
    server: Arc<Server>,
}

impl OperatorService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

fn store() -> Resource {
    Resource::new("store", None)
}

impl OperatorService {
    /// Audits a failed operation and returns what the caller is told.
    async fn failed(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: &Resource,
        error: LifecycleError,
    ) -> Status {
        let status = Status::from(error);
        match self
            .gate
            .record_failure(ext, action, resource, status.message())
            .await
        {
            Ok(()) => status,
            Err(audit) => Status::from(audit),
        }
    }
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.gate
            .authorize(&req, Action::OperatorStatus, store())
            .await?;
        let s = self.server.status()?;
        Ok(Response::new(pb::StatusResponse {
            initialized: s.initialized,
            sealed: s.sealed,
            trust_domain: s.trust_domain.unwrap_or_default(),
            key_versions: s.key_versions,
            active_key_version: s.active_key_version.unwrap_or(0),
            federation: super::bundle::federation_statuses(&self.server),
        }))
    }

    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        self.gate
            .authorize(&req, Action::OperatorInit, store())
            .await?;
        let (_, ext, msg) = req.into_parts();
        let passphrase = Secret::new(msg.passphrase);
        if let Err(e) = self.server.clone().init(passphrase).await {
            return Err(self.failed(&ext, Action::OperatorInit, &store(), e).await);
        }
        Ok(Response::new(pb::InitResponse {
            trust_domain: self.server.trust_domain().to_string(),
        }))
    }

    async fn unseal(
        &self,
        req: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::UnsealResponse>, Status> {
        // The flag shows in the decision record, and the re-anchor record
        // says what was accepted.
        let accept_rollback = req.get_ref().accept_rollback;
        let resource = if accept_rollback {
            Resource::new("store", Some("accept-rollback".to_owned()))
        } else {
            store()
        };
        self.gate
            .authorize(&req, Action::OperatorUnseal, resource.clone())
            .await?;
        let (_, ext, msg) = req.into_parts();
        let passphrase = Secret::new(msg.passphrase);
        let unsealed = self
            .server
            .clone()
            .unseal_with(passphrase, accept_rollback)
            .await;
        if let Err(e) = unsealed {
            return Err(self
                .failed(&ext, Action::OperatorUnseal, &resource, e)
                .await);
        }
        Ok(Response::new(pb::UnsealResponse {}))
    }

    async fn seal(
        &self,
        req: Request<pb::SealRequest>,
    ) -> Result<Response<pb::SealResponse>, Status> {
        self.gate
            .authorize(&req, Action::OperatorSeal, store())
            .await?;
        self.server.seal().await;
        Ok(Response::new(pb::SealResponse {}))
    }

    async fn rotate_keys(
        &self,
        req: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        self.gate
            .authorize(&req, Action::OperatorRotateKeys, store())
            .await?;
        let v = self.server.clone().rotate_keys().await?;
        Ok(Response::new(pb::RotateKeysResponse {
            active_key_version: v,
        }))
    }
}
