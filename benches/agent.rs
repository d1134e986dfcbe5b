//! The agent benchmark (SPEC §6, "The sigil agent").
//!
//! Runs the real `sigil server` and `sigil agent` as two processes in a
//! scratch directory and measures, in one run: cached FetchX509SVID and
//! FetchJWTSVID calls per second on the agent's socket beside a bare gRPC
//! health check on the same socket (the raw limit of one call there);
//! first-issuance latency for a new workload process beside the same
//! process served from the cache; how long a new entry takes to reach a
//! workload's open stream; and the agent's memory with 1,000 registered
//! workloads of which 100 are active. Nothing is asserted: timings depend
//! on the machine.
//!
//! Call rates and their raw limit alternate in slices of one window, so
//! background load hits both alike. Run as root with `cargo bench --bench
//! agent`: workload processes are started under other uids with `setpriv`.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark times itself with the wall clock and waits for processes"
)]

mod common;
use common::{BenchResult, Rates, Runner, SLICES, WINDOW, compare};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use sigil::api::pb;
use sigil::api::workload as wpb;
use sigil::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil::cli::client::{Clients, Target, connect};
use tonic::Streaming;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

type Workload = SpiffeWorkloadApiClient<Channel>;

const SIGIL: &str = env!("CARGO_BIN_EXE_sigil");
const TRUST_DOMAIN: &str = "example.org";
/// Registered workloads, one entry each, for uids from [`FIRST_UID`].
const WORKLOADS: u32 = 1_000;
/// Of those, how many fetch an SVID (every tenth uid).
const ACTIVE: u32 = 100;
const FIRST_UID: u32 = 20_000;
/// Entry creations in flight at once while registering the workloads.
const CREATE_CONCURRENCY: usize = 16;
/// New entries timed from creation to their arrival on an open stream.
const AVAIL_ROUNDS: usize = 50;
/// How long the processes get to come up, and an entry to arrive.
const PATIENCE: Duration = Duration::from_secs(30);
const JWT_AUDIENCE: &str = "spiffe://example.org/bench/db";
const RSS_TARGET_KIB: u64 = 64 * 1024;

/// The server and agent processes; killed when dropped, so an early error
/// never leaves them running.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the figures need from the running pair.
struct Rig {
    admin: Clients,
    agent_socket: PathBuf,
    agent_pid: u32,
    parent_id: String,
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    // Workload processes run under other uids and must reach the socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let mut children = Children(Vec::new());
    let rig = runtime.block_on(start(dir.path(), &mut children))?;
    println!(
        "sigil agent benchmark (SPEC §6); server and agent under {}",
        dir.path().display()
    );
    println!(
        "call rates alternate with their raw limit in {SLICES} slices over {} s\n",
        WINDOW.as_secs()
    );
    cached_calls(&runtime, &rig)?;
    let rss = first_issuance(&runtime, &rig, dir.path())?;
    let avail = runtime.block_on(availability(&rig))?;
    print_latency("entry create -> on the open stream", avail, Some(1000.0));
    println!();
    print_memory(rss);
    drop(children);
    Ok(())
}

/// Starts the server, initializes it, creates a join token, starts the
/// agent and waits until its socket answers.
async fn start(dir: &Path, children: &mut Children) -> BenchResult<Rig> {
    // A port that was free a moment ago: the agent must be told where to dial.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut admin = start_server(dir, port, children).await?;
    let bundle = admin
        .bundle
        .get(pb::GetBundleRequest {})
        .await?
        .into_inner();
    std::fs::write(dir.join("bundle.pem"), bundle.pem)?;
    let token = admin
        .agents
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 0,
            agent_name: "bench".into(),
            replace: false,
        })
        .await?
        .into_inner();
    let (agent_socket, agent_pid) = start_agent(dir, port, &token.token, children).await?;
    Ok(Rig {
        admin,
        agent_socket,
        agent_pid,
        parent_id: token.agent_id,
    })
}

