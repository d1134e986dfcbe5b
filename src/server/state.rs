//! The server's state: open (sealed), the parts that exist only while
//! unsealed, and accessors. The seal lifecycle (init, unseal, seal) is in
//! `state/seal.rs`. Everything that needs keys becomes available at unseal and is
//! dropped at seal.

use super::agents::Agents;
use super::entries::Entries;
use super::heads::SealedHeads;
use crate::authority::Authority;
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, ServerConfig};
use crate::federation::{Federation, SetupError};
use crate::id::{TrustDomain, Ttl};
use crate::policy::{Pdp, PolicyError};
use crate::store::audit_log::{AuditError, AuditLog, log_head};
use crate::store::{SealStatus, SealedStore, SledStore, Store, StoreError};
use crate::sync::{lock, read, write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::watch;

mod seal;
pub use seal::UnsealRefused;

mod error;
pub use error::LifecycleError;

mod keys;
pub use keys::KeyCause;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be created or has unsafe permissions.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The audit log could not be opened or failed verification.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// The policies could not be loaded.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// The policy directory could not be read.
    #[error("policy directory {path}: {message}")]
    PolicyDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Unseal material in the config could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Unsealing at start failed.
    #[error("unseal at start: {0}")]
    Unseal(String),
    /// A file `[federation]` names could not be used.
    #[error("federation: {0}")]
    Federation(#[from] SetupError),
}

/// What exists only while unsealed.
#[derive(Debug)]
struct Active {
    authority: Arc<Authority>,
    server_svid_expires: SystemTime,
    server_svid_issued: SystemTime,
}

/// The server. Shared by every service behind an `Arc`.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    store: Arc<SealedStore>,
    heads: SealedHeads,
    audit: AuditLog,
    pdp: RwLock<Arc<Pdp>>,
    entries: Entries,
    agents: Agents,
    secrets: super::Secrets,
    tokens: super::Tokens,
    elevations: super::Elevations,
    quarantines: super::quarantine::Quarantines,
    logins: super::login::Logins,
    federation: Arc<Federation>,
    active: RwLock<Option<Active>>,
    tls: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
    /// The HTTP API's TLS configuration, when it serves a certificate sigil
    /// issues (None while sealed).
    http_tls: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
    health: Mutex<Option<tonic_health::server::HealthReporter>>,
    own_uid: u32,
    /// Serializes init, unseal, seal and every change of the authority's keys.
    lifecycle: tokio::sync::Mutex<()>,
    /// Tells the entry streams and the rotation task that the keys changed.
    keys: keys::KeyWatch,
    /// Set when the server begins shutting down, so long streams end.
    stopping: watch::Sender<bool>,
    /// Where the server and its services read the time.
    clock: Arc<dyn Clock>,
}

/// Reads every `*.rego` and `*.json` file in `dir`, sorted by name.
pub fn read_policy_dir(dir: &Path) -> Result<Vec<(String, String)>, ServerError> {
    let err = |message: String| ServerError::PolicyDir {
        path: dir.to_owned(),
        message,
    };
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| err(e.to_string()))? {
        let path = item.map_err(|e| err(e.to_string()))?.path();
        // `*.rego` are policy modules; `*.json` are data documents the
        // policies read (the grants, `data.sigil.grants`).
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rego" | "json")
        ) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, text));
        }
    }
    if !files.iter().any(|(name, _)| name.ends_with(".rego")) {
        return Err(err(
            "holds no *.rego file (everything would be denied)".into()
        ));
    }
    files.sort();
    Ok(files)
}

fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ServerError::DataDir {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// The process's effective uid.
pub fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the process's effective uid.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

impl Server {
    /// Opens the store, audit log and policies. The server starts sealed
    /// unless the config names unseal material and the store is initialized.
    pub async fn open(config: ServerConfig) -> Result<Arc<Self>, ServerError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Server::open`], reading the time from `clock`.
    pub async fn open_with_clock(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ServerError> {
        create_private_dir(&config.data_dir)?;
        let raw: Arc<dyn Store> = Arc::new(SledStore::open(&config.data_dir.join("store"))?);
        let store = Arc::new(SealedStore::new(raw, config.kdf_cost));
        let heads = SealedHeads::new(store.clone());
        let audit = AuditLog::open(
            &config.data_dir.join("audit.log"),
            Arc::new(SealedHeads::new(store.clone())),
        )?;
        let pdp = Pdp::compile(&read_policy_dir(&config.policy_dir)?)?;
        let federation = Arc::new(Federation::open(&config, store.clone())?);
        let (tls, _) = watch::channel(None);
        let server = Arc::new(Self {
            entries: Entries::new(store.clone(), config.trust_domain.clone()),
            agents: Agents::new(store.clone(), config.trust_domain.clone()),
            secrets: super::Secrets::new(store.clone()),
            tokens: super::Tokens::new(store.clone()),
            elevations: super::Elevations::new(store.clone(), config.jit.roles.clone()),
            quarantines: super::quarantine::Quarantines::new(store.clone()),
            logins: super::login::Logins::default(),
            federation,
            config,
            store,
            heads,
            audit,
            pdp: RwLock::new(Arc::new(pdp)),
            active: RwLock::new(None),
            tls,
            http_tls: watch::channel(None).0,
            health: Mutex::new(None),
            own_uid: own_uid(),
            lifecycle: tokio::sync::Mutex::new(()),
            keys: keys::KeyWatch::new(),
            stopping: watch::channel(false).0,
            clock,
        });
        if let Some(unseal) = &server.config.unseal {
            let passphrase = unseal.passphrase()?;
            if server
                .status()
                .map_err(|e| ServerError::Unseal(e.to_string()))?
                .initialized
            {
                server
                    .clone()
                    .unseal(passphrase)
                    .await
                    .map_err(|e| ServerError::Unseal(e.to_string()))?;
            } else {
                tracing::warn!(
                    "store is not initialized; run `sigil operator init` (unseal config ignored until then)"
                );
            }
        }
        Ok(server)
    }

    /// Tells long-lived streams that the server is shutting down, and puts
    /// the audit chain head in the server log for outside witnesses (the
    /// writer logs the final one, after a keyed checkpoint, when it closes).
    pub fn begin_shutdown(&self) {
        log_head(&self.audit.head(), "shutdown");
        self.stopping.send_replace(true);
    }

    /// Becomes true when the server begins shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The current time, as the server's clock tells it.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Default X.509-SVID lifetime.
    pub fn x509_svid_ttl(&self) -> Ttl {
        self.config.x509_svid_ttl
    }

    /// Default JWT-SVID lifetime.
    pub fn jwt_svid_ttl(&self) -> Ttl {
        self.config.jwt_svid_ttl
    }

    /// The active policies.
    pub fn pdp(&self) -> Arc<Pdp> {
        read(&self.pdp).clone()
    }

    /// Compiles the policy directory again and swaps it in atomically; on any
    /// error the old policies stay active.
    pub fn reload_policy(&self) -> Result<Vec<String>, LifecycleError> {
        let files = read_policy_dir(&self.config.policy_dir)
            .map_err(LifecycleError::PolicyDirUnreadable)?;
        let pdp = Pdp::compile(&files)?;
        let names = files.into_iter().map(|(n, _)| n).collect();
        *write(&self.pdp) = Arc::new(pdp);
        tracing::info!("policies reloaded");
        Ok(names)
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The secrets store.
    pub fn secrets(&self) -> &super::Secrets {
        &self.secrets
    }

    /// The OIDC issuers' key sets.
    pub fn logins(&self) -> &super::login::Logins {
        &self.logins
    }

    /// Issued sigil tokens.
    pub fn tokens(&self) -> &super::Tokens {
        &self.tokens
    }

    /// Just-in-time elevation requests.
    pub fn elevations(&self) -> &super::Elevations {
        &self.elevations
    }

    /// Quarantined identities.
    pub fn quarantines(&self) -> &super::quarantine::Quarantines {
        &self.quarantines
    }

    /// The entry registry.
    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// Join tokens and agents.
    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    /// Foreign trust domains' bundles and the bundle endpoint (SPIFFE Federation).
    pub fn federation(&self) -> &Arc<Federation> {
        &self.federation
    }

    /// True while the store is sealed.
    pub fn is_sealed(&self) -> bool {
        read(&self.active).is_none()
    }

    /// Whether `uid` on the admin socket is an operator: root, the server's
    /// own uid (whoever can read its data directory already holds its data),
    /// or a uid listed in `admin_uids`.
    pub fn is_operator_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_uid || self.config.admin_uids.contains(&uid)
    }

    /// Whether some entry for `id` carries the admin flag.
    pub fn is_admin_identity(&self, id: &crate::id::SpiffeId) -> bool {
        self.entries.is_admin(id)
    }

    /// Seal status.
    pub fn status(&self) -> Result<SealStatus, LifecycleError> {
        Ok(self.store.status()?)
    }

    /// The authority, or `Sealed`.
    pub fn authority(&self) -> Result<Arc<Authority>, LifecycleError> {
        read(&self.active)
            .as_ref()
            .map(|a| a.authority.clone())
            .ok_or(LifecycleError::Sealed)
    }

    /// Watches the TLS configuration (None while sealed).
    pub fn tls_config(&self) -> watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.tls.subscribe()
    }

    /// Receives the gRPC health reporter so health follows the seal state.
    pub fn set_health_reporter(&self, reporter: tonic_health::server::HealthReporter) {
        *lock(&self.health) = Some(reporter);
        self.report_health();
    }

    fn report_health(&self) {
        let reporter = lock(&self.health).clone();
        if let Some(r) = reporter {
            let status = if self.is_sealed() {
                tonic_health::ServingStatus::NotServing
            } else {
                tonic_health::ServingStatus::Serving
            };
            tokio::spawn(async move { r.set_service_status("", status).await });
        }
    }

    /// Installs the authority and the server's SVID; the caches are loaded.
    fn activate(&self, authority: Authority, now: SystemTime) -> Result<(), LifecycleError> {
        let authority = Arc::new(authority);
        let expires = self.install_server_svid(&authority, now)?;
        *write(&self.active) = Some(Active {
            authority,
            server_svid_expires: expires,
            server_svid_issued: now,
        });
        self.report_health();
        self.keys.bump();
        tracing::info!("authority active");
        Ok(())
    }

    /// Issues the server's own SVID (key made here, held only in memory) and
    /// publishes a TLS configuration presenting it.
    fn install_server_svid(
        &self,
        authority: &Authority,
        now: SystemTime,
    ) -> Result<SystemTime, LifecycleError> {
        let id = self.config.trust_domain.server_id();
        let (key, csr) = crate::authority::generate_key_and_csr(&id)?;
        let svid = authority.sign_x509_svid(
            &csr,
            &id,
            self.config.x509_svid_ttl.as_duration(),
            &[],
            now,
        )?;
        let roots = authority.bundle().x509_authorities;
        let config = crate::tls::server_config(&svid.chain_der, &key, &roots)
            .map_err(|e| LifecycleError::TlsConfig(e.to_string()))?;
        self.tls.send_replace(Some(Arc::new(config)));
        self.install_http_cert(authority, now)?;
        // Clients of the HTTP API (and anyone else) trust this file.
        if let Err(e) = crate::files::OutDir::open(&self.config.data_dir).and_then(|d| {
            d.write(
                "bundle.pem",
                crate::tls::certs_to_pem(&roots).as_bytes(),
                crate::files::Access::Public,
            )
        }) {
            tracing::warn!(error = %e, "cannot write bundle.pem to the data directory");
        }
        Ok(svid.expires_at)
    }

    /// Issues the HTTP API's serving certificate, when `[http]` asks sigil
    /// to, for the names and addresses clients reach it by; it renews with
    /// the server's own SVID.
    fn install_http_cert(
        &self,
        authority: &Authority,
        now: SystemTime,
    ) -> Result<(), LifecycleError> {
        let Some(crate::config::HttpCert::Issued(names)) =
            self.config.http.as_ref().map(|h| &h.cert)
        else {
            return Ok(());
        };
        let (ips, dns): (Vec<_>, Vec<_>) = names
            .iter()
            .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
        let ips: Vec<std::net::IpAddr> = ips.iter().filter_map(|n| n.parse().ok()).collect();
        let dns: Vec<String> = dns.into_iter().cloned().collect();
        let id = self.config.trust_domain.http_id();
        let (key, csr) = crate::authority::generate_key_and_csr(&id)?;
        let svid = authority.sign_serving_svid(
            &csr,
            &id,
            self.config.x509_svid_ttl.as_duration(),
            &dns,
            &ips,
            now,
        )?;
        let config = crate::tls::https_single_cert_config(&svid.chain_der, &key)
            .map_err(|e| LifecycleError::TlsConfig(e.to_string()))?;
        self.http_tls.send_replace(Some(Arc::new(config)));
        Ok(())
    }

    /// Watches the HTTP API's TLS configuration for a certificate sigil
    /// issues (None while sealed).
    pub fn http_tls_config(&self) -> watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.http_tls.subscribe()
    }

    /// When the server's SVID should next be renewed (half its life), if unsealed.
    pub fn server_svid_renewal_due(&self) -> Option<SystemTime> {
        let a = read(&self.active);
        let a = a.as_ref()?;
        let life = a
            .server_svid_expires
            .duration_since(a.server_svid_issued)
            .unwrap_or_default();
        Some(a.server_svid_issued + life / 2)
    }

    /// Renews the server's SVID.
    pub fn renew_server_svid(&self, now: SystemTime) -> Result<(), LifecycleError> {
        let authority = self.authority()?;
        let expires = self.install_server_svid(&authority, now)?;
        if let Some(a) = write(&self.active).as_mut() {
            a.server_svid_expires = expires;
            a.server_svid_issued = now;
        }
        Ok(())
    }
}
