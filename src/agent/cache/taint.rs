//! Keys an operator marked compromised (SPEC §7, issue 8 §3), as the server pushes
//! them: every X.509-SVID a tainted CA signed is re-issued at once, not at half-life,
//! and every cached JWT-SVID a tainted key signed is forgotten, so the next fetch
//! mints one with the key that replaced it.
//!
//! What signed a credential is read from the credential itself: an X.509-SVID's
//! AuthorityKeyIdentifier is the signing CA's id (its SubjectKeyIdentifier in hex),
//! a JWT-SVID's header `kid` the signing key's. A credential whose signer cannot be
//! read counts as signed by no tainted key: the server issues every SVID with both,
//! and the rotation at half-life still replaces it.

use super::{CachedX509, IdentityCache, X509Slot};
use crate::sync::{lock, read, write};
use std::collections::HashSet;

/// The tainted keys still in the bundle, by id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Taints {
    /// CA keys, by hex SubjectKeyIdentifier.
    pub(super) x509: HashSet<String>,
    /// JWT signing keys, by `kid`.
    pub(super) jwt: HashSet<String>,
}

impl Taints {
    /// Whether the CA with `issuer` id is tainted.
    pub(super) fn ca(&self, issuer: Option<&str>) -> bool {
        issuer.is_some_and(|i| self.x509.contains(i))
    }
}

impl IdentityCache {
    /// Applies the server's list of tainted keys: cached X.509-SVIDs their CA signed
    /// become due now (the rotation task re-issues them at once), cached JWT-SVIDs
    /// their key signed are forgotten. Later issuances are checked against the list
    /// too. Returns how many X.509-SVIDs were made due.
    pub fn set_taints(&self, x509: Vec<String>, jwt: Vec<String>) -> usize {
        let taints = Taints {
            x509: x509.into_iter().collect(),
            jwt: jwt.into_iter().collect(),
        };
        let now = (self.clock)();
        // Stored before the slots are scanned: an SVID issued meanwhile is checked
        // against the new list when it is stored (see `issue_x509`).
        *write(&self.taints) = taints.clone();
        let mut due = 0;
        for slot in lock(&self.x509).values() {
            let mut current = write(&slot.current);
            if let Some(c) = current.as_mut()
                && taints.ca(c.issuer.as_deref())
                && c.renew_at > now
            {
                c.renew_at = now;
                due += 1;
            }
        }
        self.jwt.forget_signed_by(&taints.jwt);
        if due > 0 {
            tracing::info!(svids = due, "re-issuing X.509-SVIDs signed by a tainted CA");
            self.reschedule.notify_one();
        }
        due
    }

    /// Stores `fresh` in `slot`; true when it replaced an earlier SVID. Checked against
    /// the taints after storing (`set_taints` stores the taints before it scans), so an
    /// SVID a tainted CA signed is made due whichever of the two comes first.
    pub(super) fn store(&self, slot: &X509Slot, fresh: CachedX509) -> bool {
        let replaced = slot.store(fresh);
        let taints = read(&self.taints);
        if let Some(c) = write(&slot.current).as_mut()
            && taints.ca(c.issuer.as_deref())
        {
            c.renew_at = c.identity.issued_at;
            self.reschedule.notify_one();
        }
        replaced
    }
}

#[cfg(test)]
mod tests;
