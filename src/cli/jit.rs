//! `sigil jit`: just-in-time elevation (SPEC §3.3).

use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub(super) enum JitCmd {
    /// List the roles that may be requested: grants, maximum duration,
    /// approvals needed.
    Roles,
}

fn duration_text(secs: i64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub(super) async fn run(cli: &Cli, cmd: &JitCmd, out: &Out) -> Result<(), Failure> {
    let JitCmd::Roles = cmd;
    let mut c = cli.clients().await?.jit;
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
