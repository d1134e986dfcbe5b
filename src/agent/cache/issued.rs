//! What the agent checks in an X.509-SVID the server returns before caching it or
//! handing it to a workload: the rules a workload applies, and that the certificate
//! is for the key the agent made.

use crate::agent::AgentError;
use crate::authority::validate_x509_svid_leaf;
use crate::registry::Entry;
use crate::secret::Secret;
use std::time::SystemTime;

/// Checks an X.509-SVID from the server with the rules workloads apply, so a
/// wrong or broken certificate is never cached or handed out.
pub(super) fn check_issued(
    entry: &Entry,
    chain_der: &[Vec<u8>],
    key_pkcs8: &Secret,
    expires_at: SystemTime,
    now: SystemTime,
) -> Result<(), AgentError> {
    let leaf = chain_der
        .first()
        .ok_or_else(|| AgentError::Internal("the server returned an empty chain".into()))?;
    // The Workload API hands out the key with the leaf: they must match, or
    // the workload would hold a certificate it cannot use.
    if !leaf_matches_key(leaf, key_pkcs8) {
        return Err(AgentError::Internal(
            "the server returned an X.509-SVID for another key".into(),
        ));
    }
    let id = validate_x509_svid_leaf(leaf, now).map_err(|e| {
        AgentError::Internal(format!("the server returned an invalid X.509-SVID: {e}"))
    })?;
    if id != entry.spiffe_id {
        return Err(AgentError::Internal(format!(
            "the server returned an X.509-SVID for {id}, expected {}",
            entry.spiffe_id
        )));
    }
    if expires_at <= now {
        return Err(AgentError::Internal(
            "the server returned an expired X.509-SVID".into(),
        ));
    }
    Ok(())
}

fn leaf_matches_key(leaf: &[u8], key_pkcs8: &Secret) -> bool {
    use ring::signature::KeyPair;
    use x509_parser::prelude::FromDer;
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(leaf) else {
        return false;
    };
    let rng = ring::rand::SystemRandom::new();
    let Ok(pair) = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        key_pkcs8.expose(),
        &rng,
    ) else {
        return false;
    };
    cert.public_key().subject_public_key.data.as_ref() == pair.public_key().as_ref()
}
