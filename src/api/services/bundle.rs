//! `sigil.v1.Bundle`: the trust domain's trust bundle.

use crate::api::gate::Gate;
use crate::api::pb::{self, bundle_server::Bundle};
use crate::policy::{Action, Resource};
use crate::server::Server;
use std::sync::Arc;
use tonic::{Request, Response, Status};

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
        let bundle = self.server.authority()?.bundle();
        Ok(Response::new(pb::GetBundleResponse {
            trust_domain: td,
            pem: bundle.to_pem(),
            spiffe_json: bundle.to_spiffe_json(),
            sequence: bundle.sequence,
        }))
    }
}
