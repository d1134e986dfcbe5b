//! Scheduled rotation (STYLE §7): the settings, the per-secret state kept in its
//! metadata, and the pure plan that decides what is due at `now`. The server's
//! rotation task applies the plan and records each outcome here.
//!
//! Rules:
//! - A rotation is due at `next_due`; with a `window`, each due time is put at
//!   a random point within the window after it, so secrets set up together do
//!   not all rotate at the same instant.
//! - A failed attempt is retried with backoff (1 s doubling to 5 min), and
//!   stays visible (`failures`, `last_error`) until one succeeds: never skipped.
//! - A started rotation (`pending`) is finished before anything else: its new
//!   value was stored before anything outside sigil changed.
//! - The replaced version stays readable as `previous` for `grace`, then is
//!   retired (its credential locked, the version deleted).

use super::generator::{GeneratorError, GeneratorSpec};
use super::path::SecretPath;
use crate::id::Ttl;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest retry delay after consecutive failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why rotation settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// The generator spec.
    #[error(transparent)]
    Generator(#[from] GeneratorError),
    /// Grace must end before the next rotation begins, or two rotations would
    /// overlap and the credential still in grace would be changed under its users.
    #[error("grace ({grace}s) must be shorter than the rotation period ({every}s)")]
    GraceNotShorter {
        /// Grace, seconds.
        grace: u64,
        /// Period, seconds.
        every: u64,
    },
    /// The window must fit within the period.
    #[error("window ({window}s) must be shorter than the rotation period ({every}s)")]
    WindowNotShorter {
        /// Window, seconds.
        window: u64,
        /// Period, seconds.
        every: u64,
    },
    /// The stored generator no longer parses.
    #[error("stored generator {0:?} is not valid")]
    StoredGenerator(String),
}

/// How a secret rotates. Seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSettings {
    /// Period.
    pub every: u64,
    /// Spread of each due time.
    pub window: u64,
    /// How long the replaced version stays readable.
    pub grace: u64,
    /// The generator, as written.
    pub generator: String,
}

impl RotationSettings {
    /// Validated settings. Without `grace`, the replaced version stays
    /// readable for half the period, at most an hour.
    pub fn new(
        every: Ttl,
        window: Option<Ttl>,
        grace: Option<Ttl>,
        generator: &GeneratorSpec,
    ) -> Result<Self, RotationError> {
        let every = every.as_secs();
        let grace = grace.map_or((every / 2).min(3600), Ttl::as_secs);
        let window = window.map_or(0, Ttl::as_secs);
        if grace >= every {
            return Err(RotationError::GraceNotShorter { grace, every });
        }
        if window >= every {
            return Err(RotationError::WindowNotShorter { window, every });
        }
        Ok(Self {
            every,
            window,
            grace,
            generator: generator.to_string(),
        })
    }

    /// The generator.
    pub fn generator(&self) -> Result<GeneratorSpec, RotationError> {
        GeneratorSpec::parse(&self.generator)
            .map_err(|_| RotationError::StoredGenerator(self.generator.clone()))
    }

    /// The next due time after a rotation at `now`; `jitter` in [0, 1) places
    /// it within the window.
    pub fn due_after(&self, now: u64, jitter: f64) -> u64 {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Truncation is intended: a whole second within the window.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "window × [0,1) fits in u64"
        )]
        let offset = (self.window as f64 * jitter) as u64;
        now.saturating_add(self.every)
            .saturating_add(offset.min(self.window.saturating_sub(1)))
    }
}

/// A rotation begun: its new value is stored (in the store, beside the
/// versions) before anything outside sigil changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRotation {
    /// When it began.
    pub started: u64,
}

/// A replaced version waiting for its grace to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retiring {
    /// The version (0: none was readable when it was replaced).
    pub version: u64,
    /// The credential it held outside sigil (a database role name), locked
    /// when grace ends. Kept here, not read back from the version, so a
    /// version deleted or pruned during grace is still retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Readable until then.
    pub until: u64,
    /// Consecutive failed attempts to retire it.
    #[serde(default)]
    pub failures: u32,
    /// When to try again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
}

/// A secret's rotation: settings and progress. Kept in its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// The settings.
    pub settings: RotationSettings,
    /// When the next rotation is due.
    pub next_due: u64,
    /// Consecutive failed attempts.
    #[serde(default)]
    pub failures: u32,
    /// Why the last attempt failed, while failures > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When to try again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    /// When the last rotation succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated: Option<u64>,
    /// The credential outside sigil that the current version holds (the
    /// database role serving now), for generators that alternate two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
    /// A rotation begun and not yet finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingRotation>,
    /// Replaced versions in their grace period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<Retiring>,
}

/// Retry delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> u64 {
    let secs = 1u64
        .checked_shl(failures.saturating_sub(1).min(20))
        .unwrap_or(u64::MAX);
    secs.min(MAX_BACKOFF.as_secs())
}

