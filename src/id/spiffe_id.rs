//! `SpiffeId` and `TrustDomain`, parsed to the SPIFFE-ID standard.

use std::fmt;

/// The URI scheme every SPIFFE ID starts with.
const SCHEME: &str = "spiffe://";
/// The SPIFFE-ID standard caps a SPIFFE ID at 2048 bytes.
pub const MAX_ID_LEN: usize = 2048;
/// The SPIFFE-ID standard caps a trust domain name at 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Everything under this path belongs to sigil's own components: only sigil
/// issues identities there (an entry or a minted SVID for one would let its
/// holder impersonate the server or an agent).
const RESERVED_PATH: &str = "/sigil";
/// The server's identity path.
const SERVER_PATH: &str = "/sigil/server";
/// The HTTP API listener's identity path.
const HTTP_PATH: &str = "/sigil/http";
/// Agents live one segment below this prefix: `/sigil/agent/<name>`.
const AGENT_PREFIX: &str = "/sigil/agent/";

/// Why a string is not a valid SPIFFE ID or trust domain. Each variant names
/// the rule of the SPIFFE-ID standard that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The input was empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The ID does not start with the lowercase scheme `spiffe://`.
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    /// The trust domain component is empty.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain holds a character outside `[a-z0-9._-]` (uppercase,
    /// port, user info, query and fragment all land here).
    #[error(
        "trust domain may only contain lowercase letters, digits, '.', '-' and '_' (found {found:?})"
    )]
    BadTrustDomainChar {
        /// The offending character.
        found: char,
    },
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    /// A path segment holds a character outside `[a-zA-Z0-9._-]`.
    #[error("path segments may only contain letters, digits, '.', '-' and '_' (found {found:?})")]
    BadPathChar {
        /// The offending character.
        found: char,
    },
    /// The path has an empty segment (`//`).
    #[error("path has an empty segment")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("path segments may not be '.' or '..'")]
    DotSegment,
    /// The path ends with `/`.
    #[error("path may not end with '/'")]
    TrailingSlash,
    /// The whole ID is longer than 2048 bytes.
    #[error("SPIFFE ID is longer than 2048 bytes")]
    TooLong,
    /// An agent name must be exactly one path segment (no `/`).
    #[error("agent name must be a single path segment (no '/')")]
    AgentNameNotOneSegment,
    /// The ID has no path, so it names the trust domain itself and not a
    /// workload; no SVID is issued for it (see [`SpiffeId::check_workload`]).
    #[error("SPIFFE ID has no path: it names the trust domain itself, not a workload")]
    NoWorkloadPath,
}

/// A trust domain name such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or its SPIFFE ID form
    /// (`spiffe://example.org`).
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        let name = if let Some(rest) = input.strip_prefix(SCHEME) {
            if !rest.is_empty() && rest.contains('/') {
                return Err(IdError::BadTrustDomainChar { found: '/' });
            }
            rest
        } else {
            input
        };
        check_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<td>`, used as the CA's URI
    /// SAN and as the key of bundle maps.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }

    /// Builds the SPIFFE ID `spiffe://<td><path>`; `path` must start with `/`.
    pub fn id(&self, path: &str) -> Result<SpiffeId, IdError> {
        SpiffeId::parse(&format!("{SCHEME}{}{path}", self.0))
    }

    /// The identity of the server's HTTP API listener,
    /// `spiffe://<td>/sigil/http`.
    pub fn http_id(&self) -> SpiffeId {
        SpiffeId {
            full: format!("{SCHEME}{}{HTTP_PATH}", self.0),
            path_start: SCHEME.len() + self.0.len(),
        }
    }

    /// The server's own identity, `spiffe://<td>/sigil/server`.
    pub fn server_id(&self) -> SpiffeId {
        // A valid trust domain (at most 255 bytes) plus a fixed, valid path
        // always makes a valid ID, so this is built without re-parsing.
        SpiffeId {
            full: format!("{SCHEME}{}{SERVER_PATH}", self.0),
            path_start: SCHEME.len() + self.0.len(),
        }
    }

    /// The identity of the agent called `name`, `spiffe://<td>/sigil/agent/<name>`.
    /// `name` must be exactly one valid path segment.
    pub fn agent_id(&self, name: &str) -> Result<SpiffeId, IdError> {
        if name.contains('/') {
            return Err(IdError::AgentNameNotOneSegment);
        }
        if name.is_empty() {
            return Err(IdError::EmptySegment);
        }
        self.id(&format!("{AGENT_PREFIX}{name}"))
    }
}

