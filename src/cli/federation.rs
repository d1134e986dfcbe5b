//! `sigil bundle set|list|delete` (SPEC §3.3, issue 8 §4): the foreign trust domains'
//! bundles, and the federation part of `sigil operator status`.

use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The most a bundle file may hold: what the server accepts.
const MAX_BUNDLE_FILE: u64 = 1024 * 1024;

#[derive(Debug, Subcommand)]
pub(super) enum BundleCmd {
    #[command(flatten)]
    Own(super::ops::BundleCmd),
    /// Set (or replace) a foreign trust domain's bundle, from a file in the SPIFFE
    /// bundle format. A configured trust domain's next fetch replaces it.
    Set {
        /// The foreign trust domain.
        #[arg(long)]
        trust_domain: String,
        /// The bundle file (SPIFFE format).
        #[arg(long)]
        file: PathBuf,
    },
    /// List the foreign trust domains: their bundles, and how their bundle
    /// endpoints are doing.
    List,
    /// Delete a foreign trust domain's bundle set with `bundle set`.
    Delete {
        /// The foreign trust domain.
        trust_domain: String,
    },
}

pub(super) async fn bundle(cli: &Cli, cmd: &BundleCmd, out: &Out) -> Result<(), Failure> {
    let st = |s: tonic::Status| Failure(status_line(&s));
    match cmd {
        BundleCmd::Own(cmd) => super::ops::bundle(cli, cmd, out).await?,
        BundleCmd::Set { trust_domain, file } => {
            let json = read_bundle_file(file)?;
            let b = cli
                .clients()
                .await?
                .bundle
                .set_federated(pb::SetFederatedBundleRequest {
                    trust_domain: trust_domain.clone(),
                    spiffe_json: json,
                })
                .await
                .map_err(st)?
                .into_inner();
            out.print(&bundle_json(&b), || {
                format!(
                    "set the bundle of {} (sequence {}, {} X.509 authorities, {} JWT keys)",
                    b.trust_domain, b.sequence, b.x509_authorities, b.jwt_authorities
                )
            });
        }
        BundleCmd::List => {
            let r = cli
                .clients()
                .await?
                .bundle
                .list_federated(pb::ListFederatedBundlesRequest {})
                .await
                .map_err(st)?
                .into_inner();
            let all: Vec<Value> = r.bundles.iter().map(bundle_json).collect();
            out.print(&json!(all), || {
                if r.bundles.is_empty() {
                    return "no foreign trust domains".to_owned();
                }
                r.bundles
                    .iter()
                    .map(bundle_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        BundleCmd::Delete { trust_domain } => {
            cli.clients()
                .await?
                .bundle
                .delete_federated(pb::DeleteFederatedBundleRequest {
                    trust_domain: trust_domain.clone(),
                })
                .await
                .map_err(st)?;
            out.print(
                &json!({"trust_domain": trust_domain, "deleted": true}),
                || format!("deleted the bundle of {trust_domain}"),
            );
        }
    }
    Ok(())
}

fn read_bundle_file(file: &std::path::Path) -> Result<String, Failure> {
    let fail = |e: &dyn std::fmt::Display| Failure(format!("--file {}: {e}", file.display()));
    let meta = std::fs::metadata(file).map_err(|e| fail(&e))?;
    if meta.len() > MAX_BUNDLE_FILE {
        return Err(fail(&"larger than 1 MiB"));
    }
    let bytes = std::fs::read(file).map_err(|e| fail(&e))?;
    String::from_utf8(bytes).map_err(|_| fail(&"not UTF-8 text, so not a SPIFFE bundle"))
}

/// A Unix time for JSON: `null` when it never happened.
fn when(t: i64) -> Value {
    if t == 0 { Value::Null } else { json!(t) }
}

/// One relationship's status as stable JSON.
pub(super) fn status_json(s: &pb::FederationStatus) -> Value {
    json!({
        "trust_domain": s.trust_domain,
        "url": s.url,
        "profile": s.profile,
        "sequence": s.sequence,
        "last_success": when(s.last_success),
        "last_error": if s.last_error.is_empty() { Value::Null } else { json!(s.last_error) },
        "last_error_at": when(s.last_error_at),
        "next_attempt": when(s.next_attempt),
        "failures": s.failures,
    })
}

/// One relationship's status as text lines.
pub(super) fn status_text(s: &pb::FederationStatus) -> String {
    let at = |t: i64| {
        if t == 0 {
            "never".to_owned()
        } else {
            super::agents::time_text(t)
        }
    };
    let mut text = format!(
        "  {} ({} {}): sequence {}, last success {}, next attempt {}",
        s.trust_domain,
        s.profile,
        s.url,
        s.sequence,
        at(s.last_success),
        at(s.next_attempt)
    );
    if !s.last_error.is_empty() {
        text.push_str(&format!(
            "\n    last error at {} ({} in a row): {}",
            at(s.last_error_at),
            s.failures,
            s.last_error
        ));
    }
    text
}

fn bundle_json(b: &pb::FederatedBundle) -> Value {
    json!({
        "trust_domain": b.trust_domain,
        "source": if b.source.is_empty() { Value::Null } else { json!(b.source) },
        "sequence": b.sequence,
        "x509_authorities": b.x509_authorities,
        "jwt_authorities": b.jwt_authorities,
        "updated_at": when(b.updated_at),
        "spiffe": if b.spiffe_json.is_empty() { Value::Null } else { json!(b.spiffe_json) },
        "endpoint": b.endpoint.as_ref().map_or(Value::Null, status_json),
    })
}

fn bundle_text(b: &pb::FederatedBundle) -> String {
    let held = if b.source.is_empty() {
        "no bundle yet".to_owned()
    } else {
        format!(
            "{} bundle, sequence {}, {} X.509 authorities, {} JWT keys",
            b.source, b.sequence, b.x509_authorities, b.jwt_authorities
        )
    };
    let mut text = format!("{}: {held}", b.trust_domain);
    if let Some(s) = &b.endpoint {
        text.push('\n');
        text.push_str(&status_text(s));
    }
    text
}
