//! `sigil entry`: registration entry administration.

use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use crate::id::Ttl;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub(super) struct EntryFields {
    /// Extra DNS SANs for the X.509-SVID.
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// X.509-SVID lifetime (e.g. 1h).
    #[arg(long)]
    x509_ttl: Option<Ttl>,
    /// JWT-SVID lifetime (e.g. 5m).
    #[arg(long)]
    jwt_ttl: Option<Ttl>,
    /// A hint for workloads holding several identities.
    #[arg(long)]
    hint: Option<String>,
    /// Trust domains whose bundles the workload also receives.
    #[arg(long = "federates-with")]
    federates_with: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum EntryCmd {
    /// Register a workload.
    Create {
        /// The SPIFFE ID to issue.
        #[arg(long)]
        spiffe_id: String,
        /// The agent (or other ID) that may obtain it.
        #[arg(long)]
        parent_id: String,
        /// TYPE:VALUE selectors, e.g. unix:uid:1000 (all must match).
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// Let this identity use admin APIs (subject to policy).
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        fields: EntryFields,
    },
    /// List entries.
    List {
        /// Only entries with this parent ID.
        #[arg(long)]
        parent_id: Option<String>,
        /// Only entries with this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
    },
    /// Show one entry.
    Show {
        /// Entry ID.
        id: String,
    },
    /// Change an entry; flags given replace the entry's values.
    Update {
        /// Entry ID.
        id: String,
        /// New SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// New parent ID.
        #[arg(long)]
        parent_id: Option<String>,
        /// New selectors (replace all).
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// Set or clear the admin flag.
        #[arg(long)]
        admin: Option<bool>,
        #[command(flatten)]
        fields: EntryFields,
    },
    /// Delete an entry.
    Delete {
        /// Entry ID.
        id: String,
    },
}

fn secs(t: Option<Ttl>) -> i64 {
    t.map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The stable JSON form of an entry.
pub(super) fn entry_json(e: &pb::Entry) -> Value {
    json!({
        "id": e.id,
        "spiffe_id": e.spiffe_id,
        "parent_id": e.parent_id,
        "selectors": e.selectors,
        "x509_ttl_seconds": e.x509_ttl_seconds,
        "jwt_ttl_seconds": e.jwt_ttl_seconds,
        "dns_names": e.dns_names,
        "hint": e.hint,
        "admin": e.admin,
        "federates_with": e.federates_with,
        "revision": e.revision,
        "created_at": e.created_at,
    })
}

fn entry_text(e: &pb::Entry) -> String {
    let mut s = format!(
        "Entry ID   : {}\nSPIFFE ID  : {}\nParent ID  : {}\nRevision   : {}\n",
        e.id, e.spiffe_id, e.parent_id, e.revision
    );
    for sel in &e.selectors {
        s.push_str(&format!("Selector   : {sel}\n"));
    }
    if e.x509_ttl_seconds > 0 {
        s.push_str(&format!("X509 TTL   : {}s\n", e.x509_ttl_seconds));
    }
    if e.jwt_ttl_seconds > 0 {
        s.push_str(&format!("JWT TTL    : {}s\n", e.jwt_ttl_seconds));
    }
    for d in &e.dns_names {
        s.push_str(&format!("DNS name   : {d}\n"));
    }
    if !e.hint.is_empty() {
        s.push_str(&format!("Hint       : {}\n", e.hint));
    }
    if e.admin {
        s.push_str("Admin      : true\n");
    }
    for f in &e.federates_with {
        s.push_str(&format!("Federates  : {f}\n"));
    }
    s
}

fn apply(fields: &EntryFields, e: &mut pb::Entry) {
    if !fields.dns.is_empty() {
        e.dns_names = fields.dns.clone();
    }
    if fields.x509_ttl.is_some() {
        e.x509_ttl_seconds = secs(fields.x509_ttl);
    }
    if fields.jwt_ttl.is_some() {
        e.jwt_ttl_seconds = secs(fields.jwt_ttl);
    }
    if let Some(h) = &fields.hint {
        e.hint = h.clone();
    }
    if !fields.federates_with.is_empty() {
        e.federates_with = fields.federates_with.clone();
    }
}

pub(super) async fn run(cli: &Cli, cmd: &EntryCmd, out: &Out) -> Result<(), Failure> {
    let mut c = cli.clients().await?.entries;
    let st = |s: tonic::Status| Failure(status_line(&s));
    match cmd {
        EntryCmd::Create {
            spiffe_id,
            parent_id,
            selectors,
            admin,
            fields,
        } => {
            let mut e = pb::Entry {
                spiffe_id: spiffe_id.clone(),
                parent_id: parent_id.clone(),
                selectors: selectors.clone(),
                admin: *admin,
                ..pb::Entry::default()
            };
            apply(fields, &mut e);
            let e = c
                .create(pb::CreateEntryRequest { entry: Some(e) })
                .await
                .map_err(st)?
                .into_inner();
            out.print(&entry_json(&e), || entry_text(&e));
        }
        EntryCmd::List {
            parent_id,
            spiffe_id,
        } => {
            let r = c
                .list(pb::ListEntriesRequest {
                    parent_id: parent_id.clone().unwrap_or_default(),
                    spiffe_id: spiffe_id.clone().unwrap_or_default(),
                })
                .await
                .map_err(st)?
                .into_inner();
            let v = Value::Array(r.entries.iter().map(entry_json).collect());
            out.print(&v, || {
                let mut s = format!("Found {} entries\n", r.entries.len());
                for e in &r.entries {
                    s.push('\n');
                    s.push_str(&entry_text(e));
                }
                s
            });
        }
        EntryCmd::Show { id } => {
            let e = c
                .show(pb::ShowEntryRequest { id: id.clone() })
                .await
                .map_err(st)?
                .into_inner();
            out.print(&entry_json(&e), || entry_text(&e));
        }
        EntryCmd::Update {
            id,
            spiffe_id,
            parent_id,
            selectors,
            admin,
            fields,
        } => {
            let mut e = c
                .show(pb::ShowEntryRequest { id: id.clone() })
                .await
                .map_err(st)?
                .into_inner();
            let revision = e.revision;
            if let Some(s) = spiffe_id {
                e.spiffe_id = s.clone();
            }
            if let Some(p) = parent_id {
                e.parent_id = p.clone();
            }
            if !selectors.is_empty() {
                e.selectors = selectors.clone();
            }
            if let Some(a) = admin {
                e.admin = *a;
            }
            apply(fields, &mut e);
            let e = c
                .update(pb::UpdateEntryRequest {
                    entry: Some(e),
                    expected_revision: revision,
                })
                .await
                .map_err(st)?
                .into_inner();
            out.print(&entry_json(&e), || entry_text(&e));
        }
        EntryCmd::Delete { id } => {
            c.delete(pb::DeleteEntryRequest { id: id.clone() })
                .await
                .map_err(st)?;
            out.print(&json!({"deleted": id}), || format!("deleted entry {id}"));
        }
    }
    Ok(())
}