/// Starts the server on `port` and initializes it; returns admin clients.
async fn start_server(dir: &Path, port: u16, children: &mut Children) -> BenchResult<Clients> {
    let admin_socket = dir.join("admin.sock");
    let unseal = dir.join("unseal");
    let passphrase = b"bench passphrase, not a secret".to_vec();
    std::fs::write(&unseal, &passphrase)?;
    std::fs::set_permissions(&unseal, std::fs::Permissions::from_mode(0o600))?;
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies");
    let server_toml = dir.join("server.toml");
    std::fs::write(
        &server_toml,
        format!(
            "trust_domain = \"{TRUST_DOMAIN}\"\ndata_dir = {}\nlisten = \"127.0.0.1:{port}\"\n\
             admin_socket = {}\n[unseal]\npassphrase_file = {}\n[policy]\ndir = {}\n",
            toml_str(&dir.join("server")),
            toml_str(&admin_socket),
            toml_str(&unseal),
            toml_str(&policies),
        ),
    )?;
    children
        .0
        .push(spawn(&["server", "--config"], &server_toml, None)?);

    let target = Target::Admin(admin_socket);
    let mut admin = patiently("the admin socket", || Clients::connect(&target)).await?;
    admin.operator.init(pb::InitRequest { passphrase }).await?;
    Ok(admin)
}

/// Starts the agent with `token`; returns its socket and pid once it answers.
async fn start_agent(
    dir: &Path,
    port: u16,
    token: &str,
    children: &mut Children,
) -> BenchResult<(PathBuf, u32)> {
    let agent_socket = dir.join("run/agent.sock");
    let agent_toml = dir.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "server = \"127.0.0.1:{port}\"\ntrust_bundle = {}\ndata_dir = {}\nsocket = {}\n",
            toml_str(&dir.join("bundle.pem")),
            toml_str(&dir.join("agent")),
            toml_str(&agent_socket),
        ),
    )?;
    let agent = spawn(&["agent", "--config"], &agent_toml, Some(token))?;
    let agent_pid = agent.id();
    children.0.push(agent);
    let channel = patiently("the agent socket", || workload_channel(&agent_socket)).await?;
    patiently("the agent health check", || {
        health_check(HealthClient::new(channel.clone()))
    })
    .await?;
    Ok((agent_socket, agent_pid))
}

fn toml_str(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

fn spawn(args: &[&str], config: &Path, join_token: Option<&str>) -> BenchResult<Child> {
    let mut command = Command::new(SIGIL);
    command
        .args(args)
        .arg(config)
        .env("SIGIL_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // The environment, not the command line: other users can read arguments.
    if let Some(token) = join_token {
        command.env("SIGIL_JOIN_TOKEN", token);
    }
    Ok(command.spawn()?)
}

/// Retries `attempt` every 50 ms until it succeeds or [`PATIENCE`] runs out.
async fn patiently<T, E, F, Fut>(what: &str, mut attempt: F) -> BenchResult<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if start.elapsed() > PATIENCE => return Err(format!("{what}: {e}").into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn workload_channel(socket: &Path) -> BenchResult<Channel> {
    Ok(connect(&Target::Admin(socket.to_owned())).await?)
}

/// A request carrying the header the Workload API requires (sent on the
/// health check too, so both sides of a comparison carry the same bytes).
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

async fn health_check(mut client: HealthClient<Channel>) -> BenchResult<()> {
    client
        .check(request(HealthCheckRequest {
            service: String::new(),
        }))
        .await?;
    Ok(())
}

/// Opens a new FetchX509SVID stream and reads its first message.
async fn first_x509(
    client: &mut Workload,
) -> BenchResult<(wpb::X509svidResponse, Streaming<wpb::X509svidResponse>)> {
    let mut stream = client
        .fetch_x509svid(request(wpb::X509svidRequest {}))
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or("the stream closed without an SVID")?;
    Ok((first, stream))
}

async fn fetch_jwt(client: &mut Workload) -> BenchResult<()> {
    let response = client
        .fetch_jwtsvid(request(wpb::JwtsvidRequest {
            audience: vec![JWT_AUDIENCE.into()],
            spiffe_id: String::new(),
        }))
        .await?
        .into_inner();
    if response.svids.is_empty() {
        return Err("no JWT-SVID returned".into());
    }
    Ok(())
}

async fn create_entry(
    admin: &Clients,
    spiffe_id: String,
    parent_id: &str,
    uid: u32,
) -> BenchResult<()> {
    admin
        .entries
        .clone()
        .create(pb::CreateEntryRequest {
            entry: Some(pb::Entry {
                spiffe_id,
                parent_id: parent_id.to_owned(),
                selectors: vec![format!("unix:uid:{uid}")],
                ..Default::default()
            }),
        })
        .await?;
    Ok(())
}

/// Figures 1 and 2: cached SVID calls against the bare health check.
fn cached_calls(runtime: &tokio::runtime::Runtime, rig: &Rig) -> BenchResult<()> {
    let channel = runtime.block_on(workload_channel(&rig.agent_socket))?;
    let x509 = Workload::new(channel.clone());
    let jwt = Workload::new(channel.clone());
    let health = HealthClient::new(channel);
    runtime.block_on(async {
        let id = format!("spiffe://{TRUST_DOMAIN}/bench/root");
        create_entry(&rig.admin, id, &rig.parent_id, 0).await?;
        // Warm both caches: the first calls wait for the entry and issue.
        patiently("the first X.509-SVID", || {
            let mut client = x509.clone();
            async move { first_x509(&mut client).await }
        })
        .await?;
        patiently("the first JWT-SVID", || {
            let mut client = jwt.clone();
            async move { fetch_jwt(&mut client).await }
        })
        .await
    })?;
    let fetch: Runner<'_> = Box::new(|span| {
        runtime.block_on(repeat(span, || {
            let mut client = x509.clone();
            async move { first_x509(&mut client).await.map(drop) }
        }))
    });
    let rates = compare(fetch, bare(runtime, &health))?;
    print_rates("FetchX509SVID, cached, new stream", &rates, 0.8);
    let fetch: Runner<'_> = Box::new(|span| {
        runtime.block_on(repeat(span, || {
            let mut client = jwt.clone();
            async move { fetch_jwt(&mut client).await }
        }))
    });
    let rates = compare(fetch, bare(runtime, &health))?;
    print_rates("FetchJWTSVID, cached", &rates, 0.8);
    println!();
    Ok(())
}

