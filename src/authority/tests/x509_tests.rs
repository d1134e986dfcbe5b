//! CA certificate, X.509-SVID issuance and validation.

use std::process::Command;
use std::time::Duration;

use rcgen::{CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::id::DnsNameError;

fn csr_for(wid: &SpiffeId) -> Vec<u8> {
    generate_key_and_csr(wid).unwrap().1
}

fn unix_of(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn ca_certificate_carries_the_ca_extensions() {
    let ca = authority();
    let (_, cert) = X509Certificate::from_der(ca.ca_cert_der()).unwrap();
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://example.org")]
    );
    let has_ski = cert.extensions().iter().any(|e| {
        matches!(
            e.parsed_extension(),
            ParsedExtension::SubjectKeyIdentifier(_)
        )
    });
    assert!(has_ski);
    assert_eq!(cert.validity().not_before.timestamp(), unix_of(t0()) - 10);
    assert_eq!(cert.validity().not_after.timestamp(), unix_of(t0() + DAY));
    assert_eq!(ca.ca_not_after(), t0() + DAY);
    let subject = cert.subject().to_string();
    assert!(subject.contains("O=sigil"), "{subject}");
    assert!(subject.contains("CN=sigil CA example.org "), "{subject}");

    // Every CA key gets its own subject, so chain builders never confuse two CAs.
    let other = authority();
    let (_, other_cert) = X509Certificate::from_der(other.ca_cert_der()).unwrap();
    assert_ne!(cert.subject().as_raw(), other_cert.subject().as_raw());
}

#[test]
fn issued_leaf_follows_the_x509_svid_rules_and_verifies() {
    let ca = authority();
    let wid = id("spiffe://example.org/ns/prod/sa/web");
    let dns = vec!["web.example.org".to_owned(), "*.web.example.org".to_owned()];
    let svid = ca
        .sign_x509_svid(&csr_for(&wid), &wid, HOUR, &dns, t0())
        .unwrap();
    assert_eq!(svid.spiffe_id, wid);
    assert_eq!(svid.chain_der, vec![svid.leaf_der.clone()]);
    assert_eq!(svid.chain_concat_der(), svid.leaf_der);
    assert_eq!(svid.expires_at, t0() + HOUR);

    let roots = ca.bundle().x509_authorities;
    assert_eq!(
        verify_x509_svid(&svid.leaf_der, &[], &roots, t0()),
        Ok(wid.clone())
    );
    assert_eq!(
        validate_x509_svid_leaf(&svid.leaf_der, t0()),
        Ok(wid.clone())
    );

    let (_, leaf) = X509Certificate::from_der(&svid.leaf_der).unwrap();
    assert_eq!(leaf.validity().not_before.timestamp(), unix_of(t0()) - 10);
    assert_eq!(leaf.validity().not_after.timestamp(), unix_of(t0() + HOUR));
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    let names = &leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(
        names,
        &vec![
            GeneralName::URI(wid.as_str()),
            GeneralName::DNSName("web.example.org"),
            GeneralName::DNSName("*.web.example.org"),
        ]
    );
    // 128-bit random positive serial: 16 bytes, plus a leading zero when the top bit is set.
    let serial = leaf.raw_serial();
    assert!(
        serial.len() == 16 || (serial.len() == 17 && serial[0] == 0),
        "{serial:?}"
    );
    assert!(leaf.serial > 0u8.into());
    // AuthorityKeyIdentifier names the CA's SubjectKeyIdentifier.
    let (_, ca_cert) = X509Certificate::from_der(ca.ca_cert_der()).unwrap();
    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    assert_eq!(aki, ski);
    // ... and is the id the CA key goes by, which agents and the server read back.
    let ca_id = ca
        .keys()
        .into_iter()
        .find(|k| k.kind == KeyKind::X509Ca && k.state == KeyState::Active)
        .unwrap()
        .id;
    assert_eq!(ski.map(hex::encode), Some(ca_id.clone()));
    assert_eq!(signing_ca_id(&svid.leaf_der), Some(ca_id));
    assert_eq!(
        signing_ca_id(ca.ca_cert_der()),
        None,
        "a root names no signer"
    );
    assert_eq!(signing_ca_id(b"not a certificate"), None);

    // Two SVIDs for the same key never share a serial.
    let again = ca
        .sign_x509_svid(&csr_for(&wid), &wid, HOUR, &[], t0())
        .unwrap();
    let (_, again) = X509Certificate::from_der(&again.leaf_der).unwrap();
    assert_ne!(again.raw_serial(), leaf.raw_serial());
}

#[test]
fn ttl_beyond_ca_life_is_capped() {
    let ca = authority();
    let wid = id("spiffe://example.org/long");
    let now = t0() + 20 * HOUR;
    let svid = ca
        .sign_x509_svid(&csr_for(&wid), &wid, 10 * HOUR, &[], now)
        .unwrap();
    assert_eq!(svid.expires_at, ca.ca_not_after());
    let (_, leaf) = X509Certificate::from_der(&svid.leaf_der).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        unix_of(ca.ca_not_after())
    );
}

