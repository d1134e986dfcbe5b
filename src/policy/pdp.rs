//! The policy decision point: compiles a Rego policy set, refuses one that
//! breaks the built-in cases, and answers [`Input`]s (SPEC §4 "explicit dynamic
//! policy", STYLE §9).
//!
//! Policy convention: modules in `package sigil.authz` define
//! - `allow` — a boolean rule; anything but `true` is a deny (deny by default);
//! - `deny` — an optional set of reason strings; any member denies, whatever `allow` says;
//! - `reasons` — an optional set of strings explaining an allow.
//!
//! Policies are Rego v1 (`allow if { … }`, `deny contains msg if …`), with
//! only regorus' core builtins (no `time.now_ns`, `http.send`, regex or net:
//! time and source arrive in `input.context`). Other packages may hold helpers. The PDP adds one internal module of its
//! own that folds the three rules into a single object, so each decision is a
//! single rule evaluation and a policy that leaves `deny` or `reasons` out is
//! still well formed.

use regorus::{Engine, Value};

use super::PolicyError;
use super::cases::{Expect, builtin_cases};
use super::input::Input;

/// The package every policy set must define `allow` in.
pub const AUTHZ_PACKAGE: &str = "sigil.authz";

/// The PDP's own module; policies may not declare this package.
const DECISION_PACKAGE: &str = "sigil.internal.decision";
const DECISION_FILE: &str = "<sigil internal decision module>";
const DECISION_RULE: &str = "data.sigil.internal.decision.result";
const DECISION_MODULE: &str = r#"
package sigil.internal.decision
import rego.v1

# Deny by default: only a literal `true` from data.sigil.authz.allow allows.
default allow := false
allow if data.sigil.authz.allow == true

# Undefined `deny` / `reasons` rules fold to empty sets. Their values are
# passed through unchanged so that a `deny` of the wrong shape is seen (and
# denies) rather than silently dropped.
default deny := set()
deny := data.sigil.authz.deny
default reasons := set()
reasons := data.sigil.authz.reasons

result := {"allow": allow, "deny": deny, "reasons": reasons}
"#;

/// The reason given when no rule allowed and none denied explicitly.
pub const DEFAULT_DENY_REASON: &str = "denied by default: no policy rule allows this";

// The server shares one `Pdp` across request tasks.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pdp>();
};

/// The PDP's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an authorization decision that is not checked allows nothing"]
pub struct Decision {
    /// True only when some rule allowed and no rule denied.
    pub allow: bool,
    /// Why: the `deny` reasons when denied, the `reasons` set when allowed.
    pub reasons: Vec<String>,
}

impl Decision {
    fn deny(reason: String) -> Self {
        Self {
            allow: false,
            reasons: vec![reason],
        }
    }
}

/// A compiled, checked policy set. `Send + Sync`: share it in an `Arc` and
/// swap the whole value on reload, so a failed reload leaves the old one in force.
#[derive(Debug)]
pub struct Pdp {
    /// The prepared engine; never evaluated on directly, only cloned.
    engine: Engine,
    files: Vec<String>,
    /// The standing grants in the data documents (`data.sigil.grants`).
    standing: super::grants::Standing,
    /// Decisions already made, by their exact input (see [`Pdp::decide`]).
    memo: std::sync::Mutex<std::collections::HashMap<Input, Decision>>,
}

/// Most decisions remembered; the memo is emptied when it is full. Inputs
/// carry the time in seconds, so entries stop matching within a second and
/// a full memo is mostly stale.
const MEMO_CAPACITY: usize = 4096;

