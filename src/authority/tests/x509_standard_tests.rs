//! The SPIFFE X509-SVID standard, one test per rule, on the leaf and CA certificates
//! sigil issues (and, where the standard addresses validators, on the checks sigil
//! applies to certificates from elsewhere). Each test is named after its section.

use rcgen::{CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

/// A leaf for `spiffe://example.org/ns/web` with two DNS SANs, and its PKCS#8 key.
fn issued() -> (Authority, Vec<u8>, crate::secret::Secret) {
    let ca = authority();
    let wid = id("spiffe://example.org/ns/web");
    let (key, csr) = generate_key_and_csr(&wid).unwrap();
    let dns = ["web.example.org".to_owned(), "*.web.example.org".to_owned()];
    let svid = ca.sign_x509_svid(&csr, &wid, HOUR, &dns, t0()).unwrap();
    (ca, svid.leaf_der, key)
}

fn cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn uri_sans<'a>(c: &'a X509Certificate<'_>) -> Vec<&'a str> {
    c.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect()
}

/// A self-signed leaf naming `uri`, otherwise valid.
fn foreign_leaf(uris: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2028, 1, 1);
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let der = params.self_signed(&key).unwrap().der().to_vec();
    (der, key.serialize_der())
}

#[test]
fn x509_svid_2_leaf_has_exactly_one_uri_san() {
    let (_, leaf, _) = issued();
    assert_eq!(uri_sans(&cert(&leaf)), ["spiffe://example.org/ns/web"]);
}

#[test]
fn x509_svid_2_validators_reject_more_than_one_uri_san() {
    let (two, _) = foreign_leaf(&["spiffe://example.org/a", "spiffe://example.org/b"]);
    assert_eq!(
        validate_x509_svid_leaf(&two, t0()),
        Err(SvidError::MultipleUriSans)
    );
}

#[test]
fn x509_svid_3_1_leaf_spiffe_id_has_a_path() {
    let ca = authority();
    let td_id = id("spiffe://example.org");
    let (_, csr) = generate_key_and_csr(&td_id).unwrap();
    let err = ca
        .sign_x509_svid(&csr, &td_id, HOUR, &[], t0())
        .unwrap_err();
    assert!(
        matches!(&err, AuthorityError::NoWorkloadPath { id } if id == "spiffe://example.org"),
        "{err:?}"
    );
    assert!(err.is_caller_error());
    assert_eq!(
        err.to_string(),
        "spiffe_id: spiffe://example.org has no path: it names the trust domain itself, not a workload"
    );
}

