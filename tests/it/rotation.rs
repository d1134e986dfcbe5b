//! Keys that rotate themselves (SPEC §7, issue 8 §1–§3), with short lifetimes (keys
//! 60 s, SVIDs 10 s): workloads keep talking mTLS and validating JWT-SVIDs across CA
//! generations, across a SIGKILL of the server in the middle of a rotation, and
//! through a forced rotation and a taint; the operator commands and what they audit.
//!
//! The long variant (six generations, about three minutes) is ignored in CI; run it
//! with `cargo nextest run --run-ignored only rotation::`.

mod crash;
mod generations;
mod operator;
mod probe;
mod taint;

use crate::common::*;
use sigil::api::pb;

/// The SPIFFE IDs of the two workloads that talk to each other.
pub(crate) const SERVER_WL: &str = "/rot/server";
pub(crate) const CLIENT_WL: &str = "/rot/client";

/// The keys of `kind` ("x509-ca" or "jwt") in `state`, as the server shows them.
pub(crate) fn ids(keys: &[pb::AuthorityKey], kind: &str, state: &str) -> Vec<String> {
    keys.iter()
        .filter(|k| k.kind == kind && k.state == state)
        .map(|k| k.id.clone())
        .collect()
}

/// Every key of the server behind `c`, from `operator status`.
pub(crate) async fn keys(c: &mut sigil::cli::client::Clients) -> Vec<pb::AuthorityKey> {
    c.operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .authority_keys
}

/// The two workloads of the probe, registered under `agent` for this process's uid.
pub(crate) async fn register_probe_workloads(admin: &std::path::Path, agent: &str) {
    let mut c =
        sigil::cli::client::Clients::connect(&sigil::cli::client::Target::Admin(admin.to_owned()))
            .await
            .unwrap();
    for (path, hint) in [(SERVER_WL, "server"), (CLIENT_WL, "client")] {
        let e = pb::Entry {
            spiffe_id: format!("spiffe://{TD}{path}"),
            parent_id: agent.to_owned(),
            selectors: vec![format!("unix:uid:{}", sigil::server::own_uid())],
            hint: hint.to_owned(),
            ..pb::Entry::default()
        };
        c.entries
            .create(pb::CreateEntryRequest { entry: Some(e) })
            .await
            .unwrap();
    }
}
