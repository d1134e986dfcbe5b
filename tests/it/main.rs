//! Integration tests: the real server in-process on port 0 and temporary
//! sockets, and a few end-to-end runs of the built binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_debug_implementations,
    reason = "tests"
)]

mod common;

mod agent;
mod at_rest;
mod audit;
mod bad_input;
mod cli;
mod crash;
mod dev;
mod grpc;
mod issuance;
mod lifecycle;
mod policy;
mod tamper;
