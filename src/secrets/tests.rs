#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;
use crate::id::Ttl;
use crate::secret::Secret;

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

#[test]
fn paths_name_the_rule_they_break() {
    assert_eq!(SecretPath::parse(""), Err(PathError::Empty));
    assert!(matches!(
        SecretPath::parse("/a"),
        Err(PathError::EmptySegment(_))
    ));
    assert!(matches!(
        SecretPath::parse("a/"),
        Err(PathError::EmptySegment(_))
    ));
    assert!(matches!(
        SecretPath::parse("a//b"),
        Err(PathError::EmptySegment(_))
    ));
    assert!(matches!(
        SecretPath::parse("a/./b"),
        Err(PathError::DotSegment(_))
    ));
    assert!(matches!(
        SecretPath::parse("a/.."),
        Err(PathError::DotSegment(_))
    ));
    assert!(matches!(
        SecretPath::parse("a b"),
        Err(PathError::BadCharacter { ch: ' ', .. })
    ));
    assert!(matches!(
        SecretPath::parse("a\0b"),
        Err(PathError::BadCharacter { ch: '\0', .. })
    ));
    assert!(matches!(
        SecretPath::parse("a/*"),
        Err(PathError::BadCharacter { ch: '*', .. })
    ));
    let long = "a".repeat(MAX_PATH_BYTES + 1);
    assert_eq!(
        SecretPath::parse(&long),
        Err(PathError::TooLong(MAX_PATH_BYTES + 1))
    );
    assert_eq!(
        SecretPath::parse("a/".repeat(16).trim_end_matches('/')).map(|p| p.segments().count()),
        Ok(16)
    );
    assert_eq!(
        SecretPath::parse(&"a/".repeat(17)[..33]),
        Err(PathError::TooManySegments(17))
    );
    assert_eq!(path("ci/app.v2/db_1-x").as_str(), "ci/app.v2/db_1-x");
}

#[test]
fn is_under_is_segment_wise() {
    assert!(path("ci/app").is_under("ci"));
    assert!(path("ci/app").is_under("ci/"));
    assert!(path("ci/app").is_under(""));
    assert!(path("ci/app").is_under("ci/app"));
    assert!(!path("cix/app").is_under("ci"));
}

/// (grant, path, allowed for the grant's verb). Shared with the policy test
/// that runs the same table through Rego.
pub(crate) const GRANT_TABLE: &[(&str, &str, bool)] = &[
    ("read:ci/app/*", "ci/app/db", true),
    ("read:ci/app/*", "ci/app", false),
    ("read:ci/app/*", "ci/app/db/x", false),
    ("read:ci/app/*", "ci/other/db", false),
    ("read:ci/*/db", "ci/app/db", true),
    ("read:ci/*/db", "ci/app/dbx", false),
    ("read:ci/app/**", "ci/app/db", true),
    ("read:ci/app/**", "ci/app/db/x/y", true),
    ("read:ci/app/**", "ci/app", false),
    ("read:ci/app/**", "ci/apple/x", false),
    ("read:ci/app/db", "ci/app/db", true),
    ("read:ci/app/db", "ci/app/db2", false),
    ("read:**", "anything/at/all", true),
    ("read:**", "x", true),
    ("read:*", "x", true),
    ("read:*", "x/y", false),
];

#[test]
fn grant_patterns_match_as_documented() {
    for (grant, p, want) in GRANT_TABLE {
        let g = Grant::parse(grant).unwrap();
        // A grant reads back as its text: minted scopes are that text.
        assert_eq!(g.to_string(), *grant);
        assert_eq!(g.allows(Verb::Read, &path(p)), *want, "{grant} on {p}");
        assert!(!g.allows(Verb::Write, &path(p)), "{grant} is read only");
    }
}

#[test]
fn grants_name_the_rule_they_break() {
    assert!(matches!(Grant::parse("read"), Err(GrantError::NoColon(_))));
    assert!(matches!(
        Grant::parse("admin:x"),
        Err(GrantError::UnknownVerb(_))
    ));
    assert!(matches!(
        Grant::parse("read:"),
        Err(GrantError::EmptyPattern(_))
    ));
    assert!(matches!(
        Grant::parse("read:a/**/b"),
        Err(GrantError::MisplacedDoubleStar(_))
    ));
    assert!(matches!(
        Grant::parse("read:a/app*"),
        Err(GrantError::PartialWildcard(_))
    ));
    assert!(matches!(
        Grant::parse("read:a/../b"),
        Err(GrantError::BadSegment { .. })
    ));
    assert!(matches!(
        Grant::parse("read:a//b"),
        Err(GrantError::BadSegment { .. })
    ));
    assert_eq!(
        Grant::parse("rotate:a/*/c/**").unwrap().to_string(),
        "rotate:a/*/c/**"
    );
}

