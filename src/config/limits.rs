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
