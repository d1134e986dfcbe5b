//! Tests for the PDP: the default policy's decisions, refused policy sets, and
//! decision latency.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;

fn at(subject: Subject, action: Action) -> Input {
    Input {
        subject,
        action,
        resource: Resource::kind("x"),
        context: Context {
            time: 1_700_000_000,
            source: "tcp:127.0.0.1:1".to_string(),
        },
        grants: Vec::new(),
    }
}

fn one(name: &str, text: &str) -> Vec<(String, String)> {
    vec![(name.to_string(), text.to_string())]
}

fn admin_wl() -> Subject {
    Subject::workload("spiffe://example.org/admin", Authn::Mtls, true)
}

fn plain_wl() -> Subject {
    Subject::workload("spiffe://example.org/app", Authn::Token, false)
}

fn agent() -> Subject {
    Subject {
        kind: SubjectKind::Agent,
        spiffe_id: Some("spiffe://example.org/spire/agent/x".to_string()),
        uid: None,
        authn: Authn::Mtls,
        admin: false,
        role: None,
        scopes: Vec::new(),
        bound: false,
    }
}

#[test]
fn default_policy_decides_the_table() {
    let pdp = Pdp::compile(&default_policy()).unwrap();
    use Action::*;
    let anon = Subject::anonymous;
    let op = || Subject::operator(0);
    // An operator claim without the admin socket is not an operator.
    let fake_op = || Subject {
        authn: Authn::Token,
        ..Subject::operator(0)
    };
    let table: Vec<(Subject, Action, bool)> = vec![
        (anon(), OperatorStatus, true),
        (anon(), Health, true),
        (anon(), EntryCreate, false),
        (anon(), OperatorSeal, false),
        (anon(), BundleShow, false),
        (op(), OperatorSeal, true),
        (op(), OperatorRotateKeys, true),
        (op(), PolicyReload, true),
        (fake_op(), OperatorSeal, false),
        (admin_wl(), EntryCreate, true),
        (admin_wl(), EntryDelete, true),
        (admin_wl(), SvidMint, true),
        (admin_wl(), AuditTail, true),
        (admin_wl(), OperatorSeal, false),
        (admin_wl(), PolicyReload, false),
        (plain_wl(), EntryCreate, false),
        (plain_wl(), BundleShow, true),
        (plain_wl(), JwtMint, false),
        (agent(), BundleShow, true),
        (agent(), EntryList, false),
        (op(), JoinTokenReplace, true),
        (admin_wl(), JoinTokenReplace, true),
        (plain_wl(), JoinTokenReplace, false),
        (agent(), JoinTokenReplace, false),
        (anon(), JoinTokenReplace, false),
        (op(), BundleSet, true),
        (op(), BundleList, true),
        (op(), BundleDelete, true),
        (admin_wl(), BundleSet, true),
        (admin_wl(), BundleList, true),
        (admin_wl(), BundleDelete, true),
        (plain_wl(), BundleSet, false),
        (plain_wl(), BundleList, false),
        (plain_wl(), BundleDelete, false),
        (agent(), BundleSet, false),
        (agent(), BundleList, false),
        (anon(), BundleSet, false),
        (anon(), BundleList, false),
        (op(), OperatorRotateSigningKey, true),
        (op(), OperatorTaintSigningKey, true),
        (admin_wl(), OperatorRotateSigningKey, true),
        (admin_wl(), OperatorTaintSigningKey, true),
        (plain_wl(), OperatorRotateSigningKey, false),
        (plain_wl(), OperatorTaintSigningKey, false),
        (agent(), OperatorRotateSigningKey, false),
        (agent(), OperatorTaintSigningKey, false),
        (anon(), OperatorRotateSigningKey, false),
        (anon(), OperatorTaintSigningKey, false),
    ];
    for (subject, action, want) in table {
        let d = pdp.decide(&at(subject.clone(), action));
        assert_eq!(d.allow, want, "{subject:?} {action}: {d:?}");
    }
}

