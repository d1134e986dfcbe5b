//! Registration entries (SPEC §1.2, §3.3 `sigil entry`): the mapping from
//! workload selectors to the SPIFFE ID they are issued. This module owns the
//! entry type, its validation and its stored form; persistence lives in the
//! server's entry service.

use crate::id::{
    DnsName, DurationError, IdError, Selector, SelectorError, SpiffeId, TrustDomain, Ttl,
};
use serde::{Deserialize, Serialize};

/// Most selectors one entry may carry.
pub const MAX_SELECTORS: usize = 64;
/// Most DNS names one entry may carry.
pub const MAX_DNS_NAMES: usize = 32;
/// Most federated trust domains one entry may name.
pub const MAX_FEDERATES_WITH: usize = 32;
/// Longest hint, in bytes.
pub const MAX_HINT_LEN: usize = 256;

/// Why an entry was refused. Each variant names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// `spiffe_id` is not a valid SPIFFE ID.
    #[error("spiffe_id: {0}")]
    SpiffeId(IdError),
    /// `parent_id` is not a valid SPIFFE ID.
    #[error("parent_id: {0}")]
    ParentId(IdError),
    /// The SPIFFE ID or parent ID is outside the server's trust domain.
    #[error("{field} {id} is not in trust domain {trust_domain}")]
    WrongTrustDomain {
        /// Which field.
        field: &'static str,
        /// The ID given.
        id: String,
        /// The server's trust domain.
        trust_domain: String,
    },
    /// The SPIFFE ID is reserved for sigil's own components.
    #[error("spiffe_id {0} is reserved for sigil's own components (path /sigil/...)")]
    ReservedId(String),
    /// No selectors were given: an entry must match something specific.
    #[error("at least one selector is required")]
    NoSelectors,
    /// More than [`MAX_SELECTORS`] selectors.
    #[error("too many selectors (at most 64)")]
    TooManySelectors,
    /// A selector failed to parse.
    #[error("selector: {0}")]
    Selector(SelectorError),
    /// A TTL is zero, negative or too long.
    #[error("{field}: {source}")]
    Ttl {
        /// Which field.
        field: &'static str,
        /// The rule broken.
        source: DurationError,
    },
    /// A DNS name failed to parse.
    #[error("dns_names: {0}")]
    DnsName(crate::id::DnsNameError),
    /// More than [`MAX_DNS_NAMES`] DNS names.
    #[error("too many DNS names (at most 32)")]
    TooManyDnsNames,
    /// The hint is longer than [`MAX_HINT_LEN`] bytes or has control characters.
    #[error("hint must be at most 256 bytes of printable text")]
    BadHint,
    /// A federated trust domain failed to parse.
    #[error("federates_with: {0}")]
    FederatesWith(IdError),
    /// More than [`MAX_FEDERATES_WITH`] federated trust domains.
    #[error("too many federated trust domains (at most 32)")]
    TooManyFederatesWith,
    /// An entry ID is not 32 lowercase hex digits.
    #[error("entry id {0:?} is not 32 lowercase hex digits")]
    BadEntryId(String),
}

/// An entry's identifier: 128 random bits as lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
#[serde(try_from = "String", into = "String")]
pub struct EntryId(String);

impl EntryId {
    /// Parses an entry ID.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(EntryError::BadEntryId(s.chars().take(64).collect()))
        }
    }

    /// Builds an ID from 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(hex::encode(bytes))
    }

    /// The ID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EntryId {
    type Error = EntryError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EntryId> for String {
    fn from(id: EntryId) -> Self {
        id.0
    }
}

/// The fields of an entry as a caller writes them, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryDraft {
    /// SPIFFE ID to issue.
    pub spiffe_id: String,
    /// The agent (or other ID) allowed to obtain it.
    pub parent_id: String,
    /// `TYPE:VALUE` selectors; all must match.
    pub selectors: Vec<String>,
    /// X.509-SVID lifetime in seconds; 0 means the server default.
    pub x509_ttl_seconds: i64,
    /// JWT-SVID lifetime in seconds; 0 means the server default.
    pub jwt_ttl_seconds: i64,
    /// Extra DNS SANs.
    pub dns_names: Vec<String>,
    /// A hint for workloads holding several identities.
    pub hint: String,
    /// Whether the identity may use admin APIs (subject to policy).
    pub admin: bool,
    /// Trust domains whose bundles the workload also receives.
    pub federates_with: Vec<String>,
}

