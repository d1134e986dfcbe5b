//! Bound claims and SPIFFE ID templates.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::id::{IdError, SpiffeId};

const TEMPLATE: &str = "spiffe://example.org/ci/{repository}";

fn bound(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The GitHub claims with `changes` applied, as a map.
fn claims(changes: Value) -> Map<String, Value> {
    claims_with(changes).as_object().unwrap().clone()
}

fn check(pairs: &[(&str, &str)], claims: &Map<String, Value>) -> Result<(), LoginError> {
    check_bound_claims(&bound(pairs), claims)
}

#[test]
fn exact_bound_claims_match() {
    let all = claim_map();
    assert_eq!(check(&[], &all), Ok(()));
    let role = [
        ("repository", "acme/app"),
        ("ref", "refs/heads/main"),
        ("environment", "prod"),
        ("repository_owner", "acme"),
        ("run_id", "123"),
    ];
    assert_eq!(check(&role, &all), Ok(()));
    // Numbers and booleans by their JSON text.
    let typed = claims(json!({"run_number": 7, "ephemeral": true}));
    assert_eq!(
        check(&[("run_number", "7"), ("ephemeral", "true")], &typed),
        Ok(())
    );
}

#[test]
fn glob_bound_claims_match_any_run() {
    let release = claims(json!({"ref": "refs/heads/release-1.2"}));
    let cases = [
        ("ref", "refs/heads/release-*", &release),
        ("ref", "refs/*", &release),
        ("ref", "refs/heads/release-1.2*", &release),
        ("ref", "*", &release),
        ("ref", "refs/*/release-*", &release),
        ("ref", "**", &release),
        ("sub", "repo:acme/*:ref:*", &release),
    ];
    for (claim, pattern, all) in cases {
        assert_eq!(check(&[(claim, pattern)], all), Ok(()), "{pattern}");
    }
    let numbered = claims(json!({"run_number": 42}));
    assert_eq!(check(&[("run_number", "4*")], &numbered), Ok(()));
}

#[test]
fn exact_mismatch_names_the_claim_and_the_bound_value() {
    let err = check(&[("ref", "refs/heads/prod")], &claim_map()).unwrap_err();
    assert_eq!(
        err,
        LoginError::ClaimMismatch {
            claim: "ref".to_owned(),
            bound: "refs/heads/prod".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        r#"claim "ref" does not match the role's bound value "refs/heads/prod""#
    );
    // A `*` that does not end the value is an ordinary character.
    let err = check(&[("ref", "refs/*/main/x")], &claim_map()).unwrap_err();
    assert!(matches!(err, LoginError::ClaimMismatch { .. }));
    // Case matters.
    let err = check(&[("environment", "Prod")], &claim_map()).unwrap_err();
    assert!(matches!(err, LoginError::ClaimMismatch { .. }));
}

#[test]
fn glob_mismatch_names_the_pattern() {
    for pattern in [
        "refs/heads/release-*",
        "refs/tags/*",
        "x*",
        "refs/*/mainline*",
    ] {
        let err = check(&[("ref", pattern)], &claim_map()).unwrap_err();
        assert_eq!(
            err,
            LoginError::ClaimGlobMismatch {
                claim: "ref".to_owned(),
                pattern: pattern.to_owned()
            }
        );
    }
    let err = check(&[("ref", "refs/tags/*")], &claim_map()).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"claim "ref" does not match the role's bound pattern "refs/tags/*""#
    );
}

#[test]
fn structured_and_null_claims_match_nothing() {
    let mut all = claims(json!({"groups": ["admins"], "org": {"name": "acme"}}));
    all.insert("empty".to_owned(), Value::Null);
    for claim in ["groups", "org"] {
        assert!(matches!(
            check(&[(claim, "admins")], &all),
            Err(LoginError::ClaimMismatch { .. })
        ));
        assert!(matches!(
            check(&[(claim, "*")], &all),
            Err(LoginError::ClaimGlobMismatch { .. })
        ));
    }
    assert!(matches!(
        check(&[("empty", "null")], &all),
        Err(LoginError::ClaimMismatch { .. })
    ));
}

#[test]
fn every_bound_claim_must_be_present() {
    let err = check(
        &[("repository", "acme/app"), ("workflow", "deploy")],
        &claim_map(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        LoginError::ClaimMissing {
            claim: "workflow".to_owned()
        }
    );
}

#[test]
fn templates_take_string_claims() {
    assert_eq!(
        interpolate(TEMPLATE, &claim_map()).unwrap(),
        "spiffe://example.org/ci/acme/app"
    );
    assert_eq!(
        interpolate(
            "spiffe://example.org/ci/{repository_owner}/{environment}-{run_id}",
            &claim_map()
        )
        .unwrap(),
        "spiffe://example.org/ci/acme/prod-123"
    );
    assert_eq!(
        interpolate("spiffe://example.org/ci/fixed", &claim_map()).unwrap(),
        "spiffe://example.org/ci/fixed"
    );
}

#[test]
fn values_that_would_escape_their_segment_are_refused() {
    let values = [
        "..",
        ".",
        "../etc",
        "acme/../admin",
        "acme/./app",
        "acme//app",
        "/acme",
        "acme/",
        "",
        "a?b",
        "a#b",
        "a b",
        "a%2F",
        "acme:app",
        "ünicode",
        "a\nb",
    ];
    for value in values {
        let err = interpolate(TEMPLATE, &claims(json!({ "repository": value }))).unwrap_err();
        assert_eq!(
            err,
            LoginError::ClaimNotInterpolable {
                claim: "repository".to_owned()
            },
            "{value:?}"
        );
    }
    for value in [json!(7), json!(true), json!(["acme"]), json!({"a": "b"})] {
        let err = interpolate(TEMPLATE, &claims(json!({ "repository": value }))).unwrap_err();
        assert!(
            matches!(err, LoginError::ClaimNotInterpolable { .. }),
            "{value}"
        );
    }
    let err = interpolate("spiffe://example.org/ci/{workflow}", &claim_map()).unwrap_err();
    assert_eq!(
        err,
        LoginError::ClaimMissing {
            claim: "workflow".to_owned()
        }
    );
}

#[test]
fn interpolated_ids_are_valid_and_not_reserved() {
    let reserved = interpolate(
        "spiffe://example.org/{repository}",
        &claims(json!({"repository": "sigil/server"})),
    );
    assert_eq!(reserved, Err(LoginError::ReservedSpiffeId));
    let long = claims(json!({"repository": "a".repeat(3000)}));
    assert_eq!(
        interpolate(TEMPLATE, &long),
        Err(LoginError::BadSpiffeId(IdError::TooLong))
    );
    assert_eq!(
        interpolate("spiffe://example.org/ci/{repository", &claim_map()),
        Err(LoginError::Template(TemplateError::UnclosedBrace {
            at: 24
        }))
    );
}

#[test]
fn templates_are_checked_at_load() {
    assert_eq!(check_template(TEMPLATE), Ok(vec!["repository".to_owned()]));
    assert_eq!(
        check_template("spiffe://example.org/{a}/{b-c}/{a}_{d_1}"),
        Ok(vec!["a".to_owned(), "b-c".to_owned(), "d_1".to_owned()])
    );
    assert_eq!(check_template("spiffe://example.org/ci"), Ok(vec![]));
    let cases = [
        (
            "spiffe://example.org/ci/{repository",
            TemplateError::UnclosedBrace { at: 24 },
        ),
        (
            "spiffe://example.org/ci/repository}",
            TemplateError::UnopenedBrace { at: 34 },
        ),
        (
            "spiffe://example.org/ci/{}",
            TemplateError::BadClaimName { at: 24 },
        ),
        (
            "spiffe://example.org/ci/{a{b}",
            TemplateError::BadClaimName { at: 24 },
        ),
        (
            "spiffe://example.org/ci/{a b}",
            TemplateError::BadClaimName { at: 24 },
        ),
        (
            "spiffe://example.org/ci/{a.b}",
            TemplateError::BadClaimName { at: 24 },
        ),
        (
            "spiffe://{owner}.example.org/ci",
            TemplateError::PlaceholderOutsidePath,
        ),
        (
            "spiffe://example.org{x}/ci",
            TemplateError::PlaceholderOutsidePath,
        ),
        (
            "https://example.org/{x}",
            TemplateError::PlaceholderOutsidePath,
        ),
        (
            "https://example.org/ci",
            TemplateError::NotASpiffeId(IdError::WrongScheme),
        ),
        (
            "spiffe://example.org/ci//{x}",
            TemplateError::NotASpiffeId(IdError::EmptySegment),
        ),
        (
            "spiffe://example.org/ci/{x}/",
            TemplateError::NotASpiffeId(IdError::TrailingSlash),
        ),
        (
            "spiffe://example.org/../{x}",
            TemplateError::NotASpiffeId(IdError::DotSegment),
        ),
        (
            "spiffe://example.org/ci?{x}",
            TemplateError::NotASpiffeId(IdError::BadPathChar { found: '?' }),
        ),
        ("spiffe://example.org", TemplateError::NoWorkloadPath),
        ("spiffe://example.org/sigil/{x}", TemplateError::Reserved),
        ("", TemplateError::NotASpiffeId(IdError::Empty)),
    ];
    for (template, err) in cases {
        assert_eq!(check_template(template), Err(err), "{template}");
    }
}

#[test]
fn template_errors_name_the_rule() {
    assert_eq!(
        TemplateError::UnclosedBrace { at: 3 }.to_string(),
        "template has a '{' at byte 3 without a closing '}'"
    );
    assert_eq!(
        TemplateError::UnopenedBrace { at: 3 }.to_string(),
        "template has a '}' at byte 3 without an opening '{'"
    );
}

proptest! {
    #[test]
    fn a_pattern_cut_from_the_text_matches_it(
        text in "[a-z/._-]{0,30}",
        cuts in prop::collection::vec((0usize..30, 0usize..4), 0..4),
    ) {
        // Replace some runs of `text` by `*`, then end the pattern with `*`.
        let mut pattern = text.clone();
        for (at, len) in cuts {
            let at = at.min(pattern.len());
            let end = (at + len).min(pattern.len());
            pattern.replace_range(at..end, "*");
        }
        pattern.push('*');
        let all = claims(json!({ "c": text }));
        prop_assert_eq!(check(&[("c", &pattern)], &all), Ok(()));
    }

    #[test]
    fn interpolation_yields_a_valid_id_or_names_the_claim(value in "[a-z./_?-]{0,12}") {
        let all = claims(json!({ "repository": value.clone() }));
        match interpolate(TEMPLATE, &all) {
            Ok(id) => {
                prop_assert_eq!(&id, &format!("spiffe://example.org/ci/{value}"));
                let parsed = SpiffeId::parse(&id);
                prop_assert!(parsed.is_ok());
            }
            Err(err) => prop_assert_eq!(
                err,
                LoginError::ClaimNotInterpolable { claim: "repository".to_owned() }
            ),
        }
    }

    #[test]
    fn arbitrary_templates_do_not_panic(template in "[a-z:/.{}]{0,40}") {
        let _ = check_template(&template);
        let _ = interpolate(&template, &claim_map());
    }
}
