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
#![allow(
    clippy::disallowed_methods,
    reason = "tests bound their own waits with the wall clock; what they test reads a Clock"
)]

mod common;
mod oidc_signer;

mod agent;
mod at_rest;
mod audit;
mod bad_input;
mod cli;
mod clock;
mod crash;
mod dev;
mod federation;
mod files;
mod flood;
mod grpc;
mod http;
mod interop;
mod issuance;
mod jit;
mod join_token;
mod lifecycle;
mod limits;
mod login;
mod policy;
mod quarantine;
mod rotation;
mod secrets;
mod tamper;
