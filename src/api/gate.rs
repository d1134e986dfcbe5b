//! The authorization chokepoint (SPEC §2): every request passes
//! authenticate → build the policy input → PDP decision → audit → act.
//!
//! The decision is appended to the audit log *before* the handler acts, so a
//! privileged operation never happens without its record: if the append
//! fails, the request fails (fail closed).

use super::ApiError;
use crate::audit::{Event, IssuedToken, Verdict};
use crate::clock;
use crate::id::SpiffeId;
use crate::net::Bearer;
use crate::policy::{Action, Authn, Context, Input, InputGrant, Resource, Subject};
use crate::server::{Server, TokenRecord};
use crate::tls::TlsConnInfo;
use std::fmt::Write as _;
use std::sync::Arc;
use tonic::transport::server::UdsConnectInfo;

/// Who made a request, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A local user on the admin socket whose uid is root, the server's own,
    /// or configured as an operator.
    Operator {
        /// Kernel-reported uid.
        uid: u32,
    },
    /// A local user on the admin socket who is not an operator.
    LocalUser {
        /// Kernel-reported uid.
        uid: u32,
    },
    /// A peer that presented an X.509-SVID of this trust domain.
    Workload {
        /// The SPIFFE ID in its certificate.
        id: SpiffeId,
        /// Whether a registration entry for this ID carries the admin flag.
        admin: bool,
    },
    /// The holder of a live sigil token (`authorization: Bearer`).
    Token {
        /// The token's `sub`.
        id: SpiffeId,
        /// Its record: role, grants, `jti`.
        record: crate::server::TokenRecord,
    },
    /// A sigil agent (SPIFFE ID under `/sigil/agent/`).
    Agent {
        /// The agent's SPIFFE ID.
        id: SpiffeId,
    },
    /// Nobody we could identify.
    Anonymous,
}

impl Caller {
    /// The subject as written in audit records.
    pub fn audit_name(&self) -> String {
        match self {
            Caller::Operator { uid } | Caller::LocalUser { uid } => format!("uid:{uid}"),
            Caller::Workload { id, .. } | Caller::Agent { id } | Caller::Token { id, .. } => {
                id.as_str().to_owned()
            }
            Caller::Anonymous => "anonymous".into(),
        }
    }

    /// The policy subject, built with the same constructors the policy's
    /// built-in cases use, so the self-test checks what the gate sends.
    fn subject(&self, authn: Authn) -> Subject {
        match self {
            Caller::Operator { uid } => Subject::operator(*uid),
            Caller::LocalUser { uid } => Subject::local_user(*uid),
            Caller::Workload { id, admin } => Subject::workload(id.as_str(), authn, *admin),
            Caller::Agent { id } => Subject::agent(id.as_str()),
            Caller::Token { id, record } => Subject {
                // `authenticate` accepted a bound token only over a
                // connection with its certificate.
                bound: record.cnf_x5t.is_some(),
                ..Subject::token(id.as_str(), record.role.as_str(), record.grants.clone())
            },
            Caller::Anonymous => Subject::anonymous(),
        }
    }
}

/// The chokepoint every handler calls first.
#[derive(Clone, Debug)]
pub struct Gate {
    server: Arc<Server>,
}

impl Gate {
    /// A gate for `server`.
    pub fn new(server: Arc<Server>) -> Self {
        Self { server }
    }

    /// Authenticates the request's peer, asks the PDP, records the decision
    /// and returns the caller if the request may proceed.
    pub async fn authorize<T>(
        &self,
        req: &tonic::Request<T>,
        action: Action,
        resource: Resource,
    ) -> Result<Caller, ApiError> {
        self.authorize_parts(req.extensions(), action, resource)
            .await
    }

    /// As [`Gate::authorize`], from a request's extensions.
    pub async fn authorize_parts(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: Resource,
    ) -> Result<Caller, ApiError> {
        // A denial is recorded by `decide`; an allow is recorded here, on
        // disk before the handler acts.
        self.decide(ext, action, resource).await?.commit().await
    }

