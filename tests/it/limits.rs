//! Connection limits on the real listeners, with test-sized caps and
//! timeouts: idle connections are closed and open streams are not, a peer
//! that stops answering PINGs is dropped, the TLS listener caps handshakes
//! and connections, and operators keep a reserve on the admin socket.

use crate::common::*;
use crate::flood::{Flood, PATIENCE, open_to_all};
use sigil::api::pb;
use sigil::cli::client::{Target, connect};
use sigil::net::Limits;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Reads until the server closes the connection and returns what it sent;
/// panics if it does not close within [`PATIENCE`].
async fn closed_by_server(mut conn: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend(&buf[..n]);
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    got
}

/// The (type, flags, stream) of each HTTP/2 frame in `bytes`.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32)> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        out.push((bytes[3], bytes[4], stream));
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    out
}

const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// True while the server has neither closed nor written to `conn`.
fn still_open(conn: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(conn.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A server over `dir` with `limits` applied to its config, initialized.
async fn server_with(
    dir: &Path,
    limits: impl FnOnce(&mut sigil::config::ServerLimits),
) -> TestServer {
    let mut cfg = config(dir);
    limits(&mut cfg.limits);
    let s = TestServer::start_with(cfg).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_open_streams_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let idle = Duration::from_millis(300);
    let limits = Limits {
        idle_timeout: idle,
        ..Limits::workload()
    };
    let agent = TestAgent::start_limited(&s, &tmp.path().join("agent"), "node1", limits).await;
    register(&s, &agent.id, "/first", 0, "first", 0).await;

    // A connection that never sends a request.
    closed_by_server(UnixStream::connect(&agent.socket).await.unwrap()).await;

    // A watch stream keeps its connection busy however long it is quiet:
    // after several idle timeouts, an update still arrives on it.
    let client = spiffe::WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    eventually(10, || {
        let c = client.clone();
        async move { c.fetch_all_x509_svids().await.ok().filter(|v| v.len() == 1) }
    })
    .await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let first = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut stream))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.svids().len(), 1);
    tokio::time::sleep(idle * 5).await;
    register(&s, &agent.id, "/second", 0, "second", 0).await;
    let next = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut stream))
        .await
        .expect("no update on the open stream")
        .expect("the stream ended")
        .expect("the stream failed");
    assert_eq!(next.svids().len(), 2);
    agent.stop().await;
    s.stop().await;
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = len[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// A client preface, SETTINGS, and HEADERS opening a gRPC request on
/// stream 1, written by hand so the test controls what the peer does next.
fn http2_request(path: &str) -> Vec<u8> {
    // HPACK "literal header field without indexing, new name".
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend(value.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS, empty
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_once_its_last_request_has_been_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let s = server_with(tmp.path(), |l| {
        l.admin.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut conn = UnixStream::connect(&s.admin).await.unwrap();
    let mut request = http2_request("/grpc.health.v1.Health/Check");
    // An empty HealthCheckRequest, ending the stream.
    request.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    conn.write_all(&request).await.unwrap();
    let sent = closed_by_server(conn).await;
    assert!(
        frames(&sent).contains(&(HEADERS, END_STREAM | END_HEADERS, 1)),
        "the request was not answered before the close: {:?}",
        frames(&sent)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let s = server_with(tmp.path(), |l| {
        l.admin.keepalive_interval = Duration::from_millis(200);
        l.admin.keepalive_timeout = Duration::from_millis(300);
        // Long enough that only keepalive can close the connection here.
        l.admin.idle_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut conn = UnixStream::connect(&s.admin).await.unwrap();
    // A request whose body never comes stays in flight, so the idle timeout
    // cannot close the connection: only keepalive can tell the peer is gone.
    conn.write_all(&http2_request("/sigil.v1.Bundle/Get"))
        .await
        .unwrap();
    // Reading is not answering: the PINGs this drains are never acknowledged.
    let sent = closed_by_server(conn).await;
    assert!(
        frames(&sent)
            .iter()
            .any(|&(kind, flags, _)| kind == PING && flags & ACK == 0),
        "the server sent no PING: {:?}",
        frames(&sent)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_beyond_the_cap_are_closed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = server_with(tmp.path(), |l| {
        l.tcp.max_handshakes = 2;
        // Longer than the test: a closed connection was refused, not timed out.
        l.tcp.handshake_timeout = Duration::from_secs(3600);
    })
    .await;
    tls_cap_holds(&s, tmp.path()).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_beyond_the_cap_are_closed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = server_with(tmp.path(), |l| {
        l.tcp.max_connections = 2;
        l.tcp.handshake_timeout = Duration::from_secs(3600);
    })
    .await;
    tls_cap_holds(&s, tmp.path()).await;
    s.stop().await;
}

/// Two silent TCP clients take what the cap allows; a third is closed while
/// they are still open; once they leave, a TLS client is served.
async fn tls_cap_holds(s: &TestServer, dir: &Path) {
    let slow = [
        TcpStream::connect(s.addr).await.unwrap(),
        TcpStream::connect(s.addr).await.unwrap(),
    ];
    // The listener accepts in arrival order, so the two hold the places.
    closed_by_server(TcpStream::connect(s.addr).await.unwrap()).await;
    assert!(
        slow.iter().all(still_open),
        "the capped connections were closed"
    );
    drop(slow);

    let bundle = dir.join("bundle.pem");
    let pem = s
        .clients()
        .await
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .pem;
    std::fs::write(&bundle, pem).unwrap();
    let tls = Target::Tls {
        addr: s.addr.to_string(),
        ca_bundle: bundle,
        svid_dir: None,
    };
    // The server notices the two leave when their handshakes fail.
    let channel = eventually(30, || async { connect(&tls).await.ok() }).await;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_keep_a_reserve_on_a_flooded_admin_socket() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let s = server_with(tmp.path(), |l| {
        l.admin.max_connections = 8;
        l.admin.max_per_peer = Some(8);
        l.admin.operator_reserve = 2;
    })
    .await;
    let mut flood = Flood::start(65534, &s.admin, 50).await;
    // Everything but the reserve of two.
    flood.settles_at(6).await;
    let mut c = s.clients().await;
    let status = c
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.initialized, status.sealed), (true, false));
    flood.stop().await;
    drop(c);
    s.stop().await;
}
