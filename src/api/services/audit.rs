//! `sigil.v1.Audit`: verify the chain and read its tail.

use crate::api::gate::Gate;
use crate::api::pb::{self, audit_server::Audit};
use crate::policy::{Action, Resource};
use crate::server::Server;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct AuditService {
    gate: Gate,
    server: Arc<Server>,
}

impl AuditService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

/// Most records one tail call returns.
const MAX_TAIL: usize = 1000;

#[tonic::async_trait]
impl Audit for AuditService {
    async fn verify(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.gate
            .authorize(&req, Action::AuditVerify, Resource::new("audit", None))
            .await?;
        let store_generation = self.server.store_generation();
        let resp = match self.server.clone().verify_audit().await? {
            Ok(report) => pb::VerifyAuditResponse {
                ok: true,
                records: report.records,
                authenticated: report.authenticated,
                unauthenticated: report.unauthenticated(),
                sealed_runs: report
                    .sealed_runs
                    .iter()
                    .map(|r| pb::SealedRun {
                        first: r.first,
                        last: r.last,
                        anchored_by: r.anchored_by.unwrap_or(0),
                    })
                    .collect(),
                head_seq: report.head.seq,
                head_hash: hex::encode(report.head.hash),
                log_generation: report.generation,
                store_generation,
                ..Default::default()
            },
            Err(e) => pb::VerifyAuditResponse {
                ok: false,
                bad_record: e.record().unwrap_or(0),
                error: e.to_string(),
                store_generation,
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn tail(
        &self,
        req: Request<pb::TailAuditRequest>,
    ) -> Result<Response<pb::TailAuditResponse>, Status> {
        self.gate
            .authorize(&req, Action::AuditTail, Resource::new("audit", None))
            .await?;
        let n = usize::try_from(req.get_ref().count)
            .unwrap_or(MAX_TAIL)
            .clamp(1, MAX_TAIL);
        let records = self.server.clone().audit_tail(n).await?;
        Ok(Response::new(pb::TailAuditResponse { records }))
    }
}