    /// Authenticates the caller and asks the PDP. A denial (or a sealed
    /// server) is recorded at once and returned as the error; an allowed
    /// decision is recorded by the [`Decided`] it returns: before acting
    /// ([`Decided::commit`], what [`Gate::authorize`] does), or, for reads,
    /// after the read ([`Decided::record`]), so the one record names what was
    /// read (the version) and how it went. Nothing read may be returned
    /// before `record` succeeds: the audit stays fail-closed.
    pub async fn decide(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: Resource,
    ) -> Result<Decided, ApiError> {
        let now = clock::unix_seconds(self.server.now());
        let (caller, authn, source) = self.authenticate(ext);
        let subject = caller.subject(authn);
        let input = Input {
            grants: self.grants_of(&subject, now),
            subject,
            action,
            resource: resource.clone(),
            context: Context {
                time: now,
                source: source.clone(),
            },
        };
        let decision = match self
            .quarantine_of(&caller)
            .or_else(|| self.quarantine_of_peer(ext))
        {
            Some(denied) => denied,
            None => self.server.pdp().decide(&input),
        };
        let sealed = !action.allowed_while_sealed() && self.server.is_sealed();
        let event = Event {
            time: now,
            subject: caller.audit_name(),
            authn: authn.as_str().to_owned(),
            action: action.as_str().to_owned(),
            resource: resource.audit_name(),
            decision: (decision.allow && !sealed).into(),
            reasons: decision.reasons.clone(),
            source,
            token: None,
        };
        if decision.allow && !sealed {
            return Ok(Decided {
                gate: self.clone(),
                caller,
                event,
            });
        }
        let mut event = event;
        if sealed && decision.allow {
            event.reasons.push("sealed".into());
        }
        self.server.audit().append(event.clone()).await?;
        if sealed && decision.allow {
            return Err(ApiError::Sealed);
        }
        Err(ApiError::Denied(if event.reasons.is_empty() {
            format!("{} may not {}", caller.audit_name(), action.as_str())
        } else {
            event.reasons.join("; ")
        }))
    }

    /// Whether a live token `r` speaks for a request over `tls` at `now`:
    /// it is for sigil's own API (a token minted for another audience is
    /// that audience's to accept), every JIT request it relies on is still
    /// active, and a bound token (RFC 8705) comes over a connection whose
    /// client certificate is the one it is bound to, still valid.
    fn token_speaks_here(&self, r: &TokenRecord, tls: &TlsConnInfo, now: u64) -> bool {
        if !r.for_sigil() || !self.server.token_in_force(r, now) {
            return false;
        }
        match &r.cnf_x5t {
            None => true,
            Some(bound) => tls
                .peer
                .as_deref()
                .is_some_and(|leaf| leaf.valid_at(now) && leaf.x5t() == bound),
        }
    }

    /// The denial of a quarantined caller, naming the quarantine's reason:
    /// decided here, before the policy, so no policy can let it through.
    fn quarantine_of(&self, caller: &Caller) -> Option<crate::policy::Decision> {
        let id = match caller {
            Caller::Workload { id, .. } | Caller::Agent { id } | Caller::Token { id, .. } => id,
            Caller::Operator { .. } | Caller::LocalUser { .. } | Caller::Anonymous => return None,
        };
        self.quarantine_denial(id)
    }

    /// The denial of a request over an mTLS connection whose certificate
    /// names a quarantined identity, whoever the request speaks for (a
    /// bearer token, or nobody): a quarantined workload is cut off, not
    /// only its own identity.
    fn quarantine_of_peer(&self, ext: &http::Extensions) -> Option<crate::policy::Decision> {
        let id = ext.get::<TlsConnInfo>()?.peer.as_deref()?.id.as_ref()?;
        self.quarantine_denial(id)
    }

    /// The denial naming `id`'s quarantine, if it is quarantined.
    fn quarantine_denial(&self, id: &SpiffeId) -> Option<crate::policy::Decision> {
        let q = self.server.quarantined(id)?;
        Some(crate::policy::Decision {
            allow: false,
            reasons: vec![q.denial()],
        })
    }

