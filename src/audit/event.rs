//! The typed audit event (SPEC §4, STYLE §10).

use serde::{Deserialize, Serialize};

/// One audited decision or privileged action.
///
/// **No secret values, ever.** Events are written in clear text to the audit
/// log and shown by `sigil audit tail`: they name who did what to which
/// resource and what the PDP said, never a secret value, key, passphrase or
/// token. Put identifiers (paths, entry IDs, SPIFFE IDs) in `resource`, not
/// contents. Nothing here holds a [`crate::secret::Secret`]; the record of
/// a token's issue names the token by its SHA-256, from which the token
/// cannot be recovered ([`IssuedToken`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When, Unix seconds.
    pub time: u64,
    /// Who, e.g. `spiffe://example.org/app` or `uid:0`.
    pub subject: String,
    /// How the subject authenticated, e.g. `mtls`, `token`, `admin_socket`, `none`.
    pub authn: String,
    /// The dotted action name, e.g. `entry.create`.
    pub action: String,
    /// What was acted on, e.g. `entry:0b3c…`; an identifier, never a value.
    pub resource: String,
    /// The PDP's verdict, or [`Verdict::Failed`] on a record that follows
    /// an allowed request whose operation then failed.
    pub decision: Verdict,
    /// The PDP's reasons.
    pub reasons: Vec<String>,
    /// Where the request came from, e.g. `unix:uid=0` or `tcp:127.0.0.1:5555`.
    pub source: String,
    /// On the record of a token's issue: the token as the server knows it
    /// (see [`IssuedToken`]). Absent on every other record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<std::sync::Arc<IssuedToken>>,
}

/// A token sigil issued, as the allowed record of its issue carries it: all
/// the server needs to know the token again after a restart, so the durable
/// audit record is also the token's durable record (`server::tokens`).
///
/// Never the token itself: only its SHA-256, from which the token cannot be
/// recovered, and the claims it was signed with. The field names are those
/// of the server's token record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedToken {
    /// The `jti` claim.
    pub jti: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// The `sub` claim.
    pub spiffe_id: String,
    /// How it was obtained, e.g. `oidc` or `mint`.
    pub method: String,
    /// The role it was issued for (empty for a minted token).
    pub role: String,
    /// What vouched for the holder, e.g. the OIDC issuer's name or `mtls`.
    pub source: String,
    /// Its grants, the `scope` claim.
    pub grants: Vec<String>,
    /// `iat`, Unix seconds.
    pub issued_at: u64,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// The `aud` claim.
    pub audience: Vec<String>,
    /// For a token bound to a certificate: `cnf.x5t#S256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf_x5t: Option<String>,
    /// The JIT requests it relies on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jit_requests: Vec<String>,
}

/// Allowed, denied or failed; serialized as `"allow"`, `"deny"`, `"failed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The request was allowed.
    Allow,
    /// The request was denied.
    Deny,
    /// The request was allowed but the operation failed (a wrong unseal
    /// passphrase, a store that failed its checks). The gate records the
    /// decision before the handler runs, so the outcome follows in its own
    /// record; without it a failed attempt would read as "allow".
    Failed,
}

/// The subject, authentication and source of records the server writes
/// about itself (re-anchors, checkpoints), so they cannot be mistaken for
/// a caller's request.
pub const SERVER_SUBJECT: &str = "sigil-server";

impl Event {
    /// A record the server writes about itself: `action` on the audit log,
    /// with `reasons` saying what happened.
    pub fn by_server(time: u64, action: &str, reasons: Vec<String>) -> Event {
        Event {
            time,
            subject: SERVER_SUBJECT.to_owned(),
            authn: "internal".to_owned(),
            action: action.to_owned(),
            resource: "audit".to_owned(),
            decision: Verdict::Allow,
            reasons,
            source: "internal".to_owned(),
            token: None,
        }
    }
}

impl From<bool> for Verdict {
    fn from(allow: bool) -> Self {
        if allow { Verdict::Allow } else { Verdict::Deny }
    }
}
