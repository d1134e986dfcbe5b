//! Workload selectors: `TYPE:VALUE` facts about a caller, such as
//! `unix:uid:1000` or `unix:sha256:<hex>`. A registration entry matches a
//! caller when every one of its selectors is among the caller's attested ones.

use std::fmt;

/// Longest accepted selector value, in bytes.
const MAX_VALUE_LEN: usize = 1024;

/// Why a string is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector has no `:` separating its type from its value.
    #[error("selector {0:?} must be written TYPE:VALUE")]
    MissingSeparator(String),
    /// The selector type is not one this server attests.
    #[error("unknown selector type {0:?} (known: unix)")]
    UnknownType(String),
    /// The key inside a `unix:` selector is not one the Unix attestor produces.
    #[error(
        "unknown unix selector {0:?} (known: uid, gid, user, group, supplementary_gid, path, sha256)"
    )]
    UnknownUnixKey(String),
    /// The value is empty.
    #[error("selector {0:?} has an empty value")]
    EmptyValue(String),
    /// The value is longer than 1024 bytes.
    #[error("selector value is longer than 1024 bytes")]
    TooLong,
    /// A `uid`, `gid` or `supplementary_gid` value is not a decimal number.
    #[error("selector unix:{key} needs a decimal number, got {value:?}")]
    NotANumber {
        /// Which key.
        key: String,
        /// The value given.
        value: String,
    },
    /// A `sha256` value is not 64 lowercase hex digits.
    #[error("selector unix:sha256 needs 64 lowercase hex digits")]
    BadDigest,
    /// A `path` value is not an absolute path.
    #[error("selector unix:path needs an absolute path")]
    RelativePath,
    /// The value holds a control character.
    #[error("selector value holds a control character")]
    ControlChar,
}

/// A parsed selector.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    kind: String,
    value: String,
}

impl Selector {
    /// Parses `TYPE:VALUE`, checking the value's form for known types.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let (kind, value) = input
            .split_once(':')
            .ok_or_else(|| SelectorError::MissingSeparator(input.to_owned()))?;
        Self::new(kind, value)
    }

    /// Builds a selector from its type and value.
    pub fn new(kind: &str, value: &str) -> Result<Self, SelectorError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(SelectorError::TooLong);
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue(kind.to_owned()));
        }
        if value.chars().any(char::is_control) {
            return Err(SelectorError::ControlChar);
        }
        match kind {
            "unix" => check_unix(value)?,
            other => return Err(SelectorError::UnknownType(other.to_owned())),
        }
        Ok(Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The selector type, e.g. `unix`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The value, e.g. `uid:1000`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

fn check_unix(value: &str) -> Result<(), SelectorError> {
    let (key, v) = value
        .split_once(':')
        .ok_or_else(|| SelectorError::UnknownUnixKey(value.to_owned()))?;
    if v.is_empty() {
        return Err(SelectorError::EmptyValue(format!("unix:{key}")));
    }
    match key {
        "uid" | "gid" | "supplementary_gid" => {
            if !v.bytes().all(|b| b.is_ascii_digit()) || v.parse::<u32>().is_err() {
                return Err(SelectorError::NotANumber {
                    key: key.to_owned(),
                    value: v.to_owned(),
                });
            }
        }
        "sha256" => {
            if v.len() != 64 || !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(SelectorError::BadDigest);
            }
        }
        "path" => {
            if !v.starts_with('/') {
                return Err(SelectorError::RelativePath);
            }
        }
        "user" | "group" => {}
        other => return Err(SelectorError::UnknownUnixKey(other.to_owned())),
    }
    Ok(())
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({}:{})", self.kind, self.value)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_known_forms() {
        let s = Selector::parse("unix:uid:1000").unwrap();
        assert_eq!((s.kind(), s.value()), ("unix", "uid:1000"));
        assert!(Selector::parse(&format!("unix:sha256:{}", "a".repeat(64))).is_ok());
        assert!(Selector::parse("unix:path:/usr/bin/x").is_ok());
        assert!(Selector::parse("unix:user:alice").is_ok());
    }

    #[test]
    fn rejects_each_broken_rule() {
        use SelectorError::*;
        assert_eq!(
            Selector::parse("unix"),
            Err(MissingSeparator("unix".into()))
        );
        assert_eq!(Selector::parse("k8s:ns:x"), Err(UnknownType("k8s".into())));
        assert_eq!(
            Selector::parse("unix:pid:1"),
            Err(UnknownUnixKey("pid".into()))
        );
        assert_eq!(Selector::parse("unix:"), Err(EmptyValue("unix".into())));
        assert_eq!(
            Selector::parse("unix:uid:-1"),
            Err(NotANumber {
                key: "uid".into(),
                value: "-1".into()
            })
        );
        assert_eq!(Selector::parse("unix:sha256:ABC"), Err(BadDigest));
        assert_eq!(Selector::parse("unix:path:bin/x"), Err(RelativePath));
        assert_eq!(
            Selector::parse(&format!("unix:user:{}", "a".repeat(1100))),
            Err(TooLong)
        );
        assert_eq!(Selector::parse("unix:user:a\nb"), Err(ControlChar));
    }

    proptest! {
        #[test]
        fn uid_round_trips(uid in any::<u32>()) {
            let text = format!("unix:uid:{uid}");
            prop_assert_eq!(Selector::parse(&text).unwrap().to_string(), text);
        }

        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = Selector::parse(&s);
        }
    }
}