#[test]
fn issuance_refusals_name_the_rule() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    let csr = csr_for(&wid);

    let err = ca
        .sign_x509_svid(b"\x30\x03garbage", &wid, HOUR, &[], t0())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::Csr(CsrError::Malformed)),
        "{err:?}"
    );

    let mut trailing = csr.clone();
    trailing.push(0);
    let err = ca
        .sign_x509_svid(&trailing, &wid, HOUR, &[], t0())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::Csr(CsrError::TrailingData)),
        "{err:?}"
    );

    let foreign = id("spiffe://other.org/w");
    let err = ca
        .sign_x509_svid(&csr, &foreign, HOUR, &[], t0())
        .unwrap_err();
    assert!(
        matches!(&err, AuthorityError::TrustDomainMismatch { expected, found } if expected == "example.org" && found == "other.org"),
        "{err:?}"
    );

    let err = ca
        .sign_x509_svid(&csr, &wid, Duration::from_millis(500), &[], t0())
        .unwrap_err();
    assert!(matches!(err, AuthorityError::InvalidTtl), "{err:?}");

    let err = ca
        .sign_x509_svid(&csr, &wid, HOUR, &["bad_name".into()], t0())
        .unwrap_err();
    assert!(
        matches!(&err, AuthorityError::InvalidDnsName(DnsNameError::BadCharacter(name)) if name == "bad_name"),
        "{err:?}"
    );

    let err = ca
        .sign_x509_svid(&csr, &wid, HOUR, &[], t0() + DAY)
        .unwrap_err();
    assert!(matches!(err, AuthorityError::CaExpired), "{err:?}");
    let err = ca
        .sign_x509_svid(&csr, &wid, HOUR, &[], t0() - HOUR)
        .unwrap_err();
    assert!(matches!(err, AuthorityError::CaNotYetValid), "{err:?}");
}

#[test]
fn csr_signed_by_another_key_is_refused() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    let csr = csr_for(&wid);
    // Swap the CSR's public key for another key's: the signature no longer matches.
    let other = KeyPair::generate().unwrap();
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&csr).unwrap();
    let mine = parsed
        .certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec();
    let pos = csr
        .windows(mine.len())
        .position(|w| w == mine.as_slice())
        .unwrap();
    let mut tampered = csr.clone();
    tampered[pos..pos + mine.len()].copy_from_slice(other.public_key_raw());
    let err = ca
        .sign_x509_svid(&tampered, &wid, HOUR, &[], t0())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::Csr(CsrError::BadSignature)),
        "{err:?}"
    );

    // ecdsa-with-SHA256 (…04 03 02) turned into ecdsa-with-SHA512 (…04 03 04).
    let oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let pos = csr.windows(oid.len()).position(|w| w == oid).unwrap();
    let mut sha512 = csr.clone();
    sha512[pos + oid.len() - 1] = 0x04;
    let err = ca
        .sign_x509_svid(&sha512, &wid, HOUR, &[], t0())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::Csr(CsrError::UnsupportedAlgorithm)),
        "{err:?}"
    );
}

