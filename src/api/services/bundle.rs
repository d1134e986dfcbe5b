//! `sigil.v1.Bundle`: the trust domain's trust bundle, the rotation state of the
//! keys in it (SPEC §7), which `bundle show` and `operator status` display, and the
//! foreign trust domains' bundles operators set, list and delete (SPIFFE Federation).
//!
//! Setting and deleting a foreign bundle changes whom this server trusts, so both are
//! audited twice when they fail, like init and unseal: the gate records the decision
//! before the handler runs, and a second record says the change failed and why.

use crate::api::convert::wire_time;
use crate::api::gate::Gate;
use crate::api::pb::{self, bundle_server::Bundle};
use crate::authority::{Authority, KeyRecord, RotationPolicy};
use crate::federation::{FederationError, FetchStatus, Kept, Relationship, View};
use crate::policy::{Action, Resource};
use crate::server::Server;
use std::sync::Arc;
use std::time::SystemTime;
use tonic::{Request, Response, Status};

/// A time on the wire: Unix seconds, 0 for none.
fn maybe_time(t: Option<SystemTime>) -> i64 {
    t.map_or(0, wire_time)
}

/// One key as the API shows it.
fn key_to_pb(k: &KeyRecord, policy: &RotationPolicy) -> pb::AuthorityKey {
    pb::AuthorityKey {
        kind: k.kind.as_str().to_owned(),
        id: k.id.clone(),
        state: k.state.as_str().to_owned(),
        created_at: wire_time(k.created_at),
        published_at: wire_time(k.published_at),
        activated_at: maybe_time(k.activated_at),
        forced_activation: k.forced_activation,
        retired_at: maybe_time(k.retired_at),
        not_after: wire_time(k.not_after),
        tainted_at: maybe_time(k.tainted_at),
        leaves_bundle_at: maybe_time(k.leaves_bundle_at(policy)),
        activate_early: k.activate_early,
    }
}

/// Every key of `authority`, CA keys first, each kind in bundle order.
pub(super) fn keys_to_pb(authority: &Authority, policy: &RotationPolicy) -> Vec<pb::AuthorityKey> {
    authority
        .keys()
        .iter()
        .map(|k| key_to_pb(k, policy))
        .collect()
}

#[derive(Debug)]
pub(super) struct BundleService {
    gate: Gate,
    server: Arc<Server>,
}

