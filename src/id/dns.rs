//! DNS names carried as extra SANs in X.509-SVIDs: the one parser that both
//! entry creation and the CA use, so a name accepted for an entry is always
//! one the CA can issue.
//!
//! The rules are RFC 1123's host names (§2.1) as RFC 5280 §4.2.1.6 requires
//! for a dNSName SAN ("preferred name syntax"): dot-separated labels of 1–63
//! letters, digits and hyphens, no hyphen at either end of a label, at most
//! 253 bytes in all, no trailing dot. On top of them:
//! - **IP literals are refused.** An address in a dNSName is matched by no
//!   TLS client; it belongs in an iPAddress SAN. RFC 1123 §2.1 keeps the two
//!   apart by requiring that the last label is not numeric, and the WHATWG URL
//!   parser's "ends in a number" test (a last label of digits, or `0x` and hex
//!   digits) catches the short and hex IPv4 forms (`127.1`, `0x7f.1`) too.
//! - **Wildcards only as the whole leftmost label, followed by at least two
//!   labels.** `*` alone would claim every name and `*.org` every name under
//!   a top-level domain; rustls/webpki and NSS refuse both when verifying (a
//!   wildcard needs two labels after it), so a certificate carrying one could
//!   never be used. Partial-label wildcards (`w*.example.org`) are refused for
//!   the same reason.

use std::fmt;

/// Longest DNS name in its textual form without a trailing dot (RFC 1035
/// §2.3.4: 255 octets on the wire).
pub const MAX_DNS_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_DNS_LABEL_LEN: usize = 63;
/// Labels a wildcard must be followed by (`*.example.org`, never `*.org`).
const MIN_LABELS_AFTER_WILDCARD: usize = 2;

/// Why a DNS name was refused. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsNameError {
    /// The name is empty.
    #[error("DNS name is empty")]
    Empty,
    /// The name is longer than [`MAX_DNS_NAME_LEN`] bytes.
    #[error("DNS name is longer than 253 bytes")]
    TooLong,
    /// The name is an IPv4 or IPv6 address.
    #[error("{0:?} is an IP address; IP addresses are not DNS names")]
    IpAddress(String),
    /// A label is empty: the name starts or ends with a dot, or has two in a row.
    #[error("DNS name {0:?} has an empty label (leading, trailing or doubled '.')")]
    EmptyLabel(String),
    /// A label is longer than [`MAX_DNS_LABEL_LEN`] bytes.
    #[error("DNS name {0:?} has a label longer than 63 bytes")]
    LabelTooLong(String),
    /// A label holds a character outside `[a-zA-Z0-9-]`.
    #[error("DNS name {0:?} has a character outside letters, digits and '-'")]
    BadCharacter(String),
    /// A label starts or ends with `-`.
    #[error("DNS name {0:?} has a label that starts or ends with '-'")]
    HyphenAtLabelEnd(String),
    /// A `*` appears other than as the whole leftmost label.
    #[error("DNS name {0:?} may only use '*' as its whole leftmost label")]
    BadWildcard(String),
    /// The name is `*` alone or `*.<one label>`: it would cover every name,
    /// or every name in a top-level domain.
    #[error(
        "wildcard {0:?} is too broad: '*' must be followed by at least two labels, as in *.example.org"
    )]
    WildcardTooBroad(String),
}

