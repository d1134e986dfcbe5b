//! Just-in-time elevation (SPEC §3.3 `sigil jit`): a request for a role's
//! grants, for a bounded time, with a reason; approvals by distinct
//! approvers; the grant active from the approval that reaches the role's
//! threshold until the requested duration has passed; denial, revocation,
//! and expiry of both pending requests and active grants.
//!
//! This module holds the rules and the plan (STYLE §7): plain data, the time
//! passed in, no I/O. Who may request and who may approve is the policy's
//! to decide (`jit.request`, `jit.approve`); the rules here hold whatever the
//! policy says: nobody approves a request they made or that names them, an
//! approver counts once, a duration over the role's maximum is refused (not
//! trimmed), and a grant never outlives its approval by more than it asked.

use crate::secrets::Grant;
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The longest reason, comment or denial text kept, in bytes.
pub const MAX_TEXT: usize = 1024;

/// The most approvals a role may require.
pub const MAX_APPROVALS: u32 = 10;

/// How long a request waits for approvals by default, in seconds.
pub const DEFAULT_PENDING_TTL: u64 = 3600;

/// A role that may be requested (`[[jit.role]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitRole {
    /// Its name.
    pub name: String,
    /// What an active grant of it allows (`VERB:PATTERN`).
    pub grants: Vec<Grant>,
    /// The longest a grant of it may last, in seconds.
    pub max_duration: u64,
    /// Distinct approvals needed before it is active.
    pub approvals: u32,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for approvals.
    Pending,
    /// Approved: its grants apply until `expires_at`.
    Active,
    /// Ran out: a pending request nobody approved in time, or a grant whose
    /// time is up.
    Expired,
    /// Refused by an approver.
    Denied,
    /// Ended early.
    Revoked,
}

impl State {
    /// The state's name as the CLI and API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Expired => "expired",
            State::Denied => "denied",
            State::Revoked => "revoked",
        }
    }

    /// Parses a state's name.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Active,
            State::Expired,
            State::Denied,
            State::Revoked,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// Who did something to a request, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    /// Who: a SPIFFE ID or `uid:N`.
    pub by: String,
    /// When, Unix seconds.
    pub at: u64,
    /// The comment or reason given (may be empty for an approval).
    pub text: String,
}

/// One elevation request and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Its ID.
    pub id: String,
    /// The role asked for.
    pub role: String,
    /// Who asked.
    pub requester: String,
    /// Who the grant is for (the requester, or the `--for` identity).
    pub subject: String,
    /// The duration asked for, seconds.
    pub duration: u64,
    /// Why.
    pub reason: String,
    /// When it was made.
    pub created: u64,
    /// When it expires if not approved by then.
    pub pending_until: u64,
    /// Where it stands.
    pub state: State,
    /// Approvals so far, in order.
    pub approvals: Vec<Act>,
    /// When it became active.
    pub activated_at: Option<u64>,
    /// When its grant ends (set when it becomes active).
    pub expires_at: Option<u64>,
    /// The denial or revocation, if any.
    pub ended: Option<Act>,
    /// The role's grants when the request was made: what the approvers
    /// approve, whatever the role's configuration becomes later.
    #[serde(default)]
    pub grants: Vec<String>,
    /// The approvals the role needed when the request was made.
    #[serde(default = "one")]
    pub approvals_needed: u32,
}

fn one() -> u32 {
    1
}

