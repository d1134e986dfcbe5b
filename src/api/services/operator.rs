//! `sigil.v1.Operator`: init, unseal, seal, status, data-key rotation, and the
//! rotation and taint of the authority's keys (SPEC §3.3, §7).
//!
//! Init, unseal, rotation and taint are audited twice when they fail: the gate
//! records the decision ("allow") before the handler runs, and a second record
//! says the attempt failed and why (a wrong passphrase, a tampered store, an
//! unknown key).

use super::bundle::keys_to_pb;
use crate::api::ApiError;
use crate::api::gate::{Caller, Gate};
use crate::api::pb::{self, operator_server::Operator};
use crate::authority::{KeyEvent, KeyKind};
use crate::policy::{Action, Resource};
use crate::secret::Secret;
use crate::server::{KeyCause, LifecycleError, Server};
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

/// The key kind a request names.
fn key_kind(wire: i32) -> Result<KeyKind, ApiError> {
    match pb::SigningKeyKind::try_from(wire) {
        Ok(pb::SigningKeyKind::X509Ca) => Ok(KeyKind::X509Ca),
        Ok(pb::SigningKeyKind::Jwt) => Ok(KeyKind::Jwt),
        _ => Err(ApiError::InvalidArgument(
            "kind: must be SIGNING_KEY_KIND_X509_CA or SIGNING_KEY_KIND_JWT".into(),
        )),
    }
}

fn changes_to_pb(events: &[KeyEvent]) -> Vec<pb::SigningKeyChange> {
    events
        .iter()
        .map(|e| pb::SigningKeyChange {
            kind: e.kind.as_str().to_owned(),
            id: e.id.clone(),
            change: e.change.as_str().to_owned(),
        })
        .collect()
}

/// Whether `caller` sees the key view in `status`. Status answers anyone (an
/// operator needs it while sealed, before anything else works); the state and
/// taint of each key are for those who may act on them.
pub(super) fn sees_keys(caller: &Caller) -> bool {
    matches!(
        caller,
        Caller::Operator { .. } | Caller::Workload { admin: true, .. }
    )
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
        let caller = self
            .gate
            .authorize(&req, Action::OperatorStatus, store())
            .await?;
        let s = self.server.status()?;
        let authority_keys = match self.server.authority() {
            Ok(a) if sees_keys(&caller) => keys_to_pb(&a, self.server.rotation_policy()),
            _ => Vec::new(),
        };
        Ok(Response::new(pb::StatusResponse {
            initialized: s.initialized,
            sealed: s.sealed,
            trust_domain: s.trust_domain.unwrap_or_default(),
            key_versions: s.key_versions,
            active_key_version: s.active_key_version.unwrap_or(0),
            federation: super::bundle::federation_statuses(&self.server),
            authority_keys,
            rotation_failures: self.server.rotation_failures(),
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

    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let kind = key_kind(req.get_ref().kind)?;
        let force = req.get_ref().force;
        // The flag shows in the decision record: a forced rotation signs with a
        // key that not every peer has yet.
        let resource = Resource::new(kind.as_str(), force.then(|| "force".to_owned()));
        let caller = self
            .gate
            .authorize(&req, Action::OperatorRotateSigningKey, resource.clone())
            .await?;
        let cause = KeyCause::Request {
            caller: caller.audit_name(),
            action: Action::OperatorRotateSigningKey.as_str().to_owned(),
        };
        let events = match self.server.rotate_signing_key(kind, force, &cause).await {
            Ok(events) => events,
            Err(e) => {
                let (_, ext, _) = req.into_parts();
                return Err(self
                    .failed(&ext, Action::OperatorRotateSigningKey, &resource, e)
                    .await);
            }
        };
        Ok(Response::new(pb::RotateSigningKeyResponse {
            changes: changes_to_pb(&events),
            keys: self.keys()?,
        }))
    }

    async fn taint_signing_key(
        &self,
        req: Request<pb::TaintSigningKeyRequest>,
    ) -> Result<Response<pb::TaintSigningKeyResponse>, Status> {
        let kind = key_kind(req.get_ref().kind)?;
        let id = req.get_ref().id.clone();
        let resource = Resource::new(kind.as_str(), Some(id.clone()));
        let caller = self
            .gate
            .authorize(&req, Action::OperatorTaintSigningKey, resource.clone())
            .await?;
        if id.is_empty() {
            return Err(ApiError::InvalidArgument(
                "id: name the key to taint, as `sigil bundle show --format keys` lists it".into(),
            )
            .into());
        }
        let cause = KeyCause::Request {
            caller: caller.audit_name(),
            action: Action::OperatorTaintSigningKey.as_str().to_owned(),
        };
        let events = match self.server.taint_signing_key(kind, &id, &cause).await {
            Ok(events) => events,
            Err(e) => {
                let (_, ext, _) = req.into_parts();
                return Err(self
                    .failed(&ext, Action::OperatorTaintSigningKey, &resource, e)
                    .await);
            }
        };
        Ok(Response::new(pb::TaintSigningKeyResponse {
            changes: changes_to_pb(&events),
            keys: self.keys()?,
        }))
    }
}

impl OperatorService {
    /// The key view after a change.
    fn keys(&self) -> Result<Vec<pb::AuthorityKey>, LifecycleError> {
        let authority = self.server.authority()?;
        Ok(keys_to_pb(&authority, self.server.rotation_policy()))
    }
}
