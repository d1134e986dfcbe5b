//! The secrets benchmark (SPEC §6: "secret read vs a bare gRPC echo over the
//! same transport").
//!
//! Runs the real `sigil server` in a scratch directory and measures, in one
//! run:
//! - secret reads per second over mTLS — each one authenticated, decided by
//!   the Rego PDP over the grants, read from the sealed store, decrypted and
//!   audited — at concurrency 1 and 32, beside the raw limit: a bare gRPC
//!   call on the same TLS connection that the service refuses before any
//!   work (a `Get` with an empty path), at the same concurrency;
//! - a rotation sweep of 10,000 secrets: all made due at the same moment
//!   (rotation settings written while the server runs, then the server is
//!   sealed until every one is due and unsealed again), the total time the
//!   rotation task takes, and read latency during the sweep beside idle.
//!
//! Nothing is asserted: timings depend on the machine. Run with
//! `cargo bench --bench secrets`.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark times itself with the wall clock and waits for processes"
)]

mod common;
#[path = "common/sigil_server.rs"]
mod sigil_server;
#[path = "common/spread.rs"]
mod spread;
use common::{BenchResult, Rates, Runner, SLICES, WINDOW, compare};
use sigil_server::{PASSPHRASE, SIGIL, Server};
use spread::{bare_once, spread};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sigil::api::pb;
use sigil::api::pb::secrets_client::SecretsClient;
use sigil::cli::client::{Clients, Target};
use tonic::transport::Channel;

const READER: &str = "spiffe://example.org/bench/reader";
const READ_PATH: &str = "bench/db";
/// Secrets in the rotation sweep.
const SWEEP: usize = 10_000;
/// Writes in flight while setting the sweep up.
const SETUP_CONCURRENCY: usize = 32;

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (_server, mut admin) = runtime.block_on(start_server(dir.path()))?;
    let reader = runtime.block_on(reader_channel(dir.path(), &mut admin))?;
    println!(
        "sigil secrets benchmark (SPEC §6); server under {}",
        dir.path().display()
    );
    println!(
        "rates alternate with their raw limit in {SLICES} slices over {} s\n",
        WINDOW.as_secs()
    );
    runtime.block_on(async {
        let mut c = admin.secrets.clone();
        c.put(put(READ_PATH, "hunter2")).await?;
        BenchResult::Ok(())
    })?;
    for concurrency in [32, 1] {
        let rates = compare(
            reads(&runtime, &reader, concurrency),
            bare(&runtime, &reader, concurrency),
        )?;
        println!(
            "secret read over mTLS, concurrency {concurrency:>2}  {:>7.0} /s   bare gRPC call {:>7.0} /s   ratio {:>5.2}{}",
            rates.figure,
            rates.raw,
            ratio(&rates),
            if concurrency == 32 {
                "  (target >= 0.50)"
            } else {
                ""
            }
        );
    }
    println!();
    runtime.block_on(sweep(&mut admin, &reader))?;
    Ok(())
}

fn ratio(r: &Rates) -> f64 {
    r.figure / r.raw
}

/// Starts `sigil server` with a policy directory granting the reader
/// `read:bench/**`, and initializes it.
async fn start_server(dir: &Path) -> BenchResult<(Server, Clients)> {
    let grants = serde_json::json!({READER: ["read:bench/**"]});
    let (server, admin) =
        sigil_server::start(dir, grants, "", "sigil-secrets-bench-server.log").await?;
    std::fs::write(dir.join("port"), server.port.to_string())?;
    Ok((server, admin))
}

/// An mTLS channel authenticated as [`READER`], with an SVID minted by the
/// operator (`sigil svid mint`).
async fn reader_channel(dir: &Path, _admin: &mut Clients) -> BenchResult<Channel> {
    let out = dir.join("reader");
    let status = Command::new(SIGIL)
        .args([
            "svid",
            "mint",
            "--spiffe-id",
            READER,
            "--ttl",
            "1h",
            "--out",
        ])
        .arg(&out)
        .env("SIGIL_ADMIN_SOCKET", dir.join("admin.sock"))
        .env("SIGIL_LOG", "error")
        .status()?;
    if !status.success() {
        return Err("svid mint failed".into());
    }
    let port = std::fs::read_to_string(dir.join("port"))?;
    let target = Target::Tls {
        addr: format!("127.0.0.1:{port}"),
        ca_bundle: out.join("bundle.pem"),
        svid_dir: Some(out),
    };
    Ok(sigil::cli::client::connect(&target).await?)
}

