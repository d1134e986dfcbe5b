//! Secret paths: `ci/app/db`. Built only by parsing (STYLE §2).

use std::fmt;

/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// Most segments in a path.
pub const MAX_SEGMENTS: usize = 16;

/// Why a path was refused. Each rule has its own variant and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("secret path is empty")]
    Empty,
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("secret path is {0} bytes; the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("secret path has {0} segments; the limit is {MAX_SEGMENTS}")]
    TooManySegments(usize),
    /// Starts or ends with `/`, or has `//`.
    #[error("secret path {0:?} has an empty segment (leading, trailing or doubled '/')")]
    EmptySegment(String),
    /// A segment is `.` or `..`.
    #[error("secret path {0:?} has a '.' or '..' segment")]
    DotSegment(String),
    /// A character outside `A-Z a-z 0-9 _ - .`.
    #[error(
        "secret path {path:?} has the character {ch:?}; segments use only letters, digits, '_', '-' and '.'"
    )]
    BadCharacter {
        /// The path as given (cut to the limit).
        path: String,
        /// The first character refused.
        ch: char,
    },
}

/// A validated secret path: `/`-separated segments of `[A-Za-z0-9_.-]`, none
/// empty, `.` or `..`, at most [`MAX_PATH_BYTES`] bytes.
///
/// The character set keeps paths safe everywhere they go: store keys (no NUL,
/// which separates a path from its version), audit records, URLs of the
/// Vault-compatible API (nothing to escape), and shell arguments.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretPath(String);

fn shown(input: &str) -> String {
    let mut cut = input.len().min(MAX_PATH_BYTES);
    while !input.is_char_boundary(cut) {
        cut -= 1;
    }
    input.get(..cut).unwrap_or_default().to_owned()
}

impl SecretPath {
    /// Parses `input`.
    pub fn parse(input: &str) -> Result<Self, PathError> {
        if input.is_empty() {
            return Err(PathError::Empty);
        }
        if input.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(input.len()));
        }
        if let Some(ch) = input
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
        {
            return Err(PathError::BadCharacter {
                path: shown(input),
                ch,
            });
        }
        let segments = input.split('/').count();
        if segments > MAX_SEGMENTS {
            return Err(PathError::TooManySegments(segments));
        }
        for seg in input.split('/') {
            match seg {
                "" => return Err(PathError::EmptySegment(input.to_owned())),
                "." | ".." => return Err(PathError::DotSegment(input.to_owned())),
                _ => {}
            }
        }
        Ok(Self(input.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True when `self` lies strictly below `prefix` or equals it, segment-wise
    /// (`ci/app` is under `ci`, not under `c`).
    pub fn is_under(&self, prefix: &str) -> bool {
        let prefix = prefix.trim_end_matches('/');
        prefix.is_empty()
            || self.0 == prefix
            || self
                .0
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({})", self.0)
    }
}