impl BundleService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }

    /// Audits a failed change and returns what the caller is told.
    async fn failed(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: &Resource,
        error: FederationError,
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

fn foreign(td: &str) -> Resource {
    Resource::new("bundle", Some(td.to_owned()))
}

/// A foreign trust domain's bundle as the API shows it.
fn federated_pb(
    trust_domain: String,
    kept: Option<&Kept>,
    endpoint: Option<pb::FederationStatus>,
) -> pb::FederatedBundle {
    let mut out = pb::FederatedBundle {
        trust_domain,
        endpoint,
        ..Default::default()
    };
    if let Some(k) = kept {
        out.source = k.source.as_str().to_owned();
        out.spiffe_json = k.json.to_string();
        out.sequence = k.bundle.sequence;
        out.x509_authorities = u32::try_from(k.bundle.x509_authorities.len()).unwrap_or(u32::MAX);
        out.jwt_authorities = u32::try_from(k.bundle.jwt_authorities.len()).unwrap_or(u32::MAX);
        out.updated_at = i64::try_from(k.updated_at).unwrap_or(i64::MAX);
    }
    out
}

/// How fetching a relationship's bundle goes, as `operator status` and `bundle list`
/// show it.
pub(super) fn federation_status_pb(
    rel: &Relationship,
    status: &FetchStatus,
    kept: Option<&Kept>,
) -> pb::FederationStatus {
    pb::FederationStatus {
        trust_domain: rel.trust_domain().to_string(),
        url: rel.config.url.as_str().to_owned(),
        profile: rel.config.profile.name().to_owned(),
        last_success: maybe_time(status.last_success),
        last_error_at: maybe_time(status.last_error.as_ref().map(|(t, _)| *t)),
        last_error: status
            .last_error
            .as_ref()
            .map(|(_, e)| e.to_string())
            .unwrap_or_default(),
        next_attempt: maybe_time(status.next_attempt),
        failures: status.failures,
        sequence: kept.map_or(0, |k| k.bundle.sequence),
    }
}

fn view_pb(v: &View) -> pb::FederatedBundle {
    let endpoint = match (&v.relationship, &v.status) {
        (Some(rel), Some(status)) => Some(federation_status_pb(rel, status, v.kept.as_ref())),
        _ => None,
    };
    federated_pb(v.trust_domain.to_string(), v.kept.as_ref(), endpoint)
}

/// Every relationship's status, for `operator status`.
pub(super) fn federation_statuses(server: &Server) -> Vec<pb::FederationStatus> {
    server
        .federation()
        .status()
        .iter()
        .map(|(rel, status, kept)| federation_status_pb(rel, status, kept.as_ref()))
        .collect()
}

#[tonic::async_trait]
impl Bundle for BundleService {
    async fn get(
        &self,
        req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::GetBundleResponse>, Status> {
        let td = self.server.trust_domain().to_string();
        let caller = self
            .gate
            .authorize(
                &req,
                Action::BundleShow,
                Resource::new("bundle", Some(td.clone())),
            )
            .await?;
        let authority = self.server.authority()?;
        let bundle = authority.bundle();
        // The bundle is public; the state and taint of each key are shown, as
        // in `operator status`, only to those who may act on them.
        let keys = if super::operator::sees_keys(&caller) {
            keys_to_pb(&authority, self.server.rotation_policy())
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GetBundleResponse {
            trust_domain: td,
            pem: bundle.to_pem(),
            spiffe_json: bundle.to_spiffe_json(),
            sequence: bundle.sequence,
            keys,
        }))
    }

    async fn set_federated(
        &self,
        req: Request<pb::SetFederatedBundleRequest>,
    ) -> Result<Response<pb::FederatedBundle>, Status> {
        let resource = foreign(&req.get_ref().trust_domain);
        self.gate
            .authorize(&req, Action::BundleSet, resource.clone())
            .await?;
        let (_, ext, msg) = req.into_parts();
        let set = self
            .server
            .federation()
            .set(&msg.trust_domain, &msg.spiffe_json, self.server.now())
            .await;
        match set {
            Ok(kept) => {
                tracing::info!(trust_domain = %msg.trust_domain, sequence = kept.bundle.sequence,
                    "foreign bundle set by an operator");
                Ok(Response::new(federated_pb(
                    msg.trust_domain,
                    Some(&kept),
                    None,
                )))
            }
            Err(e) => Err(self.failed(&ext, Action::BundleSet, &resource, e).await),
        }
    }

    async fn list_federated(
        &self,
        req: Request<pb::ListFederatedBundlesRequest>,
    ) -> Result<Response<pb::ListFederatedBundlesResponse>, Status> {
        self.gate
            .authorize(&req, Action::BundleList, Resource::new("bundle", None))
            .await?;
        let bundles = self
            .server
            .federation()
            .list()
            .iter()
            .map(view_pb)
            .collect();
        Ok(Response::new(pb::ListFederatedBundlesResponse { bundles }))
    }

    async fn delete_federated(
        &self,
        req: Request<pb::DeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::DeleteFederatedBundleResponse>, Status> {
        let resource = foreign(&req.get_ref().trust_domain);
        self.gate
            .authorize(&req, Action::BundleDelete, resource.clone())
            .await?;
        let (_, ext, msg) = req.into_parts();
        match self.server.federation().delete(&msg.trust_domain).await {
            Ok(()) => {
                tracing::info!(trust_domain = %msg.trust_domain, "foreign bundle deleted by an operator");
                Ok(Response::new(pb::DeleteFederatedBundleResponse {}))
            }
            Err(e) => Err(self.failed(&ext, Action::BundleDelete, &resource, e).await),
        }
    }
}
