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
