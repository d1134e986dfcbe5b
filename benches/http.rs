//! The HTTP API benchmark (SPEC §6): runs the real `sigil server` with the
//! Vault-compatible HTTP API on and an OIDC issuer whose key the benchmark
//! holds, and measures, in one run:
//! - KV v2 reads per second with a sigil token (`GET /v1/secret/data/…`,
//!   each one authenticated by its token, decided by the Rego PDP, read
//!   from the sealed store, decrypted and audited) at concurrency 32 (one
//!   HTTP/1.1 keep-alive connection per client, as Vault clients use), beside
//!   the raw limit: a bare HTTPS request to the same listener that is
//!   answered before any work (the same request with the same token header,
//!   to a path no route serves: TLS, HTTP/1.1 and an error reply), on the
//!   same connections;
//! - each of the two alone for a few seconds, with the CPU time the server
//!   and the clients spent per request (read from `/proc`), which shows
//!   where a read's extra cost lies;
//! - JWT logins per second (RS256 verify, bound claims, an ES256 token
//!   signed and recorded, and the login audited durably) at concurrency 8.
//!
//! Nothing is asserted: timings depend on the machine. Run with
//! `cargo bench --bench http`.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark times itself with the wall clock and waits for processes"
)]

mod common;
#[path = "../tests/it/oidc_signer.rs"]
#[allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "the tests' OIDC issuer: a fixture key that fails to load ends the run"
)]
mod oidc_signer;
#[path = "common/sigil_server.rs"]
mod sigil_server;

use common::{BenchResult, Rates, Runner, SLICES, WINDOW, compare};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use oidc_signer::{Issuer, github_claims};
use sigil::api::pb;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const READ_PATH: &str = "bench/db";
const LOGIN_CONCURRENCY: usize = 8;
const LOGIN_SPAN: Duration = Duration::from_secs(5);
/// How long each kind of request runs alone for its CPU cost.
const CPU_SPAN: Duration = Duration::from_secs(4);

type Conn = SendRequest<Full<bytes::Bytes>>;
/// A connection one client task at a time uses.
type Shared = Arc<tokio::sync::Mutex<Conn>>;

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let issuer = Issuer::new();
    let http_port = sigil_server::free_port()?;
    let (server, mut admin) = runtime.block_on(start(dir.path(), &issuer, http_port))?;
    runtime.block_on(async {
        admin
            .secrets
            .put(pb::PutSecretRequest {
                path: READ_PATH.into(),
                fields: [("password".to_string(), b"hunter2".to_vec())]
                    .into_iter()
                    .collect(),
                has_cas: false,
                cas: 0,
            })
            .await?;
        BenchResult::Ok(())
    })?;
    let tls = Arc::new(client_config(&dir.path().join("server/bundle.pem"))?);
    let addr = format!("127.0.0.1:{http_port}");
    println!(
        "sigil HTTP API benchmark (SPEC §6); server under {} (gRPC on {}, HTTP on {http_port})",
        dir.path().display(),
        server.port
    );
    println!(
        "rates alternate with their raw limit in {SLICES} slices over {} s\n",
        WINDOW.as_secs()
    );
    let token = runtime.block_on(async {
        let mut c = connect(&addr, &tls).await?;
        login(&mut c, &issuer).await
    })?;
    let conns: Vec<Shared> = runtime.block_on(async {
        let mut v = Vec::new();
        for _ in 0..32 {
            v.push(Arc::new(tokio::sync::Mutex::new(
                connect(&addr, &tls).await?,
            )));
        }
        BenchResult::Ok(v)
    })?;
    let read_path = format!("/v1/secret/data/{READ_PATH}");
    let rates = compare(
        requests(&runtime, &conns, &read_path, Some(&token), 200),
        requests(&runtime, &conns, "/v1/bench/bare", Some(&token), 404),
    )?;
    println!(
        "KV read over HTTPS with a token, concurrency 32  {:>7.0} /s   bare HTTPS request {:>7.0} /s   ratio {:>5.2}  (target >= 0.50)",
        rates.figure,
        rates.raw,
        ratio(&rates)
    );
    // Where the difference goes: each kind alone, with the CPU time the
    // server and this process (the clients) spent per request.
    for (what, path, status) in [
        ("KV read", read_path.as_str(), 200),
        ("bare request", "/v1/bench/bare", 404),
    ] {
        let cpu = cpu_per_request(
            requests(&runtime, &conns, path, Some(&token), status),
            server.pid(),
        )?;
        println!(
            "  {what:<12} alone  {:>7.0} /s   CPU per request: server {:>5.1} us, clients {:>5.1} us",
            cpu.rate, cpu.server_us, cpu.client_us
        );
    }
    let (logins, secs) = runtime.block_on(logins(&addr, &tls, &issuer))?;
    println!(
        "JWT login (RS256 verify, ES256 token, durable audit), concurrency {LOGIN_CONCURRENCY}  {:>7.0} /s   ({logins} in {secs:.1} s)",
        logins as f64 / secs
    );
    Ok(())
}

/// One kind of request run alone, and what it cost.
struct Cpu {
    rate: f64,
    server_us: f64,
    client_us: f64,
}

