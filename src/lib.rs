//! sigil: a zero-trust secrets and workload-identity broker.
//!
//! # Module map
//!
//! The **core** holds the domain rules. It is plain synchronous Rust that takes
//! the current time as a parameter and does no I/O (no tokio, tonic, sled,
//! `std::fs` or `std::net`):
//!
//! - [`id`] — SPIFFE IDs, trust domains, selectors and durations, built only by parsing.
//! - [`keyring`] — the key hierarchy: passphrase → KEK → root key → data-key ring, and
//!   the AES-256-GCM record envelope.
//! - [`authority`] — the CA: X.509-SVID and JWT-SVID issuance, trust bundles, and the
//!   checks every issued credential passes before it leaves.
//! - [`registry`] — registration entries and their validation.
//! - [`policy`] — the policy decision point (Rego, deny by default).
//! - [`audit`] — typed audit events and the hash chain.
//! - [`secret`] — the one type that holds secret bytes.
//! - [`oidc`] — login with a CI platform's OIDC token: key sets, token checks, bound
//!   claims, SPIFFE ID templates.
//! - [`jit`] — just-in-time elevation: requests, approvals, grants in time, and
//!   the plan that expires them.
//! - [`unix_time`] — converting a given time to Unix seconds.
//!
//! The **edge** connects the core to the world:
//!
//! - [`clock`] — the one place that reads the wall clock, and the `Clock` the server is
//!   given (a manual one in tests).
//! - [`sync`] — taking std locks, one way: a poisoned lock is recovered.
//! - [`attest`] — Unix workload attestation: peer credentials and `/proc` → selectors.
//! - [`store`] — the storage trait, its sled implementation, the sealed store and the
//!   audit log file.
//! - [`config`] — strict TOML configuration.
//! - [`files`] — every file sigil writes: checked directories, no reuse of existing files.
//! - [`net`] — connection limits for every listener: caps, idle and half-open
//!   connections, the descriptor budget.
//! - [`tls`] — rustls configurations that authenticate peers by SPIFFE ID.
//! - [`api`] — generated gRPC types, proto ⇄ domain conversion, status mapping, the
//!   authorization chokepoint, and the Vault-compatible HTTP API.
//! - [`server`] — the server's state: the sealed store, registry, agents, authority,
//!   PDP and audit log, and their lifecycle.
//! - [`federation`] — SPIFFE Federation: this trust domain's bundle endpoint, and the
//!   foreign trust domains' bundles, fetched and kept (its refresh plan and foreign
//!   bundle checks are core).
//! - [`serve`] — the server's listeners: the gRPC API on TLS, the admin socket, and
//!   the HTTP API.
//! - [`agent`] — the node agent: server session, SVID cache, Workload API.
//! - [`cli`] — the command line.
//!
//! Dependencies point from the edge into the core, never the other way;
//! `scripts/check-layers.sh` enforces this.

// Unit tests may read the wall clock and sleep (to bound a wait, to date a
// fixture); the same code built without cfg(test) is checked against
// clippy.toml's disallowed methods, so production code cannot use them.
#![cfg_attr(
    test,
    allow(
        clippy::disallowed_methods,
        reason = "unit tests; production code is checked in the non-test build"
    )
)]

/// The allocator of every program built on sigil: the server, the agent, the
/// CLI, and the tests and benchmarks that host them. A request allocates
/// many small, short-lived values (headers, JSON, audit records), which
/// mimalloc serves from per-thread pages without glibc's bin consolidation:
/// in the HTTP benchmark it cut the server's CPU per KV read by about a
/// tenth. It is built without transparent huge pages (`no_thp`): with
/// them, memory mimalloc returned to the OS and touched again came back as
/// fresh 2 MiB pages for the kernel to zero, about 26 KiB zeroed per token
/// minted in the token benchmark, against about 1 KiB in 4 KiB pages
/// without. Secret bytes never rely on the allocator to be cleared:
/// [`secret::Secret`] zeroes them when dropped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod agent;
pub mod api;
pub mod attest;
pub mod audit;
pub mod authority;
pub mod cli;
pub mod clock;
pub mod config;
pub mod federation;
pub mod files;
pub mod id;
pub mod jit;
pub mod keyring;
pub mod net;
pub mod oidc;
pub mod policy;
pub mod registry;
pub mod secret;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod store;
pub mod sync;
pub mod tls;
pub mod unix_time;