impl RotationState {
    /// A schedule starting at `now`; `due_now` rotates at once (nothing readable yet).
    pub fn new(settings: RotationSettings, now: u64, due_now: bool, jitter: f64) -> Self {
        let next_due = if due_now {
            now
        } else {
            settings.due_after(now, jitter)
        };
        Self {
            settings,
            next_due,
            failures: 0,
            last_error: None,
            retry_at: None,
            last_rotated: None,
            serving: None,
            pending: None,
            retiring: Vec::new(),
        }
    }

    /// When the task should next rotate: at once for a pending rotation,
    /// after a failure at its retry time, else at the due time.
    pub fn rotate_at(&self) -> u64 {
        match (&self.pending, self.retry_at) {
            (_, Some(retry)) => retry,
            (Some(p), None) => p.started,
            (None, None) => self.next_due,
        }
    }

    /// When the task should next retire a replaced version.
    pub fn retire_at(&self) -> Option<u64> {
        self.retiring
            .iter()
            .map(|r| r.retry_at.unwrap_or(r.until).max(r.until))
            .min()
    }

    /// Records a failed attempt at `now`.
    pub fn failed(&mut self, now: u64, error: String) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
        self.retry_at = Some(now.saturating_add(backoff(self.failures)));
    }

    /// Records a rotation that finished at `now`, replacing `previous`; the
    /// new value holds `serving` outside sigil (a role name), and the one it
    /// replaced is retired when grace ends.
    pub fn succeeded(
        &mut self,
        now: u64,
        previous: Option<u64>,
        serving: Option<String>,
        jitter: f64,
    ) {
        self.failures = 0;
        self.last_error = None;
        self.retry_at = None;
        self.pending = None;
        self.last_rotated = Some(now);
        self.next_due = self.settings.due_after(now, jitter);
        let replaced = std::mem::replace(&mut self.serving, serving);
        if previous.is_some() || replaced.is_some() {
            self.retiring.push(Retiring {
                version: previous.unwrap_or(0),
                role: replaced.filter(|r| Some(r) != self.serving.as_ref()),
                until: now.saturating_add(self.settings.grace),
                failures: 0,
                retry_at: None,
            });
        }
    }

    /// The replaced credential in its grace period, if any: until when.
    pub fn in_grace(&self) -> Option<u64> {
        self.retiring.iter().map(|r| r.until).max()
    }

    /// The role a replaced `version` held.
    pub fn retiring_role(&self, version: u64) -> Option<&str> {
        self.retiring
            .iter()
            .find(|r| r.version == version)
            .and_then(|r| r.role.as_deref())
    }

    /// The replaced versions whose grace is over at `now`.
    pub fn due_retirements(&self, now: u64) -> Vec<u64> {
        self.retiring
            .iter()
            .filter(|r| now >= r.until && r.retry_at.is_none_or(|t| now >= t))
            .map(|r| r.version)
            .collect()
    }

    /// Records that `version` was retired.
    pub fn retired(&mut self, version: u64) {
        self.retiring.retain(|r| r.version != version);
    }

    /// Records a failed retirement of `version` at `now`.
    pub fn retire_failed(&mut self, version: u64, now: u64, error: String) {
        if let Some(r) = self.retiring.iter_mut().find(|r| r.version == version) {
            r.failures = r.failures.saturating_add(1);
            r.retry_at = Some(now.saturating_add(backoff(r.failures)));
        }
        self.last_error = Some(error);
    }
}

/// What the plan needs to know about one secret with a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The secret.
    pub path: SecretPath,
    /// When it should next rotate.
    pub rotate_at: u64,
    /// When a replaced version should next be retired.
    pub retire_at: Option<u64>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationAction {
    /// Rotate this secret.
    Rotate(SecretPath),
    /// Retire this secret's replaced versions whose grace is over.
    Retire(SecretPath),
}

/// The plan for one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationPlan {
    /// Due now, in order of due time.
    pub actions: Vec<RotationAction>,
    /// The earliest future deadline.
    pub next_wake: Option<u64>,
}

/// Decides what is due at `now` (Unix seconds): rotations whose time has come,
/// oldest first, then retirements; and when to wake for the next one.
pub fn plan(now: u64, schedules: &[Schedule]) -> RotationPlan {
    let mut rotate: Vec<(u64, &SecretPath)> = Vec::new();
    let mut retire = Vec::new();
    let mut next: Option<u64> = None;
    let mut later = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
    for s in schedules {
        if s.rotate_at <= now {
            rotate.push((s.rotate_at, &s.path));
        } else {
            later(s.rotate_at);
        }
        match s.retire_at {
            Some(t) if t <= now => retire.push(RotationAction::Retire(s.path.clone())),
            Some(t) => later(t),
            None => {}
        }
    }
    rotate.sort();
    let mut actions: Vec<RotationAction> = rotate
        .into_iter()
        .map(|(_, p)| RotationAction::Rotate(p.clone()))
        .collect();
    actions.extend(retire);
    RotationPlan {
        actions,
        next_wake: next,
    }
}
