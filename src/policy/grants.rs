//! Data documents for the policies, and the one the PDP checks itself: the
//! grants, `data.sigil.grants` (SPEC §3.4), a map from SPIFFE ID to a list of
//! `VERB:PATTERN` grants:
//!
//! ```json
//! {"sigil": {"grants": {"spiffe://example.org/ci/app": ["read:ci/app/*"]}}}
//! ```
//!
//! The Rego policy decides with them; every grant is parsed here at load, so
//! a typo (`raed:ci/*`, `read:ci/app*`) refuses the whole set with a message
//! naming it instead of silently granting nothing.

use super::PolicyError;
use crate::id::SpiffeId;
use crate::secrets::Grant;

/// Standing grants by SPIFFE ID, as the data documents list them.
pub(super) type Standing = std::collections::HashMap<String, Vec<Grant>>;

/// Parses one data document and checks its grants, if it has any; adds
/// them to `standing`.
pub(super) fn data_document(
    file: &str,
    text: &str,
    standing: &mut Standing,
) -> Result<regorus::Value, PolicyError> {
    let data = |message: String| PolicyError::Data {
        file: file.to_owned(),
        message,
    };
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| data(format!("not JSON: {e}")))?;
    if !json.is_object() {
        return Err(data("must be a JSON object".into()));
    }
    if let Some(actions) = json.get("sigil").and_then(|s| s.get("bound_only")) {
        let names = actions
            .as_array()
            .ok_or_else(|| data("sigil.bound_only must be a list of action names".into()))?;
        for name in names {
            let known = name
                .as_str()
                .is_some_and(|n| super::Action::from_name(n).is_some());
            if !known {
                return Err(data(format!(
                    "sigil.bound_only: {name} is not an action name"
                )));
            }
        }
    }
    if let Some(grants) = json.get("sigil").and_then(|s| s.get("grants")) {
        for (id, list) in check_grants(file, grants)? {
            standing.entry(id).or_default().extend(list);
        }
    }
    Ok(regorus::Value::from(json))
}

fn check_grants(file: &str, grants: &serde_json::Value) -> Result<Standing, PolicyError> {
    let bad = |message: String| PolicyError::Grants {
        file: file.to_owned(),
        message,
    };
    let map = grants
        .as_object()
        .ok_or_else(|| bad("must map SPIFFE IDs to lists of grants".into()))?;
    let mut out = Standing::new();
    for (id, list) in map {
        SpiffeId::parse(id).map_err(|e| bad(format!("{id:?} is not a SPIFFE ID: {e}")))?;
        let parsed = out.entry(id.clone()).or_default();
        let list = list
            .as_array()
            .ok_or_else(|| bad(format!("{id}: must be a list of grants")))?;
        for g in list {
            let g = g
                .as_str()
                .ok_or_else(|| bad(format!("{id}: every grant is a string VERB:PATTERN")))?;
            parsed.push(Grant::parse(g).map_err(|e| bad(format!("{id}: {e}")))?);
        }
    }
    Ok(out)
}
