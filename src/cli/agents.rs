//! `sigil join-token` and `sigil agent-node`: agent administration.

use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use crate::id::Ttl;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub(super) enum JoinTokenCmd {
    /// Create a one-time join token for a new agent.
    Create {
        /// How long the token is accepted (default 10m).
        #[arg(long)]
        ttl: Option<Ttl>,
        /// The agent's name, one path segment: it becomes
        /// spiffe://<td>/sigil/agent/<name> (random when omitted), so entries
        /// can name it as their parent. A name an active agent holds is
        /// refused unless --replace is given.
        #[arg(long)]
        name: Option<String>,
        /// Hand the name of an active agent to the node that redeems this
        /// token (that node takes over its identity). Audited as
        /// agent.token.replace.
        #[arg(long, requires = "name")]
        replace: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum AgentNodeCmd {
    /// List attested agents with their last-seen times.
    List,
    /// Cut an agent off at once.
    Ban {
        /// The agent's SPIFFE ID.
        id: String,
    },
}

pub(super) fn time_text(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).ok();
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| unix.to_string())
}

pub(super) async fn join_token(cli: &Cli, cmd: &JoinTokenCmd, out: &Out) -> Result<(), Failure> {
    let JoinTokenCmd::Create { ttl, name, replace } = cmd;
    let r = cli
        .clients()
        .await?
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: ttl
                .map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            agent_name: name.clone().unwrap_or_default(),
            replace: *replace,
        })
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    // Only the token goes to standard output, so `... > node1.token` makes a
    // file the agent can read with --join-token-file; the note is for people.
    if !out.json {
        eprintln!(
            "(agent {} — expires {})",
            r.agent_id,
            time_text(r.expires_at)
        );
    }
    out.print(
        &json!({"token": r.token, "agent_id": r.agent_id, "expires_at": r.expires_at}),
        || r.token.clone(),
    );
    Ok(())
}

pub(super) async fn agent_node(cli: &Cli, cmd: &AgentNodeCmd, out: &Out) -> Result<(), Failure> {
    let mut c = cli.clients().await?.agents;
    match cmd {
        AgentNodeCmd::List => {
            let r = c
                .list(pb::ListAgentsRequest {})
                .await
                .map_err(|s| Failure(status_line(&s)))?
                .into_inner();
            let v: Vec<_> = r
                .agents
                .iter()
                .map(|a| {
                    json!({
                        "spiffe_id": a.spiffe_id,
                        "attested_at": a.attested_at,
                        "last_seen": a.last_seen,
                        "svid_expires_at": a.svid_expires_at,
                        "banned": a.banned,
                    })
                })
                .collect();
            out.print(&json!(v), || {
                let mut s = format!("Found {} agents\n", r.agents.len());
                for a in &r.agents {
                    s.push_str(&format!(
                        "\nAgent ID   : {}\nLast seen  : {}\nSVID until : {}\nBanned     : {}\n",
                        a.spiffe_id,
                        time_text(a.last_seen),
                        time_text(a.svid_expires_at),
                        a.banned
                    ));
                }
                s
            });
        }
        AgentNodeCmd::Ban { id } => {
            c.ban(pb::BanAgentRequest {
                spiffe_id: id.clone(),
            })
            .await
            .map_err(|s| Failure(status_line(&s)))?;
            out.print(&json!({"banned": id}), || format!("banned {id}"));
        }
    }
    Ok(())
}
