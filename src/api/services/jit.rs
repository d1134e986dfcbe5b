//! `sigil.v1.Jit`: just-in-time elevation (SPEC §3.3 `sigil jit`).

use crate::api::ApiError;
use crate::api::gate::{Caller, Gate};
use crate::api::pb::{self, jit_server::Jit};
use crate::clock;
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

fn ended_text(r: &Elevation) -> &str {
    r.ended.as_ref().map_or("", |e| e.text.as_str())
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

    /// The answer's form of `r`, its state as of `now`: the grants and the
    /// approvals it was asked under, which are what count, whatever the
    /// role's configuration says now (or if the role is gone).
    fn shown(&self, r: &Elevation, now: u64) -> pb::JitElevation {
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
            approvals_needed: r.approvals_needed,
            activated_at: r.activated_at.map_or(0, secs),
            expires_at: r.expires_at.map_or(0, secs),
            ended: r.ended.as_ref().map(act),
            grants: r.grants.clone(),
        }
    }

    fn answer(&self, r: &Elevation) -> Response<pb::JitRequestResponse> {
        Response::new(pb::JitRequestResponse {
            request: Some(self.shown(r, self.now())),
        })
    }

    /// Audits a change before it is stored: the step, who and why.
    async fn record_done(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: &Resource,
        done: String,
    ) -> Result<(), ElevationError> {
        self.gate
            .record_outcome(ext, action, resource, Ok(done))
            .await
            .map_err(|_| ElevationError::Audit)
    }

    /// Runs a change through the gate: the decision recorded before it
    /// acts; the change itself recorded (by `change`, through
    /// [`JitService::record_done`]) before it is stored; a refusal by a
    /// rule recorded after, naming the rule.
    async fn gated<T, F>(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: &Resource,
        change: impl FnOnce(Caller) -> F,
    ) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<T, ElevationError>>,
    {
        let caller = self
            .gate
            .authorize_parts(ext, action, resource.clone())
            .await?;
        let result = change(caller).await;
        if let Err(e @ (ElevationError::Rule(_) | ElevationError::NotFound(_))) = &result {
            self.gate
                .record_outcome(ext, action, resource, Err(e.to_string()))
                .await?;
        }
        Ok(result.map_err(ApiError::from)?)
    }

    /// What a change to request `id` is decided on: its role, or, for an
    /// ID nobody has, the ID itself (the caller learns it does not exist
    /// only once the policy let them ask).
    fn resource_of(&self, id: &str) -> Resource {
        match self.server.elevations().get(id) {
            Some(r) => role_resource(&r.role),
            None => Resource::new("jit_request", Some(id.to_owned())),
        }
    }

    /// A clock for the change lock: the time is read once the change may
    /// proceed, not when the call arrived.
    fn clock(&self) -> impl Fn() -> u64 + use<> {
        let server = self.server.clone();
        move || clock::unix_seconds(server.now())
    }
}

/// The identity a request names with `for`: a workload of this trust
/// domain, by the same rules as an SVID's subject (not sigil's own).
fn for_identity(server: &Server, text: &str) -> Result<String, ApiError> {
    let id = super::node::workload_id(text)
        .map_err(|e| ApiError::InvalidArgument(format!("for: {e}")))?;
    if id.trust_domain_str() != server.trust_domain().as_str() {
        return Err(ApiError::InvalidArgument(format!(
            "for: {id} is not in trust domain {}",
            server.trust_domain().as_str()
        )));
    }
    Ok(id.to_string())
}