fn put(path: &str, value: &str) -> pb::PutSecretRequest {
    pb::PutSecretRequest {
        path: path.into(),
        fields: [("password".to_string(), value.as_bytes().to_vec())]
            .into_iter()
            .collect(),
        has_cas: false,
        cas: 0,
    }
}

async fn read_once(mut c: SecretsClient<Channel>) -> BenchResult<()> {
    let v = c
        .get(pb::GetSecretRequest {
            path: READ_PATH.into(),
            version: 0,
        })
        .await
        .map_err(|e| format!("secret read: {e}"))?
        .into_inner();
    if v.fields.is_empty() {
        return Err("a read returned no fields".into());
    }
    Ok(())
}

fn reads<'a>(rt: &'a tokio::runtime::Runtime, ch: &Channel, concurrency: usize) -> Runner<'a> {
    let client = SecretsClient::new(ch.clone());
    Box::new(move |span| {
        let client = client.clone();
        rt.block_on(spread(span, concurrency, move || read_once(client.clone())))
    })
}

fn bare<'a>(rt: &'a tokio::runtime::Runtime, ch: &Channel, concurrency: usize) -> Runner<'a> {
    let client = SecretsClient::new(ch.clone());
    Box::new(move |span| {
        let client = client.clone();
        rt.block_on(spread(span, concurrency, move || bare_once(client.clone())))
    })
}

/// Runs `op` for `items` with `concurrency` in flight.
async fn each<F, Fut>(items: usize, concurrency: usize, op: F) -> BenchResult<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = BenchResult<()>>,
{
    use futures::StreamExt;
    let mut s = futures::stream::iter(0..items)
        .map(op)
        .buffer_unordered(concurrency);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}

fn sweep_path(i: usize) -> String {
    format!("bench/sweep/s{i:05}")
}

/// Read latencies in milliseconds, one reader, until `stop` is set.
async fn sample_reads(
    c: SecretsClient<Channel>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        read_once(c.clone()).await.map_err(|e| e.to_string())?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(out)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// The rotation sweep: 10,000 secrets due at once, rotated by the server's task.
async fn sweep(admin: &mut Clients, reader: &Channel) -> BenchResult<()> {
    let c = admin.secrets.clone();
    let setup = Instant::now();
    let every: i64 = 120;
    each(SWEEP, SETUP_CONCURRENCY, |i| {
        let mut c = c.clone();
        async move {
            c.put(put(&sweep_path(i), "initial")).await?;
            c.set_rotation(pb::SetRotationRequest {
                path: sweep_path(i),
                every_seconds: every,
                window_seconds: 0,
                grace_seconds: 10,
                generator: "random:length=32,charset=alnum,field=password".into(),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let set_up = setup.elapsed();
    println!(
        "rotation sweep: {SWEEP} secrets written and scheduled in {:.1} s",
        set_up.as_secs_f64()
    );
    // Idle read latency, before anything is due.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_reads(
        SecretsClient::new(reader.clone()),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut idle = sampler.await??;
    // Sealed until every schedule is past due, then unsealed: all are due at once.
    admin.operator.seal(pb::SealRequest {}).await?;
    let due_by = setup + Duration::from_secs(every as u64 + 2);
    tokio::time::sleep(due_by.saturating_duration_since(Instant::now())).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    admin
        .operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.to_vec(),
            ..Default::default()
        })
        .await?;
    let sampler = tokio::spawn(sample_reads(
        SecretsClient::new(reader.clone()),
        stop.clone(),
    ));
    let last;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let listed = admin
            .secrets
            .list(pb::ListSecretsRequest {
                prefix: "bench/sweep".into(),
            })
            .await?
            .into_inner()
            .secrets;
        let done = listed.iter().filter(|s| s.current_version >= 2).count();
        if done >= SWEEP {
            last = Instant::now();
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(format!("sweep incomplete after 30 min: {done}/{SWEEP}").into());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut during = sampler.await??;
    let total = last.duration_since(started).as_secs_f64();
    println!(
        "rotation sweep: {SWEEP} secrets rotated in {total:.1} s after unseal ({:.0} rotations/s)",
        SWEEP as f64 / total
    );
    println!(
        "read latency idle          p50 {:>7.2} ms   p99 {:>7.2} ms   (n = {})",
        pct(&mut idle, 0.5),
        pct(&mut idle, 0.99),
        idle.len()
    );
    println!(
        "read latency during sweep  p50 {:>7.2} ms   p99 {:>7.2} ms   (n = {})   p99 ratio {:.2}",
        pct(&mut during, 0.5),
        pct(&mut during, 0.99),
        during.len(),
        pct(&mut during, 0.99) / pct(&mut idle, 0.99)
    );
    Ok(())
}
