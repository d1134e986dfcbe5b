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
        let resp = match self.server.clone().verify_audit().await? {
            Ok(report) => pb::VerifyAuditResponse {
                ok: true,
                records: report.records,
                bad_record: 0,
                error: String::new(),
            },
            Err(e) => pb::VerifyAuditResponse {
                ok: false,
                records: 0,
                bad_record: e.record().unwrap_or(0),
                error: e.to_string(),
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
