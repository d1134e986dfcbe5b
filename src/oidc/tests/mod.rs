//! Tests for CI login: JWKS parsing, token verification, bound claims and SPIFFE ID
//! templates. Tokens are signed by the same test issuer the integration tests use.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod claims_tests;
mod jwks_tests;
mod verify_tests;

#[path = "../../../tests/it/oidc_signer.rs"]
mod oidc_signer;

use serde_json::{Map, Value};

use super::*;
use oidc_signer::{AUDIENCE, GITHUB_ISSUER, Issuer, github_claims};

/// A fixed instant (2027-01-15) so that tests never read the wall clock.
const NOW: u64 = 1_800_000_000;

/// GitHub's policy as a role would configure it: both algorithms, the default leeway.
fn policy() -> IssuerPolicy {
    IssuerPolicy {
        issuer: GITHUB_ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned()],
        algorithms: vec![Algorithm::Rs256, Algorithm::Es256],
        leeway_secs: DEFAULT_LEEWAY_SECS,
    }
}

/// The issuer's JWKS, parsed.
fn jwks(issuer: &Issuer) -> Jwks {
    Jwks::parse(issuer.jwks_json().as_bytes()).unwrap()
}

/// [`github_claims`] at [`NOW`] with `changes` applied (a null value removes a claim).
fn claims_with(changes: Value) -> Value {
    let mut claims = github_claims(NOW);
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// The GitHub claims at [`NOW`] as the map [`verify`] returns.
fn claim_map() -> Map<String, Value> {
    github_claims(NOW).as_object().unwrap().clone()
}