/// A validated registration entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Identifier.
    pub id: EntryId,
    /// SPIFFE ID issued.
    pub spiffe_id: SpiffeId,
    /// Parent ID.
    pub parent_id: SpiffeId,
    /// Selectors, sorted and without duplicates.
    pub selectors: Vec<Selector>,
    /// X.509-SVID lifetime, when not the default.
    pub x509_ttl_secs: Option<u64>,
    /// JWT-SVID lifetime, when not the default.
    pub jwt_ttl_secs: Option<u64>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Hint.
    pub hint: String,
    /// Admin flag.
    pub admin: bool,
    /// Federated trust domains.
    pub federates_with: Vec<TrustDomain>,
    /// Incremented on every update.
    pub revision: u64,
    /// Creation time, Unix seconds.
    pub created_at: u64,
}

fn optional_ttl(field: &'static str, secs: i64) -> Result<Option<u64>, EntryError> {
    if secs == 0 {
        return Ok(None);
    }
    Ttl::from_wire(secs)
        .map(|t| Some(t.as_secs()))
        .map_err(|source| EntryError::Ttl { field, source })
}

fn in_domain(field: &'static str, id: &SpiffeId, td: &TrustDomain) -> Result<(), EntryError> {
    if id.trust_domain_str() == td.as_str() {
        Ok(())
    } else {
        Err(EntryError::WrongTrustDomain {
            field,
            id: id.to_string(),
            trust_domain: td.to_string(),
        })
    }
}

impl EntryDraft {
    /// Validates every field for trust domain `td` and builds the entry.
    pub fn validate(
        &self,
        td: &TrustDomain,
        id: EntryId,
        revision: u64,
        created_at: u64,
    ) -> Result<Entry, EntryError> {
        let spiffe_id = SpiffeId::parse(&self.spiffe_id).map_err(EntryError::SpiffeId)?;
        let parent_id = SpiffeId::parse(&self.parent_id).map_err(EntryError::ParentId)?;
        in_domain("spiffe_id", &spiffe_id, td)?;
        in_domain("parent_id", &parent_id, td)?;
        // The entry's ID goes into leaf SVIDs and JWT `sub` claims, which
        // must name a workload: refuse the bare trust domain here rather than
        // at every issuance.
        spiffe_id.check_workload().map_err(EntryError::SpiffeId)?;
        // sigil's own identities are minted by sigil itself; letting an entry
        // claim one would let a workload impersonate the server or an agent.
        if spiffe_id.is_reserved() {
            return Err(EntryError::ReservedId(spiffe_id.to_string()));
        }
        if self.selectors.is_empty() {
            return Err(EntryError::NoSelectors);
        }
        if self.selectors.len() > MAX_SELECTORS {
            return Err(EntryError::TooManySelectors);
        }
        let mut selectors = self
            .selectors
            .iter()
            .map(|s| Selector::parse(s).map_err(EntryError::Selector))
            .collect::<Result<Vec<_>, _>>()?;
        selectors.sort();
        selectors.dedup();
        if self.dns_names.len() > MAX_DNS_NAMES {
            return Err(EntryError::TooManyDnsNames);
        }
        let dns_names = self
            .dns_names
            .iter()
            .map(|d| {
                DnsName::parse(d)
                    .map(|d| d.as_str().to_owned())
                    .map_err(EntryError::DnsName)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.hint.len() > MAX_HINT_LEN || self.hint.chars().any(char::is_control) {
            return Err(EntryError::BadHint);
        }
        if self.federates_with.len() > MAX_FEDERATES_WITH {
            return Err(EntryError::TooManyFederatesWith);
        }
        let federates_with = self
            .federates_with
            .iter()
            .map(|t| TrustDomain::parse(t).map_err(EntryError::FederatesWith))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry {
            id,
            spiffe_id,
            parent_id,
            selectors,
            x509_ttl_secs: optional_ttl("x509_ttl", self.x509_ttl_seconds)?,
            jwt_ttl_secs: optional_ttl("jwt_ttl", self.jwt_ttl_seconds)?,
            dns_names,
            hint: self.hint.clone(),
            admin: self.admin,
            federates_with,
            revision,
            created_at,
        })
    }
}

impl Entry {
    /// The key that makes two entries duplicates: the same SPIFFE ID, parent
    /// and selector set (SPIRE's rule). Hashed so its length is bounded.
    pub fn uniqueness_key(&self) -> Vec<u8> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [self.spiffe_id.as_str(), self.parent_id.as_str()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        for s in &self.selectors {
            let text = s.to_string();
            ctx.update(&(text.len() as u64).to_be_bytes());
            ctx.update(text.as_bytes());
        }
        ctx.finish().as_ref().to_vec()
    }

