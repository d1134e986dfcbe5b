//! `sigil quarantine`: cut a compromised identity off everywhere at once,
//! lift it, list them (SPEC §3.3).

use super::agents::time_text;
use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use clap::{Args, Subcommand};
use serde_json::json;

/// `sigil quarantine SPIFFE_ID --reason TEXT`, or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct QuarantineArgs {
    #[command(subcommand)]
    cmd: Option<QuarantineCmd>,
    /// The identity to quarantine.
    #[arg(value_name = "SPIFFE_ID", required = true)]
    spiffe_id: Option<String>,
    /// Why: recorded with the quarantine, in the audit log, and in every
    /// denial it causes.
    #[arg(long, required = true)]
    reason: Option<String>,
}

#[derive(Debug, Subcommand)]
enum QuarantineCmd {
    /// Lift a quarantine: issuance and access (under the policy) resume;
    /// revoked tokens and grants stay revoked.
    Lift {
        /// The identity.
        #[arg(value_name = "SPIFFE_ID")]
        spiffe_id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// List quarantined identities.
    List,
}

fn record_json(r: &pb::QuarantineRecord) -> serde_json::Value {
    json!({"spiffe_id": r.spiffe_id, "reason": r.reason, "by": r.by, "at": time_text(r.at)})
}

pub(super) async fn run(cli: &Cli, args: &QuarantineArgs, out: &Out) -> Result<(), Failure> {
    let mut c = cli.clients().await?.quarantine;
    let st = |s: tonic::Status| Failure(status_line(&s));
    match (&args.cmd, &args.spiffe_id, &args.reason) {
        (Some(QuarantineCmd::Lift { spiffe_id, reason }), _, _) => {
            let r = c
                .lift(pb::QuarantineLiftRequest {
                    spiffe_id: spiffe_id.clone(),
                    reason: reason.clone(),
                })
                .await
                .map_err(st)?
                .into_inner();
            out.print(&record_json(&r), || {
                format!("lifted the quarantine of {}", r.spiffe_id)
            });
        }
        (Some(QuarantineCmd::List), _, _) => {
            let records = c
                .list(pb::QuarantineListRequest {})
                .await
                .map_err(st)?
                .into_inner()
                .records;
            let value = json!(records.iter().map(record_json).collect::<Vec<_>>());
            out.print(&value, || {
                if records.is_empty() {
                    return "no identity is quarantined".to_owned();
                }
                records
                    .iter()
                    .map(|r| {
                        format!(
                            "{}  since {} by {}: {}\n",
                            r.spiffe_id,
                            time_text(r.at),
                            r.by,
                            r.reason
                        )
                    })
                    .collect()
            });
        }
        (None, Some(id), Some(reason)) => {
            let r = c
                .put(pb::QuarantinePutRequest {
                    spiffe_id: id.clone(),
                    reason: reason.clone(),
                })
                .await
                .map_err(st)?
                .into_inner();
            let rec = r.record.unwrap_or_default();
            let mut v = record_json(&rec);
            if let Some(m) = v.as_object_mut() {
                m.insert("tokens_revoked".into(), json!(r.tokens_revoked));
                m.insert("requests_revoked".into(), json!(r.requests_revoked));
            }
            out.print(&v, || {
                format!(
                    "quarantined {}: {} token(s) and {} JIT request(s) revoked",
                    rec.spiffe_id,
                    r.tokens_revoked.len(),
                    r.requests_revoked.len()
                )
            });
        }
        _ => {
            return Err(Failure(
                "error: give SPIFFE_ID and --reason, or a subcommand".into(),
            ));
        }
    }
    Ok(())
}
