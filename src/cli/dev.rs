//! `sigil server` and `sigil dev`: thin wrappers that load configuration,
//! bind the listeners and call [`crate::serve::run`].

use super::Failure;
use super::client::{Clients, Target};
use super::output::Out;
use super::status_line;
use crate::agent::IdentityProvider;
use crate::agent::run::{Agent, AgentOptions};
use crate::agent::workload::bind_workload_socket;
use crate::api::pb;
use crate::config::{ServerConfig, ServerLimits};
use crate::files::{Access, OutDir};
use crate::id::{TrustDomain, Ttl};
use crate::net::Limits;
use crate::secret::Secret;
use crate::serve::{Listeners, bind_admin_socket, run as serve};
use crate::server::Server;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The default policy, written into a dev data directory on first start.
const DEFAULT_POLICY: &str = include_str!("../../config/policies/sigil.rego");

#[derive(Debug, clap::Args)]
pub(super) struct DevArgs {
    /// Where the development store lives (reused on later runs).
    #[arg(long, default_value = ".sigil-dev")]
    data_dir: PathBuf,
    /// The trust domain.
    #[arg(long, default_value = "example.org")]
    trust_domain: String,
    /// gRPC over TLS listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The Vault-compatible HTTP API's listen address.
    #[arg(long, default_value = "127.0.0.1:8200")]
    http_listen: SocketAddr,
}

async fn bind(server: &Server) -> Result<Listeners, Failure> {
    let cfg = server.config();
    let tcp = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Failure(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let admin = bind_admin_socket(&cfg.admin_socket)
        .map_err(|e| Failure(format!("cannot bind {}: {e}", cfg.admin_socket.display())))?;
    let bundle_endpoint = match &cfg.federation.bundle_endpoint {
        Some(e) => Some(
            tokio::net::TcpListener::bind(e.listen)
                .await
                .map_err(|err| Failure(format!("cannot listen on {}: {err}", e.listen)))?,
        ),
        None => None,
    };
    let http = match &cfg.http {
        Some(h) => Some(
            tokio::net::TcpListener::bind(h.listen)
                .await
                .map_err(|err| Failure(format!("cannot listen on {}: {err}", h.listen)))?,
        ),
        None => None,
    };
    Ok(Listeners {
        tcp,
        admin,
        bundle_endpoint,
        http,
    })
}

/// Installs the SIGINT and SIGTERM handlers at once and returns the future
/// that completes when either arrives. Call it before printing anything a
/// supervisor may answer with a signal: a signal that arrives before its
/// handler is installed kills the process instead of shutting it down.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
        match s {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a handler this signal keeps its default action.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let (term, int) = (
        wait(signal(SignalKind::terminate())),
        wait(signal(SignalKind::interrupt())),
    );
    async move {
        tokio::select! {
            () = term => {}
            () = int => {}
        }
        tracing::info!("shutting down");
    }
}

/// Raises the open-file limit and fits under it the caps of the listeners
/// this process serves (see [`crate::net::fds::fit_listeners`]).
pub(super) fn fit_to_fd_limit(server: Option<&mut ServerLimits>, workload: Option<&mut Limits>) {
    let nofile = crate::net::fds::raise_nofile_limit();
    let (admin, tcp) = match server {
        Some(s) => (Some(&mut s.admin), Some(&mut s.tcp)),
        None => (None, None),
    };
    crate::net::fds::fit_listeners(nofile, admin, tcp, workload);
}

/// `sigil server --config FILE`.
pub(super) async fn run_server(config: &Path) -> Result<(), Failure> {
    let shutdown = shutdown_signal();
    let mut config = ServerConfig::load(config)?;
    fit_to_fd_limit(Some(&mut config.limits), None);
    let server = Server::open(config).await?;
    let listeners = bind(&server).await?;
    tracing::info!(listen = %server.config().listen, admin = %server.config().admin_socket.display(), "serving");
    serve(server, listeners, shutdown).await?;
    Ok(())
}

/// The data directory, created 0755 when missing: it holds the agent's
/// socket, which every local user must reach; what is private inside it
/// gets its own mode (and `server/` and `agent/` are 0700).
fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    OutDir::create(p, Access::Public)?;
    Ok(std::fs::canonicalize(p)?)
}

/// Creates the development unseal key once (mode 0600) and reuses it after.
fn dev_passphrase(dir: &Path) -> Result<PathBuf, Failure> {
    let out = OutDir::open(dir)?;
    let path = dir.join("dev-unseal.key");
    if !out.contains("dev-unseal.key")? {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| Failure("no randomness".into()))?;
        let text = zeroize::Zeroizing::new(hex::encode(bytes));
        out.write("dev-unseal.key", text.as_bytes(), Access::Private)?;
    }
    Ok(path)
}

