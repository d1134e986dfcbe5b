//! Federation with other trust domains (issue 8 §4; the SPIFFE Federation and Trust
//! Domain and Bundle standards): this server serves its own bundle on a bundle endpoint,
//! fetches the bundles of the foreign trust domains it is configured with, keeps them
//! in the sealed store beside those operators set with `sigil bundle set`, and hands
//! each agent the ones its entries federate with (`--federates-with`).
//!
//! - [`plan`] (pure) decides when each foreign bundle is fetched; [`refresh`] is the
//!   thin loop that applies it.
//! - [`foreign`] (pure) decides whether a document is a usable bundle of a foreign
//!   trust domain; whatever it refuses never replaces the bundle in use.
//! - `fetch` and `verify` fetch one bundle over HTTPS, authenticating the endpoint by
//!   its profile (`https_spiffe`: an X509-SVID for the configured SPIFFE ID against the
//!   latest bundle of its trust domain; `https_web`: Web PKI).
//! - [`endpoint`] serves this trust domain's bundle.
//! - [`Federation`] holds the state: relationships, kept bundles, fetch status.
//!
//! `plan` and `foreign` belong to the core (no I/O, time passed in;
//! `scripts/check-layers.sh` checks them); the rest is edge.

pub mod endpoint;
mod fetch;
pub mod foreign;
pub mod plan;
pub mod refresh;
mod setup;
mod state;
mod verify;

pub use fetch::{FETCH_TIMEOUT, FetchError, fetch_web};
pub use foreign::{ForeignBundleError, check_foreign_bundle};
pub use setup::{Auth, EndpointIdentity, Relationship, SetupError};
pub use state::{Federation, FetchStatus, Kept, Source, View};
pub use verify::EndpointRejected;

use crate::id::IdError;
use crate::store::SealError;

/// Why an operator's change to the foreign bundles was refused or failed. Each variant
/// names the broken rule; `api::error` decides what the caller is told.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The trust domain name does not parse.
    #[error("trust_domain: {0}")]
    BadTrustDomain(IdError),
    /// The bundle is not a usable bundle of the trust domain; the one kept stays.
    #[error("bundle refused: {0}")]
    Refused(#[from] ForeignBundleError),
    /// No bundle is kept for the trust domain.
    #[error("no bundle is kept for trust domain {0}")]
    NotFound(String),
    /// The trust domain has a configured relationship: its bundle would be fetched
    /// again at once.
    #[error(
        "{0} is configured in [[federation.trust_domain]]: remove it there to stop federating with it"
    )]
    Configured(String),
    /// The server is sealed.
    #[error("the server is sealed")]
    Sealed,
    /// The sealed store refused or failed.
    #[error(transparent)]
    Store(#[from] SealError),
    /// The record could not be encoded.
    #[error("bundle record could not be encoded: {0}")]
    RecordUnencodable(String),
    /// Work moved off the async workers did not run to completion.
    #[error("background task did not complete: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
}