/// A DNS name, lowercased.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Parses a DNS name by the rules in this module's documentation.
    pub fn parse(input: &str) -> Result<Self, DnsNameError> {
        if input.is_empty() {
            return Err(DnsNameError::Empty);
        }
        if input.len() > MAX_DNS_NAME_LEN {
            return Err(DnsNameError::TooLong);
        }
        let owned = || input.to_owned();
        if is_ip_literal(input) {
            return Err(DnsNameError::IpAddress(owned()));
        }
        let (wildcard, rest) = match input.strip_prefix('*') {
            Some("") => return Err(DnsNameError::WildcardTooBroad(owned())),
            Some(rest) => match rest.strip_prefix('.') {
                Some(rest) => (true, rest),
                // `*a.org`: a partial-label wildcard.
                None => return Err(DnsNameError::BadWildcard(owned())),
            },
            None => (false, input),
        };
        let mut labels = 0;
        for label in rest.split('.') {
            check_label(label).map_err(|rule| rule(owned()))?;
            labels += 1;
        }
        if wildcard && labels < MIN_LABELS_AFTER_WILDCARD {
            return Err(DnsNameError::WildcardTooBroad(owned()));
        }
        Ok(Self(input.to_ascii_lowercase()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The rule one label breaks, as a constructor taking the whole name.
type LabelRule = fn(String) -> DnsNameError;

fn check_label(label: &str) -> Result<(), LabelRule> {
    if label.is_empty() {
        return Err(DnsNameError::EmptyLabel);
    }
    if label.len() > MAX_DNS_LABEL_LEN {
        return Err(DnsNameError::LabelTooLong);
    }
    if label.contains('*') {
        return Err(DnsNameError::BadWildcard);
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(DnsNameError::BadCharacter);
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(DnsNameError::HyphenAtLabelEnd);
    }
    Ok(())
}

/// True for IPv6 addresses (optionally in brackets or with a zone) and for
/// anything a URL or `inet_aton` parser reads as IPv4: a name whose last
/// label is all digits or `0x` followed by hex digits.
fn is_ip_literal(input: &str) -> bool {
    let unbracketed = input
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(input);
    let without_zone = unbracketed
        .split_once('%')
        .map_or(unbracketed, |(addr, _)| addr);
    if without_zone.parse::<core::net::Ipv6Addr>().is_ok() {
        return true;
    }
    let last = input.rsplit('.').next().unwrap_or(input);
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
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
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<String, DnsNameError> {
        DnsName::parse(s).map(|d| d.as_str().to_owned())
    }

    #[test]
    fn valid_names_are_lowercased() {
        assert_eq!(parse("Web.Example.org"), Ok("web.example.org".into()));
        let long_label = format!("{}.org", "a".repeat(63));
        for good in [
            "a",
            "localhost",
            "example.org",
            "a-b.c1.org",
            "1a.example.org",
            "123.example.org",
            "x.y",
            "*.example.org",
            "*.a.b.c",
            long_label.as_str(),
        ] {
            assert_eq!(parse(good), Ok(good.to_ascii_lowercase()), "{good}");
        }
        let longest = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(longest.len(), 253);
        assert!(parse(&longest).is_ok());
    }

    #[test]
    fn each_rule_has_its_variant() {
        let own = |s: &str| s.to_owned();
        let cases: Vec<(&str, DnsNameError)> = vec![
            ("", DnsNameError::Empty),
            ("a..b", DnsNameError::EmptyLabel(own("a..b"))),
            (".a.org", DnsNameError::EmptyLabel(own(".a.org"))),
            ("a.org.", DnsNameError::EmptyLabel(own("a.org."))),
            (".", DnsNameError::EmptyLabel(own("."))),
            ("a_b.c", DnsNameError::BadCharacter(own("a_b.c"))),
            ("ä.org", DnsNameError::BadCharacter(own("ä.org"))),
            ("a b.org", DnsNameError::BadCharacter(own("a b.org"))),
            ("host:443", DnsNameError::BadCharacter(own("host:443"))),
            ("-a.b", DnsNameError::HyphenAtLabelEnd(own("-a.b"))),
            ("a-.b", DnsNameError::HyphenAtLabelEnd(own("a-.b"))),
            ("a.*.c", DnsNameError::BadWildcard(own("a.*.c"))),
            ("*a.org", DnsNameError::BadWildcard(own("*a.org"))),
            ("a*.b.org", DnsNameError::BadWildcard(own("a*.b.org"))),
            ("**.b.org", DnsNameError::BadWildcard(own("**.b.org"))),
            ("*.*.b.org", DnsNameError::BadWildcard(own("*.*.b.org"))),
            ("*", DnsNameError::WildcardTooBroad(own("*"))),
            ("*.org", DnsNameError::WildcardTooBroad(own("*.org"))),
            ("*.", DnsNameError::EmptyLabel(own("*."))),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Err(want), "{input:?}");
        }
        assert_eq!(parse(&"a".repeat(254)), Err(DnsNameError::TooLong));
        let long_label = format!("{}.org", "a".repeat(64));
        assert_eq!(
            parse(&long_label),
            Err(DnsNameError::LabelTooLong(long_label.clone()))
        );
    }

    #[test]
    fn ip_literals_are_not_dns_names() {
        for ip in [
            "1.2.3.4",
            "10.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "1.2.3.0x4",
            "1.2.3.0X",
            "::1",
            "fe80::1",
            "[::1]",
            "fe80::1%eth0",
            "::ffff:1.2.3.4",
            "2001:db8::8a2e:370:7334",
        ] {
            assert_eq!(
                parse(ip),
                Err(DnsNameError::IpAddress(ip.to_owned())),
                "{ip}"
            );
        }
        let e = DnsName::parse("1.2.3.4").unwrap_err().to_string();
        assert_eq!(
            e,
            "\"1.2.3.4\" is an IP address; IP addresses are not DNS names"
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = DnsName::parse(&s);
        }

        #[test]
        fn whatever_parses_is_a_preferred_syntax_name(s in "[a-zA-Z0-9.*-]{0,80}") {
            if let Ok(name) = DnsName::parse(&s) {
                let n = name.as_str();
                prop_assert!(n.len() <= MAX_DNS_NAME_LEN);
                let rest = n.strip_prefix("*.").unwrap_or(n);
                prop_assert!(!rest.contains('*'));
                let labels: Vec<&str> = rest.split('.').collect();
                prop_assert!(labels.iter().all(|l| !l.is_empty() && l.len() <= MAX_DNS_LABEL_LEN));
                prop_assert!(labels.iter().all(|l| !l.starts_with('-') && !l.ends_with('-')));
                let last = labels.last().copied().unwrap_or_default();
                prop_assert!(!last.bytes().all(|b| b.is_ascii_digit()));
                // Parsing is idempotent.
                prop_assert_eq!(DnsName::parse(n).unwrap(), name.clone());
            }
        }
    }
}