/// Grants that let the dev admin do everything with every secret, so the
/// quick start works; a real deployment writes its own.
fn dev_grants(td: &str) -> String {
    let all: Vec<String> = crate::secrets::Verb::ALL
        .iter()
        .map(|v| format!("{}:**", v.as_str()))
        .collect();
    serde_json::json!({"sigil": {"grants": {format!("spiffe://{td}/dev/admin"): all}}}).to_string()
}

fn dev_config(args: &DevArgs, dir: &Path) -> Result<ServerConfig, Failure> {
    let policy_dir = dir.join("policies");
    // Whoever can write the policy decides every request: the directory is
    // checked like any other sigil writes to.
    let policies = OutDir::create(&policy_dir, Access::Public)?;
    if !policies.contains("sigil.rego")? {
        policies.write("sigil.rego", DEFAULT_POLICY.as_bytes(), Access::Public)?;
    }
    if !policies.contains("grants.json")? {
        policies.write(
            "grants.json",
            dev_grants(&args.trust_domain).as_bytes(),
            Access::Public,
        )?;
    }
    // The store and the agent's key live below: private, and checked.
    OutDir::create(&dir.join("server"), Access::Private)?;
    OutDir::create(&dir.join("agent"), Access::Private)?;
    let ttl = |s: &str| Ttl::parse(s).map_err(Failure::from);
    Ok(ServerConfig {
        trust_domain: TrustDomain::parse(&args.trust_domain)
            .map_err(|e| Failure(format!("--trust-domain: {e}")))?,
        data_dir: dir.join("server"),
        listen: args.listen,
        admin_socket: dir.join("admin.sock"),
        admin_uids: Vec::new(),
        // Unsealed explicitly below, after a first start initializes.
        unseal: None,
        policy_dir,
        ca_ttl: ttl("24h")?,
        x509_svid_ttl: ttl("1h")?,
        jwt_svid_ttl: ttl("5m")?,
        rotation: crate::authority::RotationPolicy::default(),
        kdf_cost: crate::keyring::KdfCost::default(),
        limits: ServerLimits::default(),
        federation: crate::config::FederationConfig::default(),
        oidc: crate::config::OidcConfig::default(),
        // The HTTP API on its own listener, with a certificate sigil's CA
        // issues for the address (and `localhost` when it is loopback).
        http: Some(crate::config::HttpConfig {
            listen: args.http_listen,
            cert: crate::config::HttpCert::Issued(http_names(args.http_listen)),
            kv_mount: "secret".into(),
        }),
        jit: dev_jit_roles()?,
    })
}

/// Two roles to try the elevation flow with: one approval, and two.
fn dev_jit_roles() -> Result<crate::config::JitConfig, Failure> {
    let grant = |g: &str| crate::secrets::Grant::parse(g).map_err(Failure::from);
    Ok(crate::config::JitConfig {
        roles: vec![
            crate::jit::JitRole {
                name: "dev-read".into(),
                grants: vec![grant("read:**")?, grant("list:**")?],
                max_duration: 3600,
                approvals: 1,
            },
            crate::jit::JitRole {
                name: "dev-write".into(),
                grants: vec![grant("write:**")?],
                max_duration: 1800,
                approvals: 2,
            },
        ],
        pending_ttl: crate::jit::DEFAULT_PENDING_TTL,
    })
}

/// The names the dev HTTP API's certificate carries: its IP address, and
/// `localhost` too for a loopback or unspecified address.
fn http_names(listen: SocketAddr) -> Vec<String> {
    let ip = listen.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
    } else {
        vec![ip.to_string()]
    }
}

