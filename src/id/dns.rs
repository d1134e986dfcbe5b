//! DNS names carried as extra SANs in X.509-SVIDs.

use std::fmt;

/// Why a DNS name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsNameError {
    /// The name is empty.
    #[error("DNS name is empty")]
    Empty,
    /// The name is longer than 253 bytes (RFC 1035).
    #[error("DNS name is longer than 253 bytes")]
    TooLong,
    /// A label is empty or longer than 63 bytes.
    #[error("DNS name {0:?} has an empty label or one longer than 63 bytes")]
    BadLabelLength(String),
    /// A label holds a character outside `[a-zA-Z0-9-]`, or starts or ends with `-`.
    #[error(
        "DNS name {0:?} has a label with a character outside [a-zA-Z0-9-] or a leading/trailing '-'"
    )]
    BadLabel(String),
    /// A `*` appears other than as the whole first label.
    #[error("DNS name {0:?} may only use '*' as its whole first label")]
    BadWildcard(String),
}

/// A DNS name, lowercased.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Parses a DNS name (a wildcard only as the whole first label).
    pub fn parse(input: &str) -> Result<Self, DnsNameError> {
        if input.is_empty() {
            return Err(DnsNameError::Empty);
        }
        if input.len() > 253 {
            return Err(DnsNameError::TooLong);
        }
        for (i, label) in input.split('.').enumerate() {
            if label.is_empty() || label.len() > 63 {
                return Err(DnsNameError::BadLabelLength(input.to_owned()));
            }
            if label == "*" {
                if i == 0 {
                    continue;
                }
                return Err(DnsNameError::BadWildcard(input.to_owned()));
            }
            if label.contains('*') {
                return Err(DnsNameError::BadWildcard(input.to_owned()));
            }
            let ok_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok_chars || label.starts_with('-') || label.ends_with('-') {
                return Err(DnsNameError::BadLabel(input.to_owned()));
            }
        }
        Ok(Self(input.to_ascii_lowercase()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rules() {
        assert_eq!(
            DnsName::parse("Web.Example.org").unwrap().as_str(),
            "web.example.org"
        );
        assert!(DnsName::parse("*.example.org").is_ok());
        assert_eq!(DnsName::parse(""), Err(DnsNameError::Empty));
        assert_eq!(
            DnsName::parse("a..b"),
            Err(DnsNameError::BadLabelLength("a..b".into()))
        );
        assert_eq!(
            DnsName::parse("-a.b"),
            Err(DnsNameError::BadLabel("-a.b".into()))
        );
        assert_eq!(
            DnsName::parse("a_b.c"),
            Err(DnsNameError::BadLabel("a_b.c".into()))
        );
        assert_eq!(
            DnsName::parse("a.*.c"),
            Err(DnsNameError::BadWildcard("a.*.c".into()))
        );
        assert_eq!(DnsName::parse(&"a".repeat(254)), Err(DnsNameError::TooLong));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = DnsName::parse(&s);
        }
    }
}
