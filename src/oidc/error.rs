//! Why a CI login was refused: one enum for the whole flow, one variant per broken rule.
//!
//! The messages are for the server's log and for operators: they name the rule in plain
//! words and are all distinct. They never contain the token (a bearer credential) or its
//! signature; the few values they quote from a token (`alg`, `kid`, `iss`) are cut to
//! [`MAX_QUOTED_LEN`] characters and printed escaped. What a caller over the network is
//! told is decided at the edge, in one place.

use super::claims::TemplateError;
use super::verify::MAX_JWT_LEN;
use crate::id::IdError;

/// Longest text quoted from a token in an error, in characters: enough for any real
/// `alg`, `kid` or issuer URL, short enough that a crafted token cannot fill a log line.
pub const MAX_QUOTED_LEN: usize = 128;

/// Why a CI platform's OIDC token did not log in. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The token is longer than [`MAX_JWT_LEN`]; it is refused before anything is
    /// decoded, bounding the work an unauthenticated input can cause.
    #[error("token is larger than {MAX_JWT_LEN} bytes")]
    TooLarge,
    /// The token is not three unpadded base64url parts whose first two are JSON objects.
    #[error("malformed token: {reason}")]
    Malformed {
        /// The broken encoding rule.
        reason: &'static str,
    },
    /// The header says `alg: none` (in any case): an unsigned token (RFC 8725 §3.1).
    #[error("alg none is refused")]
    AlgNone,
    /// The header names an HMAC algorithm (`HS*`). An issuer's JWKS holds public keys,
    /// and using one as an HMAC secret would let anyone forge tokens (RFC 8725 §2.1).
    #[error("HMAC algorithm {0:?} is refused")]
    HmacAlgorithm(String),
    /// The header's `alg` is not one the issuer's policy allows.
    #[error("algorithm {0:?} is not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    /// The header carries `crit`, whose extensions this verifier does not implement
    /// (RFC 7515 §4.1.11 requires refusing them).
    #[error("critical header extensions (crit) are refused")]
    CriticalHeader,
    /// The header has no `kid`, or it is empty or not a string.
    #[error("token header has no key id (kid)")]
    MissingKeyId,
    /// No key in the issuer's JWKS has the header's `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// The key named by `kid` is of another type than the header's `alg`, or the key's
    /// own `alg` is another algorithm.
    #[error("the key named by kid is not a key for the token's algorithm")]
    KeyAlgorithmMismatch,
    /// The signature does not verify with the issuer's key.
    #[error("signature does not verify with the issuer's key")]
    BadSignature,
    /// `iss` is not exactly the issuer of the role.
    #[error("issuer {got:?} is not the role's issuer")]
    WrongIssuer {
        /// The token's `iss`, cut to [`MAX_QUOTED_LEN`] characters.
        got: String,
    },
    /// `aud` names none of the audiences configured for the issuer.
    #[error("audience does not include any of the issuer's audiences")]
    WrongAudience,
    /// `now` is at or after `exp` plus the leeway.
    #[error("token has expired")]
    Expired,
    /// `nbf` is after `now` plus the leeway.
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is after `now` plus the leeway.
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    /// A registered claim the verifier needs (`iss`, `aud`, `exp`, or a present `nbf` or
    /// `iat`) is missing or has the wrong JSON type.
    #[error("required claim {0:?} is missing or has the wrong JSON type")]
    MissingClaim(&'static str),
    /// The role binds or interpolates a claim the token does not carry.
    #[error("claim {claim:?} is required by the role but not in the token")]
    ClaimMissing {
        /// The claim name.
        claim: String,
    },
    /// A bound claim differs from the role's exact value.
    #[error("claim {claim:?} does not match the role's bound value {bound:?}")]
    ClaimMismatch {
        /// The claim name.
        claim: String,
        /// The role's bound value.
        bound: String,
    },
    /// A bound claim does not match the role's glob pattern.
    #[error("claim {claim:?} does not match the role's bound pattern {pattern:?}")]
    ClaimGlobMismatch {
        /// The claim name.
        claim: String,
        /// The role's pattern.
        pattern: String,
    },
    /// A claim named in the SPIFFE ID template is not a string, or its value cannot be
    /// put into a SPIFFE ID path: empty, a character other than ASCII letters, digits,
    /// `.`, `-`, `_` and `/`, or an empty, `.` or `..` segment.
    #[error(
        "claim {claim:?} cannot be used in a SPIFFE ID path (it must be a non-empty string of \
         letters, digits, '.', '-', '_' and '/' without empty, '.' or '..' segments)"
    )]
    ClaimNotInterpolable {
        /// The claim name.
        claim: String,
    },
    /// The role's SPIFFE ID template is invalid (normally caught when the configuration
    /// is loaded, by [`super::check_template`]).
    #[error("invalid SPIFFE ID template: {0}")]
    Template(#[from] TemplateError),
    /// The interpolated SPIFFE ID is not valid (for example longer than 2048 bytes).
    #[error("the interpolated SPIFFE ID is not valid: {0}")]
    BadSpiffeId(IdError),
    /// The interpolated SPIFFE ID lies under `/sigil`, which only sigil's own components
    /// may hold.
    #[error("the interpolated SPIFFE ID is reserved for sigil's own components")]
    ReservedSpiffeId,
}

/// `text` cut to [`MAX_QUOTED_LEN`] characters, for quoting a token's value in an error.
pub(super) fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED_LEN).collect()
}
