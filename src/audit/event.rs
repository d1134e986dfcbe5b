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
    /// The PDP's verdict.
    pub decision: Verdict,
    /// The PDP's reasons.
    pub reasons: Vec<String>,
    /// Where the request came from, e.g. `unix:uid=0` or `tcp:127.0.0.1:5555`.
    pub source: String,
}

/// Allowed or denied; serialized as `"allow"` / `"deny"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The request was allowed.
    Allow,
    /// The request was denied.
    Deny,
}

impl From<bool> for Verdict {
    fn from(allow: bool) -> Self {
        if allow { Verdict::Allow } else { Verdict::Deny }
    }
}