/// Why a request or a step was refused. Each variant names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitError {
    /// No role has this name.
    #[error("no JIT role named {0:?}")]
    UnknownRole(String),
    /// A request needs a reason; a denial or revocation too.
    #[error("a reason is required")]
    ReasonRequired,
    /// A text over [`MAX_TEXT`] bytes.
    #[error("{what} is longer than {MAX_TEXT} bytes")]
    TooLong {
        /// Which text.
        what: &'static str,
    },
    /// A zero duration.
    #[error("the duration must be at least one second")]
    ZeroDuration,
    /// More than the role allows: refused, not trimmed.
    #[error("duration {requested}s is over role {role:?}'s maximum of {max}s")]
    OverMaximum {
        /// The role.
        role: String,
        /// Asked for.
        requested: u64,
        /// Allowed.
        max: u64,
    },
    /// The step needs a pending request.
    #[error("request {id} is {state}, not pending")]
    NotPending {
        /// The request.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// Revocation needs an active (or pending) request.
    #[error("request {id} is {state}: there is nothing to revoke")]
    NotRevocable {
        /// The request.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// The approver made the request, or the grant would be theirs.
    #[error("{by} may not approve request {id}: it is their own")]
    SelfApproval {
        /// The approver.
        by: String,
        /// The request.
        id: String,
    },
    /// A text holds a control character (a newline, an escape), which could
    /// forge lines on an approver's terminal.
    #[error("{what} may not contain control characters")]
    ControlCharacter {
        /// Which text.
        what: &'static str,
    },
    /// The requester has too many requests waiting.
    #[error("{requester} already has {max} pending requests")]
    TooManyPending {
        /// The requester.
        requester: String,
        /// The limit.
        max: usize,
    },
    /// An operator asking must name who the grant is for.
    #[error("an operator has no workload identity: name who the grant is for (--for)")]
    ForRequired,
    /// The identity the grant is for is quarantined: no grant is asked for
    /// it or approved for it until the quarantine is lifted.
    #[error("{id} is quarantined: {reason}")]
    Quarantined {
        /// The identity.
        id: String,
        /// The quarantine's reason.
        reason: String,
    },
    /// The approver already approved.
    #[error("{by} has already approved request {id}; an approver counts once")]
    AlreadyApproved {
        /// The approver.
        by: String,
        /// The request.
        id: String,
    },
}

fn text(what: &'static str, t: &str, required: bool) -> Result<String, JitError> {
    let t = t.trim();
    if required && t.is_empty() {
        return Err(JitError::ReasonRequired);
    }
    if t.len() > MAX_TEXT {
        return Err(JitError::TooLong { what });
    }
    if t.chars().any(char::is_control) {
        return Err(JitError::ControlCharacter { what });
    }
    Ok(t.to_owned())
}

/// What an approval did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approved {
    /// Counted; more are needed.
    Counted {
        /// Approvals so far.
        have: u32,
        /// Approvals needed.
        need: u32,
    },
    /// The threshold is reached: the grant is active until `expires_at`.
    Activated {
        /// When the grant ends.
        expires_at: u64,
    },
}

impl Request {
    /// A new pending request for `role`, checked against its rules.
    #[allow(
        clippy::too_many_arguments,
        reason = "every field a request starts with; named at each call"
    )]
    pub fn new(
        role: &JitRole,
        id: String,
        requester: &str,
        subject: Option<&str>,
        duration: u64,
        reason: &str,
        now: u64,
        pending_ttl: u64,
    ) -> Result<Request, JitError> {
        let reason = text("the reason", reason, true)?;
        if duration == 0 {
            return Err(JitError::ZeroDuration);
        }
        if duration > role.max_duration {
            return Err(JitError::OverMaximum {
                role: role.name.clone(),
                requested: duration,
                max: role.max_duration,
            });
        }
        Ok(Request {
            id,
            role: role.name.clone(),
            requester: requester.to_owned(),
            subject: subject.unwrap_or(requester).to_owned(),
            duration,
            reason,
            created: now,
            pending_until: now.saturating_add(pending_ttl),
            state: State::Pending,
            approvals: Vec::new(),
            activated_at: None,
            expires_at: None,
            ended: None,
            grants: role.grants.iter().map(ToString::to_string).collect(),
            approvals_needed: role.approvals,
        })
    }

    /// The state at `now`: a pending request past its wait, or an active
    /// grant past its end, is expired even before the plan records it.
    pub fn state_at(&self, now: u64) -> State {
        match self.state {
            State::Pending if now >= self.pending_until => State::Expired,
            State::Active if self.expires_at.is_some_and(|e| now >= e) => State::Expired,
            s => s,
        }
    }

    fn pending(&self, now: u64) -> Result<(), JitError> {
        match self.state_at(now) {
            State::Pending => Ok(()),
            s => Err(JitError::NotPending {
                id: self.id.clone(),
                state: s.as_str(),
            }),
        }
    }

    /// Records `by`'s approval; activates the grant when the threshold the
    /// role had when the request was made is reached, from `now` for the
    /// requested duration.
    pub fn approve(&mut self, by: &str, comment: &str, now: u64) -> Result<Approved, JitError> {
        self.pending(now)?;
        // Checked on the request itself, whatever the policy allows: nobody
        // elevates themselves, also not by naming themselves with --for.
        if by == self.requester || by == self.subject {
            return Err(JitError::SelfApproval {
                by: by.to_owned(),
                id: self.id.clone(),
            });
        }
        if self.approvals.iter().any(|a| a.by == by) {
            return Err(JitError::AlreadyApproved {
                by: by.to_owned(),
                id: self.id.clone(),
            });
        }
        let comment = text("the comment", comment, false)?;
        self.approvals.push(Act {
            by: by.to_owned(),
            at: now,
            text: comment,
        });
        let have = u32::try_from(self.approvals.len()).unwrap_or(u32::MAX);
        if have < self.approvals_needed {
            return Ok(Approved::Counted {
                have,
                need: self.approvals_needed,
            });
        }
        let expires_at = now.saturating_add(self.duration);
        self.state = State::Active;
        self.activated_at = Some(now);
        self.expires_at = Some(expires_at);
        Ok(Approved::Activated { expires_at })
    }

    /// Refuses a pending request.
    pub fn deny(&mut self, by: &str, reason: &str, now: u64) -> Result<(), JitError> {
        self.pending(now)?;
        let reason = text("the reason", reason, true)?;
        self.state = State::Denied;
        self.ended = Some(Act {
            by: by.to_owned(),
            at: now,
            text: reason,
        });
        Ok(())
    }

    /// Ends an active grant (or withdraws a pending request) at once.
    pub fn revoke(&mut self, by: &str, reason: &str, now: u64) -> Result<(), JitError> {
        match self.state_at(now) {
            State::Active | State::Pending => {}
            s => {
                return Err(JitError::NotRevocable {
                    id: self.id.clone(),
                    state: s.as_str(),
                });
            }
        }
        let reason = text("the reason", reason, true)?;
        self.state = State::Revoked;
        self.ended = Some(Act {
            by: by.to_owned(),
            at: now,
            text: reason,
        });
        if let Some(e) = self.expires_at.as_mut() {
            *e = (*e).min(now);
        }
        Ok(())
    }
}

