//! The typed audit event (SPEC §4, STYLE §10).

use serde::{Deserialize, Serialize};

/// One audited decision or privileged action.
///
/// **No secret values, ever.** Events are written in clear text to the audit
/// log and shown by `sigil audit tail`: they name who did what to which
/// resource and what the PDP said, never a secret value, key, passphrase or
/// token. Put identifiers (paths, entry IDs, SPIFFE IDs) in `resource`, not
/// contents. Nothing here holds a [`crate::secret::Secret`].
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
        }
    }
}

impl From<bool> for Verdict {
    fn from(allow: bool) -> Self {
        if allow { Verdict::Allow } else { Verdict::Deny }
    }
}
