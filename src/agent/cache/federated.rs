//! The foreign trust domains' bundles the server pushed for this agent's entries
//! (SPIFFE Federation, issue 8 §4). Each is kept under its own trust domain and handed
//! only to workloads whose entries federate with it; one never stands in for another.

use crate::authority::Bundle;
use crate::id::TrustDomain;
use crate::sync::{read, write};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Foreign bundles by trust domain; replaced whole on every push.
#[derive(Debug, Default)]
pub(super) struct Federated(RwLock<Arc<BTreeMap<TrustDomain, Arc<Bundle>>>>);

impl Federated {
    /// Replaces the set; true when it changed.
    pub(super) fn replace(&self, next: BTreeMap<TrustDomain, Bundle>) -> bool {
        let mut guard = write(&self.0);
        let same = guard.len() == next.len()
            && next
                .iter()
                .all(|(td, b)| guard.get(td).is_some_and(|old| **old == *b));
        if same {
            return false;
        }
        *guard = Arc::new(next.into_iter().map(|(td, b)| (td, Arc::new(b))).collect());
        true
    }

    /// The bundle of `td`, if one was pushed.
    pub(super) fn get(&self, td: &TrustDomain) -> Option<Arc<Bundle>> {
        read(&self.0).get(td).cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::authority::Authority;
    use std::time::{Duration, SystemTime};

    fn bundle(name: &str) -> Bundle {
        Authority::generate(
            &TrustDomain::parse(name).unwrap(),
            SystemTime::now(),
            Duration::from_secs(3600),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
        .bundle()
    }

    #[test]
    fn a_push_changes_the_set_only_when_it_differs() {
        let f = Federated::default();
        let td = TrustDomain::parse("other.org").unwrap();
        let b = bundle("other.org");
        assert!(f.replace(BTreeMap::from([(td.clone(), b.clone())])));
        assert!(
            !f.replace(BTreeMap::from([(td.clone(), b.clone())])),
            "same set"
        );
        assert_eq!(f.get(&td).as_deref(), Some(&b));
        let mut newer = b.clone();
        newer.sequence += 1;
        assert!(f.replace(BTreeMap::from([(td.clone(), newer)])));
        assert!(f.replace(BTreeMap::new()), "the trust domain left");
        assert_eq!(f.get(&td), None);
    }
}
