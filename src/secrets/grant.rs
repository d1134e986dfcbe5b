//! Grants: `VERB:PATTERN`, the one string form shared by the policy data,
//! CI roles, JIT roles and token scopes (SPEC §3.4).
//!
//! Verbs: `read` (get, metadata, watch), `list`, `write` (put, delete,
//! undelete), `destroy`, `rotate` (rotation settings and rotate now). In a
//! pattern, a segment `*` matches exactly one path segment, a trailing `/**`
//! matches one or more segments below, and the pattern `**` alone matches
//! every path. Nothing else is special: `read:ci/app/*` grants `ci/app/db`,
//! neither `ci/app` nor `ci/app/db/x`.
//!
//! The policy (Rego) decides with its own copy of these rules; a test runs both
//! over the same table so they cannot drift apart.

use super::path::{MAX_PATH_BYTES, SecretPath};
use std::fmt;

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No `:` between verb and pattern.
    #[error("grant {0:?} must be VERB:PATTERN, e.g. read:ci/app/*")]
    NoColon(String),
    /// The verb is not one of the five.
    #[error("grant {0:?} has an unknown verb; verbs are read, list, write, destroy, rotate")]
    UnknownVerb(String),
    /// The pattern is empty.
    #[error("grant {0:?} has an empty pattern")]
    EmptyPattern(String),
    /// Longer than a path may be.
    #[error("grant {0:?} has a pattern longer than {MAX_PATH_BYTES} bytes")]
    PatternTooLong(String),
    /// `**` somewhere other than the whole pattern or its last segment.
    #[error("grant {0:?}: '**' may only be the last segment (a/b/**) or the whole pattern")]
    MisplacedDoubleStar(String),
    /// `*` inside a segment (`app*`): only whole segments are wildcards.
    #[error("grant {0:?}: '*' must be a whole segment (a/*/c), not part of one")]
    PartialWildcard(String),
    /// A literal segment that no path could have.
    #[error("grant {grant:?}: segment {segment:?} is not a valid path segment")]
    BadSegment {
        /// The grant as written.
        grant: String,
        /// The segment refused.
        segment: String,
    },
}

/// What a grant lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// Get a version, read metadata, watch.
    Read,
    /// List paths.
    List,
    /// Put, delete, undelete.
    Write,
    /// Destroy versions for good.
    Destroy,
    /// Change rotation settings; rotate now.
    Rotate,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 5] = [
        Verb::Read,
        Verb::List,
        Verb::Write,
        Verb::Destroy,
        Verb::Rotate,
    ];

    /// The verb as written in grants.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Read => "read",
            Verb::List => "list",
            Verb::Write => "write",
            Verb::Destroy => "destroy",
            Verb::Rotate => "rotate",
        }
    }

    fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: any one segment.
    One,
}

/// A path pattern: segments, optionally followed by `/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
    /// Ends in `/**` (or is `**`): matches one or more further segments.
    below: bool,
    text: String,
}

impl Pattern {
    fn parse(grant: &str, text: &str) -> Result<Self, GrantError> {
        if text.is_empty() {
            return Err(GrantError::EmptyPattern(grant.to_owned()));
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(GrantError::PatternTooLong(grant.to_owned()));
        }
        if text == "**" {
            return Ok(Self {
                segments: Vec::new(),
                below: true,
                text: text.to_owned(),
            });
        }
        let (body, below) = match text.strip_suffix("/**") {
            Some(body) => (body, true),
            None => (text, false),
        };
        let mut segments = Vec::new();
        for seg in body.split('/') {
            segments.push(match seg {
                "*" => Segment::One,
                s if s.contains("**") => {
                    return Err(GrantError::MisplacedDoubleStar(grant.to_owned()));
                }
                s if s.contains('*') => return Err(GrantError::PartialWildcard(grant.to_owned())),
                s => {
                    // A literal segment must be one a path could have.
                    SecretPath::parse(s).map_err(|_| GrantError::BadSegment {
                        grant: grant.to_owned(),
                        segment: s.to_owned(),
                    })?;
                    if s.contains('/') {
                        return Err(GrantError::BadSegment {
                            grant: grant.to_owned(),
                            segment: s.to_owned(),
                        });
                    }
                    Segment::Literal(s.to_owned())
                }
            });
        }
        Ok(Self {
            segments,
            below,
            text: text.to_owned(),
        })
    }

    /// True when `path` matches.
    pub fn matches(&self, path: &SecretPath) -> bool {
        let mut given = path.segments();
        for want in &self.segments {
            let Some(seg) = given.next() else {
                return false;
            };
            if let Segment::Literal(lit) = want
                && lit != seg
            {
                return false;
            }
        }
        let rest = given.count();
        if self.below { rest >= 1 } else { rest == 0 }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when every path `other` matches, this pattern matches too: a
    /// holder of this pattern may hand out `other` and nothing more.
    pub fn covers(&self, other: &Pattern) -> bool {
        let n = self.segments.len();
        let fits = if self.below {
            // One or more segments after ours: `other` must have them too,
            // as literal or `*` segments or as its own `/**`.
            other.segments.len() > n || (other.segments.len() == n && other.below)
        } else {
            !other.below && other.segments.len() == n
        };
        fits && self
            .segments
            .iter()
            .zip(&other.segments)
            .all(|(mine, theirs)| match (mine, theirs) {
                (Segment::One, _) => true,
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                (Segment::Literal(_), Segment::One) => false,
            })
    }
}

/// A parsed grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    verb: Verb,
    pattern: Pattern,
}

impl Grant {
    /// Parses `VERB:PATTERN`.
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        let (verb, pattern) = text
            .split_once(':')
            .ok_or_else(|| GrantError::NoColon(text.to_owned()))?;
        let verb = Verb::parse(verb).ok_or_else(|| GrantError::UnknownVerb(text.to_owned()))?;
        Ok(Self {
            verb,
            pattern: Pattern::parse(text, pattern)?,
        })
    }

    /// The verb.
    pub fn verb(&self) -> Verb {
        self.verb
    }

    /// The pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// True when this grant lets its holder do `verb` on `path`.
    pub fn allows(&self, verb: Verb, path: &SecretPath) -> bool {
        self.verb == verb && self.pattern.matches(path)
    }

    /// True when `other` allows nothing this grant does not.
    pub fn covers(&self, other: &Grant) -> bool {
        self.verb == other.verb && self.pattern.covers(&other.pattern)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.verb.as_str(), self.pattern.text)
    }
}