/// Runs `runner` alone (after a short warm-up) and reads the CPU time the
/// server process and this process spent meanwhile from `/proc`.
fn cpu_per_request(mut runner: Runner<'_>, server: u32) -> BenchResult<Cpu> {
    // /proc/<pid>/stat counts in USER_HZ ticks, 100 per second on Linux.
    const US_PER_TICK: f64 = 10_000.0;
    let ticks = |pid: u32| -> BenchResult<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) closes.
        let after = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| -> BenchResult<u64> {
            Ok(f.get(i).ok_or("short /proc stat")?.parse::<u64>()?)
        };
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after `)`.
        Ok(field(11)? + field(12)?)
    };
    let _ = runner(Duration::from_secs(1))?;
    let (s0, c0) = (ticks(server)?, ticks(std::process::id())?);
    let start = Instant::now();
    let n = runner(CPU_SPAN)?;
    let secs = start.elapsed().as_secs_f64();
    let (s1, c1) = (ticks(server)?, ticks(std::process::id())?);
    let per = |t: u64| t as f64 * US_PER_TICK / n.max(1) as f64;
    Ok(Cpu {
        rate: n as f64 / secs,
        server_us: per(s1.saturating_sub(s0)),
        client_us: per(c1.saturating_sub(c0)),
    })
}

fn ratio(r: &Rates) -> f64 {
    r.figure / r.raw
}

async fn start(
    dir: &Path,
    issuer: &Issuer,
    http_port: u16,
) -> BenchResult<(sigil_server::Server, sigil::cli::client::Clients)> {
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json())?;
    let extra = format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\nnames = [\"127.0.0.1\"]\n\
         [[oidc.issuer]]\nname = \"github\"\nissuer = \"{}\"\njwks_file = {}\naudiences = [\"sigil\"]\n\
         [[oidc.role]]\nname = \"bench\"\nissuer = \"github\"\n\
         bound_claims = {{ repository = \"acme/app\" }}\n\
         spiffe_id = \"spiffe://example.org/ci/{{repository}}\"\ngrants = [\"read:bench/*\"]\n",
        oidc_signer::GITHUB_ISSUER,
        sigil_server::toml_str(&jwks),
    );
    sigil_server::start(
        dir,
        serde_json::json!({}),
        &extra,
        "sigil-http-bench-server.log",
    )
    .await
}

fn client_config(bundle: &Path) -> BenchResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for r in sigil::cli::client::read_bundle(bundle)? {
        roots.add(r.into())?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(sigil::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An HTTP/1.1 keep-alive connection over TLS; retries while the listener
/// is not up yet.
async fn connect(addr: &str, tls: &Arc<rustls::ClientConfig>) -> BenchResult<Conn> {
    let start = Instant::now();
    let tcp = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(t) => break t,
            Err(e) if start.elapsed() > Duration::from_secs(30) => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?;
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn request(
    c: &mut Conn,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> BenchResult<(u16, bytes::Bytes)> {
    c.ready().await?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if let Some(t) = token {
        req = req.header("x-vault-token", t);
    }
    let resp = c
        .send_request(req.body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))?)
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

async fn login(c: &mut Conn, issuer: &Issuer) -> BenchResult<String> {
    let now = sigil::clock::unix_seconds(sigil::clock::now());
    let body = serde_json::json!({"role": "bench", "jwt": issuer.sign_rs256(&github_claims(now))});
    let (status, bytes) = request(
        c,
        "POST",
        "/v1/auth/jwt/login",
        None,
        Some(body.to_string()),
    )
    .await?;
    if status != 200 {
        return Err(format!("login: {status} {}", String::from_utf8_lossy(&bytes)).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    v.pointer("/auth/client_token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "login: no client_token".into())
}

/// `GET path` on every connection at once, each in a loop, expecting
/// `status`.
fn requests<'a>(
    rt: &'a tokio::runtime::Runtime,
    conns: &[Shared],
    path: &str,
    token: Option<&str>,
    status: u16,
) -> Runner<'a> {
    let conns = conns.to_vec();
    let (path, token) = (path.to_owned(), token.map(str::to_owned));
    Box::new(move |span| {
        let start = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = conns
                .iter()
                .map(|c| {
                    let (c, path, token) = (c.clone(), path.clone(), token.clone());
                    tokio::spawn(async move {
                        let mut c = c.lock().await;
                        let mut n = 0u64;
                        while start.elapsed() < span {
                            let (got, body) = request(&mut c, "GET", &path, token.as_deref(), None)
                                .await
                                .map_err(|e| e.to_string())?;
                            if got != status {
                                return Err(format!(
                                    "{path}: {got} {}",
                                    String::from_utf8_lossy(&body)
                                ));
                            }
                            // Counted within the span only (`common::timed`).
                            if start.elapsed() <= span {
                                n += 1;
                            }
                        }
                        Ok::<u64, String>(n)
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await??;
            }
            BenchResult::Ok(total)
        })
    })
}

async fn logins(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    issuer: &Issuer,
) -> BenchResult<(u64, f64)> {
    // JWTs signed up front: the figure is the server's, not the signer's.
    let now = sigil::clock::unix_seconds(sigil::clock::now());
    let jwt = issuer.sign_rs256(&github_claims(now));
    let body = serde_json::json!({"role": "bench", "jwt": jwt}).to_string();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..LOGIN_CONCURRENCY {
        let mut c = connect(addr, tls).await?;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < LOGIN_SPAN {
                let (status, bytes) = request(
                    &mut c,
                    "POST",
                    "/v1/auth/jwt/login",
                    None,
                    Some(body.clone()),
                )
                .await
                .map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!(
                        "login: {status} {}",
                        String::from_utf8_lossy(&bytes)
                    ));
                }
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total, start.elapsed().as_secs_f64()))
}