/// The raw limit: bare health checks on the same socket.
fn bare<'a>(runtime: &'a tokio::runtime::Runtime, health: &HealthClient<Channel>) -> Runner<'a> {
    let health = health.clone();
    Box::new(move |span| runtime.block_on(repeat(span, || health_check(health.clone()))))
}

/// Calls `op` one at a time until `span` has passed; returns how many
/// completed within `span` (as `common::timed` counts).
async fn repeat<F, Fut>(span: Duration, mut op: F) -> BenchResult<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BenchResult<()>>,
{
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < span {
        op().await?;
        if start.elapsed() <= span {
            ops += 1;
        }
    }
    Ok(ops)
}

fn print_rates(figure: &str, rates: &Rates, target: f64) {
    println!(
        "{figure:<36} {:>7.0} /s   bare health check {:>7.0} /s   ratio {:>5.2}  (target >= {target:.2})",
        rates.figure,
        rates.raw,
        rates.figure / rates.raw
    );
}

fn workload_id(uid: u32) -> String {
    format!("spiffe://{TRUST_DOMAIN}/bench/workload/{uid}")
}

/// Figure 3: registers [`WORKLOADS`] entries, then starts a fetching
/// process for each of [`ACTIVE`] uids twice (first issuance, then from the
/// cache). Returns the agent's memory (figure 5) read right after.
fn first_issuance(runtime: &tokio::runtime::Runtime, rig: &Rig, dir: &Path) -> BenchResult<Memory> {
    let started = Instant::now();
    runtime.block_on(register_workloads(rig))?;
    let created = started.elapsed().as_secs_f64();
    println!(
        "registered {WORKLOADS} workload entries in {created:.1} s ({:.0} creates/s, {CREATE_CONCURRENCY} in flight)",
        f64::from(WORKLOADS) / created
    );
    let out = dir.join("out");
    std::fs::create_dir(&out)?;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777))?;
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for uid in (FIRST_UID..FIRST_UID + WORKLOADS).step_by((WORKLOADS / ACTIVE) as usize) {
        first.push(fetch_process(uid, &rig.agent_socket, &out)?);
        again.push(fetch_process(uid, &rig.agent_socket, &out)?);
    }
    let memory = Memory::read(rig.agent_pid)?;
    let first_p50 = percentile(&mut first, 0.5);
    let again_p50 = percentile(&mut again, 0.5);
    print_latency("first issuance, new workload process", first, None);
    print_latency("same process again, cached (baseline)", again, None);
    println!(
        "{:<40} {:>8.1} ms  (difference of medians)\n",
        "issuance cost",
        first_p50 - again_p50
    );
    Ok(memory)
}