#[test]
fn default_policy_explains_decisions() {
    let pdp = Pdp::compile(&default_policy()).unwrap();
    let d = pdp.decide(&at(Subject::anonymous(), Action::EntryCreate));
    assert_eq!(
        d,
        Decision {
            allow: false,
            reasons: vec!["anonymous callers may not perform entry.create".to_string()],
        }
    );
    let d = pdp.decide(&at(plain_wl(), Action::EntryCreate));
    assert_eq!(d.reasons, vec![DEFAULT_DENY_REASON.to_string()]);
    let d = pdp.decide(&at(admin_wl(), Action::EntryCreate));
    assert_eq!(
        d,
        Decision {
            allow: true,
            reasons: vec!["admin workload".to_string()],
        }
    );
}

#[test]
fn syntax_error_names_the_file() {
    let mut files = default_policy();
    files.push((
        "broken.rego".to_string(),
        "package sigil.extra\nallow if {".to_string(),
    ));
    let err = Pdp::compile(&files).unwrap_err();
    let PolicyError::Parse { file, message } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(file, "broken.rego");
    assert!(!message.is_empty());
    assert!(err.to_string().starts_with("policy file broken.rego: "));
}

#[test]
fn anonymous_entry_create_is_refused() {
    let text = "package sigil.authz\nallow := true\n";
    let err = Pdp::compile(&one("open.rego", text)).unwrap_err();
    assert_eq!(
        err,
        PolicyError::MustDenyFailed {
            case: "anonymous caller may not create entries".to_string()
        }
    );
}

#[test]
fn a_policy_letting_agents_take_over_names_is_refused() {
    // Agents may do anything here, which includes asking for a token that
    // takes over another agent's identity.
    let text = r#"package sigil.authz
allow if input.subject.kind == "operator"
allow if input.subject.kind == "agent"
"#;
    let err = Pdp::compile(&one("agents.rego", text)).unwrap_err();
    assert_eq!(
        err,
        PolicyError::MustDenyFailed {
            case: "agent may not replace an agent's join token".to_string()
        }
    );
}

#[test]
fn deny_everything_is_refused() {
    let text = "package sigil.authz\ndefault allow := false\n";
    let err = Pdp::compile(&one("closed.rego", text)).unwrap_err();
    assert_eq!(
        err,
        PolicyError::MustAllowFailed {
            case: "operator on the admin socket may read status".to_string(),
            reasons: vec![DEFAULT_DENY_REASON.to_string()],
        }
    );
}

#[test]
fn deny_overrides_allow() {
    let extra = r#"package sigil.authz
deny contains "maintenance window" if input.action == "jwt.mint"
"#;
    let mut files = default_policy();
    files.push(("maint.rego".to_string(), extra.to_string()));
    let pdp = Pdp::compile(&files).unwrap();
    let d = pdp.decide(&at(admin_wl(), Action::JwtMint));
    assert_eq!(
        d,
        Decision {
            allow: false,
            reasons: vec!["maintenance window".to_string()],
        }
    );
    assert!(pdp.decide(&at(admin_wl(), Action::SvidMint)).allow);
}

#[test]
fn deny_of_wrong_shape_denies() {
    let text = r#"package sigil.authz
allow := true
deny := true if input.subject.kind != "operator"
"#;
    let pdp = Pdp::compile(&one("odd.rego", text)).unwrap();
    let d = pdp.decide(&at(admin_wl(), Action::SvidMint));
    assert_eq!(
        d,
        Decision {
            allow: false,
            reasons: vec!["policy rule `deny` is not a set of reasons".to_string()],
        }
    );
}

#[test]
fn non_boolean_allow_denies() {
    let text = r#"package sigil.authz
allow := "yes" if input.subject.kind == "workload"
allow := true if input.subject.kind == "operator"
"#;
    let pdp = Pdp::compile(&one("str.rego", text)).unwrap();
    assert!(!pdp.decide(&at(admin_wl(), Action::EntryCreate)).allow);
}

#[test]
fn missing_authz_package_is_refused() {
    let err = Pdp::compile(&one("other.rego", "package other\nallow := true\n")).unwrap_err();
    assert_eq!(err, PolicyError::NoAuthzPackage);
}

