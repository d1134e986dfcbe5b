//! `sigil.v1.Jit`: just-in-time elevation (SPEC §3.3 `sigil jit`).

use crate::api::ApiError;
use crate::api::gate::{Caller, Gate};
use crate::api::pb::{self, jit_server::Jit};
use crate::clock;
use crate::id::SpiffeId;
use crate::jit::{Act, Approved, Request as Elevation, State};
use crate::policy::{Action, Resource};
use crate::server::{ElevationError, Server};
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

fn role_resource(role: &str) -> Resource {
    Resource::new("jit_role", Some(role.to_owned()))
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn act(a: &Act) -> pb::JitAct {
    pb::JitAct {
        by: a.by.clone(),
        at: secs(a.at),
        text: a.text.clone(),
    }
}

impl JitService {
    fn now(&self) -> u64 {
        clock::unix_seconds(self.server.now())
    }

    /// The answer's form of `r`, its state as of `now`.
    fn shown(&self, r: &Elevation, now: u64) -> pb::JitElevation {
        let role = self.server.elevations().role(&r.role).ok();
        pb::JitElevation {
            id: r.id.clone(),
            role: r.role.clone(),
            requester: r.requester.clone(),
            subject: r.subject.clone(),
            duration_seconds: secs(r.duration),
            reason: r.reason.clone(),
            created: secs(r.created),
            pending_until: secs(r.pending_until),
            state: r.state_at(now).as_str().to_owned(),
            approvals: r.approvals.iter().map(act).collect(),
            approvals_needed: role.map_or(0, |role| role.approvals),
            activated_at: r.activated_at.map_or(0, secs),
            expires_at: r.expires_at.map_or(0, secs),
            ended: r.ended.as_ref().map(act),
            grants: role.map_or_else(Vec::new, |role| {
                role.grants.iter().map(ToString::to_string).collect()
            }),
        }
    }

    fn answer(&self, r: &Elevation) -> Response<pb::JitRequestResponse> {
        Response::new(pb::JitRequestResponse {
            request: Some(self.shown(r, self.now())),
        })
    }

    /// Runs a change to a request through the gate: the decision recorded
    /// before it acts, the outcome (what changed, or which rule refused it)
    /// after, both durably.
    async fn gated<T, F>(
        &self,
        ext: &http::Extensions,
        action: Action,
        role: &str,
        change: impl FnOnce(Caller) -> F,
        done: impl FnOnce(&T) -> String,
    ) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<T, ElevationError>>,
    {
        let resource = role_resource(role);
        let caller = self
            .gate
            .authorize_parts(ext, action, resource.clone())
            .await?;
        let result = change(caller).await;
        let outcome = match &result {
            Ok(v) => Ok(done(v)),
            Err(e) => Err(e.to_string()),
        };
        self.gate
            .record_outcome(ext, action, &resource, outcome)
            .await?;
        Ok(result.map_err(ApiError::from)?)
    }

    /// The role a stored request is for (to name it in the decision), or
    /// NotFound.
    fn role_of(&self, id: &str) -> Result<String, Status> {
        self.server
            .elevations()
            .get(id)
            .map(|r| r.role.clone())
            .ok_or_else(|| ApiError::from(ElevationError::NotFound(id.to_owned())).into())
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

    async fn request(
        &self,
        req: Request<pb::JitRequestRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let m = req.get_ref();
        let for_id = match m.for_id.trim() {
            "" => None,
            id => Some(
                SpiffeId::parse(id)
                    .map_err(|e| ApiError::InvalidArgument(format!("for: {e}")))?
                    .to_string(),
            ),
        };
        let duration = u64::try_from(m.duration_seconds)
            .map_err(|_| ApiError::InvalidArgument("duration: must be positive".into()))?;
        let now = self.now();
        let pending_ttl = self.server.config().jit.pending_ttl;
        let elevations = self.server.elevations().clone();
        let (role, reason) = (m.role.clone(), m.reason.clone());
        let r = self
            .gated(
                req.extensions(),
                Action::JitRequest,
                &m.role,
                |caller| async move {
                    elevations
                        .create(
                            &role,
                            &caller.audit_name(),
                            for_id.as_deref(),
                            duration,
                            &reason,
                            now,
                            pending_ttl,
                        )
                        .await
                },
                |r| {
                    format!(
                        "requested {} for {} for {}s: {}",
                        r.id, r.subject, r.duration, r.reason
                    )
                },
            )
            .await?;
        Ok(self.answer(&r))
    }

    async fn approve(
        &self,
        req: Request<pb::JitApproveRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let m = req.get_ref();
        let role = self.role_of(&m.id)?;
        let now = self.now();
        let elevations = self.server.elevations().clone();
        let (id, comment) = (m.id.clone(), m.comment.clone());
        let (_, r) = self
            .gated(
                req.extensions(),
                Action::JitApprove,
                &role,
                |caller| async move {
                    let by = caller.audit_name();
                    elevations
                        .update(&id, |r, role| r.approve(role, &by, &comment, now))
                        .await
                },
                |(approved, r): &(Approved, Arc<Elevation>)| match approved {
                    Approved::Counted { have, need } => {
                        format!("approved {} ({have} of {need})", r.id)
                    }
                    Approved::Activated { expires_at } => format!(
                        "approved {}: active for {} until {expires_at}",
                        r.id, r.subject
                    ),
                },
            )
            .await?;
        Ok(self.answer(&r))
    }

    async fn deny(
        &self,
        req: Request<pb::JitDenyRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let m = req.get_ref();
        let role = self.role_of(&m.id)?;
        let now = self.now();
        let elevations = self.server.elevations().clone();
        let (id, reason) = (m.id.clone(), m.reason.clone());
        let (_, r) = self
            .gated(
                req.extensions(),
                Action::JitApprove,
                &role,
                |caller| async move {
                    let by = caller.audit_name();
                    elevations
                        .update(&id, |r, _| r.deny(&by, &reason, now))
                        .await
                },
                |(_, r): &((), Arc<Elevation>)| {
                    format!(
                        "denied {}: {}",
                        r.id,
                        r.ended.as_ref().map_or("", |e| e.text.as_str())
                    )
                },
            )
            .await?;
        Ok(self.answer(&r))
    }

    async fn revoke(
        &self,
        req: Request<pb::JitRevokeRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let m = req.get_ref();
        let role = self.role_of(&m.id)?;
        let now = self.now();
        let elevations = self.server.elevations().clone();
        let (id, reason) = (m.id.clone(), m.reason.clone());
        let (_, r) = self
            .gated(
                req.extensions(),
                Action::JitRevoke,
                &role,
                |caller| async move {
                    let by = caller.audit_name();
                    elevations
                        .update(&id, |r, _| r.revoke(&by, &reason, now))
                        .await
                },
                |(_, r): &((), Arc<Elevation>)| {
                    format!(
                        "revoked {}: {}",
                        r.id,
                        r.ended.as_ref().map_or("", |e| e.text.as_str())
                    )
                },
            )
            .await?;
        Ok(self.answer(&r))
    }

    async fn list(
        &self,
        req: Request<pb::JitListRequest>,
    ) -> Result<Response<pb::JitListResponse>, Status> {
        let want = match req.get_ref().state.trim() {
            "" => None,
            s => Some(State::parse(s).ok_or_else(|| {
                ApiError::InvalidArgument(format!(
                    "state: {s:?} is not one of pending, active, expired, denied, revoked"
                ))
            })?),
        };
        let caller = self
            .gate
            .authorize(&req, Action::JitList, Resource::kind("jit_request"))
            .await?;
        let now = self.now();
        let requests = self
            .server
            .elevations()
            .list()
            .into_iter()
            .filter(|r| want.is_none_or(|w| r.state_at(now) == w))
            .filter(|r| self.visible(req.extensions(), &caller, r))
            .map(|r| self.shown(&r, now))
            .collect();
        Ok(Response::new(pb::JitListResponse { requests }))
    }

    async fn show(
        &self,
        req: Request<pb::JitShowRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let id = req.get_ref().id.clone();
        let caller = self
            .gate
            .authorize(
                &req,
                Action::JitList,
                Resource::new("jit_request", Some(id.clone())),
            )
            .await?;
        // A request the caller may not see answers as one that does not
        // exist, so IDs cannot be probed.
        match self.server.elevations().get(&id) {
            Some(r) if self.visible(req.extensions(), &caller, &r) => Ok(self.answer(&r)),
            _ => Err(ApiError::from(ElevationError::NotFound(id)).into()),
        }
    }
}

impl JitService {
    /// Whether `caller` sees request `r`: operators see all; anyone else the
    /// requests they made or that are for them, and those the policy lets
    /// them approve.
    fn visible(&self, ext: &http::Extensions, caller: &Caller, r: &Elevation) -> bool {
        if matches!(caller, Caller::Operator { .. }) {
            return true;
        }
        let me = caller.audit_name();
        r.requester == me
            || r.subject == me
            || self
                .gate
                .permits(ext, Action::JitApprove, role_resource(&r.role))
    }
}