/// Creates the workload entries, then one more for uid 0 and waits until it
/// reaches an open stream: entries arrive in order, so all are known then.
async fn register_workloads(rig: &Rig) -> BenchResult<()> {
    let mut client = Workload::new(workload_channel(&rig.agent_socket).await?);
    let (_, mut stream) = first_x509(&mut client).await?;
    futures::stream::iter(FIRST_UID..FIRST_UID + WORKLOADS)
        .map(|uid| create_entry(&rig.admin, workload_id(uid), &rig.parent_id, uid))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let sentinel = format!("spiffe://{TRUST_DOMAIN}/bench/sentinel");
    create_entry(&rig.admin, sentinel.clone(), &rig.parent_id, 0).await?;
    tokio::time::timeout(PATIENCE, wait_for(&mut stream, &sentinel)).await?
}

/// Reads `stream` until a message carries `spiffe_id`.
async fn wait_for(
    stream: &mut Streaming<wpb::X509svidResponse>,
    spiffe_id: &str,
) -> BenchResult<()> {
    loop {
        let message = stream.message().await?.ok_or("the stream closed")?;
        if message.svids.iter().any(|s| s.spiffe_id == spiffe_id) {
            return Ok(());
        }
    }
}

/// Runs `sigil svid fetch` as `uid`; returns its wall time in ms.
fn fetch_process(uid: u32, socket: &Path, out: &Path) -> BenchResult<f64> {
    let start = Instant::now();
    let output = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(SIGIL)
        .args(["svid", "fetch", "--json", "--write"])
        .arg(out.join(uid.to_string()))
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .env("SIGIL_LOG", "error")
        .current_dir(out)
        .stdin(Stdio::null())
        .output()?;
    let millis = start.elapsed().as_secs_f64() * 1e3;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("svid fetch as uid {uid}: {}", stderr.trim()).into());
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    if json.get("spiffe_id").and_then(|v| v.as_str()) != Some(workload_id(uid).as_str()) {
        return Err(format!("svid fetch as uid {uid} returned {json}").into());
    }
    Ok(millis)
}

/// Figure 4: from entry creation to the SVID on an already open stream.
async fn availability(rig: &Rig) -> BenchResult<Vec<f64>> {
    let mut client = Workload::new(workload_channel(&rig.agent_socket).await?);
    let (_, mut stream) = first_x509(&mut client).await?;
    let mut millis = Vec::with_capacity(AVAIL_ROUNDS);
    for round in 0..AVAIL_ROUNDS {
        let id = format!("spiffe://{TRUST_DOMAIN}/bench/avail/{round}");
        create_entry(&rig.admin, id.clone(), &rig.parent_id, 0).await?;
        let start = Instant::now();
        tokio::time::timeout(PATIENCE, wait_for(&mut stream, &id)).await??;
        millis.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(millis)
}

fn percentile(millis: &mut [f64], q: f64) -> f64 {
    millis.sort_by(f64::total_cmp);
    let index = ((millis.len() as f64 * q) as usize).min(millis.len().saturating_sub(1));
    millis.get(index).copied().unwrap_or(f64::NAN)
}

fn print_latency(label: &str, mut millis: Vec<f64>, p99_target: Option<f64>) {
    let target = p99_target.map_or(String::new(), |t| format!("  (target p99 <= {t:.0} ms)"));
    println!(
        "{label:<40} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms   (n = {}){target}",
        percentile(&mut millis, 0.50),
        percentile(&mut millis, 0.99),
        percentile(&mut millis, 1.0),
        millis.len()
    );
}

/// The agent's resident memory, from /proc/<pid>/status.
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn read(pid: u32) -> BenchResult<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> BenchResult<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
            Ok(line.trim().trim_end_matches("kB").trim().parse()?)
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

fn print_memory(memory: Memory) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "agent memory, {WORKLOADS} workloads registered, {ACTIVE} active: VmRSS {:.1} MiB   VmHWM {:.1} MiB   \
         target <= {:.0} MiB   ratio {:.2}",
        mib(memory.rss_kib),
        mib(memory.hwm_kib),
        mib(RSS_TARGET_KIB),
        memory.hwm_kib as f64 / RSS_TARGET_KIB as f64
    );
}
