//! Why a secrets operation was refused or failed. Variants name the rule;
//! `api::error` alone decides the gRPC code and what the caller is told.
//! No variant carries a secret value.

use crate::secrets::{FieldError, GeneratorError, KvError, MetaError, PathError, RotationError};
use crate::store::SealError;

/// Why a secrets operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The path breaks a path rule.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The fields break a field rule.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A version rule (missing, deleted, destroyed, check-and-set).
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Custom metadata breaks a limit.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Rotation settings were refused.
    #[error(transparent)]
    Rotation(#[from] RotationError),
    /// Nothing was ever written at this path.
    #[error("no secret at {0}")]
    NotFound(String),
    /// The path has no rotation configured.
    #[error("no rotation is set for {0}; set one with `sigil secret rotation set`")]
    NoRotation(String),
    /// The generator could not make the next version.
    #[error("generator: {0}")]
    Generator(#[from] GeneratorError),
    /// The `postgres` generator's connection secret is missing or unreadable.
    #[error("postgres connection secret {path}: {reason}")]
    Connection {
        /// The connection secret's path.
        path: String,
        /// Why (never a value).
        reason: String,
    },
    /// A rotation would change the credential still in its grace period.
    #[error(
        "{path}: the replaced credential is in its grace period until {until}; rotating again now would change it under its users"
    )]
    GraceInProgress {
        /// The secret.
        path: String,
        /// When grace ends (Unix seconds).
        until: u64,
    },
    /// Disabling would leave a replaced credential unlocked for good.
    #[error(
        "{path}: a replaced credential is locked when its grace period ends at {until}; disable the rotation after that"
    )]
    RetirementPending {
        /// The secret.
        path: String,
        /// When grace ends (Unix seconds).
        until: u64,
    },
    /// Applying a rotation outside sigil failed (the database refused).
    #[error("applying the rotation failed: {0}")]
    Apply(String),
    /// The path kept changing under a write; it was retried and gave up.
    #[error("{0} changed concurrently too often; retry")]
    Contended(String),
    /// A stored record decrypted but does not decode.
    #[error("stored secret record does not decode: {0}")]
    RecordCorrupt(String),
    /// The sealed store refused or failed.
    #[error(transparent)]
    Store(#[from] SealError),
    /// The store work did not run to completion.
    #[error("store task failed: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
}
