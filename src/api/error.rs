//! The one place that decides what a caller is told (STYLE §3): every error a
//! handler can meet becomes an [`ApiError`], and `From<ApiError> for Status`
//! picks the gRPC code and the message. Internal detail goes to the log only.

use crate::authority::AuthorityError;
use crate::policy::PolicyError;
use crate::registry::EntryError;
use crate::store::SealError;
use crate::store::audit_log::AuditError;
use tonic::{Code, Status};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller could not be identified.
    #[error("{0}")]
    Unauthenticated(String),
    /// The policy decision point denied the request.
    #[error("{0}")]
    Denied(String),
    /// The store is sealed; only status, init and unseal are answered.
    #[error("sealed: the server is sealed; run `sigil operator unseal`")]
    Sealed,
    /// A request field is malformed; the message names the field and rule.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An equal object already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-swap lost: the object changed since it was read.
    #[error("{0}")]
    Conflict(String),
    /// The operation is not possible in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The audit log could not record the decision, so the request was refused.
    #[error("audit log unavailable; request refused")]
    AuditUnavailable,
    /// Store errors.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Authority errors.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// Entry validation errors.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// Policy errors.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Something failed that the caller cannot fix; details are logged.
    #[error("internal error")]
    Internal(String),
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        // A request that raced a seal: its "allow" cannot be recorded
        // without the chain key, and the server is sealed by now.
        if e == AuditError::SealedAllow {
            return ApiError::Sealed;
        }
        tracing::error!(error = %e, "audit append failed");
        ApiError::AuditUnavailable
    }
}

fn seal_status(e: &SealError) -> Status {
    match e {
        SealError::Sealed => Status::failed_precondition(ApiError::Sealed.to_string()),
        SealError::NotInitialized => {
            Status::failed_precondition("not initialized: run `sigil operator init`")
        }
        SealError::AlreadyInitialized => Status::already_exists("already initialized"),
        SealError::WrongPassphrase => {
            Status::permission_denied("wrong passphrase: the store stays sealed")
        }
        SealError::PassphraseTooShort => Status::invalid_argument(e.to_string()),
        SealError::AlreadyExists => Status::already_exists("already exists"),
        SealError::Conflict | SealError::Contended => {
            Status::aborted("changed concurrently; read it again and retry")
        }
        SealError::Corrupt { .. }
        | SealError::MetaInvalid(_)
        | SealError::IntegrityMissing
        | SealError::IntegrityInvalid
        | SealError::TableTampered { .. }
        | SealError::TableUnreadable { .. } => {
            tracing::error!(error = %e, "stored data failed authentication");
            Status::new(Code::DataLoss, e.to_string())
        }
        SealError::ReservedTable(_) | SealError::Keyring(_) | SealError::Backend(_) => {
            tracing::error!(error = %e, "store error");
            Status::internal("internal error")
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match &e {
            ApiError::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
            ApiError::Denied(_) => Status::permission_denied(e.to_string()),
            ApiError::Sealed => Status::failed_precondition(e.to_string()),
            ApiError::InvalidArgument(_) | ApiError::Entry(_) => {
                Status::invalid_argument(e.to_string())
            }
            ApiError::NotFound(_) => Status::not_found(e.to_string()),
            ApiError::AlreadyExists(_) => Status::already_exists(e.to_string()),
            ApiError::Conflict(_) => Status::aborted(e.to_string()),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(e.to_string()),
            ApiError::AuditUnavailable => Status::unavailable(e.to_string()),
            ApiError::Seal(s) => seal_status(s),
            ApiError::Authority(a) => authority_status(a),
            ApiError::Policy(p) => Status::failed_precondition(format!("policy refused: {p}")),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn authority_status(e: &AuthorityError) -> Status {
    if e.is_caller_error() {
        Status::invalid_argument(e.to_string())
    } else {
        tracing::error!(error = %e, "authority error");
        Status::internal("internal error")
    }
}
