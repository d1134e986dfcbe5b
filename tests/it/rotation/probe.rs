//! A pair of workloads on one agent that use only what the Workload API gives them:
//! one open X.509 context stream and one open JWT bundle stream, and every second
//! an mTLS handshake between the two identities (each side verifying the other
//! against the streamed bundle), a JWT-SVID fetched, validated by the agent and
//! validated offline against the streamed JWT bundle.
//!
//! It records every failure, which CA and JWT key signed what was used, when each
//! CA first reached the workload's bundle, and whether the bundle ever held a CA that
//! nothing valid depended on any more.

use super::{CLIENT_WL, SERVER_WL};
use crate::common::TD;
use futures::StreamExt;
use sigil::authority::signing_ca_id;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// How long past its NotAfter (plus the one second the standard allows) a CA may
/// still be in a workload's bundle: one push, with a wide margin.
const PUSH_SLACK: Duration = Duration::from_secs(5);
/// Most CAs a bundle may hold: an old one still needed, the active one, a prepared one.
const MAX_BUNDLE_CAS: usize = 3;

/// What the probe saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    /// Handshakes that completed, each side verifying the other.
    pub handshakes: u32,
    /// JWT-SVIDs fetched and validated both ways.
    pub jwt_checks: u32,
    /// Every failure, with its reason.
    pub failures: Vec<String>,
    /// CA ids that signed an SVID used in a handshake, in the order first used.
    pub cas: Vec<String>,
    /// JWT key ids that signed a token that validated, in the order first used.
    pub kids: Vec<String>,
    /// CA ids that were in the workload's bundle and left it.
    pub dropped: BTreeSet<String>,
    /// When each CA first reached the workload's bundle.
    in_bundle: HashMap<String, Instant>,
    /// The CAs in the bundle now.
    bundle: BTreeSet<String>,
}

impl Report {
    /// Panics with the whole report if anything failed.
    pub fn assert_clean(&self) {
        assert!(self.failures.is_empty(), "{:#?}", self);
        assert!(self.handshakes > 0 && self.jwt_checks > 0, "{self:#?}");
    }

    fn fail(&mut self, what: String) {
        eprintln!("probe: {what}");
        self.failures.push(what);
    }

    /// Notes that `ca` signed something used now: it must have been in the bundle
    /// already (published before it signed).
    fn signed_by(&mut self, ca: String) {
        if self.cas.contains(&ca) {
            return;
        }
        if !self.in_bundle.contains_key(&ca) {
            self.fail(format!(
                "CA {ca} signed an SVID before it reached the bundle"
            ));
        }
        self.cas.push(ca);
    }

    /// Notes the CAs of a bundle that just arrived.
    fn bundle_arrived(&mut self, cas: Vec<(String, SystemTime)>) {
        let now = SystemTime::now();
        if cas.len() > MAX_BUNDLE_CAS {
            self.fail(format!("the bundle holds {} CAs", cas.len()));
        }
        let mut next = BTreeSet::new();
        for (ca, not_after) in cas {
            if now > not_after + Duration::from_secs(1) + PUSH_SLACK {
                self.fail(format!(
                    "the bundle still holds CA {ca}, expired at {not_after:?}"
                ));
            }
            self.in_bundle
                .entry(ca.clone())
                .or_insert_with(Instant::now);
            next.insert(ca);
        }
        self.dropped.extend(self.bundle.difference(&next).cloned());
        self.bundle = next;
    }
}

/// A running probe.
pub(crate) struct Probe {
    report: Arc<Mutex<Report>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type Latest<T> = Arc<Mutex<Option<T>>>;

impl Probe {
    /// Opens the streams on the agent at `endpoint` and starts the once-a-second checks.
    pub async fn start(endpoint: &str) -> Probe {
        let client = spiffe::WorkloadApiClient::connect_to(endpoint)
            .await
            .unwrap();
        let report = Arc::new(Mutex::new(Report::default()));
        let (stop, stopped) = watch::channel(false);
        let x509: Latest<spiffe::X509Context> = Arc::default();
        let jwt: Latest<spiffe::JwtBundleSet> = Arc::default();
        let contexts = client.stream_x509_contexts().await.unwrap();
        let bundles = client.stream_jwt_bundles().await.unwrap();
        let tasks = vec![
            tokio::spawn(follow_x509(contexts, x509.clone(), report.clone())),
            tokio::spawn(follow_jwt(bundles, jwt.clone(), report.clone())),
            tokio::spawn(check_every_second(
                client,
                x509,
                jwt,
                report.clone(),
                stopped,
            )),
        ];
        Probe {
            report,
            stop,
            tasks,
        }
    }

