//! Why a join-token or agent-record operation was refused or failed. Each
//! variant names the rule that was broken; `api::error` alone decides the
//! gRPC code and what the caller is told.

use crate::id::{IdError, SpiffeId};
use crate::store::SealError;

/// Why a join-token or agent-record operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    /// `replace` was asked for without naming the agent whose name is
    /// handed over.
    #[error("replace: needs agent_name (the agent whose name is handed over)")]
    ReplaceNeedsName,
    /// The agent name is not one valid SPIFFE ID path segment.
    #[error("agent_name: {0}")]
    NameInvalid(IdError),
    /// An active agent holds the name: a token for it would hand that
    /// agent's identity to whoever redeems it.
    #[error(
        "agent {0} is active: a new token would hand its identity to another node (replace it explicitly with --replace)"
    )]
    NameTaken(SpiffeId),
    /// No join token with this value was issued (or it was pruned).
    #[error("join token refused: unknown token")]
    TokenUnknown,
    /// The join token was redeemed before.
    #[error("join token refused: already used")]
    TokenUsed,
    /// The join token's lifetime has ended.
    #[error("join token refused: expired")]
    TokenExpired,
    /// The agent is banned: it is refused everything.
    #[error("agent {0} is banned")]
    AgentBanned(SpiffeId),
    /// No agent with this ID has attested.
    #[error("agent {0} not found")]
    AgentNotFound(SpiffeId),
    /// Other writers changed the agent's record on every attempt.
    #[error("agent {id} changed concurrently {attempts} times; try again")]
    Contended {
        /// The agent.
        id: SpiffeId,
        /// How many attempts lost their compare-and-swap.
        attempts: usize,
    },
    /// A stored record decrypted but does not decode.
    #[error("stored {what} does not decode: {detail}")]
    RecordCorrupt {
        /// Which kind of record.
        what: &'static str,
        /// What the decoder reported.
        detail: String,
    },
    /// A record could not be encoded for storing.
    #[error("record does not encode: {0}")]
    RecordUnencodable(String),
    /// The system's random source failed.
    #[error("no randomness")]
    NoRandomness,
    /// The sealed store refused or failed (sealed, corrupt record, I/O).
    #[error(transparent)]
    Store(#[from] SealError),
    /// The store work did not run to completion (its task panicked, or the
    /// runtime is shutting down).
    #[error("store task did not complete: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
}