#[test]
fn p384_and_ed25519_csrs_are_accepted() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(wid.as_str().try_into().unwrap())];
        let csr = params.serialize_request(&key).unwrap();
        let svid = ca.sign_x509_svid(csr.der(), &wid, HOUR, &[], t0()).unwrap();
        let roots = ca.bundle().x509_authorities;
        assert_eq!(
            verify_x509_svid(&svid.leaf_der, &[], &roots, t0()),
            Ok(wid.clone())
        );
    }
}

/// A self-signed certificate shaped by `shape`, for the leaf rule tests.
fn leaf_with(shape: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2028, 1, 1);
    params.subject_alt_names = vec![SanType::URI("spiffe://example.org/w".try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    shape(&mut params);
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn leaf_rules_each_have_their_error() {
    let ok = leaf_with(|_| {});
    assert_eq!(
        validate_x509_svid_leaf(&ok, t0()),
        Ok(id("spiffe://example.org/w"))
    );
    let uri = |s: &str| SanType::URI(s.try_into().unwrap());
    let cases: Vec<(Vec<u8>, SvidError)> = vec![
        (b"garbage".to_vec(), SvidError::Malformed),
        ([ok.as_slice(), &[0]].concat(), SvidError::TrailingData),
        (
            leaf_with(|p| {
                p.subject_alt_names = vec![SanType::DnsName("a.org".try_into().unwrap())]
            }),
            SvidError::MissingUriSan,
        ),
        (
            leaf_with(|p| p.subject_alt_names.push(uri("spiffe://example.org/x"))),
            SvidError::MultipleUriSans,
        ),
        (
            leaf_with(|p| p.subject_alt_names = vec![uri("https://example.org/w")]),
            SvidError::BadSpiffeId(crate::id::IdError::WrongScheme),
        ),
        (
            leaf_with(|p| p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained)),
            SvidError::LeafIsCa,
        ),
        (
            leaf_with(|p| p.key_usages.clear()),
            SvidError::MissingKeyUsage,
        ),
        (
            leaf_with(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]),
            SvidError::MissingDigitalSignature,
        ),
        (
            leaf_with(|p| p.key_usages.push(KeyUsagePurpose::KeyCertSign)),
            SvidError::ForbiddenKeyUsage,
        ),
        (
            leaf_with(|p| p.key_usages.push(KeyUsagePurpose::CrlSign)),
            SvidError::ForbiddenKeyUsage,
        ),
        (
            leaf_with(|p| p.not_before = rcgen::date_time_ymd(2027, 6, 1)),
            SvidError::NotYetValid,
        ),
        (
            leaf_with(|p| p.not_after = rcgen::date_time_ymd(2026, 6, 1)),
            SvidError::Expired,
        ),
    ];
    for (der, want) in cases {
        assert_eq!(validate_x509_svid_leaf(&der, t0()), Err(want));
    }
}

#[test]
fn chain_verification_refuses_foreign_and_expired() {
    let ca = authority();
    let other = authority();
    let wid = id("spiffe://example.org/w");
    let svid = ca
        .sign_x509_svid(&csr_for(&wid), &wid, HOUR, &[], t0())
        .unwrap();
    let foreign_roots = other.bundle().x509_authorities;
    assert_eq!(
        verify_x509_svid(&svid.leaf_der, &[], &foreign_roots, t0()),
        Err(SvidError::UntrustedChain)
    );
    assert_eq!(
        verify_x509_svid(&svid.leaf_der, &[], &[], t0()),
        Err(SvidError::UntrustedChain)
    );
    let roots = ca.bundle().x509_authorities;
    assert_eq!(
        verify_x509_svid(&svid.leaf_der, &[], &roots, t0() + 2 * HOUR),
        Err(SvidError::Expired)
    );
    // Both bundles together: the right root is found.
    let both = [foreign_roots, roots].concat();
    assert_eq!(verify_x509_svid(&svid.leaf_der, &[], &both, t0()), Ok(wid));
}