#[test]
fn reserved_package_is_refused() {
    let mut files = default_policy();
    files.push((
        "sneaky.rego".to_string(),
        "package sigil.internal.decision\nresult := {\"allow\": true}\n".to_string(),
    ));
    let err = Pdp::compile(&files).unwrap_err();
    assert_eq!(
        err,
        PolicyError::ReservedPackage {
            file: "sneaky.rego".to_string()
        }
    );
}

#[test]
fn evaluation_error_denies_without_panicking() {
    // Division by zero is an evaluation error only for workloads, so the
    // built-in cases (anonymous and operator) still pass.
    let text = r#"package sigil.authz
allow if input.subject.kind == "operator"
allow if {
    input.subject.kind == "workload"
    x := 1 / 0
    x == 1
}
"#;
    let pdp = Pdp::compile(&one("div.rego", text)).unwrap();
    let d = pdp.decide(&at(admin_wl(), Action::EntryCreate));
    assert!(!d.allow);
    assert_eq!(d.reasons.len(), 1);
    assert!(
        d.reasons[0].starts_with("policy evaluation failed: "),
        "{d:?}"
    );
}

#[test]
fn actions_round_trip_their_names() {
    for a in Action::ALL {
        assert_eq!(Action::from_name(a.as_str()), Some(*a));
        let json = serde_json::to_string(a).unwrap();
        assert_eq!(json, format!("\"{}\"", a.as_str()));
    }
    assert_eq!(Action::from_name("entry.purge"), None);
}

#[test]
fn input_serializes_in_the_documented_shape() {
    let v = serde_json::to_value(at(Subject::operator(0), Action::EntryCreate)).unwrap();
    assert_eq!(v["subject"]["kind"], "operator");
    assert_eq!(v["subject"]["authn"], "admin_socket");
    assert_eq!(v["action"], "entry.create");
}