fn check_trust_domain(name: &str) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong);
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        Some(found) => Err(IdError::BadTrustDomainChar { found }),
        None => Ok(()),
    }
}

fn check_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/' because it is everything from the first '/' on.
    if path.ends_with('/') {
        return Err(IdError::TrailingSlash);
    }
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(IdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(IdError::DotSegment);
        }
        if let Some(found) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(IdError::BadPathChar { found });
        }
    }
    Ok(())
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// A SPIFFE ID: `spiffe://<trust domain>[/<path>]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole ID as written.
    full: String,
    /// Byte offset where the path starts (== `full.len()` when there is none).
    path_start: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID, naming the first rule of the standard it breaks.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        if input.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        let rest = input.strip_prefix(SCHEME).ok_or(IdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(td)?;
        check_path(path)?;
        Ok(Self {
            full: input.to_owned(),
            path_start: SCHEME.len() + td.len(),
        })
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    /// The trust domain name as a string slice.
    pub fn trust_domain_str(&self) -> &str {
        self.full
            .get(SCHEME.len()..self.path_start)
            .unwrap_or_default()
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        self.full.get(self.path_start..).unwrap_or_default()
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Checks that this ID names a workload, i.e. has a path.
    ///
    /// `spiffe://<td>` is the trust domain's own ID, the one a CA certificate
    /// carries. The X509-SVID standard requires a non-root path on every leaf
    /// (§3.1, and validators reject leaves without one, §5.2), and a
    /// JWT-SVID's `sub` is "the SPIFFE ID of the workload to which it is
    /// issued" (JWT-SVID §3.1): an SVID for the bare trust domain would let its
    /// holder speak as the authority, and clients such as the `spiffe` crate
    /// refuse it. Entries, minting and the CA all apply this one check.
    pub fn check_workload(&self) -> Result<(), IdError> {
        if self.path().is_empty() {
            Err(IdError::NoWorkloadPath)
        } else {
            Ok(())
        }
    }

    /// True for identities only sigil issues: the server, agents, and
    /// anything else under `/sigil`.
    pub fn is_reserved(&self) -> bool {
        let path = self.path();
        path == RESERVED_PATH
            || path
                .strip_prefix(RESERVED_PATH)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// True when this is the server's identity in its trust domain.
    pub fn is_server(&self) -> bool {
        self.path() == SERVER_PATH
    }

    /// The agent name when this is an agent's identity
    /// (`/sigil/agent/<name>`, one segment), else `None`.
    pub fn agent_name(&self) -> Option<&str> {
        self.path()
            .strip_prefix(AGENT_PREFIX)
            .filter(|name| !name.is_empty() && !name.contains('/'))
    }

    /// True when this ID is `other` or lies under it (`other` followed by `/…`).
    pub fn is_within(&self, other: &SpiffeId) -> bool {
        self.full == other.full
            || (self.full.starts_with(&other.full)
                && self.full.as_bytes().get(other.full.len()) == Some(&b'/'))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.full)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::str::FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
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
    fn accepts_valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa-web_1.x").unwrap();
        assert_eq!(id.trust_domain_str(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa-web_1.x");
        let bare = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(bare.path(), "");
    }

    /// Negative fixtures, each named after the rule it breaks.
    #[test]
    fn rejects_each_broken_rule() {
        let cases = [
            ("", IdError::Empty),
            ("http://example.org/a", IdError::WrongScheme),
            ("SPIFFE://example.org/a", IdError::WrongScheme),
            ("spiffe:///a", IdError::MissingTrustDomain),
            (
                "spiffe://Example.org/a",
                IdError::BadTrustDomainChar { found: 'E' },
            ),
            (
                "spiffe://example.org:8080/a",
                IdError::BadTrustDomainChar { found: ':' },
            ),
            (
                "spiffe://user@example.org/a",
                IdError::BadTrustDomainChar { found: '@' },
            ),
            (
                "spiffe://example.org/a b",
                IdError::BadPathChar { found: ' ' },
            ),
            (
                "spiffe://example.org/a?x=1",
                IdError::BadPathChar { found: '?' },
            ),
            (
                "spiffe://example.org/a#f",
                IdError::BadPathChar { found: '#' },
            ),
            (
                "spiffe://example.org/a%20b",
                IdError::BadPathChar { found: '%' },
            ),
            ("spiffe://example.org//a", IdError::EmptySegment),
            ("spiffe://example.org/./a", IdError::DotSegment),
            ("spiffe://example.org/a/..", IdError::DotSegment),
            ("spiffe://example.org/a/", IdError::TrailingSlash),
            ("spiffe://example.org/", IdError::TrailingSlash),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::parse(input), Err(want), "{input}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert_eq!(SpiffeId::parse(&long), Err(IdError::TooLong));
        let long_td = format!("spiffe://{}/a", "a".repeat(256));
        assert_eq!(SpiffeId::parse(&long_td), Err(IdError::TrustDomainTooLong));
    }

    #[test]
    fn trust_domain_forms() {
        assert_eq!(
            TrustDomain::parse("example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::parse("spiffe://example.org")
                .unwrap()
                .id_string(),
            "spiffe://example.org"
        );
        assert_eq!(
            TrustDomain::parse("spiffe://example.org/x"),
            Err(IdError::BadTrustDomainChar { found: '/' })
        );
    }

    #[test]
    fn reserved_identities_are_built_in_one_place() {
        let td = TrustDomain::parse("example.org").unwrap();
        let server = td.server_id();
        assert_eq!(server.as_str(), "spiffe://example.org/sigil/server");
        assert_eq!(
            server,
            SpiffeId::parse("spiffe://example.org/sigil/server").unwrap()
        );
        assert!(server.is_server() && server.is_reserved());
        assert_eq!(server.agent_name(), None);

        let agent = td.agent_id("node1").unwrap();
        assert_eq!(agent.as_str(), "spiffe://example.org/sigil/agent/node1");
        assert_eq!(agent.agent_name(), Some("node1"));
        assert!(agent.is_reserved() && !agent.is_server());

        assert_eq!(td.agent_id("a/b"), Err(IdError::AgentNameNotOneSegment));
        assert_eq!(td.agent_id(""), Err(IdError::EmptySegment));
        assert_eq!(td.agent_id(".."), Err(IdError::DotSegment));
        assert_eq!(td.agent_id("a b"), Err(IdError::BadPathChar { found: ' ' }));

        for (id, reserved) in [
            ("spiffe://example.org/sigil", true),
            ("spiffe://example.org/sigil/x/y", true),
            ("spiffe://example.org/sigilx", false),
            ("spiffe://example.org/app/sigil", false),
            ("spiffe://example.org", false),
        ] {
            assert_eq!(SpiffeId::parse(id).unwrap().is_reserved(), reserved, "{id}");
        }
        let nested = SpiffeId::parse("spiffe://example.org/sigil/agent/a/b").unwrap();
        assert_eq!(nested.agent_name(), None);
    }

    #[test]
    fn only_ids_with_a_path_name_workloads() {
        let td_id = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(td_id.check_workload(), Err(IdError::NoWorkloadPath));
        let w = SpiffeId::parse("spiffe://example.org/w").unwrap();
        assert_eq!(w.check_workload(), Ok(()));
    }

    #[test]
    fn within() {
        let parent = SpiffeId::parse("spiffe://td/a").unwrap();
        assert!(
            SpiffeId::parse("spiffe://td/a/b")
                .unwrap()
                .is_within(&parent)
        );
        assert!(
            !SpiffeId::parse("spiffe://td/ab")
                .unwrap()
                .is_within(&parent)
        );
    }

    proptest! {
        #[test]
        fn round_trips(td in "[a-z0-9._-]{1,40}", segs in prop::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,10}", 0..5)) {
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            let text = format!("spiffe://{td}{path}");
            let id = SpiffeId::parse(&text).unwrap();
            prop_assert_eq!(id.as_str(), text.as_str());
            prop_assert_eq!(id.trust_domain_str(), td.as_str());
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = SpiffeId::parse(&s);
            let _ = TrustDomain::parse(&s);
        }
    }
}