/// `sigil dev`: a server with an embedded store, initialized and unsealed
/// with a development key.
pub(super) async fn run(args: &DevArgs, out: &Out) -> Result<(), Failure> {
    let shutdown = shutdown_signal();
    let dir = absolute(&args.data_dir)?;
    let mut config = dev_config(args, &dir)?;
    let mut workload_limits = Limits::workload();
    fit_to_fd_limit(Some(&mut config.limits), Some(&mut workload_limits));
    let passphrase = crate::config::read_secret_file(&dev_passphrase(&dir)?)?;
    let server: Arc<Server> = Server::open(config).await?;
    let api_err = |e| Failure(tonic::Status::from(e).message().to_owned());
    if server.status().map_err(api_err)?.initialized {
        server.clone().unseal(passphrase).await.map_err(api_err)?;
    } else {
        server.clone().init(passphrase).await.map_err(api_err)?;
    }
    let bundle_path = dir.join("bundle.pem");
    let bundle = server
        .authority()
        .map_err(|e| Failure(e.to_string()))?
        .bundle();
    OutDir::open(&dir)?.write("bundle.pem", bundle.to_pem().as_bytes(), Access::Public)?;
    let listeners = bind(&server).await?;
    let listen = listeners.tcp.local_addr()?;
    let http_listen = match &listeners.http {
        Some(l) => l.local_addr()?,
        None => args.http_listen,
    };
    let vault_host = if http_listen.ip().is_unspecified() || http_listen.ip().is_loopback() {
        "127.0.0.1".to_owned()
    } else {
        http_listen.ip().to_string()
    };
    let vault_addr = format!("https://{vault_host}:{}", http_listen.port());
    let admin = server.config().admin_socket.clone();
    let td = server.trust_domain().clone();

    // The server first, then the agent that attests to it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server_task = tokio::spawn(serve(server, listeners, stopped(stop_rx.clone())));
    let token = dev_bootstrap(&admin, &td).await?;
    let opts = AgentOptions {
        server: listen.to_string(),
        trust_bundle: bundle_path.clone(),
        data_dir: dir.join("agent"),
        attest: crate::attest::AttestConfig::default(),
        limits: workload_limits,
    };
    let agent = Agent::start(&opts, Some(&token)).await?;
    let cache = agent.cache.clone();
    let socket = dir.join("agent.sock");
    let listener = bind_workload_socket(&socket)
        .map_err(|e| Failure(format!("cannot bind {}: {e}", socket.display())))?;
    let agent_task = tokio::spawn({
        let stop = stopped(stop_rx);
        async move { agent.run(&opts, listener, stop).await }
    });

    // The environment is printed once the agent holds the dev entries, so a
    // command run right after it is answered, not told to retry.
    if tokio::time::timeout(Duration::from_secs(10), cache.wait_synced())
        .await
        .is_err()
    {
        eprintln!(
            "warning: the agent has not synced with the server yet; Workload API calls will wait for it"
        );
    }
    eprintln!(
        "WARNING: sigil dev keeps its unseal key next to its data ({}).",
        dir.display()
    );
    eprintln!("WARNING: these keys are for development only; never use them for real workloads.");
    let endpoint = format!("unix://{}", socket.display());
    out.print(
        &json!({
            "SPIFFE_ENDPOINT_SOCKET": endpoint,
            "SIGIL_ADMIN_SOCKET": admin.display().to_string(),
            "SIGIL_SERVER": listen.to_string(),
            "SIGIL_CA_BUNDLE": bundle_path.display().to_string(),
            "VAULT_ADDR": vault_addr,
            "VAULT_CACERT": bundle_path.display().to_string(),
            "trust_domain": td.to_string(),
            "admin_spiffe_id": format!("spiffe://{td}/dev/admin"),
        }),
        || {
            format!(
                "sigil dev is running (trust domain {td}); you are spiffe://{td}/dev/admin.\nIn another shell:\n\n  export SPIFFE_ENDPOINT_SOCKET={endpoint}\n  export SIGIL_ADMIN_SOCKET={}\n  export SIGIL_SERVER={listen}\n  export SIGIL_CA_BUNDLE={}\n\nVault clients (the HTTP API):\n\n  export VAULT_ADDR={vault_addr}\n  export VAULT_CACERT={}\n\nPress Ctrl-C to stop.",
                admin.display(),
                bundle_path.display(),
                bundle_path.display()
            )
        },
    );
    shutdown.await;
    let _ = stop_tx.send(true);
    let (s, a) = tokio::join!(server_task, agent_task);
    s.map_err(|e| Failure(e.to_string()))??;
    a.map_err(|e| Failure(e.to_string()))??;
    Ok(())
}

/// Through the admin socket (so both are authorized and audited like any
/// operator call): a join token for the dev agent, and an admin entry for
/// the invoking user's uid under it.
async fn dev_bootstrap(admin: &Path, td: &TrustDomain) -> Result<Secret, Failure> {
    let mut c = Clients::connect(&Target::Admin(admin.to_owned())).await?;
    let token = c
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 600,
            agent_name: "dev".into(),
            // After the first run the dev agent is active under this name;
            // the token goes to that same agent (used only if its stored
            // SVID has expired), so taking over the name is the intent.
            replace: true,
        })
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    let uid = crate::server::own_uid();
    let entry = pb::Entry {
        spiffe_id: format!("spiffe://{td}/dev/admin"),
        parent_id: token.agent_id.clone(),
        selectors: vec![format!("unix:uid:{uid}")],
        admin: true,
        hint: "dev-admin".into(),
        ..pb::Entry::default()
    };
    match c
        .entries
        .create(pb::CreateEntryRequest { entry: Some(entry) })
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => return Err(Failure(status_line(&s))),
    }
    Ok(Secret::from(token.token))
}