    /// True when every selector of this entry is among `attested`.
    pub fn matches(&self, attested: &[Selector]) -> bool {
        self.selectors.iter().all(|s| attested.contains(s))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    fn draft() -> EntryDraft {
        EntryDraft {
            spiffe_id: "spiffe://example.org/web".into(),
            parent_id: "spiffe://example.org/node".into(),
            selectors: vec![
                "unix:uid:1000".into(),
                "unix:uid:1000".into(),
                "unix:gid:5".into(),
            ],
            ..EntryDraft::default()
        }
    }

    fn check(d: EntryDraft) -> Result<Entry, EntryError> {
        d.validate(&td(), EntryId::from_random([7; 16]), 1, 0)
    }

    #[test]
    fn valid_entry_sorts_and_dedups_selectors() {
        let e = check(draft()).unwrap();
        let sels: Vec<String> = e.selectors.iter().map(ToString::to_string).collect();
        assert_eq!(sels, ["unix:gid:5", "unix:uid:1000"]);
    }

    #[test]
    fn each_field_rule_has_its_variant() {
        let mut d = draft();
        d.spiffe_id = "spiffe://example.org/a//b".into();
        assert_eq!(check(d), Err(EntryError::SpiffeId(IdError::EmptySegment)));
        let mut d = draft();
        d.spiffe_id = "spiffe://other.org/web".into();
        assert!(matches!(
            check(d),
            Err(EntryError::WrongTrustDomain {
                field: "spiffe_id",
                ..
            })
        ));
        let mut d = draft();
        d.spiffe_id = "spiffe://example.org".into();
        assert_eq!(check(d), Err(EntryError::SpiffeId(IdError::NoWorkloadPath)));
        let mut d = draft();
        d.dns_names = vec!["*".into()];
        assert_eq!(
            check(d),
            Err(EntryError::DnsName(
                crate::id::DnsNameError::WildcardTooBroad("*".into())
            ))
        );
        let mut d = draft();
        d.dns_names = vec!["1.2.3.4".into()];
        assert_eq!(
            check(d),
            Err(EntryError::DnsName(crate::id::DnsNameError::IpAddress(
                "1.2.3.4".into()
            )))
        );
        let mut d = draft();
        d.spiffe_id = "spiffe://example.org/sigil/server".into();
        assert!(matches!(check(d), Err(EntryError::ReservedId(_))));
        let mut d = draft();
        d.selectors.clear();
        assert_eq!(check(d), Err(EntryError::NoSelectors));
        let mut d = draft();
        d.selectors = vec!["k8s:ns:default".into()];
        assert_eq!(
            check(d),
            Err(EntryError::Selector(SelectorError::UnknownType(
                "k8s".into()
            )))
        );
        let mut d = draft();
        d.x509_ttl_seconds = -5;
        assert_eq!(
            check(d),
            Err(EntryError::Ttl {
                field: "x509_ttl",
                source: DurationError::NotPositive
            })
        );
        let mut d = draft();
        d.hint = "h".repeat(300);
        assert_eq!(check(d), Err(EntryError::BadHint));
        let mut d = draft();
        d.selectors = (0..65).map(|i| format!("unix:uid:{i}")).collect();
        assert_eq!(check(d), Err(EntryError::TooManySelectors));
    }

    #[test]
    fn uniqueness_ignores_selector_order() {
        let a = check(draft()).unwrap();
        let mut d = draft();
        d.selectors.reverse();
        let b = check(d).unwrap();
        assert_eq!(a.uniqueness_key(), b.uniqueness_key());
    }

    #[test]
    fn entry_ids() {
        assert!(EntryId::parse(&"a".repeat(32)).is_ok());
        assert_eq!(
            EntryId::parse("xyz"),
            Err(EntryError::BadEntryId("xyz".into()))
        );
    }
}
