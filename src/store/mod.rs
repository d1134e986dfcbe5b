//! (filled in by its owner)
pub mod audit_log;
