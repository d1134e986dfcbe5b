//! `sigil.v1.Quarantine`: put an identity in quarantine, lift it, list
//! them (SPEC §3.3 `sigil quarantine`). Each call passes the gate and is
//! recorded with who, the identity and the reason, then with what it did.

use crate::api::ApiError;
use crate::api::gate::Gate;
use crate::api::pb::{self, quarantine_server::Quarantine};
use crate::policy::{Action, Resource};
use crate::server::Server;
use crate::server::quarantine::QuarantineRecord;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct QuarantineService {
    gate: Gate,
    server: Arc<Server>,
}

impl QuarantineService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

fn record(r: &QuarantineRecord) -> pb::QuarantineRecord {
    pb::QuarantineRecord {
        spiffe_id: r.spiffe_id.clone(),
        reason: r.reason.clone(),
        by: r.by.clone(),
        at: i64::try_from(r.at).unwrap_or(i64::MAX),
    }
}

fn resource(id: &str) -> Resource {
    Resource::new("spiffe_id", Some(id.to_owned()))
}

#[tonic::async_trait]
impl Quarantine for QuarantineService {
    async fn put(
        &self,
        req: Request<pb::QuarantinePutRequest>,
    ) -> Result<Response<pb::QuarantinePutResponse>, Status> {
        let m = req.get_ref();
        let res = resource(&m.spiffe_id);
        let caller = self
            .gate
            .authorize(&req, Action::QuarantineSet, res.clone())
            .await?;
        let done = self
            .server
            .quarantine(&m.spiffe_id, &m.reason, &caller.audit_name())
            .await;
        let said = match &done {
            Ok(q) => Ok(format!(
                "quarantined {}: {}; revoked tokens [{}] and JIT requests [{}]",
                q.record.spiffe_id,
                q.record.reason,
                q.tokens.join(" "),
                q.requests.join(" ")
            )),
            Err(e) => Err(e.to_string()),
        };
        self.gate
            .record_outcome(req.extensions(), Action::QuarantineSet, &res, said)
            .await?;
        let q = done.map_err(ApiError::from)?;
        Ok(Response::new(pb::QuarantinePutResponse {
            record: Some(record(&q.record)),
            tokens_revoked: q.tokens,
            requests_revoked: q.requests,
        }))
    }

    async fn lift(
        &self,
        req: Request<pb::QuarantineLiftRequest>,
    ) -> Result<Response<pb::QuarantineRecord>, Status> {
        let m = req.get_ref();
        let res = resource(&m.spiffe_id);
        self.gate
            .authorize(&req, Action::QuarantineLift, res.clone())
            .await?;
        let done = self.server.lift_quarantine(&m.spiffe_id, &m.reason).await;
        let said = match &done {
            Ok(l) => {
                let mut said = format!(
                    "lifted the quarantine of {} (put for: {}): {}",
                    l.record.spiffe_id,
                    l.record.reason,
                    m.reason.trim()
                );
                if !l.tokens.is_empty() || !l.requests.is_empty() {
                    said.push_str(&format!(
                        "; revoked first, obtained as it was put: tokens [{}], JIT requests [{}]",
                        l.tokens.join(" "),
                        l.requests.join(" ")
                    ));
                }
                Ok(said)
            }
            Err(e) => Err(e.to_string()),
        };
        self.gate
            .record_outcome(req.extensions(), Action::QuarantineLift, &res, said)
            .await?;
        let l = done.map_err(ApiError::from)?;
        Ok(Response::new(record(&l.record)))
    }

    async fn list(
        &self,
        req: Request<pb::QuarantineListRequest>,
    ) -> Result<Response<pb::QuarantineListResponse>, Status> {
        self.gate
            .authorize(&req, Action::QuarantineList, Resource::kind("spiffe_id"))
            .await?;
        let records = self
            .server
            .quarantines()
            .list()
            .iter()
            .map(|r| record(r))
            .collect();
        Ok(Response::new(pb::QuarantineListResponse { records }))
    }
}