    /// What it saw so far.
    pub fn report(&self) -> Report {
        self.report.lock().unwrap().clone()
    }

    /// Waits (up to `secs`) until `done` holds for the report.
    pub async fn until(&self, secs: u64, what: &str, done: impl Fn(&Report) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(&self.report()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs}s: {:#?}",
                self.report()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops and returns what it saw.
    pub async fn stop(self) -> Report {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        self.report.lock().unwrap().clone()
    }
}

/// The CA id (SubjectKeyIdentifier, hex) and NotAfter of a CA certificate.
pub(crate) fn ca_of(der: &[u8]) -> (String, SystemTime) {
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let ski = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(hex::encode(k.0)),
            _ => None,
        })
        .unwrap();
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap();
    (ski, SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

async fn follow_x509(
    mut stream: impl futures::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>>
    + Unpin,
    latest: Latest<spiffe::X509Context>,
    report: Arc<Mutex<Report>>,
) {
    let td = spiffe::TrustDomain::new(TD).unwrap();
    while let Some(next) = stream.next().await {
        match next {
            Ok(ctx) => {
                let cas = ctx
                    .bundle_set()
                    .get(&td)
                    .map(|b| {
                        b.authorities()
                            .iter()
                            .map(|c| ca_of(c.as_bytes()))
                            .collect()
                    })
                    .unwrap_or_default();
                report.lock().unwrap().bundle_arrived(cas);
                *latest.lock().unwrap() = Some(ctx);
            }
            Err(e) => report
                .lock()
                .unwrap()
                .fail(format!("X.509 context stream: {e}")),
        }
    }
    report
        .lock()
        .unwrap()
        .fail("the X.509 context stream ended".into());
}

async fn follow_jwt(
    mut stream: impl futures::Stream<Item = Result<spiffe::JwtBundleSet, spiffe::WorkloadApiError>>
    + Unpin,
    latest: Latest<spiffe::JwtBundleSet>,
    report: Arc<Mutex<Report>>,
) {
    while let Some(next) = stream.next().await {
        match next {
            Ok(set) => *latest.lock().unwrap() = Some(set),
            Err(e) => report
                .lock()
                .unwrap()
                .fail(format!("JWT bundle stream: {e}")),
        }
    }
    report
        .lock()
        .unwrap()
        .fail("the JWT bundle stream ended".into());
}

async fn check_every_second(
    client: spiffe::WorkloadApiClient,
    x509: Latest<spiffe::X509Context>,
    jwt: Latest<spiffe::JwtBundleSet>,
    report: Arc<Mutex<Report>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let ctx = x509.lock().unwrap().clone();
        if let Some(ctx) = ctx {
            match handshake(&ctx).await {
                Ok(cas) => {
                    let mut r = report.lock().unwrap();
                    r.handshakes += 1;
                    cas.into_iter().for_each(|ca| r.signed_by(ca));
                }
                Err(e) => report.lock().unwrap().fail(format!("handshake: {e}")),
            }
        }
        let bundles = jwt.lock().unwrap().clone();
        match check_jwt(&client, bundles.as_ref()).await {
            Ok(kid) => {
                let mut r = report.lock().unwrap();
                r.jwt_checks += 1;
                if !r.kids.contains(&kid) {
                    r.kids.push(kid);
                }
            }
            Err(e) => report.lock().unwrap().fail(format!("JWT: {e}")),
        }
    }
}

fn svid<'a>(ctx: &'a spiffe::X509Context, path: &str) -> Result<&'a spiffe::X509Svid, String> {
    let want = format!("spiffe://{TD}{path}");
    ctx.svids()
        .iter()
        .find(|s| s.spiffe_id().to_string() == want)
        .map(|s| s.as_ref())
        .ok_or_else(|| format!("no SVID for {want}"))
}

