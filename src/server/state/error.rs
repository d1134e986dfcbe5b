//! Why a lifecycle operation (init, unseal, seal, key rotation, policy
//! reload, server SVID renewal, audit reads) was refused or failed. Each
//! variant names the rule that was broken; `api::error` alone decides the
//! gRPC code and what the caller is told.

use super::{ServerError, UnsealRefused};
use crate::authority::AuthorityError;
use crate::policy::PolicyError;
use crate::server::{AgentsError, EntriesError};
use crate::store::SealError;
use crate::store::audit_log::AuditError;

/// Why a lifecycle operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The server is sealed: nothing that needs keys is available.
    #[error("the server is sealed")]
    Sealed,
    /// The passphrase opened the store, but the store or the audit log was
    /// tampered with or rolled back: the server stays sealed.
    #[error(transparent)]
    Refused(#[from] UnsealRefused),
    /// The audit log could not record what the server did.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The audit log could not be read for verification.
    #[error("audit log unreadable: {0}")]
    AuditUnreadable(AuditError),
    /// The policy directory could not be read: the old policies stay active.
    #[error("{0}")]
    PolicyDirUnreadable(ServerError),
    /// The policies do not compile or fail their built-in cases: the old
    /// policies stay active.
    #[error(transparent)]
    PolicyRefused(#[from] PolicyError),
    /// The authority failed (the stored CA, a new CA, the server's SVID).
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// The server's SVID did not make a usable TLS configuration.
    #[error("server TLS configuration: {0}")]
    TlsConfig(String),
    /// The entries could not be loaded at unseal.
    #[error(transparent)]
    Entries(#[from] EntriesError),
    /// The agent records could not be loaded at unseal.
    #[error(transparent)]
    Agents(#[from] AgentsError),
    /// The secrets' rotation schedules could not be loaded at unseal.
    #[error(transparent)]
    Secrets(#[from] crate::server::SecretsError),
    /// The issued tokens could not be loaded at unseal.
    #[error("issued tokens: {0}")]
    Tokens(String),
    /// The JIT elevation requests could not be loaded at unseal.
    #[error("JIT requests: {0}")]
    Elevations(String),
    /// The quarantines could not be loaded at unseal.
    #[error("quarantines: {0}")]
    Quarantines(String),
    /// The sealed store refused or failed (wrong passphrase, not
    /// initialized, corrupt record, I/O).
    #[error(transparent)]
    Store(#[from] SealError),
    /// Work moved off the async workers did not run to completion (it
    /// panicked, or the runtime is shutting down).
    #[error("background task did not complete: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
}
