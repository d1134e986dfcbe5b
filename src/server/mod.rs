//! The sigil server (SPEC §2): owns the sealed store, the authority, the
//! entry registry, the PDP and the audit log, and serves the gRPC API on a
//! TLS listener and the admin Unix socket.

mod agents;
pub(crate) mod blocking;
pub mod elevations;
mod entries;
mod heads;
pub mod login;
pub mod mint;
pub mod quarantine;
pub mod rotation;
pub mod secrets;
pub mod tokens;
pub use heads::SealedHeads as SealedHeadsReader;
pub use heads::{HEAD_KEY, decode_head, opened_head};
mod state;
#[cfg(test)]
mod testing;

pub use agents::{AgentRecord, Agents, AgentsError, JoinToken};
pub use elevations::{ActiveGrant, ElevationError, Elevations};
pub use entries::{Entries, EntriesError};
pub use secrets::{Secrets, SecretsError, VersionsChange};
pub use state::read_policy_dir;
pub use state::{KeyCause, LifecycleError, Server, ServerError, UnsealRefused, own_uid};
pub use tokens::{Jti, TokenError, TokenRecord, Tokens};
