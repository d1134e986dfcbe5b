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

/// Parses one data document and checks its grants, if it has any.
pub(super) fn data_document(file: &str, text: &str) -> Result<regorus::Value, PolicyError> {
    let data = |message: String| PolicyError::Data {
        file: file.to_owned(),
        message,
    };
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| data(format!("not JSON: {e}")))?;
    if !json.is_object() {
        return Err(data("must be a JSON object".into()));
    }
    if let Some(grants) = json.get("sigil").and_then(|s| s.get("grants")) {
        check_grants(file, grants)?;
    }
    Ok(regorus::Value::from(json))
}

fn check_grants(file: &str, grants: &serde_json::Value) -> Result<(), PolicyError> {
    let bad = |message: String| PolicyError::Grants {
        file: file.to_owned(),
        message,
    };
    let map = grants
        .as_object()
        .ok_or_else(|| bad("must map SPIFFE IDs to lists of grants".into()))?;
    for (id, list) in map {
        SpiffeId::parse(id).map_err(|e| bad(format!("{id:?} is not a SPIFFE ID: {e}")))?;
        let list = list
            .as_array()
            .ok_or_else(|| bad(format!("{id}: must be a list of grants")))?;
        for g in list {
            let g = g
                .as_str()
                .ok_or_else(|| bad(format!("{id}: every grant is a string VERB:PATTERN")))?;
            Grant::parse(g).map_err(|e| bad(format!("{id}: {e}")))?;
        }
    }
    Ok(())
}
