//! `[ca]` of `server.toml` (SPEC §3.4, §7): the lifetimes of keys and SVIDs and the
//! rotation timings, with SPEC §7 defaults, checked together as a
//! [`RotationPolicy`] so that a schedule that cannot work is refused before the server
//! starts, naming the key to change.

use std::path::Path;
use std::time::Duration;

use super::{CaConfig, ConfigError};
use crate::authority::{DEFAULT_PUBLISH_WINDOW, DEFAULT_TAINT_GRACE, PolicyError, RotationPolicy};
use crate::id::Ttl;

/// A checked `[ca]` section.
#[derive(Debug)]
pub(super) struct CaSection {
    pub(super) ttl: Ttl,
    pub(super) x509_svid_ttl: Ttl,
    pub(super) jwt_svid_ttl: Ttl,
    pub(super) rotation: RotationPolicy,
}

impl CaSection {
    /// Parses every key, fills in the defaults and checks the rules between them.
    pub(super) fn parse(path: &Path, raw: &CaConfig) -> Result<Self, ConfigError> {
        let ttl = parse_ttl(path, "ca.ttl", raw.ttl.as_deref().unwrap_or("24h"))?;
        let x509_svid_ttl = parse_ttl(
            path,
            "ca.x509_svid_ttl",
            raw.x509_svid_ttl.as_deref().unwrap_or("1h"),
        )?;
        let jwt_svid_ttl = parse_ttl(
            path,
            "ca.jwt_svid_ttl",
            raw.jwt_svid_ttl.as_deref().unwrap_or("5m"),
        )?;
        // The older rule first, with its message: the CA must outlive what it signs.
        if ttl <= x509_svid_ttl || ttl <= jwt_svid_ttl {
            return Err(invalid(
                path,
                "ca.ttl",
                format!(
                    "must be longer than ca.x509_svid_ttl ({x509_svid_ttl}) and ca.jwt_svid_ttl ({jwt_svid_ttl})"
                ),
            ));
        }
        let defaults = RotationPolicy::for_ttls(
            ttl.as_duration(),
            x509_svid_ttl.as_duration(),
            jwt_svid_ttl.as_duration(),
        );
        let timing = |key, v: &Option<String>, default: Duration| match v {
            Some(v) => parse_ttl(path, key, v).map(Ttl::as_duration),
            None => Ok(default),
        };
        let rotation = RotationPolicy {
            prepare_before: timing(
                "ca.prepare_before",
                &raw.prepare_before,
                defaults.prepare_before,
            )?,
            activate_before: timing(
                "ca.activate_before",
                &raw.activate_before,
                defaults.activate_before,
            )?,
            publish_window: timing(
                "ca.publish_window",
                &raw.publish_window,
                DEFAULT_PUBLISH_WINDOW,
            )?,
            taint_grace: timing("ca.taint_grace", &raw.taint_grace, DEFAULT_TAINT_GRACE)?,
            ..defaults
        };
        rotation
            .validate()
            .map_err(|e| invalid(path, key_of(&e), e.to_string()))?;
        Ok(Self {
            ttl,
            x509_svid_ttl,
            jwt_svid_ttl,
            rotation,
        })
    }
}

fn invalid(path: &Path, key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    }
}

fn parse_ttl(path: &Path, key: &'static str, v: &str) -> Result<Ttl, ConfigError> {
    Ttl::parse(v).map_err(|e| invalid(path, key, e.to_string()))
}

/// The `[ca]` key of a policy field.
fn key_of(e: &PolicyError) -> &'static str {
    match e.field() {
        "ca_ttl" => "ca.ttl",
        "x509_svid_ttl" => "ca.x509_svid_ttl",
        "jwt_svid_ttl" => "ca.jwt_svid_ttl",
        "prepare_before" => "ca.prepare_before",
        "activate_before" => "ca.activate_before",
        "publish_window" => "ca.publish_window",
        "taint_grace" => "ca.taint_grace",
        // Every field is listed above; a new one is still reported under its section.
        _ => "ca",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::config::ServerConfig;

    const BASE: &str = "trust_domain = \"example.org\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"a.sock\"\n[policy]\ndir = \"p\"\n";

    fn parse(ca: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(Path::new("s.toml"), &format!("{BASE}[ca]\n{ca}"))
    }

    fn key_of_error(ca: &str) -> &'static str {
        match parse(ca).unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn defaults_follow_ttl() {
        let c = ServerConfig::parse(Path::new("s.toml"), BASE).unwrap();
        assert_eq!(c.rotation, RotationPolicy::default());
        let c = parse("ttl = \"48h\"").unwrap();
        assert_eq!(c.rotation.ca_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(c.rotation.prepare_before, Duration::from_secs(24 * 3600));
        assert_eq!(c.rotation.activate_before, Duration::from_secs(8 * 3600));
        assert_eq!(c.rotation.publish_window, DEFAULT_PUBLISH_WINDOW);
        assert_eq!(c.rotation.taint_grace, DEFAULT_TAINT_GRACE);
    }

    #[test]
    fn short_lifetimes_for_tests() {
        let c = parse(
            "ttl = \"60s\"\nx509_svid_ttl = \"10s\"\njwt_svid_ttl = \"10s\"\npublish_window = \"5s\"\ntaint_grace = \"8s\"",
        )
        .unwrap();
        let s = Duration::from_secs;
        assert_eq!(
            (c.rotation.prepare_before, c.rotation.activate_before),
            (s(30), s(10))
        );
        assert_eq!(
            (c.rotation.publish_window, c.rotation.taint_grace),
            (s(5), s(8))
        );
    }

    #[test]
    fn malformed_timings_name_the_key() {
        for key in [
            "prepare_before",
            "activate_before",
            "publish_window",
            "taint_grace",
        ] {
            let got = key_of_error(&format!("{key} = \"soon\""));
            assert_eq!(got, format!("ca.{key}"));
        }
        let err = parse("publish_window = 300").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = parse("publish_windows = \"5m\"").unwrap_err();
        assert!(err.to_string().contains("publish_windows"), "{err}");
    }

    #[test]
    fn schedules_that_cannot_work_name_the_key() {
        let rows = [
            ("prepare_before = \"24h\"", "ca.prepare_before"),
            ("activate_before = \"12h\"", "ca.activate_before"),
            ("activate_before = \"30m\"", "ca.x509_svid_ttl"),
            (
                "publish_window = \"9h\"\ntaint_grace = \"9h\"",
                "ca.publish_window",
            ),
            ("taint_grace = \"1m\"", "ca.taint_grace"),
            (
                "ttl = \"60s\"\nx509_svid_ttl = \"10s\"\njwt_svid_ttl = \"10s\"",
                "ca.publish_window",
            ),
            (
                "ttl = \"60s\"\nx509_svid_ttl = \"10s\"\njwt_svid_ttl = \"20s\"\npublish_window = \"5s\"",
                "ca.jwt_svid_ttl",
            ),
            ("ttl = \"30m\"", "ca.ttl"),
        ];
        for (ca, key) in rows {
            assert_eq!(key_of_error(ca), key, "{ca}");
        }
        let err = parse("taint_grace = \"1m\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config s.toml: ca.taint_grace: taint_grace (60s) must be at least publish_window (300s)"
        );
    }
}
