//! `[jit]` and `[[jit.role]]` of `server.toml`: the roles that may be
//! requested for a bounded time with approval (SPEC §3.3 `sigil jit`).
//!
//! ```toml
//! [jit]
//! pending_ttl = "1h"                 # how long a request waits for approvals
//! [[jit.role]]
//! name = "prod-db-read"
//! grants = ["read:prod/db/*"]        # same grant form as the policy data
//! max_duration = "1h"
//! approvals = 2                      # distinct approvers needed
//! ```

use super::ConfigError;
use crate::id::Ttl;
use crate::jit::{DEFAULT_PENDING_TTL, JitRole, MAX_APPROVALS};
use crate::secrets::Grant;
use serde::Deserialize;
use std::path::Path;

/// `[jit]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJit {
    pending_ttl: Option<String>,
    #[serde(default)]
    role: Vec<RawRole>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    grants: Vec<String>,
    max_duration: String,
    approvals: u32,
}

/// A checked `[jit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitConfig {
    /// The roles.
    pub roles: Vec<JitRole>,
    /// How long a request waits for approvals, seconds (default 1h).
    pub pending_ttl: u64,
}

impl Default for JitConfig {
    fn default() -> Self {
        Self {
            roles: Vec::new(),
            pending_ttl: DEFAULT_PENDING_TTL,
        }
    }
}

impl JitConfig {
    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&JitRole> {
        self.roles.iter().find(|r| r.name == name)
    }
}

impl RawJit {
    pub(super) fn check(self, path: &Path) -> Result<JitConfig, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let pending_ttl = match self.pending_ttl {
            None => DEFAULT_PENDING_TTL,
            Some(t) => Ttl::parse(&t)
                .map_err(|e| invalid("jit.pending_ttl", e.to_string()))?
                .as_secs(),
        };
        let mut roles: Vec<JitRole> = Vec::new();
        for raw in self.role {
            let named = |m: &str| format!("role {:?}: {m}", raw.name);
            let ok = !raw.name.is_empty()
                && raw.name.len() <= 64
                && raw
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return Err(invalid(
                    "jit.role.name",
                    named("use 1 to 64 of A-Z a-z 0-9 _ . -"),
                ));
            }
            if roles.iter().any(|r| r.name == raw.name) {
                return Err(invalid("jit.role.name", named("defined twice")));
            }
            if raw.grants.is_empty() {
                return Err(invalid("jit.role.grants", named("list at least one grant")));
            }
            let grants = raw
                .grants
                .iter()
                .map(|g| {
                    Grant::parse(g)
                        .map_err(|e| invalid("jit.role.grants", named(&format!("{g:?}: {e}"))))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let max_duration = Ttl::parse(&raw.max_duration)
                .map_err(|e| invalid("jit.role.max_duration", named(&e.to_string())))?
                .as_secs();
            if !(1..=MAX_APPROVALS).contains(&raw.approvals) {
                return Err(invalid(
                    "jit.role.approvals",
                    named(&format!("must be between 1 and {MAX_APPROVALS}")),
                ));
            }
            roles.push(JitRole {
                name: raw.name,
                grants,
                max_duration,
                approvals: raw.approvals,
            });
        }
        Ok(JitConfig { roles, pending_ttl })
    }
}
