//! `sigil.v1.Bundle`: the trust domain's trust bundle, and the rotation state of the
//! keys in it (SPEC §7), which `bundle show` and `operator status` display.

use crate::api::convert::wire_time;
use crate::api::gate::Gate;
use crate::api::pb::{self, bundle_server::Bundle};
use crate::authority::{Authority, KeyRecord, RotationPolicy};
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
}

#[tonic::async_trait]
impl Bundle for BundleService {
    async fn get(
        &self,
        req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::GetBundleResponse>, Status> {
        let td = self.server.trust_domain().to_string();
        self.gate
            .authorize(
                &req,
                Action::BundleShow,
                Resource::new("bundle", Some(td.clone())),
            )
            .await?;
        let authority = self.server.authority()?;
        let bundle = authority.bundle();
        Ok(Response::new(pb::GetBundleResponse {
            trust_domain: td,
            pem: bundle.to_pem(),
            spiffe_json: bundle.to_spiffe_json(),
            sequence: bundle.sequence,
            keys: keys_to_pb(&authority, self.server.rotation_policy()),
        }))
    }
}
