//! The one place that decides what a caller is told (STYLE §3): every error a
//! handler can meet is an [`ApiError`] or one of the server's own error
//! enums ([`AgentsError`], [`EntriesError`], [`LifecycleError`],
//! [`FederationError`]), and the functions here pick the gRPC code and the
//! message. Internal detail goes to the log only.

use crate::authority::AuthorityError;
use crate::federation::FederationError;
use crate::jit::JitError;
use crate::registry::EntryError;
use crate::server::quarantine::QuarantineError;
use crate::server::{AgentsError, ElevationError, EntriesError, LifecycleError, SecretsError};
use crate::store::SealError;
use crate::store::audit_log::AuditError;
use tonic::{Code, Status};

/// Everything a request can fail with: the gate's and handlers' own
/// refusals, and the services' errors, each kept as its own enum.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller could not be identified.
    #[error("{0}")]
    Unauthenticated(String),
    /// The policy decision point denied the request.
    #[error("{0}")]
    Denied(String),
    /// The store is sealed; only status, init and unseal are answered.
    #[error("{SEALED}")]
    Sealed,
    /// A request field is malformed; the message names the field and rule.
    #[error("{0}")]
    InvalidArgument(String),
    /// The audit log could not record the decision, so the request was refused.
    #[error("audit log unavailable; request refused")]
    AuditUnavailable,
    /// The server is shutting down: long streams end with this.
    #[error("server shutting down")]
    ShuttingDown,
    /// Authority errors.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// Entry validation errors.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// Join tokens and agent records.
    #[error(transparent)]
    Agents(#[from] AgentsError),
    /// The entry registry.
    #[error(transparent)]
    Entries(#[from] EntriesError),
    /// The server's lifecycle: seal state, policies, audit reads.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The secrets store.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// JIT elevation requests.
    #[error(transparent)]
    Elevation(#[from] ElevationError),
    /// Quarantines.
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    /// Something failed that the caller cannot fix; details are logged.
    #[error("internal error")]
    Internal(String),
}

/// What a sealed server answers, from every service.
const SEALED: &str = "sealed: the server is sealed; run `sigil operator unseal`";

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

// Handlers may return the services' errors with `?` directly.
impl From<AgentsError> for Status {
    fn from(e: AgentsError) -> Self {
        agents_status(&e)
    }
}

impl From<EntriesError> for Status {
    fn from(e: EntriesError) -> Self {
        entries_status(&e)
    }
}

impl From<SecretsError> for Status {
    fn from(e: SecretsError) -> Self {
        secrets_status(&e)
    }
}

impl From<LifecycleError> for Status {
    fn from(e: LifecycleError) -> Self {
        lifecycle_status(&e)
    }
}

impl From<FederationError> for Status {
    fn from(e: FederationError) -> Self {
        federation_status(&e)
    }
}

fn sealed() -> Status {
    Status::failed_precondition(SEALED)
}

/// Logs what the caller is not told and answers `internal error`.
fn internal(e: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error")
}

fn seal_status(e: &SealError) -> Status {
    match e {
        SealError::Sealed => sealed(),
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

fn agents_status(e: &AgentsError) -> Status {
    match e {
        AgentsError::ReplaceNeedsName | AgentsError::NameInvalid(_) => {
            Status::invalid_argument(e.to_string())
        }
        AgentsError::NameTaken(_) => Status::already_exists(e.to_string()),
        // Which rule refused a join token is told: the caller holds the
        // token, and "expired" or "already used" tells an operator what to do.
        AgentsError::TokenUnknown
        | AgentsError::TokenUsed
        | AgentsError::TokenExpired
        | AgentsError::AgentBanned(_) => Status::permission_denied(e.to_string()),
        AgentsError::AgentNotFound(_) => Status::not_found(e.to_string()),
        AgentsError::Contended { .. } => Status::aborted(e.to_string()),
        AgentsError::RecordCorrupt { .. }
        | AgentsError::RecordUnencodable(_)
        | AgentsError::NoRandomness
        | AgentsError::TaskFailed(_) => internal(e),
        AgentsError::Store(s) => seal_status(s),
    }
}

fn entries_status(e: &EntriesError) -> Status {
    match e {
        EntriesError::Invalid(_) => Status::invalid_argument(e.to_string()),
        EntriesError::EntryExists { .. } => Status::already_exists(e.to_string()),
        EntriesError::EntryNotFound(_) => Status::not_found(e.to_string()),
        EntriesError::RevisionConflict { .. } => Status::aborted(e.to_string()),
        EntriesError::RecordCorrupt(_)
        | EntriesError::RecordUnencodable(_)
        | EntriesError::NoRandomness
        | EntriesError::TaskFailed(_) => internal(e),
        EntriesError::Store(s) => seal_status(s),
    }
}

fn federation_status(e: &FederationError) -> Status {
    match e {
        // A refused bundle is told with the rule it broke: the operator holds the
        // document and needs to know what to fix.
        FederationError::BadTrustDomain(_) | FederationError::Refused(_) => {
            Status::invalid_argument(e.to_string())
        }
        FederationError::NotFound(_) => Status::not_found(e.to_string()),
        FederationError::Configured(_) => Status::failed_precondition(e.to_string()),
        FederationError::Sealed => sealed(),
        FederationError::Store(s) => seal_status(s),
        FederationError::RecordUnencodable(_) | FederationError::TaskFailed(_) => internal(e),
    }
}

fn secrets_status(e: &SecretsError) -> Status {
    use crate::secrets::KvError;
    match e {
        SecretsError::Path(_)
        | SecretsError::Field(_)
        | SecretsError::Meta(_)
        | SecretsError::Rotation(_)
        | SecretsError::Generator(_)
        | SecretsError::Kv(KvError::VersionZero | KvError::MaxVersionsOutOfRange(_)) => {
            Status::invalid_argument(e.to_string())
        }
        SecretsError::NotFound(_) | SecretsError::Kv(KvError::NoSuchVersion { .. }) => {
            Status::not_found(e.to_string())
        }
        // Deleted and destroyed versions exist but cannot be read: the
        // message says which, and whether undelete can help.
        SecretsError::Kv(KvError::Deleted { .. } | KvError::Destroyed { .. })
        | SecretsError::NoRotation(_)
        | SecretsError::GraceInProgress { .. }
        | SecretsError::RetirementPending { .. } => Status::failed_precondition(e.to_string()),
        SecretsError::Kv(KvError::CasMismatch { .. }) | SecretsError::Contended(_) => {
            Status::aborted(e.to_string())
        }
        // The rotation's own dependencies failed; their messages name what
        // (a connection secret, a database refusal) and never a value.
        SecretsError::Connection { .. } | SecretsError::Apply(_) => {
            Status::unavailable(e.to_string())
        }
        SecretsError::Store(s) => seal_status(s),
        SecretsError::RecordCorrupt(_) => {
            tracing::error!(error = %e, "stored secret record does not decode");
            Status::new(Code::DataLoss, "stored secret record does not decode")
        }
        SecretsError::TaskFailed(_) => internal(e),
    }
}

fn lifecycle_status(e: &LifecycleError) -> Status {
    match e {
        LifecycleError::Sealed => sealed(),
        LifecycleError::Refused(r) => {
            tracing::error!(error = %r, "unseal refused");
            Status::failed_precondition(e.to_string())
        }
        LifecycleError::PolicyDirUnreadable(_) => Status::failed_precondition(e.to_string()),
        // The same answer as the gate's when the log cannot record a decision.
        LifecycleError::Audit(a) => Status::from(ApiError::from(a.clone())),
        LifecycleError::PolicyRefused(p) => {
            Status::failed_precondition(format!("policy refused: {p}"))
        }
        LifecycleError::Authority(a) => authority_status(a),
        LifecycleError::Entries(x) => entries_status(x),
        LifecycleError::Agents(x) => agents_status(x),
        LifecycleError::Secrets(x) => secrets_status(x),
        LifecycleError::Store(s) => seal_status(s),
        LifecycleError::TlsConfig(_)
        | LifecycleError::AuditUnreadable(_)
        | LifecycleError::Tokens(_)
        | LifecycleError::Elevations(_)
        | LifecycleError::Quarantines(_)
        | LifecycleError::TaskFailed(_) => internal(e),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match &e {
            ApiError::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
            ApiError::Denied(_) => Status::permission_denied(e.to_string()),
            ApiError::Sealed => sealed(),
            ApiError::InvalidArgument(_) | ApiError::Entry(_) => {
                Status::invalid_argument(e.to_string())
            }
            ApiError::AuditUnavailable | ApiError::ShuttingDown => {
                Status::unavailable(e.to_string())
            }
            ApiError::Authority(a) => authority_status(a),
            ApiError::Agents(a) => agents_status(a),
            ApiError::Entries(x) => entries_status(x),
            ApiError::Lifecycle(l) => lifecycle_status(l),
            ApiError::Secrets(x) => secrets_status(x),
            ApiError::Elevation(x) => elevation_status(x),
            ApiError::Quarantine(x) => quarantine_status(x),
            ApiError::Internal(detail) => internal(detail),
        }
    }
}

fn quarantine_status(e: &QuarantineError) -> Status {
    match e {
        QuarantineError::BadId(_) | QuarantineError::BadReason => {
            Status::invalid_argument(e.to_string())
        }
        QuarantineError::NotQuarantined(_) => Status::not_found(e.to_string()),
        QuarantineError::Store(_)
        | QuarantineError::Corrupt { .. }
        | QuarantineError::Revocation(_)
        | QuarantineError::Task(_) => internal(e),
    }
}

fn elevation_status(e: &ElevationError) -> Status {
    let message = e.to_string();
    match e {
        ElevationError::NotFound(_) | ElevationError::Rule(JitError::UnknownRole(_)) => {
            Status::not_found(message)
        }
        ElevationError::Rule(
            JitError::ReasonRequired
            | JitError::TooLong { .. }
            | JitError::ZeroDuration
            | JitError::OverMaximum { .. }
            | JitError::ControlCharacter { .. }
            | JitError::ForRequired,
        ) => Status::invalid_argument(message),
        ElevationError::Rule(JitError::NotPending { .. } | JitError::NotRevocable { .. }) => {
            Status::failed_precondition(message)
        }
        ElevationError::Rule(JitError::SelfApproval { .. } | JitError::Quarantined { .. }) => {
            Status::permission_denied(message)
        }
        ElevationError::Rule(JitError::AlreadyApproved { .. }) => Status::already_exists(message),
        ElevationError::Rule(JitError::TooManyPending { .. }) => {
            Status::resource_exhausted(message)
        }
        ElevationError::Audit => Status::unavailable(message),
        ElevationError::Store(_)
        | ElevationError::Corrupt { .. }
        | ElevationError::Task(_)
        | ElevationError::Random => internal(e),
    }
}

fn authority_status(e: &AuthorityError) -> Status {
    // An operator naming a key (`taint-ca ID`) is told which rule refused it.
    match e {
        AuthorityError::UnknownKey { .. } => return Status::not_found(e.to_string()),
        AuthorityError::KeyAlreadyTainted { .. } => {
            return Status::failed_precondition(e.to_string());
        }
        _ => {}
    }
    if e.is_caller_error() {
        Status::invalid_argument(e.to_string())
    } else {
        tracing::error!(error = %e, "authority error");
        Status::internal("internal error")
    }
}
