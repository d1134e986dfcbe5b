//! `[limits]` in server.toml and agent.toml: connection caps and the idle
//! timeout per listener. Every key is optional; an absent key keeps the
//! production default from [`Limits`].

use super::ConfigError;
use crate::id::Ttl;
use crate::net::Limits;
use serde::Deserialize;
use std::path::Path;

/// The server's listeners' limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// The admin socket.
    pub admin: Limits,
    /// The TLS listener.
    pub tcp: Limits,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            admin: Limits::admin(),
            tcp: Limits::tcp(),
        }
    }
}

/// `[limits]` in server.toml as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerLimits {
    #[serde(default)]
    admin: RawAdminLimits,
    #[serde(default)]
    tcp: RawTcpLimits,
}

/// `[limits.admin]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawAdminLimits {
    max_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    operator_reserve: Option<usize>,
    idle_timeout: Option<String>,
}

/// `[limits.tcp]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawTcpLimits {
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    idle_timeout: Option<String>,
}

/// `[limits]` in agent.toml as written: the Workload API socket.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkloadLimits {
    max_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    idle_timeout: Option<String>,
}

/// Checks one section's values over the listener's defaults; every error
/// names its key.
struct Check<'a> {
    path: &'a Path,
    limits: Limits,
}

impl Check<'_> {
    fn invalid(&self, key: &'static str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key,
            message,
        }
    }

    /// A count of at least one: a cap of zero would refuse everyone.
    fn count(&self, key: &'static str, v: Option<usize>) -> Result<Option<usize>, ConfigError> {
        match v {
            Some(0) => Err(self.invalid(key, "must be at least 1".into())),
            v => Ok(v),
        }
    }

    /// `max_connections`; a lower total lowers the caps that depend on it.
    fn max(mut self, key: &'static str, v: Option<usize>) -> Result<Self, ConfigError> {
        if let Some(max) = self.count(key, v)? {
            self.limits = self.limits.with_max_connections(max);
        }
        Ok(self)
    }

    /// The per-uid cap, at most `max_connections`.
    fn per_uid(mut self, key: &'static str, v: Option<usize>) -> Result<Self, ConfigError> {
        if let Some(n) = self.count(key, v)? {
            if n > self.limits.max_connections {
                return Err(self.invalid(key, "must not exceed max_connections".into()));
            }
            self.limits.max_per_peer = Some(n);
        }
        Ok(self)
    }

    fn idle(mut self, key: &'static str, v: Option<&str>) -> Result<Self, ConfigError> {
        if let Some(text) = v {
            let ttl = Ttl::parse(text).map_err(|e| self.invalid(key, e.to_string()))?;
            self.limits.idle_timeout = ttl.as_duration();
        }
        Ok(self)
    }
}

impl RawServerLimits {
    pub(super) fn check(&self, path: &Path) -> Result<ServerLimits, ConfigError> {
        let a = &self.admin;
        let mut admin = Check {
            path,
            limits: Limits::admin(),
        }
        .max("limits.admin.max_connections", a.max_connections)?
        .per_uid(
            "limits.admin.max_connections_per_uid",
            a.max_connections_per_uid,
        )?
        .idle("limits.admin.idle_timeout", a.idle_timeout.as_deref())?;
        if let Some(reserve) = a.operator_reserve {
            if reserve >= admin.limits.max_connections {
                return Err(admin.invalid(
                    "limits.admin.operator_reserve",
                    "must be less than max_connections".into(),
                ));
            }
            admin.limits.operator_reserve = reserve;
        }

        let t = &self.tcp;
        let mut tcp = Check {
            path,
            limits: Limits::tcp(),
        }
        .max("limits.tcp.max_connections", t.max_connections)?
        .idle("limits.tcp.idle_timeout", t.idle_timeout.as_deref())?;
        if let Some(n) = tcp.count("limits.tcp.max_handshakes", t.max_handshakes)? {
            tcp.limits.max_handshakes = n;
        }
        Ok(ServerLimits {
            admin: admin.limits,
            tcp: tcp.limits,
        })
    }
}

