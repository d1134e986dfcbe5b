//! The rotation timings (SPEC §7, issue 8 §1–§3) and the rules they must follow
//! together, checked before a server starts with them.
//!
//! SPIRE's schedule is the default: keys live 24 h; a successor is prepared (and
//! published at once) when the active key has half its life left and becomes the
//! signing key when a sixth is left. Two timings are sigil's own:
//!
//! - the **publish window**: the least time a key is published before it signs. It is
//!   what the server guarantees for a bundle change to reach every agent and every open
//!   Workload API stream (one push round trip, with a wide margin), and it defaults to
//!   the bundle's refresh hint, so that a bundle endpoint client polling at that hint
//!   also has the key before it signs. A JWT key additionally waits one JWT-SVID
//!   lifetime (issue 8 §2), so a token's verifier has had the key for as long as any
//!   token lives;
//! - the **taint grace**: how long a tainted key stays in the bundle while agents hear
//!   of the taint and re-issue everything it signed.

use std::time::Duration;

use super::DEFAULT_REFRESH_HINT_SECS;
use super::keys::KeyKind;

/// Default key lifetime (SPIRE's CA TTL).
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default X.509-SVID lifetime.
pub const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(3600);
/// Default JWT-SVID lifetime.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// Default publish window: the bundle refresh hint.
pub const DEFAULT_PUBLISH_WINDOW: Duration = Duration::from_secs(DEFAULT_REFRESH_HINT_SECS);
/// Default taint grace: one publish window for the taint to reach every agent, and as
/// long again for agents to re-issue what the key signed.
pub const DEFAULT_TAINT_GRACE: Duration = Duration::from_secs(2 * DEFAULT_REFRESH_HINT_SECS);

/// When keys are prepared, activated and dropped. Build it with
/// [`RotationPolicy::for_ttls`] (or `default()`), adjust, then [`RotationPolicy::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Life of every new CA key and JWT signing key.
    pub ca_ttl: Duration,
    /// Default X.509-SVID lifetime.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub jwt_svid_ttl: Duration,
    /// A successor is prepared when the active key has this much life left (½ of
    /// `ca_ttl` by default).
    pub prepare_before: Duration,
    /// The successor becomes the signing key when the active key has this much life
    /// left (⅙ of `ca_ttl` by default), once it has been published for its window.
    pub activate_before: Duration,
    /// The least time a key is published before it signs (unless forced).
    pub publish_window: Duration,
    /// How long a tainted key stays published for agents to re-issue what it signed.
    pub taint_grace: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self::for_ttls(DEFAULT_CA_TTL, DEFAULT_X509_SVID_TTL, DEFAULT_JWT_SVID_TTL)
    }
}

/// Why a rotation policy was refused. Each variant names the broken rule; [`Self::field`]
/// names the timing to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A timing is shorter than one second.
    #[error("{field} must be at least one second")]
    TooShort {
        /// The timing.
        field: &'static str,
    },
    /// A successor would be due the moment a key is made: `prepare_before` must be
    /// shorter than `ca_ttl`.
    #[error(
        "prepare_before ({prepare_before:?}) must be shorter than the key life ttl ({ca_ttl:?})"
    )]
    PrepareOutsideLife {
        /// The value.
        prepare_before: Duration,
        /// The key life.
        ca_ttl: Duration,
    },
    /// Activation must come after preparation: `activate_before` must be shorter than
    /// `prepare_before`.
    #[error(
        "activate_before ({activate_before:?}) must be shorter than prepare_before ({prepare_before:?})"
    )]
    ActivateBeforePrepare {
        /// The value.
        activate_before: Duration,
        /// When successors are prepared.
        prepare_before: Duration,
    },
    /// The publish window does not fit between the prepare and activate points, so
    /// scheduled rotations would always be late.
    #[error(
        "publish_window ({window:?}) must fit between prepare_before and activate_before ({span:?} apart)"
    )]
    PublishWindowDoesNotFit {
        /// The value.
        window: Duration,
        /// `prepare_before - activate_before`.
        span: Duration,
    },
    /// A JWT key waits one JWT-SVID lifetime before it signs; that wait does not fit
    /// between the prepare and activate points.
    #[error(
        "jwt_svid_ttl ({ttl:?}) must fit between prepare_before and activate_before ({span:?} apart): a JWT key is published one JWT-SVID lifetime before it signs"
    )]
    JwtWaitDoesNotFit {
        /// The value.
        ttl: Duration,
        /// `prepare_before - activate_before`.
        span: Duration,
    },
    /// An SVID signed just before a rotation would be cut short by its CA's expiry: SVID
    /// lifetimes must not exceed `activate_before` (SPIRE's "max SVID TTL for a CA TTL").
    #[error(
        "{field} ({ttl:?}) must not exceed activate_before ({activate_before:?}), or SVIDs signed before a rotation are cut short"
    )]
    SvidOutlivesRotation {
        /// `x509_svid_ttl` or `jwt_svid_ttl`.
        field: &'static str,
        /// The value.
        ttl: Duration,
        /// The remaining life at activation.
        activate_before: Duration,
    },
    /// A tainted key would leave the bundle before every agent can have heard of the
    /// taint: `taint_grace` must be at least `publish_window`.
    #[error("taint_grace ({grace:?}) must be at least publish_window ({window:?})")]
    TaintGraceTooShort {
        /// The value.
        grace: Duration,
        /// The publish window.
        window: Duration,
    },
}