/// Refuses a grant for `id` while it is quarantined.
fn quarantine_check(server: &Server, id: &str) -> Result<(), crate::jit::JitError> {
    match server.quarantines().get(id) {
        Some(q) => Err(crate::jit::JitError::Quarantined {
            id: id.to_owned(),
            reason: q.reason.clone(),
        }),
        None => Ok(()),
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
            id => Some(for_identity(&self.server, id)?),
        };
        let duration = u64::try_from(m.duration_seconds)
            .map_err(|_| ApiError::InvalidArgument("duration: must be positive".into()))?;
        let pending_ttl = self.server.config().jit.pending_ttl;
        let ext = req.extensions();
        let resource = role_resource(&m.role);
        let res = &resource;
        let r = self
            .gated(ext, Action::JitRequest, &resource, |caller| async move {
                // An operator is no workload: a grant for `uid:N` would
                // never apply, so an operator names who it is for.
                if matches!(caller, Caller::Operator { .. }) && for_id.is_none() {
                    return Err(ElevationError::Rule(crate::jit::JitError::ForRequired));
                }
                // A quarantined caller never gets here (the gate denies it);
                // one named with --for is refused here.
                if let Some(id) = for_id.as_deref() {
                    quarantine_check(&self.server, id)?;
                }
                self.server
                    .elevations()
                    .create(
                        &m.role,
                        &caller.audit_name(),
                        for_id.as_deref(),
                        duration,
                        &m.reason,
                        self.clock(),
                        pending_ttl,
                        |r| {
                            let done = format!(
                                "requested {} for {} for {}s: {}",
                                r.id, r.subject, r.duration, r.reason
                            );
                            self.record_done(ext, Action::JitRequest, res, done)
                        },
                    )
                    .await
            })
            .await?;
        Ok(self.answer(&r))
    }

    async fn approve(
        &self,
        req: Request<pb::JitApproveRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let m = req.get_ref();
        let ext = req.extensions();
        let resource = self.resource_of(&m.id);
        let res = &resource;
        let (_, r) = self
            .gated(ext, Action::JitApprove, &resource, |caller| async move {
                let by = caller.audit_name();
                self.server
                    .elevations()
                    .update(
                        &m.id,
                        self.clock(),
                        |r, now| {
                            // Checked under the request's lock: no grant
                            // becomes active for a quarantined identity.
                            quarantine_check(&self.server, &r.subject)?;
                            r.approve(&by, &m.comment, now)
                        },
                        |approved, r| {
                            let done = match approved {
                                Approved::Counted { have, need } => {
                                    format!("approved {} ({have} of {need})", r.id)
                                }
                                Approved::Activated { expires_at } => format!(
                                    "approved {}: active for {} until {expires_at}",
                                    r.id, r.subject
                                ),
                            };
                            self.record_done(ext, Action::JitApprove, res, done)
                        },
                    )
                    .await
            })
            .await?;
        Ok(self.answer(&r))
    }

    async fn deny(
        &self,
        req: Request<pb::JitDenyRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let m = req.get_ref();
        let r = self
            .end(req.extensions(), &m.id, &m.reason, Ending::Deny)
            .await?;
        Ok(self.answer(&r))
    }

    async fn revoke(
        &self,
        req: Request<pb::JitRevokeRequest>,
    ) -> Result<Response<pb::JitRequestResponse>, Status> {
        let m = req.get_ref();
        let r = self
            .end(req.extensions(), &m.id, &m.reason, Ending::Revoke)
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

/// How a request ends early.
#[derive(Clone, Copy)]
enum Ending {
    /// An approver refuses it (decided as `jit.approve`).
    Deny,
    /// It is revoked (`jit.revoke`).
    Revoke,
}

impl JitService {
    /// Denies or revokes request `id` with `reason`, through the gate.
    async fn end(
        &self,
        ext: &http::Extensions,
        id: &str,
        reason: &str,
        how: Ending,
    ) -> Result<Arc<Elevation>, Status> {
        let (action, done) = match how {
            Ending::Deny => (Action::JitApprove, "denied"),
            Ending::Revoke => (Action::JitRevoke, "revoked"),
        };
        let resource = self.resource_of(id);
        let res = &resource;
        let ((), r) = self
            .gated(ext, action, &resource, |caller| async move {
                let by = caller.audit_name();
                self.server
                    .elevations()
                    .update(
                        id,
                        self.clock(),
                        |r, now| match how {
                            Ending::Deny => r.deny(&by, reason, now),
                            Ending::Revoke => r.revoke(&by, reason, now),
                        },
                        |(), r| {
                            let said = format!("{done} {}: {}", r.id, ended_text(&r));
                            self.record_done(ext, action, res, said)
                        },
                    )
                    .await
            })
            .await?;
        Ok(r)
    }

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
