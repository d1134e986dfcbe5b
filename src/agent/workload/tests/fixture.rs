//! A fake identity provider over a real authority, a fixed attestor, and
//! the Workload API served on a Unix socket in a temporary directory.

use super::super::{
    Attest, WorkloadApi, bind_workload_socket, serve_workload_api, workload_routes,
};
use crate::agent::{AgentError, IdentityProvider, JwtIdentity, X509Identity};
use crate::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use crate::attest::{AttestError, PeerPin};
use crate::authority::{Authority, Bundle, generate_key_and_csr};
use crate::id::{Selector, SpiffeId, TrustDomain};
use crate::registry::{Entry, EntryId};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::unix::UCred;
use tokio::sync::{oneshot, watch};
use tonic::transport::{Channel, Endpoint, Uri};

/// The selector every test workload has.
pub(crate) const SELECTOR: &str = "unix:uid:1000";

/// An entry for `spiffe://example.org<path>` requiring [`SELECTOR`].
pub(crate) fn entry(n: u8, path: &str, hint: &str) -> Entry {
    let td = TrustDomain::parse("example.org").unwrap();
    Entry {
        id: EntryId::from_random([n; 16]),
        spiffe_id: td.id(path).unwrap(),
        parent_id: td.id("/agent").unwrap(),
        selectors: vec![Selector::parse(SELECTOR).unwrap()],
        x509_ttl_secs: None,
        jwt_ttl_secs: None,
        dns_names: vec![],
        hint: hint.to_owned(),
        admin: false,
        federates_with: vec![],
        revision: 1,
        created_at: 0,
    }
}

pub(crate) fn authority(td: &str) -> Authority {
    Authority::generate(
        &TrustDomain::parse(td).unwrap(),
        SystemTime::now(),
        Duration::from_secs(24 * 3600),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap()
}

/// Issues from a real authority, caches X.509-SVIDs per entry.
pub(crate) struct FakeProvider {
    pub authority: Authority,
    pub entries: Mutex<Vec<Arc<Entry>>>,
    pub svids: Mutex<HashMap<String, Arc<X509Identity>>>,
    pub bundle: Mutex<Option<Arc<Bundle>>>,
    pub changes: watch::Sender<u64>,
    /// Whether the first push "arrived"; true unless a test clears it.
    pub synced: watch::Sender<bool>,
}

impl FakeProvider {
    /// Forgets every cached SVID (the next fetch issues new ones) and
    /// announces the change.
    pub fn rotate(&self) {
        self.svids.lock().unwrap().clear();
        self.bump();
    }

    pub fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

#[tonic::async_trait]
impl IdentityProvider for FakeProvider {
    fn matching(&self, selectors: &[Selector]) -> Vec<Arc<Entry>> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .filter(|e| e.selectors.iter().all(|s| selectors.contains(s)))
            .cloned()
            .collect()
    }

    async fn x509_svid(&self, entry: &Entry) -> Result<Arc<X509Identity>, AgentError> {
        let key = entry.id.as_str().to_owned();
        if let Some(id) = self.svids.lock().unwrap().get(&key) {
            return Ok(id.clone());
        }
        let (pkcs8, csr) = generate_key_and_csr(&entry.spiffe_id).unwrap();
        let now = SystemTime::now();
        let svid = self
            .authority
            .sign_x509_svid(&csr, &entry.spiffe_id, Duration::from_secs(3600), &[], now)
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        let id = Arc::new(X509Identity {
            entry_id: key.clone(),
            spiffe_id: entry.spiffe_id.clone(),
            hint: entry.hint.clone(),
            chain_der: svid.chain_der,
            key_pkcs8: pkcs8,
            issued_at: now,
            expires_at: svid.expires_at,
        });
        self.svids.lock().unwrap().insert(key, id.clone());
        Ok(id)
    }

    async fn jwt_svid(
        &self,
        entry: &Entry,
        audiences: &[String],
    ) -> Result<Arc<JwtIdentity>, AgentError> {
        let now = SystemTime::now();
        let svid = self
            .authority
            .mint_jwt_svid(&entry.spiffe_id, audiences, Duration::from_secs(300), now)
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        Ok(Arc::new(JwtIdentity {
            spiffe_id: svid.spiffe_id,
            hint: entry.hint.clone(),
            token: svid.token,
            issued_at: svid.issued_at,
            expires_at: svid.expires_at,
        }))
    }

    fn bundle(&self) -> Option<Arc<Bundle>> {
        self.bundle.lock().unwrap().clone()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    async fn wait_synced(&self) {
        let _ = self.synced.subscribe().wait_for(|s| *s).await;
    }
}

/// Answers every caller with the same outcome.
pub(crate) struct FixedAttest(pub Result<Arc<[Selector]>, AttestError>);

impl Attest for FixedAttest {
    fn attest(&self, _cred: &UCred, _pin: &PeerPin) -> Result<Arc<[Selector]>, AttestError> {
        self.0.clone()
    }
}

/// A running Workload API; stops when dropped.
pub(crate) struct Harness {
    pub provider: Arc<FakeProvider>,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Harness {
    /// Serves `entries` to a caller attested with [`SELECTOR`].
    pub async fn start(entries: Vec<Entry>) -> Self {
        Self::start_with(entries, Ok(vec![Selector::parse(SELECTOR).unwrap()])).await
    }

    pub async fn start_with(
        entries: Vec<Entry>,
        attested: Result<Vec<Selector>, AttestError>,
    ) -> Self {
        Self::start_attested(entries, Arc::new(FixedAttest(attested.map(Into::into)))).await
    }

    /// Serves `entries` to callers attested by `attest`.
    pub async fn start_attested(entries: Vec<Entry>, attest: Arc<dyn Attest>) -> Self {
        let authority = authority("example.org");
        let bundle = Arc::new(authority.bundle());
        let provider = Arc::new(FakeProvider {
            authority,
            entries: Mutex::new(entries.into_iter().map(Arc::new).collect()),
            svids: Mutex::new(HashMap::new()),
            bundle: Mutex::new(Some(bundle)),
            changes: watch::channel(0).0,
            synced: watch::channel(true).0,
        });
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent/public/api.sock");
        let listener = bind_workload_socket(&socket).unwrap();
        let api = WorkloadApi::new(provider.clone(), attest);
        let routes = workload_routes(api).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve_workload_api(
            listener,
            routes,
            crate::net::Limits::workload(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            provider,
            socket,
            _dir: dir,
            _stop: stop,
        }
    }

    pub async fn spiffe_client(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(format!("unix:{}", self.socket.display()))
            .await
            .unwrap()
    }

    pub async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::from_static("http://workload.sock")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap()
    }

    pub async fn raw_client(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(self.channel().await)
    }
}

/// A request carrying the security header.
pub(crate) fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    req
}

/// The SPIFFE ID of a token, read without verification (test helper).
pub(crate) fn sub_of(token: &str) -> SpiffeId {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    SpiffeId::parse(v["sub"].as_str().unwrap()).unwrap()
}
