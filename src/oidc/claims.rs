//! What a verified token's claims must say for a role, and the SPIFFE ID they name.
//!
//! A role binds claims to values (`repository = "acme/app"`, `ref = "refs/heads/release-*"`)
//! and names the identity a login receives with a template
//! (`spiffe://example.org/ci/{repository}`). Both run only on claims that passed
//! [`super::verify`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::LoginError;
use crate::id::{IdError, SpiffeId};

/// The URI scheme every SPIFFE ID starts with.
const SCHEME: &str = "spiffe://";
/// What stands for each placeholder when a template is checked on its own.
const SAMPLE_VALUE: &str = "x";

/// Checks that every claim `bound` names is in `claims` and matches.
///
/// A string claim is compared as it is; a number or boolean by its JSON text (`123`,
/// `true`); null, arrays and objects match nothing. A bound value ending in `*` is a
/// pattern in which every `*` matches any run of characters, `/` and the empty run
/// included (`refs/heads/release-*`); any other bound value must match exactly.
pub fn check_bound_claims(
    bound: &BTreeMap<String, String>,
    claims: &Map<String, Value>,
) -> Result<(), LoginError> {
    for (name, want) in bound {
        let value = claims.get(name).ok_or_else(|| LoginError::ClaimMissing {
            claim: name.clone(),
        })?;
        let text = match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        };
        if want.ends_with('*') {
            if !text.is_some_and(|t| glob_matches(want, &t)) {
                return Err(LoginError::ClaimGlobMismatch {
                    claim: name.clone(),
                    pattern: want.clone(),
                });
            }
        } else if text.as_ref() != Some(want) {
            return Err(LoginError::ClaimMismatch {
                claim: name.clone(),
                bound: want.clone(),
            });
        }
    }
    Ok(())
}

