//! Tests for `[federation]`: the example, defaults, and every refusal naming its key.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
use super::*;
use crate::config::ServerConfig;

const SERVER: &str = "trust_domain = \"example.org\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"a.sock\"\n[policy]\ndir = \"p\"\n";
const PEER: &str = "[[federation.trust_domain]]\nname = \"other.org\"\nurl = \"https://127.0.0.1:9443\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://other.org/sigil/server\"\nbootstrap_bundle = \"other.json\"\n";

fn parse(federation: &str) -> Result<FederationConfig, ConfigError> {
    ServerConfig::parse(
        Path::new("/etc/sigil/s.toml"),
        &format!("{SERVER}{federation}"),
    )
    .map(|c| c.federation)
}

fn invalid_key(r: Result<FederationConfig, ConfigError>) -> &'static str {
    match r {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn the_example_configures_both_sides() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let c = ServerConfig::load(&dir.join("server.example.toml"))
        .unwrap()
        .federation;
    let endpoint = c.bundle_endpoint.unwrap();
    assert_eq!(endpoint.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(endpoint.profile, EndpointProfile::HttpsSpiffe);
    let [other] = c.trust_domains.as_slice() else {
        panic!("{:?}", c.trust_domains);
    };
    assert_eq!(other.name.as_str(), "other.org");
    assert_eq!(other.url.host(), "127.0.0.1");
    assert_eq!(other.url.port(), 9443);
    assert_eq!(other.url.path(), "/");
    assert_eq!(
        other.profile,
        ForeignProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::parse("spiffe://other.org/sigil/server").unwrap(),
            bootstrap_bundle: Some(PathBuf::from("/etc/sigil/other.org.json")),
        }
    );
}

#[test]
fn absent_section_federates_with_nobody() {
    assert_eq!(parse("").unwrap(), FederationConfig::default());
}

#[test]
fn relative_files_resolve_against_the_config() {
    let c = parse(PEER).unwrap();
    let ForeignProfile::HttpsSpiffe {
        bootstrap_bundle, ..
    } = &c.trust_domains[0].profile
    else {
        panic!("{c:?}");
    };
    assert_eq!(
        bootstrap_bundle.as_deref(),
        Some(Path::new("/etc/sigil/other.json"))
    );
    let web = parse("[federation.bundle_endpoint]\nlisten = \"[::1]:8443\"\nprofile = \"https_web\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n").unwrap();
    assert_eq!(
        web.bundle_endpoint.unwrap().profile,
        EndpointProfile::HttpsWeb {
            cert_file: "/etc/sigil/c.pem".into(),
            key_file: "/etc/sigil/k.pem".into(),
        }
    );
}

#[test]
fn urls_follow_the_standard() {
    let u = EndpointUrl::parse("https://[::1]/spiffe/bundle.json?td=a").unwrap();
    assert_eq!(
        (u.host(), u.port(), u.path()),
        ("::1", 443, "/spiffe/bundle.json?td=a")
    );
    for bad in [
        "http://a.org",
        "https://user@a.org/",
        "a.org",
        "https:///x",
        "ftp://a",
    ] {
        assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_values_name_the_key() {
    let endpoint = |rest: &str| format!("[federation.bundle_endpoint]\n{rest}");
    let table: Vec<(String, &str)> = vec![
        (
            endpoint("listen = \"nowhere\"\nprofile = \"https_spiffe\"\n"),
            "federation.bundle_endpoint.listen",
        ),
        (
            endpoint("listen = \"127.0.0.1:1\"\nprofile = \"https\"\n"),
            "federation.bundle_endpoint.profile",
        ),
        (
            endpoint("listen = \"127.0.0.1:1\"\nprofile = \"https_web\"\ncert_file = \"c\"\n"),
            "federation.bundle_endpoint.key_file",
        ),
        (
            endpoint("listen = \"127.0.0.1:1\"\nprofile = \"https_spiffe\"\nkey_file = \"k\"\n"),
            "federation.bundle_endpoint.key_file",
        ),
        (
            PEER.replace("other.org\"\nurl", "Other.org\"\nurl"),
            "federation.trust_domain.name",
        ),
        (
            PEER.replace("other.org\"\nurl", "example.org\"\nurl"),
            "federation.trust_domain.name",
        ),
        (format!("{PEER}{PEER}"), "federation.trust_domain.name"),
        (
            PEER.replace("https://127", "http://127"),
            "federation.trust_domain.url",
        ),
        (
            PEER.replace("https_spiffe", "spiffe"),
            "federation.trust_domain.profile",
        ),
        (
            PEER.replace("spiffe://other.org/sigil/server", "other.org/x"),
            "federation.trust_domain.endpoint_spiffe_id",
        ),
        (
            PEER.replace(
                "endpoint_spiffe_id = \"spiffe://other.org/sigil/server\"\n",
                "",
            ),
            "federation.trust_domain.endpoint_spiffe_id",
        ),
        (
            format!("{PEER}ca_file = \"ca.pem\"\n"),
            "federation.trust_domain.ca_file",
        ),
        (
            PEER.replace("https_spiffe", "https_web"),
            "federation.trust_domain.endpoint_spiffe_id",
        ),
    ];
    for (text, key) in table {
        assert_eq!(invalid_key(parse(&text)), key, "{text}");
    }
}

#[test]
fn unknown_keys_are_errors() {
    let r = parse(&format!("{PEER}refresh = \"1s\"\n"));
    assert!(matches!(r, Err(ConfigError::Parse { .. })), "{r:?}");
}
