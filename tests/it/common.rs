//! Shared helpers: start a server, connect clients, run the binary.

use sigil::api::pb;
use sigil::cli::client::{Clients, Target};
use sigil::config::ServerConfig;
use sigil::id::{TrustDomain, Ttl};
use sigil::serve::{Listeners, run};
use sigil::server::Server;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use tokio::sync::oneshot;

pub const PASSPHRASE: &str = "correct horse battery staple";
pub const TD: &str = "example.org";

/// The repository's policy directory.
pub fn policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies")
}

/// A server configuration rooted in `dir`.
pub fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        trust_domain: TrustDomain::parse(TD).unwrap(),
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_socket: dir.join("admin.sock"),
        admin_uids: Vec::new(),
        unseal: None,
        policy_dir: policy_dir(),
        ca_ttl: Ttl::parse("24h").unwrap(),
        x509_svid_ttl: Ttl::parse("1h").unwrap(),
        jwt_svid_ttl: Ttl::parse("5m").unwrap(),
        rotation: sigil::authority::RotationPolicy::default(),
        kdf_cost: sigil::keyring::KdfCost::FAST_FOR_TESTS,
        limits: sigil::config::ServerLimits::default(),
        federation: sigil::config::FederationConfig::default(),
        oidc: sigil::config::OidcConfig::default(),
        http: None,
        jit: sigil::config::JitConfig::default(),
    }
}

/// [`config`] with the short key lifetimes of the rotation tests: keys live 60 s
/// (a successor is prepared at 30 s left and signs at 10 s left), SVIDs 10 s, a
/// key is published 5 s before it signs, a tainted key leaves after 8 s.
pub fn short_config(dir: &Path) -> ServerConfig {
    let secs = std::time::Duration::from_secs;
    let mut rotation = sigil::authority::RotationPolicy::for_ttls(secs(60), secs(10), secs(10));
    rotation.publish_window = secs(5);
    rotation.taint_grace = secs(8);
    rotation.validate().unwrap();
    ServerConfig {
        ca_ttl: Ttl::parse("60s").unwrap(),
        x509_svid_ttl: Ttl::parse("10s").unwrap(),
        jwt_svid_ttl: Ttl::parse("10s").unwrap(),
        rotation,
        ..config(dir)
    }
}

/// A server running in this process.
pub struct TestServer {
    pub server: Arc<Server>,
    pub addr: std::net::SocketAddr,
    /// The HTTP API's address, when `[http]` is configured.
    pub http_addr: Option<std::net::SocketAddr>,
    pub admin: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server over `dir` (creating or reusing its data).
    pub async fn start_in(dir: &Path) -> TestServer {
        Self::start_with(config(dir)).await
    }

    /// Starts a server with `config`, listening on `addr` (port 0 for any).
    /// Logs go to the test output when SIGIL_TEST_LOG names a filter.
    pub async fn start_at(config: ServerConfig, addr: std::net::SocketAddr) -> TestServer {
        init_logs();
        let admin = config.admin_socket.clone();
        let server = Server::open(config).await.unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(server, tcp, admin)
    }

    /// Starts a server with `config`.
    pub async fn start_with(config: ServerConfig) -> TestServer {
        Self::start_with_clock(config, Arc::new(sigil::clock::SystemClock)).await
    }

    /// Starts a server with `config` that reads the time from `clock`.
    pub async fn start_with_clock(
        config: ServerConfig,
        clock: Arc<dyn sigil::clock::Clock>,
    ) -> TestServer {
        init_logs();
        let admin = config.admin_socket.clone();
        let server = Server::open_with_clock(config, clock).await.unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(server, tcp, admin)
    }

    /// Starts a server with `config` reading the time from `clock`, on bound
    /// listeners: `tcp` for gRPC, `bundle_endpoint` for the SPIFFE bundle endpoint.
    pub async fn start_on(
        config: ServerConfig,
        clock: Arc<dyn sigil::clock::Clock>,
        tcp: tokio::net::TcpListener,
        bundle_endpoint: Option<tokio::net::TcpListener>,
    ) -> TestServer {
        init_logs();
        let admin = config.admin_socket.clone();
        let server = Server::open_with_clock(config, clock).await.unwrap();
        Self::serve_all(server, tcp, admin, bundle_endpoint)
    }

    fn serve(server: Arc<Server>, tcp: tokio::net::TcpListener, admin: PathBuf) -> TestServer {
        Self::serve_all(server, tcp, admin, None)
    }

