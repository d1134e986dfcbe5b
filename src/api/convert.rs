//! Proto ⇄ domain conversion, in one place (STYLE §2). Incoming messages
//! become drafts that the domain validates; outgoing ones are built from
//! validated domain values.

use super::pb;
use crate::registry::{Entry, EntryDraft};

/// The draft an incoming entry message describes.
pub fn entry_draft(e: &pb::Entry) -> EntryDraft {
    EntryDraft {
        spiffe_id: e.spiffe_id.clone(),
        parent_id: e.parent_id.clone(),
        selectors: e.selectors.clone(),
        x509_ttl_seconds: e.x509_ttl_seconds,
        jwt_ttl_seconds: e.jwt_ttl_seconds,
        dns_names: e.dns_names.clone(),
        hint: e.hint.clone(),
        admin: e.admin,
        federates_with: e.federates_with.clone(),
    }
}

fn wire_secs(v: Option<u64>) -> i64 {
    v.and_then(|s| i64::try_from(s).ok()).unwrap_or(0)
}

/// The wire form of a stored entry.
pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.as_str().to_owned(),
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.iter().map(ToString::to_string).collect(),
        x509_ttl_seconds: wire_secs(e.x509_ttl_secs),
        jwt_ttl_seconds: wire_secs(e.jwt_ttl_secs),
        dns_names: e.dns_names.clone(),
        hint: e.hint.clone(),
        admin: e.admin,
        federates_with: e.federates_with.iter().map(ToString::to_string).collect(),
        revision: e.revision,
        created_at: wire_secs(Some(e.created_at)),
    }
}

/// A unix timestamp for the wire.
pub fn wire_time(t: std::time::SystemTime) -> i64 {
    wire_secs(Some(crate::clock::unix_seconds(t)))
}

/// The RFC 7662 JSON object of an introspection answer: `{"active":
/// false}` alone for a token not in force.
pub fn introspection_json(r: &super::pb::IntrospectResponse) -> serde_json::Value {
    use serde_json::json;
    if !r.active {
        return json!({ "active": false });
    }
    let mut v = json!({
        "active": true,
        "scope": r.scope,
        "sub": r.sub,
        "aud": r.aud,
        "iat": r.iat,
        "exp": r.exp,
        "jti": r.jti,
        "token_type": r.token_type,
    });
    if let Some(m) = v.as_object_mut() {
        if !r.cnf_x5t_s256.is_empty() {
            m.insert("cnf".into(), json!({"x5t#S256": r.cnf_x5t_s256}));
        }
        if !r.sigil_jit.is_empty() {
            m.insert("sigil_jit".into(), json!(r.sigil_jit));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pb::IntrospectResponse;
    use serde_json::json;

    #[test]
    fn an_introspection_shows_binding_and_grants_only_while_active() {
        let bound = IntrospectResponse {
            active: true,
            scope: "read:prod/db/main".into(),
            sub: "spiffe://example.org/app".into(),
            aud: vec!["sigil".into()],
            iat: 100,
            exp: 700,
            jti: "0f".into(),
            token_type: "Bearer".into(),
            cnf_x5t_s256: "x5t".into(),
            sigil_jit: vec!["jit-1".into()],
        };
        assert_eq!(
            introspection_json(&bound),
            json!({
                "active": true,
                "scope": "read:prod/db/main",
                "sub": "spiffe://example.org/app",
                "aud": ["sigil"],
                "iat": 100,
                "exp": 700,
                "jti": "0f",
                "token_type": "Bearer",
                "cnf": {"x5t#S256": "x5t"},
                "sigil_jit": ["jit-1"],
            })
        );
        // RFC 7662 §2.2: an inactive token's answer says nothing else,
        // whatever the response carries.
        let ended = IntrospectResponse {
            active: false,
            ..bound
        };
        assert_eq!(introspection_json(&ended), json!({ "active": false }));
    }
}