#[test]
fn x509_svid_3_1_leaf_has_a_subject_or_a_critical_uri_san() {
    let (_, leaf, _) = issued();
    let c = cert(&leaf);
    let has_subject = c.subject().iter_attributes().next().is_some();
    let san_critical = c
        .extensions()
        .iter()
        .find(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
        .unwrap()
        .critical;
    assert!(has_subject || san_critical);
}

#[test]
fn x509_svid_3_2_ca_spiffe_id_has_no_path() {
    let ca = authority();
    let c = cert(ca.ca_cert_der());
    assert_eq!(uri_sans(&c), ["spiffe://example.org"]);
}

#[test]
fn x509_svid_4_1_ca_sets_ca_true_and_leaf_sets_ca_false() {
    let (ca, leaf, _) = issued();
    let (ca_cert, leaf_cert) = (cert(ca.ca_cert_der()), cert(&leaf));
    assert!(ca_cert.basic_constraints().unwrap().unwrap().value.ca);
    assert!(!leaf_cert.basic_constraints().unwrap().unwrap().value.ca);
}

#[test]
fn x509_svid_4_3_key_usage_is_set_and_critical_on_every_svid() {
    let (ca, leaf, _) = issued();
    for der in [ca.ca_cert_der(), leaf.as_slice()] {
        let c = cert(der);
        assert!(c.key_usage().unwrap().unwrap().critical);
    }
}

#[test]
fn x509_svid_4_3_ca_sets_key_cert_sign() {
    let ca = authority();
    let c = cert(ca.ca_cert_der());
    let ku = c.key_usage().unwrap().unwrap();
    assert!(ku.value.key_cert_sign());
    assert!(
        !ku.value.digital_signature(),
        "set only on leaves (Appendix A)"
    );
}

#[test]
fn x509_svid_4_3_leaf_sets_digital_signature_and_never_cert_or_crl_sign() {
    let (_, leaf, _) = issued();
    let c = cert(&leaf);
    let ku = c.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
}

#[test]
fn x509_svid_4_4_leaf_eku_has_server_and_client_auth() {
    let (_, leaf, _) = issued();
    let c = cert(&leaf);
    let eku = c.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
}

#[test]
fn x509_svid_4_4_the_issuer_check_refuses_an_eku_without_both_purposes() {
    // The template always sets both; this is the re-check that would catch a template
    // that did not.
    use crate::authority::x509::check_issued_leaf;
    let (_, leaf, _) = issued();
    assert_eq!(
        check_issued_leaf(&leaf, t0()),
        Ok(id("spiffe://example.org/ns/web"))
    );
    for purposes in [
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning],
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2028, 1, 1);
        params.subject_alt_names = vec![SanType::URI("spiffe://example.org/w".try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = purposes;
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(
            check_issued_leaf(&der, t0()),
            Err(SvidError::MissingServerOrClientAuth)
        );
    }
}

#[test]
fn x509_svid_5_2_validators_reject_a_leaf_without_a_path() {
    let (leaf, _) = foreign_leaf(&["spiffe://example.org"]);
    assert_eq!(
        validate_x509_svid_leaf(&leaf, t0()),
        Err(SvidError::LeafIdHasNoPath)
    );
    // The Rust spiffe crate refuses such a leaf the same way.
    let (leaf, key) = foreign_leaf(&["spiffe://example.org"]);
    assert!(matches!(
        spiffe::X509Svid::parse_from_der(&leaf, &key),
        Err(spiffe::X509SvidError::LeafSpiffeIdMissingPath)
    ));
}

#[test]
fn x509_svid_leaf_is_accepted_by_the_spiffe_crate() {
    let (_, leaf, key) = issued();
    let svid = spiffe::X509Svid::parse_from_der(&leaf, key.expose()).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/ns/web");
}

#[test]
fn spec_3_1_leaf_serial_is_a_positive_128_bit_random_number() {
    let (ca, leaf, _) = issued();
    let c = cert(&leaf);
    let raw = c.raw_serial();
    // 16 random bytes, plus a zero byte when the top bit is set (RFC 5280 §4.1.2.2:
    // positive, at most 20 octets).
    assert!(
        raw.len() == 16 || (raw.len() == 17 && raw[0] == 0),
        "{raw:?}"
    );
    assert!(c.serial > 0u8.into());
    let ca_serial = cert(ca.ca_cert_der()).raw_serial().to_vec();
    assert!(ca_serial.len() == 16 || ca_serial.len() == 17);
    assert_ne!(ca_serial, raw);
}

#[test]
fn spec_3_1_leaf_validity_is_backdated_and_capped_at_the_ca() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    let (_, csr) = generate_key_and_csr(&wid).unwrap();
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let svid = ca.sign_x509_svid(&csr, &wid, HOUR, &[], t0()).unwrap();
    let v = cert(&svid.leaf_der).validity().clone();
    assert_eq!(v.not_before.timestamp(), unix(t0()) - 10);
    assert_eq!(v.not_after.timestamp(), unix(t0() + HOUR));
    let late = t0() + DAY - HOUR / 2;
    let svid = ca.sign_x509_svid(&csr, &wid, HOUR, &[], late).unwrap();
    let v = cert(&svid.leaf_der).validity().clone();
    assert_eq!(v.not_after.timestamp(), unix(ca.ca_not_after()));
    // The CA names itself by key: issuer and AuthorityKeyIdentifier point at it.
    let c = cert(&svid.leaf_der);
    assert_eq!(
        c.issuer().as_raw(),
        cert(ca.ca_cert_der()).subject().as_raw()
    );
    assert!(c.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));
}