fn fields(pairs: &[(&str, &str)]) -> Result<Fields, FieldError> {
    Fields::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::from_slice(v.as_bytes())))
            .collect(),
    )
}

#[test]
fn fields_are_bounded_and_round_trip() {
    assert_eq!(fields(&[]), Err(FieldError::NoFields));
    assert_eq!(fields(&[("", "x")]), Err(FieldError::EmptyName));
    assert_eq!(
        fields(&[("a b", "x")]),
        Err(FieldError::BadName("a b".into()))
    );
    assert_eq!(
        fields(&[("a", "1"), ("a", "2")]),
        Err(FieldError::Duplicate("a".into()))
    );
    let big = "x".repeat(MAX_VALUE_BYTES + 1);
    assert_eq!(
        fields(&[("a", &big)]),
        Err(FieldError::ValueTooLarge {
            name: "a".into(),
            len: MAX_VALUE_BYTES + 1
        })
    );
    let many: Vec<(String, String)> = (0..=MAX_FIELDS)
        .map(|i| (format!("f{i}"), "v".into()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(fields(&many), Err(FieldError::TooMany(MAX_FIELDS + 1)));
    let not_text = Fields::new(vec![("k".into(), Secret::new(vec![0xff, 0xfe]))]);
    assert_eq!(not_text, Err(FieldError::NotText("k".into())));
    let f = fields(&[("user", "app"), ("password", "hunter2-marker")]).unwrap();
    let back = Fields::decode(f.encode().expose()).unwrap();
    assert_eq!(back, f);
    assert_eq!(
        Fields::decode(&f.encode().expose()[..10]),
        Err(FieldError::Corrupt)
    );
    let shown = format!("{f:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn versions_go_up_and_are_never_reused() {
    let mut m = SecretMeta::new(100);
    assert_eq!(m.check_cas(Some(0)), Ok(()));
    assert_eq!(m.add_version(100), (1, vec![]));
    assert_eq!(
        m.check_cas(Some(0)),
        Err(KvError::CasMismatch {
            expected: 0,
            current: 1
        })
    );
    assert_eq!(m.check_cas(Some(1)), Ok(()));
    assert_eq!(m.check_cas(None), Ok(()));
    assert_eq!(m.add_version(101), (2, vec![]));
    assert_eq!(m.destroy(&[2], 102), Ok(vec![2]));
    assert_eq!(m.add_version(103).0, 3, "a destroyed number is not reused");
    assert_eq!(m.readable(0), Ok(3));
    assert_eq!(
        m.readable(2),
        Err(KvError::Destroyed {
            version: 2,
            pruned: false
        })
    );
    assert_eq!(
        m.readable(4),
        Err(KvError::NoSuchVersion {
            version: 4,
            current: 3
        })
    );
}

#[test]
fn delete_undelete_destroy_say_which() {
    let mut m = SecretMeta::new(10);
    m.add_version(10);
    m.add_version(11);
    assert_eq!(m.delete(&[], 20), Ok(vec![2]));
    assert_eq!(m.readable(0), Err(KvError::Deleted { version: 2, at: 20 }));
    assert_eq!(m.readable(1), Ok(1));
    assert_eq!(m.delete(&[2], 21), Ok(vec![]), "already deleted");
    assert_eq!(m.undelete(&[2], 22), Ok(vec![2]));
    assert_eq!(m.readable(0), Ok(2));
    assert_eq!(m.destroy(&[1, 2], 23), Ok(vec![1, 2]));
    assert_eq!(
        m.undelete(&[2], 24),
        Ok(vec![]),
        "destroyed stays destroyed"
    );
    assert_eq!(
        m.readable(2),
        Err(KvError::Destroyed {
            version: 2,
            pruned: false
        })
    );
    assert_eq!(m.versions[&2].destroyed, Some(23));
    assert_eq!(m.delete(&[0], 25), Err(KvError::VersionZero));
    assert_eq!(
        m.delete(&[9], 25),
        Err(KvError::NoSuchVersion {
            version: 9,
            current: 2
        })
    );
    let empty = SecretMeta::new(1);
    assert_eq!(
        empty.readable(0),
        Err(KvError::NoSuchVersion {
            version: 0,
            current: 0
        })
    );
}

#[test]
fn max_versions_prunes_the_oldest() {
    let mut m = SecretMeta::new(0);
    for i in 1..=10 {
        assert_eq!(m.add_version(i), (i, vec![]));
    }
    assert_eq!(m.add_version(11), (11, vec![1]));
    assert_eq!(
        m.readable(1),
        Err(KvError::Destroyed {
            version: 1,
            pruned: true
        })
    );
    assert_eq!(m.readable(2), Ok(2));
    m.destroy(&[2], 12).unwrap();
    assert_eq!(
        m.set_max_versions(3, 13),
        Ok(vec![3, 4, 5, 6, 7, 8]),
        "2 was already destroyed"
    );
    assert_eq!(
        m.versions.keys().copied().collect::<Vec<_>>(),
        vec![9, 10, 11]
    );
    assert_eq!(
        m.set_max_versions(0, 14),
        Err(KvError::MaxVersionsOutOfRange(0))
    );
    assert_eq!(
        m.set_max_versions(MAX_MAX_VERSIONS + 1, 14),
        Err(KvError::MaxVersionsOutOfRange(MAX_MAX_VERSIONS + 1))
    );
}

#[test]
fn custom_metadata_is_bounded() {
    use std::collections::BTreeMap;
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    assert!(CustomMetadata::new(one("owner", "team-a")).is_ok());
    assert_eq!(CustomMetadata::new(one("", "x")), Err(MetaError::EmptyKey));
    assert!(matches!(
        CustomMetadata::new(one(&"k".repeat(MAX_CUSTOM_KEY + 1), "x")),
        Err(MetaError::KeyTooLong(_))
    ));
    assert!(matches!(
        CustomMetadata::new(one("k", &"v".repeat(MAX_CUSTOM_VALUE + 1))),
        Err(MetaError::ValueTooLong(_))
    ));
    let many = (0..=MAX_CUSTOM_KEYS)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    assert_eq!(
        CustomMetadata::new(many),
        Err(MetaError::TooManyKeys(MAX_CUSTOM_KEYS + 1))
    );
}

#[test]
fn generator_specs_parse_and_print() {
    for (text, shown) in [
        ("random", "random:length=32,charset=alnum,field=value"),
        (
            "random:length=16,charset=hex",
            "random:length=16,charset=hex,field=value",
        ),
        (
            "random:charset=printable,field=password",
            "random:length=32,charset=printable,field=password",
        ),
        ("ed25519", "ed25519"),
        ("p256", "p256"),
        (
            "postgres:connection=db/admin,roles=app_a+app_b",
            "postgres:connection=db/admin,roles=app_a+app_b",
        ),
    ] {
        let spec = GeneratorSpec::parse(text).unwrap();
        assert_eq!(spec.to_string(), shown);
        assert_eq!(GeneratorSpec::parse(shown).unwrap(), spec);
    }
    use GeneratorError as E;
    assert_eq!(
        GeneratorSpec::parse("rsa"),
        Err(E::UnknownName("rsa".into()))
    );
    assert_eq!(
        GeneratorSpec::parse("random:length"),
        Err(E::OptionSyntax("length".into()))
    );
    assert_eq!(GeneratorSpec::parse("random:length=7"), Err(E::BadLength));
    assert_eq!(GeneratorSpec::parse("random:length=x"), Err(E::BadLength));
    assert_eq!(
        GeneratorSpec::parse("random:charset=emoji"),
        Err(E::BadCharset("emoji".into()))
    );
    assert_eq!(
        GeneratorSpec::parse("random:size=3"),
        Err(E::UnknownOption {
            generator: "random",
            option: "size".into()
        })
    );
    assert_eq!(
        GeneratorSpec::parse("random:length=9,length=9"),
        Err(E::DuplicateOption("length".into()))
    );
    assert_eq!(
        GeneratorSpec::parse("p256:curve=x"),
        Err(E::UnknownOption {
            generator: "p256",
            option: "curve".into()
        })
    );
    assert_eq!(
        GeneratorSpec::parse("postgres:roles=a+b"),
        Err(E::MissingOption {
            generator: "postgres",
            option: "connection"
        })
    );
    assert_eq!(
        GeneratorSpec::parse("postgres:connection=x,roles=a"),
        Err(E::BadRoles)
    );
    assert_eq!(
        GeneratorSpec::parse("postgres:connection=x,roles=a+a"),
        Err(E::BadRoles)
    );
    assert_eq!(
        GeneratorSpec::parse("postgres:connection=x,roles=A+b"),
        Err(E::BadRoles)
    );
    assert!(matches!(
        GeneratorSpec::parse("postgres:connection=../x,roles=a+b"),
        Err(E::BadConnection(_))
    ));
}

#[test]
fn local_generators_make_what_they_say() {
    let rng = ring::rand::SystemRandom::new();
    for (charset, alphabet) in [
        (
            "alnum",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        ),
        ("hex", "0123456789abcdef"),
        (
            "base64url",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        ),
    ] {
        let spec = GeneratorSpec::parse(&format!("random:length=200,charset={charset}")).unwrap();
        let f = generate_local(&spec, None, &rng).unwrap();
        let v = std::str::from_utf8(f.get("value").unwrap().expose())
            .unwrap()
            .to_owned();
        assert_eq!(v.len(), 200);
        assert!(v.chars().all(|c| alphabet.contains(c)), "{charset}: {v}");
    }
    let previous = fields(&[("username", "app"), ("password", "old")]).unwrap();
    let spec = GeneratorSpec::parse("random:field=password").unwrap();
    let next = generate_local(&spec, Some(&previous), &rng).unwrap();
    assert_eq!(
        next.get("username").unwrap().expose(),
        b"app",
        "other fields are kept"
    );
    assert_ne!(next.get("password").unwrap().expose(), b"old");
    for spec in ["ed25519", "p256"] {
        let f = generate_local(&GeneratorSpec::parse(spec).unwrap(), None, &rng).unwrap();
        let public = std::str::from_utf8(f.get("public").unwrap().expose())
            .unwrap()
            .to_owned();
        let private = std::str::from_utf8(f.get("private").unwrap().expose())
            .unwrap()
            .to_owned();
        assert!(
            public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{public}"
        );
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }
}

fn settings(every: &str, grace: Option<&str>) -> RotationSettings {
    RotationSettings::new(
        Ttl::parse(every).unwrap(),
        None,
        grace.map(|g| Ttl::parse(g).unwrap()),
        &GeneratorSpec::parse("random").unwrap(),
    )
    .unwrap()
}

#[test]
fn rotation_settings_refuse_overlaps() {
    let spec = GeneratorSpec::parse("random").unwrap();
    let t = |s| Ttl::parse(s).unwrap();
    assert_eq!(
        RotationSettings::new(t("1h"), None, Some(t("1h")), &spec),
        Err(RotationError::GraceNotShorter {
            grace: 3600,
            every: 3600
        })
    );
    assert_eq!(
        RotationSettings::new(t("1h"), Some(t("2h")), None, &spec),
        Err(RotationError::WindowNotShorter {
            window: 7200,
            every: 3600
        })
    );
    assert_eq!(
        settings("1h", None).grace,
        1800,
        "default grace: half the period"
    );
    assert_eq!(settings("7d", None).grace, 3600, "at most an hour");
}

#[test]
fn rotation_plan_on_a_controlled_clock() {
    let s = settings("60s", Some("10s"));
    let mut state = RotationState::new(s, 1000, false, 0.0);
    assert_eq!(state.rotate_at(), 1060);
    let sched = |state: &RotationState| Schedule {
        path: path("a/b"),
        rotate_at: state.rotate_at(),
        retire_at: state.retire_at(),
    };
    let p = plan(1059, &[sched(&state)]);
    assert_eq!(p.actions, vec![]);
    assert_eq!(p.next_wake, Some(1060));
    let p = plan(1060, &[sched(&state)]);
    assert_eq!(p.actions, vec![RotationAction::Rotate(path("a/b"))]);
    // A failure is retried with backoff and stays visible.
    state.failed(1060, "generator failed".into());
    state.failed(1061, "generator failed".into());
    assert_eq!((state.failures, state.rotate_at()), (2, 1063));
    assert_eq!(state.last_error.as_deref(), Some("generator failed"));
    assert_eq!(plan(1062, &[sched(&state)]).next_wake, Some(1063));
    state.succeeded(1063, Some(4), Some("role_b".into()), 0.0);
    assert_eq!(state.retiring_role(4), None, "nothing served before");
    assert_eq!(state.in_grace(), Some(1073));
    assert_eq!(
        (state.failures, state.last_error.clone(), state.next_due),
        (0, None, 1123)
    );
    assert_eq!(state.retire_at(), Some(1073));
    let p = plan(1073, &[sched(&state)]);
    assert_eq!(p.actions, vec![RotationAction::Retire(path("a/b"))]);
    assert_eq!(p.next_wake, Some(1123));
    assert_eq!(state.due_retirements(1072), Vec::<u64>::new());
    assert_eq!(state.due_retirements(1073), vec![4]);
    state.retire_failed(4, 1073, "db down".into());
    assert_eq!(state.due_retirements(1073), Vec::<u64>::new());
    assert_eq!(state.due_retirements(1074), vec![4]);
    state.retired(4);
    assert_eq!(state.retire_at(), None);
    // The next rotation retires the role the replaced version held.
    state.succeeded(1123, Some(5), Some("role_a".into()), 0.0);
    assert_eq!(state.retiring_role(5), Some("role_b"));
    assert_eq!(state.serving.as_deref(), Some("role_a"));
}

#[test]
fn pending_rotations_come_first_and_backoff_is_capped() {
    let mut state = RotationState::new(settings("1h", None), 0, false, 0.0);
    state.pending = Some(PendingRotation { started: 50 });
    assert_eq!(
        state.rotate_at(),
        50,
        "a begun rotation is finished at once"
    );
    assert_eq!(backoff(1), 1);
    assert_eq!(backoff(4), 8);
    assert_eq!(backoff(30), 300);
    let due_now = RotationState::new(settings("1h", None), 7, true, 0.5);
    assert_eq!(due_now.rotate_at(), 7);
    let windowed = RotationSettings::new(
        Ttl::parse("1h").unwrap(),
        Some(Ttl::parse("10m").unwrap()),
        None,
        &GeneratorSpec::parse("random").unwrap(),
    )
    .unwrap();
    assert_eq!(windowed.due_after(0, 0.5), 3600 + 300);
    assert_eq!(windowed.due_after(0, 1.0), 3600 + 599, "inside the window");
}

#[test]
fn plan_orders_rotations_by_due_time() {
    let s = |p: &str, at| Schedule {
        path: path(p),
        rotate_at: at,
        retire_at: None,
    };
    let p = plan(100, &[s("c", 90), s("a", 95), s("b", 10), s("d", 200)]);
    assert_eq!(
        p.actions,
        vec![
            RotationAction::Rotate(path("b")),
            RotationAction::Rotate(path("c")),
            RotationAction::Rotate(path("a")),
        ]
    );
    assert_eq!(p.next_wake, Some(200));
}

#[test]
fn previous_is_the_replaced_version_in_grace() {
    let mut m = SecretMeta::new(0);
    m.add_version(1);
    m.add_version(2);
    m.versions.get_mut(&1).unwrap().previous_until = Some(100);
    assert_eq!(m.previous(50), Some(1));
    assert_eq!(m.previous(100), None);
    let json = serde_json::to_string(&m).unwrap();
    let back: SecretMeta = serde_json::from_str(&json).unwrap();
    assert_eq!(back.previous(50), Some(1), "{json}");
}

#[test]
fn a_grant_covers_exactly_the_narrower_grants() {
    let g = |s: &str| Grant::parse(s).unwrap();
    for (holder, asked, covered) in [
        ("read:prod/db/*", "read:prod/db/*", true),
        ("read:prod/db/*", "read:prod/db/main", true),
        ("read:prod/db/*", "read:prod/db/main/x", false),
        ("read:prod/db/*", "read:prod/db/**", false),
        ("read:prod/db/*", "write:prod/db/main", false),
        ("read:prod/db/main", "read:prod/db/*", false),
        ("read:prod/**", "read:prod/db/*", true),
        ("read:prod/**", "read:prod/**", true),
        ("read:prod/**", "read:prod/db/**", true),
        ("read:prod/**", "read:prod", false),
        ("read:prod/**", "read:**", false),
        ("read:prod/*/main", "read:prod/db/main", true),
        ("read:prod/*/main", "read:prod/*/main", true),
        ("read:prod/db/main", "read:prod/*/main", false),
        ("read:**", "read:**", true),
        ("read:**", "read:a", true),
        ("read:**", "read:a/*/b/**", true),
        ("read:a/*", "read:a/**", false),
    ] {
        assert_eq!(
            g(holder).covers(&g(asked)),
            covered,
            "{holder} covers {asked}"
        );
    }
}
