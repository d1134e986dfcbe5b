//! gRPC stacks other than Go's and Rust's on the two Unix sockets. gRPC
//! C-core (Python, C++, Ruby, PHP), grpc-java and grpc-swift send the socket
//! path, raw or percent-encoded, as the `:authority` of a Unix-socket call;
//! sigil's vendored h2 (vendor/README.md) treats it as absent. Checked here
//! with hand-written HTTP/2 frames and with a real grpcio client.

mod frames;
pub(crate) mod grpcio;
mod pyjwt;

use crate::common::*;
use frames::Ended;
use prost::Message;
use sigil::api::workload::{JwtsvidRequest, JwtsvidResponse};
use std::path::Path;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The identity registered for this test process's own uid.
const ID: &str = "spiffe://example.org/interop";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
const FETCH_JWT: &str = "/SpiffeWorkloadAPI/FetchJWTSVID";

/// A server and an agent, with an entry for this process's uid.
struct Node {
    server: TestServer,
    agent: TestAgent,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::initialized(dir.path()).await;
        let agent = TestAgent::start(&server, &dir.path().join("agent"), "node1").await;
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        register(&server, &agent.id, "/interop", uid, "interop", 0).await;
        // Wait until the entry has been pushed to the agent.
        let c = spiffe::WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        eventually(5, || {
            let c = c.clone();
            async move { c.fetch_x509_svid().await.ok() }
        })
        .await;
        Node {
            server,
            agent,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.agent.stop().await;
        self.server.stop().await;
    }
}

/// The `:authority` values gRPC stacks send on a call to `socket`: the raw
/// path (grpc-java), the percent-encoded path with and without its leading
/// slash (C-core sends the latter), `localhost` (Go, Rust, and any client
/// told to), and none at all.
fn authorities(socket: &Path) -> Vec<Option<String>> {
    let raw = socket.to_str().unwrap().to_owned();
    let encoded = raw.replace('/', "%2F");
    let c_core = encoded.trim_start_matches("%2F").to_owned();
    vec![
        Some(raw),
        Some(encoded),
        Some(c_core),
        Some("localhost".into()),
        None,
    ]
}

async fn call(
    socket: &Path,
    authority: Option<&str>,
    path: &str,
    metadata: &[(&str, &str)],
    message: &[u8],
) -> frames::Answer {
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        frames::unary(socket, authority, path, metadata, message),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to {path} with :authority {authority:?}"));
    assert_eq!(
        answer.ended,
        Ended::Trailers,
        "{path} on {socket:?} with :authority {authority:?}"
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_path_authorities_are_answered_on_both_sockets() {
    let node = Node::start().await;
    let health = HealthCheckRequest {
        service: String::new(),
    }
    .encode_to_vec();
    for socket in [&node.agent.socket, &node.server.admin] {
        for authority in authorities(socket) {
            let answer = call(socket, authority.as_deref(), HEALTH, &[], &health).await;
            let r = HealthCheckResponse::decode(answer.message()).unwrap();
            assert_eq!(r.status(), ServingStatus::Serving, "{authority:?}");
        }
    }

    let socket = &node.agent.socket;
    let fetch = JwtsvidRequest {
        audience: vec!["interop".into()],
        spiffe_id: String::new(),
    }
    .encode_to_vec();
    let header = [("workload.spiffe.io", "true")];
    for authority in authorities(socket) {
        let answer = call(socket, authority.as_deref(), FETCH_JWT, &header, &fetch).await;
        let r = JwtsvidResponse::decode(answer.message()).unwrap();
        let ids: Vec<&str> = r.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, [ID], "{authority:?}");
    }
    node.stop().await;
}
