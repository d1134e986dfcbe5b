//! SPIFFE Federation (issue 8 §4): servers serving their bundles on bundle endpoints and
//! fetching each other's, workloads in two trust domains authenticating each other with
//! only what their Workload APIs gave them, a foreign CA rotation reaching workloads
//! before it signs, bad foreign bundles refused while the last good one stays, the
//! `https_web` profile, and `sigil bundle set|list|delete`.

mod bad;
mod endpoint;
mod fixture;
mod pair;
pub(crate) mod web;
