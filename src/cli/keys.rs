//! The authority's keys on the command line (SPEC §3.3, §7): `operator rotate-ca`,
//! `rotate-jwt-key`, `taint-ca`, `taint-jwt-key`, and the key view that `bundle show
//! --format keys` and `operator status` print. JSON field names and the state, kind
//! and change names are stable.

use super::agents::time_text;
use super::output::Out;
use super::{Failure, status_line};
use crate::api::pb;
use serde_json::{Value, json};

/// A Unix time from the wire as JSON: `null` for 0 (none).
fn json_time(t: i64) -> Value {
    if t == 0 { Value::Null } else { json!(t) }
}

/// One key as stable JSON.
pub(super) fn key_json(k: &pb::AuthorityKey) -> Value {
    json!({
        "kind": k.kind,
        "id": k.id,
        "state": k.state,
        "created_at": k.created_at,
        "published_at": k.published_at,
        "activated_at": json_time(k.activated_at),
        "forced_activation": k.forced_activation,
        "activate_early": k.activate_early,
        "retired_at": json_time(k.retired_at),
        "not_after": k.not_after,
        "tainted": k.tainted_at != 0,
        "tainted_at": json_time(k.tainted_at),
        "leaves_bundle_at": json_time(k.leaves_bundle_at),
    })
}

/// Every key as a JSON array.
pub(super) fn keys_json(keys: &[pb::AuthorityKey]) -> Value {
    Value::Array(keys.iter().map(key_json).collect())
}

/// The keys as a table, one line each.
pub(super) fn keys_text(keys: &[pb::AuthorityKey]) -> String {
    let mut s = format!(
        "{:<8} {:<9} {:<8} {:<21} {:<21} ID\n",
        "KIND", "STATE", "TAINTED", "NOT AFTER", "LEAVES BUNDLE"
    );
    for k in keys {
        let leaves = if k.leaves_bundle_at == 0 {
            "while active".to_owned()
        } else {
            time_text(k.leaves_bundle_at)
        };
        let tainted = if k.tainted_at == 0 { "no" } else { "yes" };
        s.push_str(&format!(
            "{:<8} {:<9} {:<8} {:<21} {:<21} {}\n",
            k.kind,
            k.state,
            tainted,
            time_text(k.not_after),
            leaves,
            k.id
        ));
    }
    s
}

fn changes_json(changes: &[pb::SigningKeyChange]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| json!({"kind": c.kind, "id": c.id, "change": c.change}))
            .collect(),
    )
}

fn changes_text(changes: &[pb::SigningKeyChange]) -> String {
    if changes.is_empty() {
        return "nothing changed\n".to_owned();
    }
    changes
        .iter()
        .map(|c| format!("{} {} {}\n", c.kind, c.id, c.change))
        .collect()
}

/// The operator service's client.
type Operator = pb::operator_client::OperatorClient<super::client::Conn>;

fn failure(s: tonic::Status) -> Failure {
    Failure(status_line(&s))
}

/// Prints what changed and the keys afterwards.
fn print_changes(changes: &[pb::SigningKeyChange], keys: &[pb::AuthorityKey], out: &Out) {
    out.print(
        &json!({"changes": changes_json(changes), "keys": keys_json(keys)}),
        || format!("{}\n{}", changes_text(changes), keys_text(keys)),
    );
}

/// `rotate-ca` / `rotate-jwt-key`.
pub(super) async fn rotate(
    c: &mut Operator,
    kind: pb::SigningKeyKind,
    force: bool,
    out: &Out,
) -> Result<(), Failure> {
    let r = c
        .rotate_signing_key(pb::RotateSigningKeyRequest {
            kind: kind.into(),
            force,
        })
        .await
        .map_err(failure)?
        .into_inner();
    print_changes(&r.changes, &r.keys, out);
    Ok(())
}

/// `taint-ca` / `taint-jwt-key`.
pub(super) async fn taint(
    c: &mut Operator,
    kind: pb::SigningKeyKind,
    id: &str,
    out: &Out,
) -> Result<(), Failure> {
    let r = c
        .taint_signing_key(pb::TaintSigningKeyRequest {
            kind: kind.into(),
            id: id.to_owned(),
        })
        .await
        .map_err(failure)?
        .into_inner();
    print_changes(&r.changes, &r.keys, out);
    Ok(())
}
