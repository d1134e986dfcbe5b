//! `sigil jit`: just-in-time elevation (SPEC §3.3).

use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use crate::id::Ttl;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub(super) enum JitCmd {
    /// List the roles that may be requested: grants, maximum duration,
    /// approvals needed.
    Roles,
    /// Ask for a role's grants for a while; the request waits for approvals.
    Request {
        /// The role.
        #[arg(long)]
        role: String,
        /// Who the grant is for (a SPIFFE ID); default: the caller.
        #[arg(long = "for", value_name = "SPIFFE_ID")]
        for_id: Option<String>,
        /// How long the grant lasts once approved (`30m`, `1h`); at most the
        /// role's maximum.
        #[arg(long)]
        duration: String,
        /// Why: recorded with the request and in the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Approve a pending request (the requester never approves their own).
    Approve {
        /// The request ID (`jit-…`).
        id: String,
        /// A comment kept with the approval.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Refuse a pending request.
    Deny {
        /// The request ID.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// End an active grant (or withdraw a pending request) at once.
    Revoke {
        /// The request ID.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// List requests: your own and those you may approve (operators: all).
    List {
        /// Only requests in this state.
        #[arg(long, value_parser = ["pending", "active", "expired", "denied", "revoked"])]
        state: Option<String>,
    },
    /// Show one request and everything that happened to it.
    Show {
        /// The request ID.
        id: String,
    },
}

fn duration_text(secs: i64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub(super) async fn run(cli: &Cli, cmd: &JitCmd, out: &Out) -> Result<(), Failure> {
    let mut c = cli.clients().await?.jit;
    let fail = |s: tonic::Status| Failure(status_line(&s));
    let shown = match cmd {
        JitCmd::Roles => return roles(c, out).await,
        JitCmd::Request {
            role,
            for_id,
            duration,
            reason,
        } => {
            let duration = Ttl::parse(duration)
                .map_err(|e| Failure(format!("error: --duration: {e}")))?
                .as_secs();
            c.request(pb::JitRequestRequest {
                role: role.clone(),
                for_id: for_id.clone().unwrap_or_default(),
                duration_seconds: i64::try_from(duration).unwrap_or(i64::MAX),
                reason: reason.clone(),
            })
            .await
        }
        JitCmd::Approve { id, comment } => {
            c.approve(pb::JitApproveRequest {
                id: id.clone(),
                comment: comment.clone(),
            })
            .await
        }
        JitCmd::Deny { id, reason } => {
            c.deny(pb::JitDenyRequest {
                id: id.clone(),
                reason: reason.clone(),
            })
            .await
        }
        JitCmd::Revoke { id, reason } => {
            c.revoke(pb::JitRevokeRequest {
                id: id.clone(),
                reason: reason.clone(),
            })
            .await
        }
        JitCmd::Show { id } => c.show(pb::JitShowRequest { id: id.clone() }).await,
        JitCmd::List { state } => {
            let listed = c
                .list(pb::JitListRequest {
                    state: state.clone().unwrap_or_default(),
                })
                .await
                .map_err(fail)?
                .into_inner()
                .requests;
            let value = Value::Array(listed.iter().map(request_json).collect());
            out.print(&value, || list_text(&listed));
            return Ok(());
        }
    };
    let r = shown
        .map_err(fail)?
        .into_inner()
        .request
        .unwrap_or_default();
    out.print(&request_json(&r), || request_text(&r));
    Ok(())
}

/// RFC 3339, or `-` for a time not set (0).
fn time_text(unix: i64) -> String {
    if unix == 0 {
        return "-".to_owned();
    }
    super::agents::time_text(unix)
}

fn act_json(a: &pb::JitAct) -> Value {
    json!({"by": a.by, "at": time_text(a.at), "text": a.text})
}

fn request_json(r: &pb::JitElevation) -> Value {
    json!({
        "id": r.id,
        "role": r.role,
        "state": r.state,
        "requester": r.requester,
        "subject": r.subject,
        "grants": r.grants,
        "duration": duration_text(r.duration_seconds),
        "duration_seconds": r.duration_seconds,
        "reason": r.reason,
        "created": time_text(r.created),
        "pending_until": time_text(r.pending_until),
        "approvals": r.approvals.iter().map(act_json).collect::<Vec<_>>(),
        "approvals_needed": r.approvals_needed,
        "activated_at": (r.activated_at != 0).then(|| time_text(r.activated_at)),
        "expires_at": (r.expires_at != 0).then(|| time_text(r.expires_at)),
        "ended": r.ended.as_ref().map(act_json),
    })
}

fn request_text(r: &pb::JitElevation) -> String {
    let mut s = format!(
        "{}  {}  role {} for {}\n  requested by {} at {} for {}: {}\n  approvals {} of {}\n",
        r.id,
        r.state,
        r.role,
        r.subject,
        r.requester,
        time_text(r.created),
        duration_text(r.duration_seconds),
        r.reason,
        r.approvals.len(),
        r.approvals_needed,
    );
    for a in &r.approvals {
        s.push_str(&format!(
            "    approved by {} at {} {}\n",
            a.by,
            time_text(a.at),
            a.text
        ));
    }
    match r.state.as_str() {
        "pending" => s.push_str(&format!(
            "  waits for approvals until {}\n",
            time_text(r.pending_until)
        )),
        _ if r.activated_at != 0 => s.push_str(&format!(
            "  active from {} until {}\n  grants {}\n",
            time_text(r.activated_at),
            time_text(r.expires_at),
            r.grants.join(" ")
        )),
        _ => {}
    }
    if let Some(e) = &r.ended {
        s.push_str(&format!(
            "  ended by {} at {}: {}\n",
            e.by,
            time_text(e.at),
            e.text
        ));
    }
    s
}

fn list_text(rs: &[pb::JitElevation]) -> String {
    if rs.is_empty() {
        return "no JIT requests".to_owned();
    }
    let mut s = format!(
        "{:<20} {:<8} {:<20} {:>9} {:>8}  SUBJECT\n",
        "ID", "STATE", "ROLE", "APPROVALS", "DURATION"
    );
    for r in rs {
        s.push_str(&format!(
            "{:<20} {:<8} {:<20} {:>9} {:>8}  {}\n",
            r.id,
            r.state,
            r.role,
            format!("{}/{}", r.approvals.len(), r.approvals_needed),
            duration_text(r.duration_seconds),
            r.subject
        ));
    }
    s
}

async fn roles(
    mut c: pb::jit_client::JitClient<crate::cli::client::Conn>,
    out: &Out,
) -> Result<(), Failure> {
    let roles = c
        .roles(pb::JitRolesRequest {})
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner()
        .roles;
    let value = json!(
        roles
            .iter()
            .map(|r| json!({
                "name": r.name,
                "grants": r.grants,
                "max_duration": duration_text(r.max_duration_seconds),
                "max_duration_seconds": r.max_duration_seconds,
                "approvals": r.approvals,
            }))
            .collect::<Vec<_>>()
    );
    out.print(&value, || {
        if roles.is_empty() {
            return "no JIT roles are configured ([[jit.role]] in server.toml)".to_owned();
        }
        let mut s = format!("{:<24} {:>8} {:>9}  GRANTS\n", "ROLE", "MAX", "APPROVALS");
        for r in &roles {
            s.push_str(&format!(
                "{:<24} {:>8} {:>9}  {}\n",
                r.name,
                duration_text(r.max_duration_seconds),
                r.approvals,
                r.grants.join(" ")
            ));
        }
        s
    });
    Ok(())
}
