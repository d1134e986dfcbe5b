//! Logging in with a CI platform's OIDC ID token, the domain rules: a job on GitHub
//! Actions or GitLab CI asks its platform for a signed JWT naming the repository, ref,
//! environment and run, and trades it for a sigil identity without holding any secret.
//!
//! The flow, each step a pure function of its inputs and `now`:
//!
//! 1. [`Jwks::parse`] turns the issuer's published key set into keys ready for ring.
//!    Fetching it (and fetching again when [`unverified_kid`] names a key not yet seen)
//!    is the edge's job.
//! 2. [`verify`] checks the token against the issuer's [`IssuerPolicy`] and keys:
//!    size, encoding, algorithm, key, signature, then `iss`, `aud`, `exp`, `nbf`, `iat`
//!    (OpenID Connect Core §3.1.3.7, RFC 8725).
//! 3. [`check_bound_claims`] checks the claims the role binds (`repository`, `ref`,
//!    `environment`, …), exactly or by a trailing-`*` pattern.
//! 4. [`interpolate`] fills the role's SPIFFE ID template (`spiffe://example.org/ci/
//!    {repository}`) with claims, allowing only what a SPIFFE ID path may hold.
//!
//! Every refusal is a [`LoginError`] naming the broken rule. The token is a bearer
//! credential: nothing here stores it, and no error quotes it.
//!
//! Plain synchronous Rust, time passed in as Unix seconds (STYLE §1, §6).

mod claims;
mod error;
mod jwks;
mod verify;

pub use claims::{TemplateError, check_bound_claims, check_template, interpolate};
pub use error::{LoginError, MAX_QUOTED_LEN};
pub use jwks::{Jwk, JwkKey, Jwks, JwksError, MAX_JWKS_LEN, MAX_RSA_BITS, MIN_RSA_BITS};
pub use verify::{
    Algorithm, DEFAULT_LEEWAY_SECS, IssuerPolicy, MAX_JWT_LEN, UnsupportedAlgorithm, VerifiedJwt,
    unverified_kid, verify,
};

#[cfg(test)]
mod tests;