impl Pdp {
    /// Parses `sources` (file name, text: `*.json` files are data documents,
    /// the rest Rego modules), checks the policy convention,
    /// and runs the built-in must-allow / must-deny cases. Any failure refuses
    /// the whole set.
    pub fn compile(sources: &[(String, String)]) -> Result<Pdp, PolicyError> {
        let mut engine = Engine::new();
        let mut has_authz = false;
        let mut standing = super::grants::Standing::new();
        for (file, text) in sources {
            if file.ends_with(".json") {
                let data = super::grants::data_document(file, text, &mut standing)?;
                engine.add_data(data).map_err(|e| PolicyError::Data {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
                continue;
            }
            let package =
                engine
                    .add_policy(file.clone(), text.clone())
                    .map_err(|e| PolicyError::Parse {
                        file: file.clone(),
                        message: e.to_string(),
                    })?;
            let package = package.strip_prefix("data.").unwrap_or(&package);
            if package == DECISION_PACKAGE {
                return Err(PolicyError::ReservedPackage { file: file.clone() });
            }
            has_authz |= package == AUTHZ_PACKAGE;
        }
        if !has_authz {
            return Err(PolicyError::NoAuthzPackage);
        }
        engine
            .add_policy(DECISION_FILE.to_string(), DECISION_MODULE.to_string())
            .map_err(|e| PolicyError::Parse {
                file: DECISION_FILE.to_string(),
                message: e.to_string(),
            })?;
        // The first evaluation runs regorus' analysis (unknown names, recursion),
        // so do it here: a policy that cannot be evaluated is a compile error.
        let mut probe = engine.clone();
        probe.set_input(Value::new_object());
        probe
            .eval_rule(DECISION_RULE.to_string())
            .map_err(|e| PolicyError::Invalid {
                message: e.to_string(),
            })?;
        let pdp = Pdp {
            engine: probe,
            files: sources.iter().map(|(f, _)| f.clone()).collect(),
            standing,
            memo: std::sync::Mutex::new(std::collections::HashMap::new()),
        };
        pdp.check_builtin_cases()?;
        Ok(pdp)
    }

    /// The file names this policy set was compiled from.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// The grants `data.sigil.grants` lists for `spiffe_id` (none when it
    /// lists none).
    pub fn standing_grants(&self, spiffe_id: &str) -> &[crate::secrets::Grant] {
        self.standing.get(spiffe_id).map_or(&[], Vec::as_slice)
    }

    /// Decides `input`. Never panics: an evaluation error is a deny whose
    /// reason says so. Safe to call from many threads at once.
    ///
    /// A decision is a pure function of the input: policies see no clock,
    /// network or randomness (the time arrives in `input.context`, in whole
    /// seconds), and a policy set never changes once compiled (a reload
    /// builds a new `Pdp`). So a decision made for the exact same input is
    /// remembered and given again, which spares the evaluation for repeated
    /// requests (one workload reading one secret many times a second).
    pub fn decide(&self, input: &Input) -> Decision {
        // Remembered by the input itself (compared whole, not by a digest),
        // so a remembered decision is only ever reused for an equal input.
        if let Some(d) = self
            .memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(input)
        {
            return d.clone();
        }
        let json = match serde_json::to_string(input) {
            Ok(k) => k,
            Err(e) => return Decision::deny(format!("policy input not serializable: {e}")),
        };
        let decision = self.evaluate(&json);
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if memo.len() >= MEMO_CAPACITY {
            memo.clear();
        }
        memo.insert(input.clone(), decision.clone());
        decision
    }

    fn evaluate(&self, input_json: &str) -> Decision {
        let value = match Value::from_json_str(input_json) {
            Ok(v) => v,
            Err(e) => return Decision::deny(format!("policy input not serializable: {e}")),
        };
        // regorus evaluates through `&mut Engine`. Cloning the prepared
        // engine shares its parsed and analysed policy (reference counted)
        // and costs well under a microsecond, so each decision gets its own
        // and concurrent callers never wait on each other.
        let mut engine = self.engine.clone();
        engine.set_input(value);
        let result = engine.eval_rule(DECISION_RULE.to_string());
        match result {
            Ok(v) => fold(&v),
            Err(e) => Decision::deny(format!("policy evaluation failed: {e}")),
        }
    }

    fn check_builtin_cases(&self) -> Result<(), PolicyError> {
        for case in builtin_cases() {
            let decision = self.decide(&case.input);
            match (case.expect, decision.allow) {
                (Expect::Allow, false) => {
                    return Err(PolicyError::MustAllowFailed {
                        case: case.name.to_string(),
                        reasons: decision.reasons,
                    });
                }
                (Expect::Deny, true) => {
                    return Err(PolicyError::MustDenyFailed {
                        case: case.name.to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Turns the internal decision object into a [`Decision`]. Anything not of the
/// expected shape denies.
fn fold(v: &Value) -> Decision {
    let Ok(obj) = v.as_object() else {
        return Decision::deny("policy decision was not an object".to_string());
    };
    let field = |name: &str| obj.get(&Value::from(name));
    let allow = matches!(field("allow"), Some(Value::Bool(true)));
    let deny = match field("deny") {
        None => Vec::new(),
        Some(Value::Set(set)) => strings(set),
        // Fail closed on a `deny` that is not a set: it was meant to deny something.
        Some(_) => vec!["policy rule `deny` is not a set of reasons".to_string()],
    };
    if !deny.is_empty() {
        return Decision {
            allow: false,
            reasons: deny,
        };
    }
    if !allow {
        return Decision::deny(DEFAULT_DENY_REASON.to_string());
    }
    Decision {
        allow: true,
        reasons: match field("reasons") {
            Some(Value::Set(set)) => strings(set),
            _ => Vec::new(),
        },
    }
}

/// The members of a Rego set as strings; non-string members are rendered as
/// JSON so that a malformed `deny` member still denies.
fn strings(set: &regorus::value::Set) -> Vec<String> {
    set.iter_sorted()
        .map(|m| match m.as_string() {
            Ok(s) => s.to_string(),
            Err(_) => m
                .to_json_str()
                .unwrap_or_else(|_| "<unprintable>".to_string()),
        })
        .collect()
}