/// One change the plan calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// A pending request ran out of time.
    PendingExpired(String),
    /// An active grant's time is up.
    GrantExpired(String),
}

/// What is due at `now` among `requests`, and when to look again (the next
/// time something falls due), if ever.
pub fn plan<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    now: u64,
) -> (Vec<Due>, Option<u64>) {
    let mut due = Vec::new();
    let mut next: Option<u64> = None;
    let mut later = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
    for r in requests {
        match r.state {
            State::Pending if now >= r.pending_until => due.push(Due::PendingExpired(r.id.clone())),
            State::Pending => later(r.pending_until),
            State::Active => match r.expires_at {
                Some(e) if now >= e => due.push(Due::GrantExpired(r.id.clone())),
                Some(e) => later(e),
                None => due.push(Due::GrantExpired(r.id.clone())),
            },
            _ => {}
        }
    }
    (due, next)
}

/// How long an ended request is kept (for `sigil jit list` and `show`)
/// before it is dropped from the store, in seconds: 30 days. The audit log
/// keeps its history for good.
pub const RETENTION: u64 = 30 * 24 * 3600;

/// When `r` ended, if it has: denied or revoked at that step; expired at
/// its grant's end, or at the end of its wait for approvals.
pub fn ended_at(r: &Request) -> Option<u64> {
    match r.state {
        State::Denied | State::Revoked => r.ended.as_ref().map(|e| e.at),
        State::Expired => Some(r.expires_at.unwrap_or(r.pending_until)),
        State::Pending | State::Active => None,
    }
}

/// The requests among `requests` that ended [`RETENTION`] or more before
/// `now`, to be dropped.
pub fn prunable<'a>(requests: impl IntoIterator<Item = &'a Request>, now: u64) -> Vec<String> {
    requests
        .into_iter()
        .filter(|r| ended_at(r).is_some_and(|t| t.saturating_add(RETENTION) <= now))
        .map(|r| r.id.clone())
        .collect()
}

/// Applies what [`plan`] found due to `r`.
pub fn expire(r: &mut Request) {
    if matches!(r.state, State::Pending | State::Active) {
        r.state = State::Expired;
    }
}

/// The grants active for `subject` at `now`, with the request each comes
/// from.
pub fn active_grants<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    subject: &str,
    now: u64,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in requests {
        if r.subject != subject || r.state_at(now) != State::Active {
            continue;
        }
        out.extend(r.grants.iter().map(|g| (g.clone(), r.id.clone())));
    }
    out
}