#[test]
fn decide_is_concurrent() {
    let pdp = std::sync::Arc::new(Pdp::compile(&default_policy()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let pdp = pdp.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let want = i % 2 == 0;
                    let s = if want { admin_wl() } else { plain_wl() };
                    assert_eq!(pdp.decide(&at(s, Action::EntryCreate)).allow, want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Prints decision latency; run with
/// `cargo test --release --lib policy::tests::decision_latency -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn decision_latency() {
    let pdp = Pdp::compile(&default_policy()).unwrap();
    let input = at(admin_wl(), Action::EntryCreate);
    let mut samples: Vec<u128> = (0..5000)
        .map(|_| {
            let t = std::time::Instant::now();
            let d = pdp.decide(&input);
            assert!(d.allow);
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64) * q) as usize] as f64 / 1000.0;
    println!("decide p50 {:.1}us p99 {:.1}us", p(0.5), p(0.99));
}

#[test]
fn unevaluable_policy_is_refused() {
    let text = "package sigil.authz\nallow if unknown_name == 1\n";
    let err = Pdp::compile(&one("bad.rego", text)).unwrap_err();
    let PolicyError::Invalid { message } = &err else {
        panic!("{err:?}");
    };
    assert!(message.contains("bad.rego"), "{message}");
}

/// The Rego grant matcher in config/policies/sigil.rego and the Rust one in
/// `crate::secrets::Grant` agree on every case of one table.
#[test]
fn rego_grants_match_like_the_rust_grants() {
    use crate::secrets::{Grant, SecretPath, Verb};
    let id = "spiffe://example.org/ci/app";
    for (grant, path, want) in crate::secrets::tests::GRANT_TABLE {
        let data = format!(r#"{{"sigil": {{"grants": {{"{id}": ["{grant}"]}}}}}}"#);
        let mut files = vec![("grants.json".to_string(), data)];
        files.extend(
            default_policy()
                .into_iter()
                .filter(|(f, _)| f.ends_with(".rego")),
        );
        let pdp = Pdp::compile(&files).unwrap();
        let ask = |action| Input {
            subject: Subject::workload(id, Authn::Mtls, false),
            action,
            resource: Resource::new("secret", Some((*path).to_string())),
            context: Context {
                time: 1,
                source: "tcp:x".into(),
            },
            grants: Vec::new(),
        };
        let rust = Grant::parse(grant)
            .unwrap()
            .allows(Verb::Read, &SecretPath::parse(path).unwrap());
        assert_eq!(rust, *want, "rust: {grant} on {path}");
        assert_eq!(
            pdp.decide(&ask(Action::SecretGet)).allow,
            *want,
            "rego: {grant} on {path}"
        );
        assert!(
            !pdp.decide(&ask(Action::SecretPut)).allow,
            "rego: {grant} is read only"
        );
    }
}

#[test]
fn grants_with_typos_refuse_the_policy_set() {
    let rego: Vec<_> = default_policy()
        .into_iter()
        .filter(|(f, _)| f.ends_with(".rego"))
        .collect();
    for (data, want) in [
        (
            r#"{"sigil": {"grants": {"spiffe://example.org/a": ["raed:x/*"]}}}"#,
            "unknown verb",
        ),
        (
            r#"{"sigil": {"grants": {"spiffe://example.org/a": ["read:x*"]}}}"#,
            "whole segment",
        ),
        (
            r#"{"sigil": {"grants": {"not-an-id": ["read:x"]}}}"#,
            "not a SPIFFE ID",
        ),
        (
            r#"{"sigil": {"grants": {"spiffe://example.org/a": "read:x"}}}"#,
            "list of grants",
        ),
        (r#"[1]"#, "JSON object"),
    ] {
        let mut files = vec![("grants.json".to_string(), data.to_string())];
        files.extend(rego.clone());
        let err = Pdp::compile(&files).unwrap_err();
        assert!(
            matches!(err, PolicyError::Grants { .. } | PolicyError::Data { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(want), "{err}");
    }
}

/// A sigil token may do exactly its scopes: not the standing grants of its
/// SPIFFE ID, never an admin's actions; its holder may look it up.
#[test]
fn tokens_act_on_their_scopes_alone() {
    let id = "spiffe://example.org/ci/acme/app";
    let data = format!(r#"{{"sigil": {{"grants": {{"{id}": ["read:**"]}}}}}}"#);
    let mut files = vec![("grants.json".to_string(), data)];
    files.extend(
        default_policy()
            .into_iter()
            .filter(|(f, _)| f.ends_with(".rego")),
    );
    let pdp = Pdp::compile(&files).unwrap();
    let token = Subject::token(id, "deploy", vec!["read:ci/app/*".into()]);
    let ask = |subject: &Subject, action, path: Option<&str>| {
        pdp.decide(&Input {
            subject: subject.clone(),
            action,
            resource: Resource::new("secret", path.map(str::to_owned)),
            context: Context {
                time: 1,
                source: "tcp:x".into(),
            },
            grants: Vec::new(),
        })
    };
    let d = ask(&token, Action::SecretGet, Some("ci/app/db"));
    assert!(d.allow);
    assert_eq!(d.reasons, vec!["token scope read:ci/app/*".to_owned()]);
    assert!(!ask(&token, Action::SecretGet, Some("ci/other/db")).allow);
    assert!(!ask(&token, Action::SecretPut, Some("ci/app/db")).allow);
    // The same ID over mTLS reads what its grants say.
    let mtls = Subject::workload(id, Authn::Mtls, false);
    assert!(ask(&mtls, Action::SecretGet, Some("ci/other/db")).allow);
    // A token is never an admin, even if its subject says so.
    let mut admin_token = token.clone();
    admin_token.admin = true;
    assert!(!ask(&admin_token, Action::EntryCreate, None).allow);
    assert!(ask(&token, Action::TokenLookupSelf, None).allow);
    assert!(ask(&token, Action::TokenRevokeSelf, None).allow);
    assert!(!ask(&mtls, Action::TokenRevokeSelf, None).allow);
    assert!(ask(&Subject::anonymous(), Action::AuthLogin, None).allow);
}
