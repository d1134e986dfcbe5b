//! Bad foreign bundles, from a small HTTPS endpoint of the test's own (which serves
//! whatever body with whatever certificate the test says) and from operators (`bundle
//! set`): each is refused with its reason, and the bundle in use stays.

use super::fixture::*;
use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil::api::pb;
use sigil::authority::{Authority, BundleError, KeyKind, SvidError};
use sigil::clock::ManualClock;
use sigil::config::{EndpointUrl, ForeignProfile, ForeignTrustDomain};
use sigil::federation::{EndpointRejected, FetchError, ForeignBundleError, Source};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tonic::Code;

const BAD: &str = "bad.org";
const ENDPOINT_ID: &str = "spiffe://bad.org/endpoint";
/// Keys that say they are X.509 roots but carry no certificate.
const NO_X5C: &str = r#"{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256"},{"use":"x509-svid","kty":"EC","crv":"P-256","x5c":[]}],"spiffe_sequence":7}"#;

fn authority(name: &str, at: SystemTime) -> Authority {
    Authority::generate(
        &td(name),
        at,
        Duration::from_secs(24 * 3600),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap()
}

/// An X509-SVID for `path` from `ca`, issued at `at` for an hour, as rustls serves it.
fn svid(ca: &Authority, path: &str, at: SystemTime) -> Arc<CertifiedKey> {
    let id = ca.trust_domain().id(path).unwrap();
    let (key, csr) = sigil::authority::generate_key_and_csr(&id).unwrap();
    let svid = ca
        .sign_x509_svid(&csr, &id, Duration::from_secs(3600), &[], at)
        .unwrap();
    let chain = svid
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.expose().to_vec()));
    Arc::new(CertifiedKey::from_der(chain, key, &sigil::tls::provider()).unwrap())
}

/// What the fake endpoint serves.
#[derive(Clone)]
struct Serve {
    body: String,
    cert: Arc<CertifiedKey>,
}

#[derive(Debug)]
struct Current(Arc<Mutex<Option<Arc<CertifiedKey>>>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.lock().unwrap().clone()
    }
}

/// An HTTPS endpoint that serves what it is told.
struct FakeEndpoint {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    cert: Arc<Mutex<Option<Arc<CertifiedKey>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEndpoint {
    async fn start(serve: Serve) -> FakeEndpoint {
        let body = Arc::new(Mutex::new(serve.body));
        let cert = Arc::new(Mutex::new(Some(serve.cert)));
        let config = sigil::tls::https_server_config(Arc::new(Current(cert.clone()))).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (l, addr) = listener().await;
        let served = body.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let (acceptor, served) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        let body = served.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeEndpoint {
            addr,
            body,
            cert,
            task,
        }
    }