    fn serve_all(
        server: Arc<Server>,
        tcp: tokio::net::TcpListener,
        admin: PathBuf,
        bundle_endpoint: Option<tokio::net::TcpListener>,
    ) -> TestServer {
        let addr = tcp.local_addr().unwrap();
        // The HTTP API, when configured, on a free port of its address.
        let http = server.config().http.as_ref().map(|h| {
            let std = std::net::TcpListener::bind(h.listen).unwrap();
            std.set_nonblocking(true).unwrap();
            tokio::net::TcpListener::from_std(std).unwrap()
        });
        let http_addr = http.as_ref().map(|l| l.local_addr().unwrap());
        let admin_listener = sigil::serve::bind_admin_socket(&admin).unwrap();
        let (tx, rx) = oneshot::channel();
        let s = server.clone();
        let task = tokio::spawn(async move {
            run(
                s,
                Listeners {
                    tcp,
                    admin: admin_listener,
                    bundle_endpoint,
                    http,
                },
                async {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
        TestServer {
            server,
            addr,
            http_addr,
            admin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Starts a fresh server and initializes it.
    pub async fn initialized(dir: &Path) -> TestServer {
        Self::initialized_with_clock(dir, Arc::new(sigil::clock::SystemClock)).await
    }

    /// Starts a fresh server with `config`, and initializes it.
    pub async fn initialized_with_config(config: ServerConfig) -> TestServer {
        Self::initialized_with_config_and_clock(config, Arc::new(sigil::clock::SystemClock)).await
    }

    /// Starts a fresh server reading the time from `clock`, and initializes it.
    pub async fn initialized_with_clock(
        dir: &Path,
        clock: Arc<dyn sigil::clock::Clock>,
    ) -> TestServer {
        Self::initialized_with_config_and_clock(config(dir), clock).await
    }

    /// Starts a fresh server with `config` reading the time from `clock`,
    /// and initializes it.
    pub async fn initialized_with_config_and_clock(
        config: ServerConfig,
        clock: Arc<dyn sigil::clock::Clock>,
    ) -> TestServer {
        let s = Self::start_with_clock(config, clock).await;
        s.clients()
            .await
            .operator
            .init(pb::InitRequest {
                passphrase: PASSPHRASE.as_bytes().to_vec(),
            })
            .await
            .unwrap();
        s
    }

    /// Clients over the admin socket.
    pub async fn clients(&self) -> Clients {
        Clients::connect(&Target::Admin(self.admin.clone()))
            .await
            .unwrap()
    }

    /// Clients over TLS, authenticating with the SVID files in `svid_dir`.
    pub async fn tls_clients(&self, ca_bundle: &Path, svid_dir: Option<&Path>) -> Clients {
        Clients::connect(&Target::Tls {
            addr: self.addr.to_string(),
            ca_bundle: ca_bundle.to_owned(),
            svid_dir: svid_dir.map(Path::to_owned),
        })
        .await
        .unwrap()
    }

    /// Stops the server and waits until it has released its store.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        drop(self.server);
        // Give pending connections a moment to drop their handles.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A valid entry message.
pub fn entry(path: &str, uid: u32) -> pb::Entry {
    pb::Entry {
        spiffe_id: format!("spiffe://{TD}{path}"),
        parent_id: format!("spiffe://{TD}/sigil/agent/node1"),
        selectors: vec![format!("unix:uid:{uid}")],
        ..pb::Entry::default()
    }
}

/// Runs the built binary with `args` and `env`.
pub fn sigil(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(args)
        .env_remove("SIGIL_ADMIN_SOCKET")
        .env_remove("SIGIL_SERVER")
        .env("SIGIL_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// stdout of a successful run, or a panic showing stderr.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every byte of every file under `dir`.
pub fn all_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// An agent running in this process against a [`TestServer`].
pub struct TestAgent {
    pub agent: sigil::agent::run::Agent,
    pub socket: PathBuf,
    pub id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestAgent {
    /// Opens the agent's own entry stream to the server (as its session
    /// does) and reads the first message, which says the agent is synced.
    pub async fn open_entry_stream(&self) -> tonic::Streaming<pb::SyncEntriesResponse> {
        let mut stream = self
            .agent
            .session
            .node()
            .sync_entries(pb::SyncEntriesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(first.synced, "{first:?}");
        stream
    }

    /// Attests a new agent called `name` with a fresh join token and serves
    /// its Workload API on a socket in `dir`.
    pub async fn start(server: &TestServer, dir: &Path, name: &str) -> TestAgent {
        Self::start_limited(server, dir, name, sigil::net::Limits::workload()).await
    }

    /// [`TestAgent::start`] with the Workload API socket under `limits`.
    pub async fn start_limited(
        server: &TestServer,
        dir: &Path,
        name: &str,
        limits: sigil::net::Limits,
    ) -> TestAgent {
        Self::start_against(&server.admin, server.addr, dir, name, limits).await
    }

    /// [`TestAgent::start_limited`] against any server: the one whose admin socket
    /// is `admin` and whose TLS listener is `addr` (a server run as the binary).
    pub async fn start_against(
        admin: &Path,
        addr: std::net::SocketAddr,
        dir: &Path,
        name: &str,
        limits: sigil::net::Limits,
    ) -> TestAgent {
        let mut c = Clients::connect(&Target::Admin(admin.to_owned()))
            .await
            .unwrap();
        let token = c
            .agents
            .create_join_token(pb::CreateJoinTokenRequest {
                ttl_seconds: 0,
                agent_name: name.into(),
                replace: false,
            })
            .await
            .unwrap()
            .into_inner();
        let pem = c
            .bundle
            .get(pb::GetBundleRequest {})
            .await
            .unwrap()
            .into_inner()
            .pem;
        std::fs::create_dir_all(dir).unwrap();
        let bundle = dir.join("bootstrap.pem");
        std::fs::write(&bundle, pem).unwrap();
        let opts = sigil::agent::run::AgentOptions {
            limits,
            ..agent_options(addr, dir)
        };
        let agent =
            sigil::agent::run::Agent::start(&opts, Some(&sigil::secret::Secret::from(token.token)))
                .await
                .unwrap();
        Self::serve(agent, opts, token.agent_id)
    }

    /// Restarts an agent from its stored state (no join token).
    pub async fn restart(server_addr: std::net::SocketAddr, dir: &Path, id: &str) -> TestAgent {
        let opts = sigil::agent::run::AgentOptions {
            server: server_addr.to_string(),
            trust_bundle: dir.join("bootstrap.pem"),
            data_dir: dir.join("state"),
            attest: sigil::attest::AttestConfig::default(),
            limits: sigil::net::Limits::workload(),
        };
        let agent = sigil::agent::run::Agent::start(&opts, None).await.unwrap();
        Self::serve(agent, opts, id.to_owned())
    }

    fn serve(
        agent: sigil::agent::run::Agent,
        opts: sigil::agent::run::AgentOptions,
        id: String,
    ) -> TestAgent {
        let socket = opts.data_dir.parent().unwrap().join("agent.sock");
        let listener = sigil::agent::workload::bind_workload_socket(&socket).unwrap();
        let (tx, rx) = oneshot::channel();
        let a = agent.clone();
        let task = tokio::spawn(async move {
            a.run(&opts, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestAgent {
            agent,
            socket,
            id,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The endpoint as SPIFFE clients take it.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Stops serving.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

fn agent_options(addr: std::net::SocketAddr, dir: &Path) -> sigil::agent::run::AgentOptions {
    sigil::agent::run::AgentOptions {
        server: addr.to_string(),
        trust_bundle: dir.join("bootstrap.pem"),
        data_dir: dir.join("state"),
        attest: sigil::attest::AttestConfig::default(),
        limits: sigil::net::Limits::workload(),
    }
}

/// Creates an entry under `parent` for `uid`.
pub async fn register(
    server: &TestServer,
    parent: &str,
    path: &str,
    uid: u32,
    hint: &str,
    x509_ttl: i64,
) -> pb::Entry {
    let mut c = server.clients().await;
    let e = pb::Entry {
        spiffe_id: format!("spiffe://{TD}{path}"),
        parent_id: parent.to_owned(),
        selectors: vec![format!("unix:uid:{uid}")],
        hint: hint.to_owned(),
        x509_ttl_seconds: x509_ttl,
        ..pb::Entry::default()
    };
    c.entries
        .create(pb::CreateEntryRequest { entry: Some(e) })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `f` returns Some, polling every 20 ms for up to `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn init_logs() {
    if let Ok(filter) = std::env::var("SIGIL_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Unseals with the test passphrase.
pub async fn unseal(c: &mut Clients) {
    c.operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Every entry, as the API lists them.
pub async fn list_entries(c: &mut Clients) -> pb::ListEntriesResponse {
    c.entries
        .list(pb::ListEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// Runs `cmd`, a client of another stack (Python, Node) that reports what
/// it did as JSON on stdout, within two minutes, and returns that JSON; a
/// failed run fails the test with its output.
pub async fn client_json(mut cmd: tokio::process::Command, what: &str) -> serde_json::Value {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the {what} client finishes within 120 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} client failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