impl PolicyError {
    /// The [`RotationPolicy`] field to change.
    pub fn field(&self) -> &'static str {
        match self {
            PolicyError::TooShort { field } | PolicyError::SvidOutlivesRotation { field, .. } => {
                field
            }
            PolicyError::PrepareOutsideLife { .. } => "prepare_before",
            PolicyError::ActivateBeforePrepare { .. } => "activate_before",
            PolicyError::PublishWindowDoesNotFit { .. } => "publish_window",
            PolicyError::JwtWaitDoesNotFit { .. } => "jwt_svid_ttl",
            PolicyError::TaintGraceTooShort { .. } => "taint_grace",
        }
    }
}

impl RotationPolicy {
    /// The SPEC §7 schedule for these lifetimes: prepare at ½ of `ca_ttl` left, activate
    /// at ⅙ left (in whole seconds, like every stored time), default publish window and
    /// taint grace.
    pub fn for_ttls(ca_ttl: Duration, x509_svid_ttl: Duration, jwt_svid_ttl: Duration) -> Self {
        Self {
            ca_ttl,
            x509_svid_ttl,
            jwt_svid_ttl,
            prepare_before: Duration::from_secs(ca_ttl.as_secs() / 2),
            activate_before: Duration::from_secs(ca_ttl.as_secs() / 6),
            publish_window: DEFAULT_PUBLISH_WINDOW,
            taint_grace: DEFAULT_TAINT_GRACE,
        }
    }

    /// How long a key of `kind` is published before it signs: the publish window, and
    /// for a JWT key at least one JWT-SVID lifetime.
    pub fn publish_wait(&self, kind: KeyKind) -> Duration {
        match kind {
            KeyKind::X509Ca => self.publish_window,
            KeyKind::Jwt => self.publish_window.max(self.jwt_svid_ttl),
        }
    }

    /// Checks the rules in [`PolicyError`], in the order listed there.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let timings = [
            ("ca_ttl", self.ca_ttl),
            ("x509_svid_ttl", self.x509_svid_ttl),
            ("jwt_svid_ttl", self.jwt_svid_ttl),
            ("prepare_before", self.prepare_before),
            ("activate_before", self.activate_before),
            ("publish_window", self.publish_window),
            ("taint_grace", self.taint_grace),
        ];
        if let Some((field, _)) = timings.iter().find(|(_, d)| d.as_secs() == 0) {
            return Err(PolicyError::TooShort { field });
        }
        if self.prepare_before >= self.ca_ttl {
            return Err(PolicyError::PrepareOutsideLife {
                prepare_before: self.prepare_before,
                ca_ttl: self.ca_ttl,
            });
        }
        if self.activate_before >= self.prepare_before {
            return Err(PolicyError::ActivateBeforePrepare {
                activate_before: self.activate_before,
                prepare_before: self.prepare_before,
            });
        }
        let span = self.prepare_before - self.activate_before;
        if self.publish_window > span {
            return Err(PolicyError::PublishWindowDoesNotFit {
                window: self.publish_window,
                span,
            });
        }
        if self.jwt_svid_ttl > span {
            return Err(PolicyError::JwtWaitDoesNotFit {
                ttl: self.jwt_svid_ttl,
                span,
            });
        }
        for (field, ttl) in [
            ("x509_svid_ttl", self.x509_svid_ttl),
            ("jwt_svid_ttl", self.jwt_svid_ttl),
        ] {
            if ttl > self.activate_before {
                return Err(PolicyError::SvidOutlivesRotation {
                    field,
                    ttl,
                    activate_before: self.activate_before,
                });
            }
        }
        if self.taint_grace < self.publish_window {
            return Err(PolicyError::TaintGraceTooShort {
                grace: self.taint_grace,
                window: self.publish_window,
            });
        }
        Ok(())
    }
}