    fn serve(&self, serve: Serve) {
        *self.body.lock().unwrap() = serve.body;
        *self.cert.lock().unwrap() = Some(serve.cert);
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_foreign_bundles_are_refused_and_the_last_good_one_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let now = sigil::clock::now();
    // bad.org's CA, made three hours ago so it can have signed a certificate that has
    // expired since.
    let ca = authority(BAD, now - Duration::from_secs(3 * 3600));
    let boot = sub(tmp.path(), "bad.json");
    std::fs::write(&boot, ca.bundle().to_spiffe_json()).unwrap();
    // What the endpoint serves when all is well: a second CA prepared beside the first.
    let mut rotated = ca.clone();
    rotated
        .rotate(
            KeyKind::X509Ca,
            false,
            now,
            &sigil::authority::RotationPolicy::default(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
    let good = Serve {
        body: rotated.bundle().to_spiffe_json(),
        cert: svid(&ca, "/endpoint", now),
    };
    let fake = FakeEndpoint::start(good.clone()).await;

    let dir = sub(tmp.path(), "a");
    initialize(&dir, "example.org", &sub(tmp.path(), "a.json")).await;
    let mut cfg = config_for(&dir, "example.org");
    cfg.federation.trust_domains = vec![ForeignTrustDomain {
        name: td(BAD),
        url: EndpointUrl::parse(&format!("https://{}/", fake.addr)).unwrap(),
        profile: ForeignProfile::HttpsSpiffe {
            endpoint_spiffe_id: sigil::id::SpiffeId::parse(ENDPOINT_ID).unwrap(),
            bootstrap_bundle: Some(boot),
        },
    }];
    let clock = Arc::new(ManualClock::at_wall_time());
    let (grpc, _) = listener().await;
    let s = TestServer::start_on(cfg, clock.clone(), grpc, None).await;
    let first = settled(&s.server, BAD).await;
    assert!(first.last_success.is_some(), "{first:?}");
    let kept = s.server.federation().bundle(&td(BAD)).unwrap();
    assert_eq!(kept.source, Source::Endpoint);
    assert_eq!(kept.bundle.x509_authorities.len(), 2);

    let evil = authority("evil.org", now).bundle().to_spiffe_json();
    let stranger = authority(BAD, now);
    let rejected = |r| FetchError::EndpointRejected(r);
    let cases = [
        (
            "not JSON",
            Serve {
                body: "<html>moved</html>".into(),
                ..good.clone()
            },
            FetchError::Refused(ForeignBundleError::Malformed(BundleError::NotJsonObject)),
        ),
        (
            "x509-svid keys without a certificate",
            Serve {
                body: NO_X5C.into(),
                ..good.clone()
            },
            FetchError::Refused(ForeignBundleError::NoX509Authority),
        ),
        (
            "wrong trust domain",
            Serve {
                body: evil,
                ..good.clone()
            },
            FetchError::Refused(ForeignBundleError::WrongTrustDomain {
                expected: BAD.into(),
                found: "evil.org".into(),
            }),
        ),
        (
            "expired endpoint certificate",
            Serve {
                cert: svid(&ca, "/endpoint", now - Duration::from_secs(3 * 3600)),
                ..good.clone()
            },
            rejected(EndpointRejected::NotSvid(SvidError::Expired)),
        ),
        (
            "endpoint SVID with the wrong ID",
            Serve {
                cert: svid(&ca, "/impostor", now),
                ..good.clone()
            },
            rejected(EndpointRejected::WrongId {
                expected: ENDPOINT_ID.into(),
                found: "spiffe://bad.org/impostor".into(),
            }),
        ),
        (
            "endpoint SVID from a CA outside the bundle",
            Serve {
                cert: svid(&stranger, "/endpoint", now),
                ..good.clone()
            },
            rejected(EndpointRejected::NotSvid(SvidError::UntrustedChain)),
        ),
    ];
    for (n, (name, serve, want)) in cases.into_iter().enumerate() {
        fake.serve(serve);
        let st = fetch_again(&s.server, &clock, BAD).await;
        let (_, got) = st
            .last_error
            .clone()
            .unwrap_or_else(|| panic!("{name}: {st:?}"));
        assert_eq!(got, want, "{name}");
        assert_eq!(st.failures as usize, n + 1, "{name}");
        assert_eq!(
            s.server.federation().bundle(&td(BAD)).as_ref(),
            Some(&kept),
            "{name}: the last good bundle stays"
        );
    }

    // Operator status names the last reason; retries back off to the refresh hint.
    let mut c = s.clients().await;
    let st = c
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let [f] = st.federation.as_slice() else {
        panic!("{:?}", st.federation);
    };
    assert_eq!(
        f.last_error,
        "the endpoint's certificate is not a valid X509-SVID of the trust bundle: no chain to a trusted root verifies"
    );
    assert_eq!(f.failures, 6);
    assert_eq!(f.next_attempt, f.last_error_at + 300);
    assert_eq!(f.sequence, kept.bundle.sequence);
    let text = ok(sigil(
        &["operator", "status"],
        &[("SIGIL_ADMIN_SOCKET", s.admin.to_str().unwrap())],
    ));
    let line = format!(
        "  bad.org (https_spiffe https://{}/): sequence 2, last success ",
        fake.addr
    );
    assert!(text.contains(&line), "{text}");
    assert!(
        text.contains("(6 in a row): the endpoint's certificate is not a valid X509-SVID"),
        "{text}"
    );

    // An operator's bundle for a fetched trust domain is used until the next fetch
    // replaces it (Federation §4.2); deleting it is refused, since it would only be
    // fetched again.
    let set = c
        .bundle
        .set_federated(pb::SetFederatedBundleRequest {
            trust_domain: BAD.into(),
            spiffe_json: ca.bundle().to_spiffe_json(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((set.source.as_str(), set.x509_authorities), ("operator", 1));
    let e = c
        .bundle
        .delete_federated(pb::DeleteFederatedBundleRequest {
            trust_domain: BAD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        e.message(),
        "bad.org is configured in [[federation.trust_domain]]: remove it there to stop federating with it"
    );
    fake.serve(good);
    let st = fetch_again(&s.server, &clock, BAD).await;
    assert_eq!(st.failures, 0, "{st:?}");
    let fetched = s.server.federation().bundle(&td(BAD)).unwrap();
    assert_eq!(
        (fetched.source, &fetched.json),
        (Source::Endpoint, &kept.json)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_set_list_and_delete_foreign_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let admin = s.admin.to_str().unwrap().to_owned();
    let env = [("SIGIL_ADMIN_SOCKET", admin.as_str())];
    let good = authority("static.org", sigil::clock::now())
        .bundle()
        .to_spiffe_json();
    let file = tmp.path().join("static.json");
    std::fs::write(&file, &good).unwrap();
    let file = file.to_str().unwrap();

    let out = ok(sigil(
        &[
            "bundle",
            "set",
            "--trust-domain",
            "static.org",
            "--file",
            file,
            "--json",
        ],
        &env,
    ));
    let set: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(set["trust_domain"], "static.org");
    assert_eq!(set["source"], "operator");
    assert_eq!(
        (
            set["x509_authorities"].as_u64(),
            set["jwt_authorities"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(set["endpoint"], serde_json::Value::Null);
    let listed = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
    let list = listed(&ok(sigil(&["bundle", "list", "--json"], &env)));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["spiffe"], good.as_str());
    assert_eq!(
        ok(sigil(&["bundle", "list"], &env)),
        "static.org: operator bundle, sequence 1, 1 X.509 authorities, 1 JWT keys\n"
    );

    // Bad bundles are refused with the rule they break; the kept one stays.
    let mut c = s.clients().await;
    let evil = authority("evil.org", sigil::clock::now())
        .bundle()
        .to_spiffe_json();
    let own = s.server.authority().unwrap().bundle().to_spiffe_json();
    let cases = [
        (
            "static.org",
            "not json",
            "bundle refused: not a SPIFFE bundle: bundle is not a JSON object",
        ),
        (
            "static.org",
            NO_X5C,
            "bundle refused: no x509-svid key with a certificate (keys without x5c are ignored, X509-SVID §6.2): the trust domain's X.509-SVIDs could not be verified",
        ),
        (
            "static.org",
            &evil,
            "bundle refused: an X.509 authority belongs to trust domain evil.org, not static.org",
        ),
        (
            "example.org",
            &own,
            "bundle refused: example.org is this server's own trust domain: its bundle comes from its own CA",
        ),
    ];
    for (td, json, message) in cases {
        let e = c
            .bundle
            .set_federated(pb::SetFederatedBundleRequest {
                trust_domain: td.into(),
                spiffe_json: json.into(),
            })
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, message));
    }
    let e = c
        .bundle
        .set_federated(pb::SetFederatedBundleRequest {
            trust_domain: "Static.org".into(),
            spiffe_json: good.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("trust_domain: "), "{e:?}");
    let list = listed(&ok(sigil(&["bundle", "list", "--json"], &env)));
    assert_eq!(list[0]["spiffe"], good.as_str(), "the kept bundle stays");

    // A refused change is audited as failed, with its reason.
    let tail = c
        .audit
        .tail(pb::TailAuditRequest { count: 20 })
        .await
        .unwrap()
        .into_inner()
        .records;
    let failed = tail
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["event"].clone())
        .find(|e| e["action"] == "bundle.set" && e["decision"] == "failed")
        .unwrap_or_else(|| panic!("{tail:?}"));
    assert_eq!(failed["resource"], "bundle:static.org");
    assert_eq!(failed["reasons"][0], cases[0].2);

    // The command line says the same on stderr and exits non-zero.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "not json").unwrap();
    let out = sigil(
        &[
            "bundle",
            "set",
            "--trust-domain",
            "static.org",
            "--file",
            bad.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: invalid argument: bundle refused: not a SPIFFE bundle: bundle is not a JSON object\n"
    );

    ok(sigil(&["bundle", "delete", "static.org"], &env));
    assert_eq!(
        listed(&ok(sigil(&["bundle", "list", "--json"], &env))),
        serde_json::json!([])
    );
    let e = c
        .bundle
        .delete_federated(pb::DeleteFederatedBundleRequest {
            trust_domain: "static.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::NotFound,
            "no bundle is kept for trust domain static.org"
        )
    );
    s.stop().await;
}
