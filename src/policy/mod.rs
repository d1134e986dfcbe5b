//! The policy decision point (SPEC §2 chokepoint, §4 "explicit dynamic
//! policy"; STYLE §9): typed inputs, Rego evaluated in-process with regorus,
//! deny by default, and a policy set that must pass built-in must-allow /
//! must-deny cases before it can become active.
//!
//! The default policy is `config/policies/sigil.rego`.

mod cases;
mod grants;
mod input;
mod pdp;

pub use input::{Action, Authn, Context, Input, InputGrant, Resource, Subject, SubjectKind};
pub use pdp::{AUTHZ_PACKAGE, DEFAULT_DENY_REASON, Decision, Pdp};

/// The default policy set shipped with sigil, as (file name, text): the
/// Rego policy and its example grants.
pub fn default_policy() -> Vec<(String, String)> {
    vec![
        (
            "grants.json".to_string(),
            include_str!("../../config/policies/grants.json").to_string(),
        ),
        (
            "sigil.rego".to_string(),
            include_str!("../../config/policies/sigil.rego").to_string(),
        ),
    ]
}

/// Why a policy set was refused. A refused set never replaces the active one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A file is not valid Rego.
    #[error("policy file {file}: {message}")]
    Parse {
        /// The file that failed to parse.
        file: String,
        /// The parser's message (it carries line and column).
        message: String,
    },
    /// No module declares `package sigil.authz`, so nothing could ever be allowed.
    #[error("no policy file declares package sigil.authz")]
    NoAuthzPackage,
    /// A file declares the package the PDP reserves for itself.
    #[error("policy file {file}: package sigil.internal.decision is reserved")]
    ReservedPackage {
        /// The offending file.
        file: String,
    },
    /// The set parses but cannot be evaluated (unknown names, recursion, type errors).
    #[error("policy set cannot be evaluated: {message}")]
    Invalid {
        /// regorus' message.
        message: String,
    },
    /// A data document (`*.json`) is not a JSON object, or conflicts with another.
    #[error("policy data {file}: {message}")]
    Data {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The grants document (`data.sigil.grants`) breaks a rule.
    #[error("policy data {file}: grants: {message}")]
    Grants {
        /// The file.
        file: String,
        /// Which identity or grant, and the rule it breaks.
        message: String,
    },
    /// A built-in case that must be allowed was denied.
    #[error("policy denies built-in must-allow case \"{case}\": {}", reasons.join("; "))]
    MustAllowFailed {
        /// The case's name.
        case: String,
        /// The reasons the policy gave for denying.
        reasons: Vec<String>,
    },
    /// A built-in case that must be denied was allowed.
    #[error("policy allows built-in must-deny case \"{case}\"")]
    MustDenyFailed {
        /// The case's name.
        case: String,
    },
}

#[cfg(test)]
mod tests;
