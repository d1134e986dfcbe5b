//! Three CA generations (and three JWT key generations) under workloads that never
//! stop talking: keys live 60 s, so successors sign at 50 s and 80 s after init.

use super::probe::Probe;
use super::register_probe_workloads;
use crate::common::*;

/// Runs the probe until `generations` CAs and JWT keys have signed what it used, and
/// at least one CA has left its bundle; nothing may fail on the way.
async fn generations(generations: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized_with_config(short_config(tmp.path())).await;
    let agent = TestAgent::start(&s, &tmp.path().join("agent"), "node1").await;
    register_probe_workloads(&s.admin, &agent.id).await;
    crate::agent::identities(&agent, 2).await;

    let probe = Probe::start(&agent.endpoint()).await;
    // The n-th key signs 50 + 30 (n - 2) s after init; SVIDs renew every ~5 s.
    let budget = 60 + 30 * u64::try_from(generations).unwrap();
    probe
        .until(budget, "key generations", |r| {
            r.cas.len() >= generations && r.kids.len() >= generations && !r.dropped.is_empty()
        })
        .await;
    let report = probe.stop().await;
    report.assert_clean();
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ca_generations_without_a_failed_handshake_or_a_jwt_gap() {
    generations(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about three minutes; run with `cargo nextest run --run-ignored only rotation::`"]
async fn six_ca_generations_without_a_failed_handshake_or_a_jwt_gap() {
    generations(6).await;
}
