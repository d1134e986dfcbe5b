//! Deciding whether a document is a usable bundle of a foreign trust domain, before it is
//! trusted (SPIFFE Federation §4.2 and §7.3; Trust Domain and Bundle §4; X509-SVID §6.2).
//! Pure: the same rules apply to a bundle fetched from an endpoint and to one an operator
//! sets with `sigil bundle set`, and a refused document never replaces the bundle kept.
//!
//! The rules, each an error variant:
//!
//! - The trust domain is not this server's own: our bundle comes from our CA alone.
//! - The document parses as a SPIFFE bundle under the consumer rules of
//!   [`Bundle::from_spiffe_json`] (not JSON, no `keys`, a broken key: refused).
//! - At least one `x509-svid` key carries a certificate. X509-SVID §6.2 says an
//!   `x509-svid` key without `x5c` "MUST be ignored", and the parser does so; a bundle
//!   that is left with no X.509 authority at all is refused rather than accepted empty,
//!   since installing it would make every X.509-SVID of that trust domain unverifiable
//!   (for a fetched bundle, in place of a good one). A bundle with one usable root and
//!   some such keys is accepted, with the usable roots only.
//! - No X.509 authority names another trust domain. Bundles carry no trust domain name
//!   (Federation §5.1), but CA certificates carry their trust domain's SPIFFE ID
//!   (`spiffe://<td>`) as a URI SAN; one that names a different trust domain means the
//!   endpoint serves someone else's bundle, and trusting it for this name would let that
//!   trust domain's CA sign identities here (§7.3). A root without a SPIFFE ID is
//!   accepted: the standards do not require one.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::authority::{Bundle, BundleError};
use crate::id::{SpiffeId, TrustDomain};

/// Why a foreign bundle was refused. Each variant names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForeignBundleError {
    /// The trust domain is this server's own.
    #[error("{0} is this server's own trust domain: its bundle comes from its own CA")]
    OwnTrustDomain(String),
    /// The document is not a SPIFFE bundle.
    #[error("not a SPIFFE bundle: {0}")]
    Malformed(#[from] BundleError),
    /// No `x509-svid` key carries a certificate.
    #[error(
        "no x509-svid key with a certificate (keys without x5c are ignored, X509-SVID §6.2): the trust domain's X.509-SVIDs could not be verified"
    )]
    NoX509Authority,
    /// An X.509 authority names another trust domain in its SPIFFE ID.
    #[error("an X.509 authority belongs to trust domain {found}, not {expected}")]
    WrongTrustDomain {
        /// The trust domain the bundle was offered for.
        expected: String,
        /// The trust domain the authority names.
        found: String,
    },
}

/// Checks `json` as the bundle of foreign trust domain `td`, for a server whose own
/// trust domain is `own`; returns the bundle to keep.
pub fn check_foreign_bundle(
    own: &TrustDomain,
    td: &TrustDomain,
    json: &str,
) -> Result<Bundle, ForeignBundleError> {
    if td == own {
        return Err(ForeignBundleError::OwnTrustDomain(td.to_string()));
    }
    let bundle = Bundle::from_spiffe_json(td, json)?;
    if bundle.x509_authorities.is_empty() {
        return Err(ForeignBundleError::NoX509Authority);
    }
    for der in &bundle.x509_authorities {
        if let Some(found) = spiffe_trust_domain(der).filter(|found| found != td) {
            return Err(ForeignBundleError::WrongTrustDomain {
                expected: td.to_string(),
                found: found.to_string(),
            });
        }
    }
    Ok(bundle)
}

/// The trust domain of the first SPIFFE ID among a certificate's URI SANs, if any.
/// The parser accepted the certificate already, so one that does not parse here has no
/// SANs to offer.
fn spiffe_trust_domain(der: &[u8]) -> Option<TrustDomain> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => SpiffeId::parse(uri).ok().map(|id| id.trust_domain()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::authority::Authority;
    use std::time::{Duration, SystemTime};

    fn td(name: &str) -> TrustDomain {
        TrustDomain::parse(name).unwrap()
    }

    fn bundle_json(name: &str) -> String {
        Authority::generate(
            &td(name),
            SystemTime::now(),
            Duration::from_secs(3600),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
        .bundle()
        .to_spiffe_json()
    }

    fn check(json: &str) -> Result<Bundle, ForeignBundleError> {
        check_foreign_bundle(&td("example.org"), &td("other.org"), json)
    }

    #[test]
    fn a_bundle_of_the_trust_domain_is_kept_whole() {
        let json = bundle_json("other.org");
        let b = check(&json).unwrap();
        assert_eq!(b.trust_domain, td("other.org"));
        assert_eq!(b.x509_authorities.len(), 1);
        assert_eq!(b.jwt_authorities.len(), 1);
        assert_eq!(b.to_spiffe_json(), json);
    }

    #[test]
    fn negative_own_trust_domain() {
        let json = bundle_json("example.org");
        assert_eq!(
            check_foreign_bundle(&td("example.org"), &td("example.org"), &json),
            Err(ForeignBundleError::OwnTrustDomain("example.org".into()))
        );
    }

    #[test]
    fn negative_not_json() {
        assert_eq!(
            check("<html>moved</html>"),
            Err(ForeignBundleError::Malformed(BundleError::NotJsonObject))
        );
        assert_eq!(
            check("{\"spiffe_sequence\": 1}"),
            Err(ForeignBundleError::Malformed(BundleError::MissingKeys))
        );
    }

    #[test]
    fn negative_x509_svid_keys_without_a_certificate() {
        let json = r#"{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256"},
            {"use":"x509-svid","kty":"EC","crv":"P-256","x5c":[]}]}"#;
        assert_eq!(check(json), Err(ForeignBundleError::NoX509Authority));
        // A JWT-only bundle leaves X.509-SVIDs unverifiable too.
        let mut doc: serde_json::Value = serde_json::from_str(&bundle_json("other.org")).unwrap();
        doc["keys"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["use"] == "jwt-svid");
        assert_eq!(
            check(&doc.to_string()),
            Err(ForeignBundleError::NoX509Authority)
        );
    }

    #[test]
    fn a_key_without_a_certificate_beside_a_usable_root_is_ignored() {
        let mut doc: serde_json::Value = serde_json::from_str(&bundle_json("other.org")).unwrap();
        doc["keys"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"use": "x509-svid", "kty": "EC"}));
        assert_eq!(check(&doc.to_string()).unwrap().x509_authorities.len(), 1);
    }

    #[test]
    fn negative_wrong_trust_domain() {
        assert_eq!(
            check(&bundle_json("evil.org")),
            Err(ForeignBundleError::WrongTrustDomain {
                expected: "other.org".into(),
                found: "evil.org".into(),
            })
        );
        // One foreign root among good ones is enough to refuse the whole bundle.
        let good: serde_json::Value = serde_json::from_str(&bundle_json("other.org")).unwrap();
        let evil: serde_json::Value = serde_json::from_str(&bundle_json("evil.org")).unwrap();
        let mut keys = good["keys"].as_array().unwrap().clone();
        keys.push(evil["keys"][0].clone());
        let mixed = serde_json::json!({ "keys": keys }).to_string();
        assert!(matches!(
            check(&mixed),
            Err(ForeignBundleError::WrongTrustDomain { .. })
        ));
    }
}