    /// The grants approved JIT requests give `subject` at `now`: for a
    /// workload that proved its SVID over mTLS only. A token carries exactly
    /// its scopes, and operators need none.
    fn grants_of(&self, subject: &Subject, now: u64) -> Vec<InputGrant> {
        match (&subject.spiffe_id, subject.authn) {
            (Some(id), Authn::Mtls) => self
                .server
                .elevations()
                .active_grants(id, now)
                .into_iter()
                .map(|g| InputGrant {
                    grant: g.grant,
                    request: g.request,
                    expires_at: g.expires_at,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the policy would allow `action` on `resource` for this request's
    /// caller, without recording anything: for filtering what a recorded
    /// request returns (a list shows only what its caller may read).
    pub fn permits(&self, ext: &http::Extensions, action: Action, resource: Resource) -> bool {
        let (caller, authn, source) = self.authenticate(ext);
        let subject = caller.subject(authn);
        let now = clock::unix_seconds(self.server.now());
        let input = Input {
            grants: self.grants_of(&subject, now),
            subject,
            action,
            resource,
            context: Context { time: now, source },
        };
        self.quarantine_of(&caller).is_none() && self.server.pdp().decide(&input).allow
    }

    /// Appends a record about an allowed request after it acted: `outcome`
    /// says what it did (`Ok("wrote version 3")`) or why it failed.
    pub async fn record_outcome(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: &Resource,
        outcome: Result<String, String>,
    ) -> Result<(), ApiError> {
        self.record_issue(ext, action, resource, outcome, None)
            .await
    }

    /// Like [`Gate::record_outcome`], for an operation that issued a token:
    /// the record carries the token as the server knows it (`issued`, on
    /// success), and is the token's durable record (`server::tokens`).
    pub async fn record_issue(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: &Resource,
        outcome: Result<String, String>,
        issued: Option<Arc<IssuedToken>>,
    ) -> Result<(), ApiError> {
        let (caller, authn, source) = self.authenticate(ext);
        let (decision, reason) = match outcome {
            Ok(done) => (Verdict::Allow, done),
            Err(why) => (Verdict::Failed, why),
        };
        let event = Event {
            time: clock::unix_seconds(self.server.now()),
            subject: caller.audit_name(),
            authn: authn.as_str().to_owned(),
            action: action.as_str().to_owned(),
            resource: resource.audit_name(),
            token: issued.filter(|_| decision == Verdict::Allow),
            decision,
            reasons: vec![reason],
            source,
        };
        self.server.audit().append(event).await?;
        Ok(())
    }

    /// Records that an allowed request's operation then failed: the
    /// decision record before it says "allow", so without this a failed
    /// attempt (a wrong unseal passphrase) would read as a success.
    pub async fn record_failure(
        &self,
        ext: &http::Extensions,
        action: Action,
        resource: &Resource,
        reason: &str,
    ) -> Result<(), ApiError> {
        self.record_outcome(ext, action, resource, Err(reason.to_owned()))
            .await
    }

    fn authenticate(&self, ext: &http::Extensions) -> (Caller, Authn, String) {
        if let Some(uds) = ext.get::<UdsConnectInfo>() {
            // The kernel reports the peer's credentials for the socket; the
            // caller cannot choose them.
            return match uds.peer_cred {
                Some(cred) => {
                    let uid = cred.uid();
                    let caller = if self.server.is_operator_uid(uid) {
                        Caller::Operator { uid }
                    } else {
                        Caller::LocalUser { uid }
                    };
                    (caller, Authn::AdminSocket, format!("unix:uid={uid}"))
                }
                None => (Caller::Anonymous, Authn::None, "unix:unknown".into()),
            };
        }
        if let Some(tls) = ext.get::<TlsConnInfo>() {
            let source = tls.source().to_owned();
            // A bearer token speaks for the request whatever certificate the
            // connection has: it names exactly what it may do. One that is
            // unknown, expired or revoked proves nothing.
            if let Some(Bearer(token)) = ext.get::<Bearer>() {
                let now = clock::unix_seconds(self.server.now());
                let live = self
                    .server
                    .tokens()
                    .authenticate(token.expose(), now)
                    .filter(|r| self.token_speaks_here(r, tls, now));
                return match live.and_then(|r| r.subject().map(|id| (id, r))) {
                    Some((id, record)) => {
                        let mut source = source;
                        // Writing into a String cannot fail.
                        let _ = write!(source, " token:{}", record.jti());
                        (Caller::Token { id, record }, Authn::Token, source)
                    }
                    None => (Caller::Anonymous, Authn::None, source),
                };
            }
            // rustls already verified the chain against the bundle during
            // the handshake; here we only read which identity it proved.
            let leaf = tls.peer.as_deref();
            // The chain was verified at the handshake, but an HTTP/2
            // connection outlives certificates: an SVID that has expired
            // since then proves nothing.
            let now = clock::unix_seconds(self.server.now());
            if leaf.is_some_and(|l| !l.valid_at(now)) {
                return (Caller::Anonymous, Authn::None, source);
            }
            let Some(id) = leaf.and_then(|l| l.id.clone()) else {
                return (Caller::Anonymous, Authn::None, source);
            };
            if id.trust_domain_str() != self.server.trust_domain().as_str() {
                return (Caller::Anonymous, Authn::None, source);
            }
            let caller = if id.agent_name().is_some() {
                // An agent SVID counts only while the agent is attested and
                // not banned: a ban takes effect before the SVID expires.
                if !self.server.agents().is_active(&id) {
                    return (Caller::Anonymous, Authn::None, source);
                }
                // After its CA is tainted, an agent must still renew with the
                // SVID it holds, which that CA signed; but whoever stole the CA
                // key can mint more for the same ID. Only the exact certificate
                // the server last issued to the agent is honoured then.
                if leaf.is_some_and(|l| {
                    self.server.signed_by_tainted_ca(&l.der)
                        && !self.server.agents().holds_issued_svid(&id, &l.der)
                }) {
                    return (Caller::Anonymous, Authn::None, source);
                }
                Caller::Agent { id }
            } else {
                // A workload SVID a tainted CA signed proves nothing: whoever holds
                // the stolen CA key can mint one for any identity, an admin's
                // included. Its agent re-issues it as soon as it hears of the taint.
                // (Agents are checked above: they keep their issued SVID.)
                if leaf.is_some_and(|l| self.server.signed_by_tainted_ca(&l.der)) {
                    return (Caller::Anonymous, Authn::None, source);
                }
                let admin = self.server.is_admin_identity(&id);
                Caller::Workload { id, admin }
            };
            return (caller, Authn::Mtls, source);
        }
        (Caller::Anonymous, Authn::None, "unknown".into())
    }
}

/// An allowed decision not yet recorded (see [`Gate::decide`]).
#[derive(Debug)]
#[must_use = "an allowed read must be recorded before anything read is returned"]
pub struct Decided {
    gate: Gate,
    caller: Caller,
    event: Event,
}

impl Decided {
    /// Who is asking.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Appends the record of the decision, durably, and returns the caller:
    /// the handler may act once this returns.
    pub async fn commit(self) -> Result<Caller, ApiError> {
        self.gate.server.audit().append(self.event).await?;
        Ok(self.caller)
    }

    /// Appends the record: the decision, plus `detail` (what was read, e.g.
    /// `version 3`) on success, or the failure. The caller may be given what
    /// was read only when this returns `Ok`.
    pub async fn record(self, outcome: Result<String, String>) -> Result<(), ApiError> {
        let (gate, event) = self.with_outcome(outcome);
        // A read's record is written (and chained) before anything read is
        // returned, and is on disk within the same group's fsync moments
        // later; reads do not wait for the disk (`AuditLog::append_written`).
        gate.server.audit().append_written(event).await?;
        Ok(())
    }

    /// Appends the one record of an operation whose effect reaches nobody
    /// until this returns (a token is minted, then handed out): the decision
    /// plus what it did, or the failure, durably. Nobody can use what the
    /// operation made before then (nobody holds the token), so it still
    /// never takes effect without its record; it saves the decision its own
    /// fsync.
    ///
    /// When the operation issued a token, `issued` is put in the record
    /// (on success only): the durable record of the issue is also the
    /// token's record, which the server reads back at unseal.
    pub async fn settle(
        self,
        outcome: Result<String, String>,
        issued: Option<Arc<IssuedToken>>,
    ) -> Result<(), ApiError> {
        let (gate, mut event) = self.with_outcome(outcome);
        if event.decision == Verdict::Allow {
            event.token = issued;
        }
        gate.server.audit().append(event).await?;
        Ok(())
    }

    fn with_outcome(self, outcome: Result<String, String>) -> (Gate, Event) {
        let mut event = self.event;
        match outcome {
            Ok(detail) => event.reasons.push(detail),
            Err(why) => {
                event.decision = Verdict::Failed;
                event.reasons.push(why);
            }
        }
        (self.gate, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SubjectKind;

    #[test]
    fn gate_subjects_are_the_policy_constructors() {
        let op = Caller::Operator { uid: 0 }.subject(Authn::AdminSocket);
        assert_eq!(op, Subject::operator(0));
        assert!(op.admin, "operators administer the server");
        assert_eq!(
            Caller::LocalUser { uid: 1000 }.subject(Authn::AdminSocket),
            Subject::local_user(1000)
        );
        let id = SpiffeId::parse("spiffe://example.org/sigil/agent/n1").unwrap();
        let agent = Caller::Agent { id }.subject(Authn::Mtls);
        assert_eq!(agent.kind, SubjectKind::Agent);
        assert_eq!(agent, Subject::agent("spiffe://example.org/sigil/agent/n1"));
        assert_eq!(Caller::Anonymous.subject(Authn::None), Subject::anonymous());
    }
}
