//! Foreign trust domains' bundles in Workload API answers (SPIFFE Federation §4.2,
//! §7.3; issue 8 §4): a workload receives the bundles of exactly the trust domains its
//! entries federate with, each keyed `spiffe://<td>` and never empty (a trust domain
//! with nothing of the kind asked for is left out), and never in place of its own.

use crate::agent::IdentityProvider;
use crate::authority::Bundle;
use crate::id::TrustDomain;
use crate::registry::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The foreign trust domains `entries` federate with, each once, in order.
fn federated_with<'a>(own: &'a TrustDomain, entries: &'a [Arc<Entry>]) -> Vec<&'a TrustDomain> {
    let mut out: Vec<&TrustDomain> = Vec::new();
    for td in entries.iter().flat_map(|e| e.federates_with.iter()) {
        if td != own && !out.contains(&td) {
            out.push(td);
        }
    }
    out
}

/// The foreign bundles `entries` federate with, as `encode` makes their values, keyed
/// `spiffe://<td>`; the own trust domain `own` is never among them.
pub(super) fn bundles(
    provider: &dyn IdentityProvider,
    own: &TrustDomain,
    entries: &[Arc<Entry>],
    encode: fn(&Bundle) -> Vec<u8>,
) -> BTreeMap<String, Vec<u8>> {
    federated_with(own, entries)
        .into_iter()
        .filter_map(|td| {
            let value = encode(&*provider.federated_bundle(td)?);
            (!value.is_empty()).then(|| (td.id_string(), value))
        })
        .collect()
}

/// The bundle to verify a JWT-SVID of foreign trust domain `td` with, for a caller
/// whose entries are `entries`: only a trust domain they federate with counts.
pub(super) fn bundle_for(
    provider: &dyn IdentityProvider,
    own: &TrustDomain,
    entries: &[Arc<Entry>],
    td: &TrustDomain,
) -> Option<Arc<Bundle>> {
    if !federated_with(own, entries).contains(&td) {
        return None;
    }
    provider.federated_bundle(td)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::agent::{AgentError, JwtIdentity, X509Identity};
    use crate::authority::Authority;
    use crate::id::Selector;
    use crate::registry::EntryId;
    use std::time::{Duration, SystemTime};
    use tokio::sync::watch;

    /// Knows foreign bundles and nothing else.
    struct Foreign(BTreeMap<TrustDomain, Arc<Bundle>>);

    #[tonic::async_trait]
    impl IdentityProvider for Foreign {
        fn matching(&self, _selectors: &[Selector]) -> Vec<Arc<Entry>> {
            Vec::new()
        }
        async fn x509_svid(&self, _entry: &Entry) -> Result<Arc<X509Identity>, AgentError> {
            Err(AgentError::Internal("not used".into()))
        }
        async fn jwt_svid(
            &self,
            _entry: &Entry,
            _audiences: &[String],
        ) -> Result<Arc<JwtIdentity>, AgentError> {
            Err(AgentError::Internal("not used".into()))
        }
        fn bundle(&self) -> Option<Arc<Bundle>> {
            None
        }
        fn changes(&self) -> watch::Receiver<u64> {
            watch::channel(0).1
        }
        fn federated_bundle(&self, td: &TrustDomain) -> Option<Arc<Bundle>> {
            self.0.get(td).cloned()
        }
    }

    fn td(name: &str) -> TrustDomain {
        TrustDomain::parse(name).unwrap()
    }

    fn bundle(name: &str) -> Bundle {
        Authority::generate(
            &td(name),
            SystemTime::now(),
            Duration::from_secs(3600),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
        .bundle()
    }

    fn entry(n: u8, with: &[&str]) -> Arc<Entry> {
        let own = td("example.org");
        Arc::new(Entry {
            id: EntryId::from_random([n; 16]),
            spiffe_id: own.id("/w").unwrap(),
            parent_id: own.id("/agent").unwrap(),
            selectors: vec![],
            x509_ttl_secs: None,
            jwt_ttl_secs: None,
            dns_names: vec![],
            hint: String::new(),
            admin: false,
            federates_with: with.iter().map(|t| td(t)).collect(),
            revision: 1,
            created_at: 0,
        })
    }

    fn jwt_value(b: &Bundle) -> Vec<u8> {
        if b.jwt_authorities.is_empty() {
            return Vec::new();
        }
        b.to_jwt_jwks_json().into_bytes()
    }

    fn provider() -> Foreign {
        let mut x509_only = bundle("x509only.org");
        x509_only.jwt_authorities.clear();
        Foreign(BTreeMap::from([
            (td("other.org"), Arc::new(bundle("other.org"))),
            (td("x509only.org"), Arc::new(x509_only)),
            (td("unasked.org"), Arc::new(bundle("unasked.org"))),
        ]))
    }

    #[test]
    fn workloads_get_exactly_the_foreign_bundles_their_entries_name() {
        let p = provider();
        let own = td("example.org");
        let entries = [
            entry(1, &["other.org", "example.org", "missing.org"]),
            entry(2, &["x509only.org", "other.org"]),
        ];
        let x509 = bundles(&p, &own, &entries, Bundle::x509_concat_der);
        let keys: Vec<&str> = x509.keys().map(String::as_str).collect();
        assert_eq!(keys, ["spiffe://other.org", "spiffe://x509only.org"]);
        assert_eq!(
            x509.get("spiffe://other.org"),
            Some(&p.0[&td("other.org")].x509_concat_der())
        );
        // No value is ever empty: a trust domain without JWT keys is left out.
        let jwt = bundles(&p, &own, &entries, jwt_value);
        let keys: Vec<&str> = jwt.keys().map(String::as_str).collect();
        assert_eq!(keys, ["spiffe://other.org"]);
        assert!(bundles(&p, &own, &[entry(3, &[])], jwt_value).is_empty());
    }

    #[test]
    fn tokens_are_checked_only_against_a_trust_domain_the_caller_federates_with() {
        let p = provider();
        let own = td("example.org");
        let entries = [entry(1, &["other.org"])];
        assert_eq!(
            bundle_for(&p, &own, &entries, &td("other.org")),
            p.0.get(&td("other.org")).cloned()
        );
        // The agent holds unasked.org's bundle for another workload: not for this one.
        assert_eq!(bundle_for(&p, &own, &entries, &td("unasked.org")), None);
        assert_eq!(bundle_for(&p, &own, &[], &td("other.org")), None);
    }
}
