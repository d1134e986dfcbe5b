//! The size limits of JWT-SVIDs (SPEC §3.1 FetchJWTSVID, the JWT-SVID standard §3.2),
//! defined once: how many audiences a request may name and how long each may be, and
//! the longest token those limits can produce, which never exceeds what the validator
//! accepts ([`MAX_TOKEN_LEN`]).
//!
//! [`check_audiences`] runs before anything is signed, in the agent's Workload API, in
//! the server's MintJwtSvid handler and in the authority itself, so an oversized request
//! is refused as the caller's mistake instead of being signed and then failing the
//! authority's own check of what it issued.

use crate::id::MAX_ID_LEN;

/// Tokens longer than this are refused by the validator before any decoding, bounding
/// the work an unauthenticated input can cause.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most audiences one JWT-SVID may carry. The JWT-SVID standard strongly recommends a
/// single audience (§7.2: every audience can replay the token to the others); a few
/// allow one token for a small group of cooperating services.
pub const MAX_AUDIENCES: usize = 8;
/// Longest audience, in bytes: room for URLs and SPIFFE IDs of services.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Length of an ES256 signature (r ‖ s).
pub(super) const ES256_SIG_LEN: usize = 64;
/// Length of the `kid` of a JWT signing key: 16 random bytes in hex.
pub(super) const KID_HEX_LEN: usize = 32;

/// Digits of the largest `exp` or `iat` (`u64::MAX`).
const MAX_NUMERIC_DATE_DIGITS: usize = 20;
/// The header with an empty `kid` (the header is always exactly these members).
const HEADER_SHAPE: &str = r#"{"alg":"ES256","kid":"","typ":"JWT"}"#;
/// The claims with every value empty.
const CLAIMS_SHAPE: &str = r#"{"sub":"","aud":[],"exp":,"iat":}"#;
/// The longest header JSON.
const MAX_HEADER_JSON_LEN: usize = HEADER_SHAPE.len() + KID_HEX_LEN;
/// The longest claims JSON. A SPIFFE ID has no character JSON escapes; an audience has
/// no control character (refused), so escaping at most doubles it (`"` and `\`), plus
/// its two quotes and a comma between audiences.
const MAX_CLAIMS_JSON_LEN: usize = CLAIMS_SHAPE.len()
    + MAX_ID_LEN
    + 2 * MAX_NUMERIC_DATE_DIGITS
    + MAX_AUDIENCES * (2 * MAX_AUDIENCE_LEN + 2)
    + (MAX_AUDIENCES - 1);
/// The longest token a request within the limits can produce.
pub const MAX_MINTED_TOKEN_LEN: usize = base64url_len(MAX_HEADER_JSON_LEN)
    + 1
    + base64url_len(MAX_CLAIMS_JSON_LEN)
    + 1
    + base64url_len(ES256_SIG_LEN);

// Whatever passes `check_audiences` can be minted and then validated.
const _: () = assert!(MAX_MINTED_TOKEN_LEN <= MAX_TOKEN_LEN);

/// Length of `n` bytes in unpadded base64url.
const fn base64url_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Why the audiences of a JWT-SVID request were refused. Each variant names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    /// No audience was given; `aud` holds one or more values (JWT-SVID §3.2).
    #[error("at least one audience is required")]
    Missing,
    /// An audience is the empty string.
    #[error("audiences must not be empty")]
    Empty,
    /// More than [`MAX_AUDIENCES`] audiences.
    #[error("{count} audiences given; at most {MAX_AUDIENCES} are allowed")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// An audience is longer than [`MAX_AUDIENCE_LEN`] bytes.
    #[error("an audience is {len} bytes long; at most {MAX_AUDIENCE_LEN} bytes are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// An audience holds a control character.
    #[error("audiences must not contain control characters")]
    ControlCharacter,
}

impl AudienceError {
    /// True when no usable audience was named at all (none, or an empty one), which
    /// the Workload API reports as SPIRE does.
    pub fn is_missing(&self) -> bool {
        matches!(self, AudienceError::Missing | AudienceError::Empty)
    }
}

/// Checks a request's audiences against the limits; the count first, so a request with
/// thousands of audiences is refused without looking at them.
pub fn check_audiences(audiences: &[String]) -> Result<(), AudienceError> {
    if audiences.is_empty() {
        return Err(AudienceError::Missing);
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(AudienceError::TooMany {
            count: audiences.len(),
        });
    }
    for a in audiences {
        if a.is_empty() {
            return Err(AudienceError::Empty);
        }
        if a.len() > MAX_AUDIENCE_LEN {
            return Err(AudienceError::TooLong { len: a.len() });
        }
        if a.chars().any(char::is_control) {
            return Err(AudienceError::ControlCharacter);
        }
    }
    Ok(())
}