#[test]
fn dns_names_follow_the_entry_rules_and_are_lowercased() {
    let ca = authority();
    let wid = id("spiffe://example.org/w");
    let csr = csr_for(&wid);
    let dns = vec!["Web.Example.org".to_owned(), "*.api.example.org".to_owned()];
    let svid = ca.sign_x509_svid(&csr, &wid, HOUR, &dns, t0()).unwrap();
    let (_, leaf) = X509Certificate::from_der(&svid.leaf_der).unwrap();
    let names = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(
        names[1..],
        [
            GeneralName::DNSName("web.example.org"),
            GeneralName::DNSName("*.api.example.org"),
        ]
    );
    // What entry creation refuses, the CA refuses with the same rule: nothing accepted
    // for an entry can fail at issuance, and nothing refused there lands in a leaf.
    for (bad, want) in [
        ("*", DnsNameError::WildcardTooBroad("*".into())),
        ("*.org", DnsNameError::WildcardTooBroad("*.org".into())),
        ("1.2.3.4", DnsNameError::IpAddress("1.2.3.4".into())),
        ("::1", DnsNameError::IpAddress("::1".into())),
        ("a..b", DnsNameError::EmptyLabel("a..b".into())),
        ("a.*.org", DnsNameError::BadWildcard("a.*.org".into())),
    ] {
        let err = ca
            .sign_x509_svid(&csr, &wid, HOUR, &[bad.to_owned()], t0())
            .unwrap_err();
        assert!(
            matches!(&err, AuthorityError::InvalidDnsName(e) if *e == want),
            "{bad}: {err:?}"
        );
        assert!(err.is_caller_error());
    }
}

/// A temporary file holding `bundle` as PEM (the core itself never touches files).
fn pem_file(bundle: &Bundle) -> tempfile::NamedTempFile {
    use std::io::Write as _;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bundle.to_pem().as_bytes()).unwrap();
    f.flush().unwrap();
    f
}

#[test]
fn openssl_accepts_the_svid_and_bundle() {
    let ca = authority();
    let wid = id("spiffe://example.org/ns/prod/sa/web");
    let svid = ca
        .sign_x509_svid(
            &csr_for(&wid),
            &wid,
            HOUR,
            &["web.example.org".into()],
            t0(),
        )
        .unwrap();
    let leaf_bundle = Bundle {
        x509_authorities: vec![svid.leaf_der.clone()],
        ..ca.bundle()
    };
    let (bundle_file, svid_file) = (pem_file(&ca.bundle()), pem_file(&leaf_bundle));
    let (bundle_pem, svid_pem) = (bundle_file.path(), svid_file.path());

    let at = unix_of(t0()).to_string();
    let out = Command::new("openssl")
        .args(["verify", "-attime", &at, "-purpose", "sslclient", "-CAfile"])
        .arg(bundle_pem)
        .arg(svid_pem)
        .output()
        .expect("openssl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": OK"), "{stdout}");

    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(svid_pem)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "URI:spiffe://example.org/ns/prod/sa/web",
        "DNS:web.example.org",
        "CA:FALSE",
        "Digital Signature",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Key Usage: critical",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("Certificate Sign"), "{text}");
}

#[test]
fn csr_parser_survives_mutations() {
    let wid = id("spiffe://example.org/w");
    let csr = csr_for(&wid);
    // Flip every byte once: parsing must fail cleanly or still verify, never panic.
    for i in 0..csr.len() {
        let mut m = csr.clone();
        m[i] ^= 0x5a;
        let _ = crate::authority::csr::parse_and_verify(&m);
    }
}
