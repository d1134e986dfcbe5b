//! Typed audit events and the hash chain that makes the audit log
//! tamper-evident (SPEC §4 "continuous monitoring"; STYLE §10).
//!
//! This is core code: it turns events into chained records and verifies
//! record bytes. Writing them to disk, fsync and group commit live in
//! `store::audit_log`.
//!
//! # Record format
//!
//! One record per line: `<hex sha256> <json body>\n`. The body is
//! `{"seq":N,"prev":"<hex>","event":{…}}` with `seq` counting from 1 and `prev`
//! the hash of the previous record (64 zeros for the first). The hash is
//! SHA-256 over the body bytes exactly as stored, so verification never
//! re-serializes anything.

mod chain;
mod event;
mod verify;

pub use chain::{ChainHead, LinkError, link};
pub use event::{Event, Verdict};
pub use verify::{Record, VerifyError, VerifyReport, parse_line, verify};

#[cfg(test)]
mod tests;