fn chain(s: &spiffe::X509Svid) -> Vec<Vec<u8>> {
    s.cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

/// An mTLS handshake between the two workloads, with what the Workload API gave
/// them: both must verify the other. Returns the CAs that signed the two SVIDs.
async fn handshake(ctx: &spiffe::X509Context) -> Result<Vec<String>, String> {
    use tokio_rustls::{TlsAcceptor, TlsConnector};
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let roots: Vec<Vec<u8>> = ctx
        .bundle_set()
        .get(&td)
        .ok_or("no bundle for the trust domain")?
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let (server, client) = (svid(ctx, SERVER_WL)?, svid(ctx, CLIENT_WL)?);
    let server_config = server_config(server, &roots)?;
    let server_id = sigil::id::SpiffeId::parse(&server.spiffe_id().to_string()).unwrap();
    let client_key = sigil::secret::Secret::from_slice(client.private_key().as_bytes());
    let client_chain = chain(client);
    let client_config =
        sigil::tls::client_config(&roots, server_id, Some((&client_chain, &client_key)))
            .map_err(|e| e.to_string())?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let tls = TlsAcceptor::from(Arc::new(server_config))
            .accept(tcp)
            .await
            .map_err(|e| format!("server side: {e}"))?;
        let peer = tls.get_ref().1.peer_certificates().map(<[_]>::len);
        Ok::<_, String>(peer)
    });
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("workload").unwrap();
    let connect = TlsConnector::from(Arc::new(client_config)).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "client side: timed out".to_owned())?
        .map_err(|e| format!("client side: {e}"))?;
    let peer = tokio::time::timeout(Duration::from_secs(5), accept)
        .await
        .map_err(|_| "server side: timed out".to_owned())?
        .map_err(|e| e.to_string())??;
    if peer.unwrap_or(0) == 0 {
        return Err("the server side saw no client certificate".into());
    }
    let issuer = |s: &spiffe::X509Svid| signing_ca_id(s.leaf().as_bytes()).unwrap_or_default();
    Ok(vec![issuer(server), issuer(client)])
}

/// A TLS 1.3 server presenting `svid` that requires a client certificate chaining
/// to `roots`.
fn server_config(
    svid: &spiffe::X509Svid,
    roots: &[Vec<u8>],
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(CertificateDer::from(r.clone()))
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        sigil::tls::provider(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let certs = chain(svid).into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    rustls::ServerConfig::builder_with_provider(sigil::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())
}

/// Fetches a JWT-SVID for the client workload and validates it through the agent and
/// offline against the streamed JWT bundle. Returns the `kid` that signed it.
async fn check_jwt(
    client: &spiffe::WorkloadApiClient,
    bundles: Option<&spiffe::JwtBundleSet>,
) -> Result<String, String> {
    let id = spiffe::SpiffeId::new(format!("spiffe://{TD}{CLIENT_WL}")).unwrap();
    let svid = client
        .fetch_jwt_svid(["probe"], Some(&id))
        .await
        .map_err(|e| format!("fetch: {e}"))?;
    client
        .validate_jwt_token("probe", svid.token())
        .await
        .map_err(|e| format!("ValidateJWTSVID: {e}"))?;
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let bundle = bundles
        .and_then(|b| b.get(&td))
        .ok_or("no JWT bundle streamed yet")?;
    // The streamed keys as a JWKS, checked with the standard's rules.
    let jwks: Vec<serde_json::Value> = bundle
        .jwt_authorities()
        .map(|a| serde_json::from_slice(a.jwk_json()).unwrap())
        .collect();
    let doc = serde_json::json!({ "keys": jwks }).to_string();
    let td = sigil::id::TrustDomain::parse(TD).unwrap();
    let keys = sigil::authority::Bundle::from_spiffe_json(&td, &doc)
        .map_err(|e| e.to_string())?
        .jwt_bundle();
    sigil::authority::validate_jwt_svid(svid.token(), "probe", &keys, SystemTime::now()).map_err(
        |e| {
            format!(
                "offline, with the streamed bundle (kid {}): {e}",
                svid.key_id()
            )
        },
    )?;
    Ok(svid.key_id().to_owned())
}
