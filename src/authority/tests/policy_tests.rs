//! The rotation policy: SPEC §7 defaults, and one refused policy per rule.

use super::*;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn defaults_are_spires_schedule() {
    let p = RotationPolicy::default();
    assert_eq!(p.ca_ttl, DAY);
    assert_eq!(p.x509_svid_ttl, HOUR);
    assert_eq!(p.jwt_svid_ttl, secs(300));
    assert_eq!(
        p.prepare_before,
        12 * HOUR,
        "prepared at half of the CA's life"
    );
    assert_eq!(
        p.activate_before,
        4 * HOUR,
        "activated at a sixth remaining"
    );
    assert_eq!(p.publish_window, secs(DEFAULT_REFRESH_HINT_SECS));
    assert_eq!(p.taint_grace, 2 * p.publish_window);
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn jwt_keys_wait_one_jwt_lifetime() {
    let p = short_policy();
    assert_eq!(p.publish_wait(KeyKind::X509Ca), secs(5));
    assert_eq!(p.publish_wait(KeyKind::Jwt), secs(10));
}

#[test]
fn each_rule_is_enforced() {
    let base = short_policy;
    let rows: Vec<(&str, RotationPolicy, PolicyError)> = vec![
        (
            "zero publish window: a key would sign as it is published",
            RotationPolicy {
                publish_window: Duration::ZERO,
                ..base()
            },
            PolicyError::TooShort {
                field: "publish_window",
            },
        ),
        (
            "sub-second ttl",
            RotationPolicy {
                ca_ttl: Duration::from_millis(500),
                ..base()
            },
            PolicyError::TooShort { field: "ca_ttl" },
        ),
        (
            "successor due when a key is made",
            RotationPolicy {
                prepare_before: secs(60),
                ..base()
            },
            PolicyError::PrepareOutsideLife {
                prepare_before: secs(60),
                ca_ttl: secs(60),
            },
        ),
        (
            "activation before preparation",
            RotationPolicy {
                activate_before: secs(30),
                ..base()
            },
            PolicyError::ActivateBeforePrepare {
                activate_before: secs(30),
                prepare_before: secs(30),
            },
        ),
        (
            "publish window longer than prepare-to-activate",
            RotationPolicy {
                publish_window: secs(21),
                taint_grace: secs(21),
                ..base()
            },
            PolicyError::PublishWindowDoesNotFit {
                window: secs(21),
                span: secs(20),
            },
        ),
        (
            "JWT wait longer than prepare-to-activate",
            RotationPolicy {
                prepare_before: secs(19),
                ..base()
            },
            PolicyError::JwtWaitDoesNotFit {
                ttl: secs(10),
                span: secs(9),
            },
        ),
        (
            "X.509-SVIDs cut short by a rotation",
            RotationPolicy {
                x509_svid_ttl: secs(11),
                ..base()
            },
            PolicyError::SvidOutlivesRotation {
                field: "x509_svid_ttl",
                ttl: secs(11),
                activate_before: secs(10),
            },
        ),
        (
            "JWT-SVIDs cut short by a rotation",
            RotationPolicy {
                activate_before: secs(9),
                jwt_svid_ttl: secs(10),
                x509_svid_ttl: secs(9),
                ..base()
            },
            PolicyError::SvidOutlivesRotation {
                field: "jwt_svid_ttl",
                ttl: secs(10),
                activate_before: secs(9),
            },
        ),
        (
            "tainted key gone before agents can hear of the taint",
            RotationPolicy {
                taint_grace: secs(4),
                ..base()
            },
            PolicyError::TaintGraceTooShort {
                grace: secs(4),
                window: secs(5),
            },
        ),
    ];
    for (name, policy, want) in rows {
        assert_eq!(policy.validate(), Err(want), "{name}");
    }
}

#[test]
fn errors_name_the_timing_to_change() {
    let rows = [
        (PolicyError::TooShort { field: "ca_ttl" }, "ca_ttl"),
        (
            PolicyError::PrepareOutsideLife {
                prepare_before: DAY,
                ca_ttl: DAY,
            },
            "prepare_before",
        ),
        (
            PolicyError::ActivateBeforePrepare {
                activate_before: DAY,
                prepare_before: DAY,
            },
            "activate_before",
        ),
        (
            PolicyError::PublishWindowDoesNotFit {
                window: DAY,
                span: HOUR,
            },
            "publish_window",
        ),
        (
            PolicyError::JwtWaitDoesNotFit {
                ttl: DAY,
                span: HOUR,
            },
            "jwt_svid_ttl",
        ),
        (
            PolicyError::SvidOutlivesRotation {
                field: "x509_svid_ttl",
                ttl: DAY,
                activate_before: HOUR,
            },
            "x509_svid_ttl",
        ),
        (
            PolicyError::TaintGraceTooShort {
                grace: HOUR,
                window: DAY,
            },
            "taint_grace",
        ),
    ];
    for (err, field) in rows {
        assert_eq!(err.field(), field, "{err}");
    }
}