impl RawWorkloadLimits {
    pub(super) fn check(&self, path: &Path) -> Result<Limits, ConfigError> {
        Ok(Check {
            path,
            limits: Limits::workload(),
        }
        .max("limits.max_connections", self.max_connections)?
        .per_uid(
            "limits.max_connections_per_uid",
            self.max_connections_per_uid,
        )?
        .idle("limits.idle_timeout", self.idle_timeout.as_deref())?
        .limits)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::config::{AgentConfig, ServerConfig};
    use std::time::Duration;

    const SERVER: &str = "trust_domain = \"example.org\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"a.sock\"\n[policy]\ndir = \"p\"\n";
    const AGENT: &str = "server = \"127.0.0.1:8081\"\ntrust_bundle = \"b.pem\"\ndata_dir = \"d\"\nsocket = \"s.sock\"\n";

    fn server(limits: &str) -> Result<ServerLimits, ConfigError> {
        ServerConfig::parse(Path::new("s.toml"), &format!("{SERVER}{limits}")).map(|c| c.limits)
    }

    fn agent(limits: &str) -> Result<Limits, ConfigError> {
        AgentConfig::parse(Path::new("a.toml"), &format!("{AGENT}{limits}")).map(|c| c.limits)
    }

    fn invalid_key(r: Result<impl std::fmt::Debug, ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn absent_limits_are_the_defaults_and_the_examples_show_them() {
        assert_eq!(server("").unwrap(), ServerLimits::default());
        assert_eq!(agent("").unwrap(), Limits::workload());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let s = ServerConfig::load(&dir.join("server.example.toml")).unwrap();
        assert_eq!(s.limits, ServerLimits::default());
        let a = AgentConfig::load(&dir.join("agent.example.toml")).unwrap();
        assert_eq!(a.limits, Limits::workload());
    }

    #[test]
    fn set_keys_override_and_a_lower_total_lowers_what_depends_on_it() {
        let l = server(
            "[limits.admin]\nmax_connections = 64\nidle_timeout = \"30s\"\n[limits.tcp]\nmax_handshakes = 8\n",
        )
        .unwrap();
        assert_eq!(l.admin.max_connections, 64);
        assert_eq!(l.admin.max_per_peer, Some(8));
        assert_eq!(l.admin.operator_reserve, 4);
        assert_eq!(l.admin.idle_timeout, Duration::from_secs(30));
        assert_eq!(l.tcp.max_handshakes, 8);
        assert_eq!(l.tcp.max_connections, Limits::tcp().max_connections);
        let w = agent("[limits]\nmax_connections = 100\nmax_connections_per_uid = 100\n").unwrap();
        assert_eq!((w.max_connections, w.max_per_peer), (100, Some(100)));
    }

    #[test]
    fn bad_limits_name_the_key() {
        let table = [
            (
                "[limits.admin]\nmax_connections = 0\n",
                "limits.admin.max_connections",
            ),
            (
                "[limits.admin]\nmax_connections = 10\nmax_connections_per_uid = 11\n",
                "limits.admin.max_connections_per_uid",
            ),
            (
                "[limits.admin]\nmax_connections = 10\noperator_reserve = 10\n",
                "limits.admin.operator_reserve",
            ),
            (
                "[limits.admin]\nidle_timeout = \"0s\"\n",
                "limits.admin.idle_timeout",
            ),
            (
                "[limits.tcp]\nmax_handshakes = 0\n",
                "limits.tcp.max_handshakes",
            ),
            (
                "[limits.tcp]\nidle_timeout = \"soon\"\n",
                "limits.tcp.idle_timeout",
            ),
        ];
        for (text, key) in table {
            assert_eq!(invalid_key(server(text)), key, "{text}");
        }
        assert_eq!(
            invalid_key(agent("[limits]\nmax_connections_per_uid = 0\n")),
            "limits.max_connections_per_uid"
        );
        assert_eq!(
            invalid_key(agent("[limits]\nidle_timeout = \"1\"\n")),
            "limits.idle_timeout"
        );
    }

    #[test]
    fn a_key_in_the_wrong_section_is_unknown() {
        // Handshakes exist only on TCP; a per-uid cap only on Unix sockets.
        for r in [
            server("[limits.admin]\nmax_handshakes = 4\n").map(|_| ()),
            server("[limits.tcp]\nmax_connections_per_uid = 4\n").map(|_| ()),
            agent("[limits]\noperator_reserve = 4\n").map(|_| ()),
        ] {
            assert!(matches!(r, Err(ConfigError::Parse { .. })), "{r:?}");
        }
    }
}