/// Whether `text` matches `pattern`, where each `*` matches any run of characters.
///
/// The literal pieces between stars are found left to right, each at its first
/// occurrence: taking the earliest never rules out a match the later pieces need, so
/// there is no backtracking and the cost is linear in the text per piece.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle_and_last: Vec<&str> = pieces.collect();
    let Some((last, middle)) = middle_and_last.split_last() else {
        // No `*` at all.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.split_once(piece) {
            Some((_, after)) => rest = after,
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Why a SPIFFE ID template was refused. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` has no `}` after it.
    #[error("template has a '{{' at byte {at} without a closing '}}'")]
    UnclosedBrace {
        /// Byte offset of the `{`.
        at: usize,
    },
    /// A `}` has no `{` before it.
    #[error("template has a '}}' at byte {at} without an opening '{{'")]
    UnopenedBrace {
        /// Byte offset of the `}`.
        at: usize,
    },
    /// A placeholder's claim name is empty or holds a character other than ASCII
    /// letters, digits, `_` and `-` (a `{` inside a placeholder lands here too).
    #[error(
        "template placeholder at byte {at} must name a claim with letters, digits, '_' and '-'"
    )]
    BadClaimName {
        /// Byte offset of the placeholder's `{`.
        at: usize,
    },
    /// A placeholder is in the scheme or the trust domain: a claim may only choose
    /// the path, never which trust domain the identity belongs to.
    #[error("template placeholders may only appear in the path, after the trust domain")]
    PlaceholderOutsidePath,
    /// The template, with a sample value for each placeholder, is not a SPIFFE ID.
    #[error("template does not form a SPIFFE ID: {0}")]
    NotASpiffeId(IdError),
    /// The template names the trust domain itself, not a workload.
    #[error("template names the trust domain itself, not a workload")]
    NoWorkloadPath,
    /// The template lies under `/sigil`, which only sigil's own components may hold.
    #[error("template is under the path reserved for sigil's own components")]
    Reserved,
}

/// One piece of a template.
enum Piece<'a> {
    Literal(&'a str),
    Claim(&'a str),
}

/// Splits a template into literal text and `{claim}` placeholders.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while !rest.is_empty() {
        let Some(open) = rest.find(['{', '}']) else {
            out.push(Piece::Literal(rest));
            break;
        };
        let (literal, from_brace) = rest.split_at(open);
        let at = offset + open;
        if from_brace.starts_with('}') {
            return Err(TemplateError::UnopenedBrace { at });
        }
        if !literal.is_empty() {
            out.push(Piece::Literal(literal));
        }
        let inner = from_brace.get(1..).unwrap_or_default();
        let close = inner.find('}').ok_or(TemplateError::UnclosedBrace { at })?;
        let (name, after) = inner.split_at(close);
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(TemplateError::BadClaimName { at });
        }
        out.push(Piece::Claim(name));
        rest = after.get(1..).unwrap_or_default();
        offset = template.len() - rest.len();
    }
    Ok(out)
}

/// Checks a role's SPIFFE ID template when the configuration is loaded and returns the
/// claims it names, each once, in order.
///
/// A template is a SPIFFE ID in which path text may be replaced by `{claim}`. With a
/// sample value for each claim it must be a valid workload SPIFFE ID outside `/sigil`,
/// and no placeholder may stand in the scheme or trust domain.
pub fn check_template(template: &str) -> Result<Vec<String>, TemplateError> {
    let pieces = pieces(template)?;
    let path_start = template
        .strip_prefix(SCHEME)
        .and_then(|rest| rest.find('/'))
        .map(|i| SCHEME.len() + i);
    if let Some(brace) = template.find('{')
        && path_start.is_none_or(|start| brace < start)
    {
        return Err(TemplateError::PlaceholderOutsidePath);
    }
    let mut sample = String::with_capacity(template.len());
    let mut names: Vec<String> = Vec::new();
    for piece in &pieces {
        match piece {
            Piece::Literal(text) => sample.push_str(text),
            Piece::Claim(name) => {
                sample.push_str(SAMPLE_VALUE);
                if !names.iter().any(|n| n == name) {
                    names.push((*name).to_owned());
                }
            }
        }
    }
    let id = SpiffeId::parse(&sample).map_err(TemplateError::NotASpiffeId)?;
    if id.check_workload().is_err() {
        return Err(TemplateError::NoWorkloadPath);
    }
    if id.is_reserved() {
        return Err(TemplateError::Reserved);
    }
    Ok(names)
}

/// Fills a SPIFFE ID template with claims: each `{name}` becomes the string claim
/// `name`. Returns a valid workload SPIFFE ID outside `/sigil`.
///
/// A value must be a non-empty string of ASCII letters, digits, `.`, `-`, `_` and `/`,
/// and none of its `/`-separated segments may be empty, `.` or `..`. That is enough to
/// keep every segment of the result valid: a segment the value shares with the
/// template's text is one of the value's own (non-empty, not a dot) plus more text,
/// so it cannot become empty, `.` or `..` either. The template must pass
/// [`check_template`]; one that does not is refused here too.
pub fn interpolate(template: &str, claims: &Map<String, Value>) -> Result<String, LoginError> {
    check_template(template)?;
    let mut id = String::with_capacity(template.len());
    for piece in pieces(template)? {
        match piece {
            Piece::Literal(text) => id.push_str(text),
            Piece::Claim(name) => id.push_str(path_value(name, claims)?),
        }
    }
    let parsed = SpiffeId::parse(&id).map_err(LoginError::BadSpiffeId)?;
    if parsed.is_reserved() {
        return Err(LoginError::ReservedSpiffeId);
    }
    Ok(id)
}

/// The string claim `name`, if it may stand in a SPIFFE ID path.
fn path_value<'a>(name: &str, claims: &'a Map<String, Value>) -> Result<&'a str, LoginError> {
    let not_interpolable = || LoginError::ClaimNotInterpolable {
        claim: name.to_owned(),
    };
    let value = claims
        .get(name)
        .ok_or_else(|| LoginError::ClaimMissing {
            claim: name.to_owned(),
        })?
        .as_str()
        .ok_or_else(not_interpolable)?;
    let chars_ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'));
    let segments_ok = value
        .split('/')
        .all(|segment| !matches!(segment, "" | "." | ".."));
    if chars_ok && segments_ok {
        Ok(value)
    } else {
        Err(not_interpolable())
    }
}
