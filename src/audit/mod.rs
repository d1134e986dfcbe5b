//! Typed audit events and the keyed chain that makes the audit log
//! tamper-evident (SPEC §4 "continuous monitoring"; STYLE §10).
//!
//! This is core code: it turns events into chained records and verifies
//! record bytes. Writing them to disk, fsync and group commit live in
//! `store::audit_log`.
//!
//! # Record format
//!
//! One record per line: `<hex tag> <json body>\n`. The body is
//! `{"seq":N,"prev":"<hex>","auth":"hmac"|"none","gen":G,["sealed_records":K,]"event":{…}}`
//! with `seq` counting from 1 and `prev` the tag of the previous record (64
//! zeros for the first). The tag is computed over the body bytes exactly as
//! stored, so verification never re-serializes anything.
//!
//! # Why the chain is keyed
//!
//! A plain hash chain proves nothing against someone who can write the file:
//! they append a record with a valid link, or cut records out and re-link
//! the rest. So every record written while the store is unsealed
//! (`"auth":"hmac"`) is tagged with HMAC-SHA-256 under a [`ChainKey`]
//! derived from the store's root key: it exists only in memory while
//! unsealed, and without it no keyed record can be made or altered.
//!
//! A sealed server has no key, yet it must record status, init and unseal
//! calls. Those records (`"auth":"none"`) carry a plain SHA-256 tag: they
//! hang off the keyed chain as a run, are reported as unauthenticated by
//! verification, and may only record what a sealed server allows
//! ([`allowed_unauthenticated`]): a forged "allow" of anything else is
//! refused. At the next unseal the server writes a keyed re-anchor record
//! that links to the end of the run and states its length
//! (`sealed_records`), so from then on the run cannot change unnoticed. A
//! keyed record that follows such a run without stating its exact length
//! breaks verification.
//!
//! # Generations
//!
//! `gen` is the store's write generation (`store::sealed`) as last made
//! durable when the record was written. The keyed records' highest `gen`
//! must not exceed the store's: if it does, the store is older than the log
//! (restored from a copy, or writes lost), and unseal refuses it.

mod chain;
mod event;
mod verify;

pub use chain::{Auth, ChainHead, ChainKey, EncodedEvent, LinkError, Linkable, Mode, link};
pub use event::{Event, IssuedToken, SERVER_SUBJECT, Verdict};
pub use verify::{
    Parsed, Record, SealedRun, VerifyError, VerifyReport, allowed_unauthenticated, parse_line,
    verify, verify_visiting,
};

/// The action of the keyed record the server writes at unseal (the re-anchor).
pub const ANCHOR_ACTION: &str = "audit.anchor";
/// The action of the keyed record the server writes at seal and shutdown,
/// carrying the store's generation so that a later rollback is caught.
pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";

#[cfg(test)]
mod tests;
