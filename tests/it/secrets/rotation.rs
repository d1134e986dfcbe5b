//! Scheduled rotation on the real clock with short periods: versions advance
//! on schedule and reach watchers in order, the replaced version is readable
//! as `previous` during grace and not after, a restart keeps the schedule, a
//! failing generator is retried with backoff and reported; a watcher that
//! loses the server resumes after the last version it saw.

use super::*;
use std::time::Duration;
use tonic::Code;

fn rotation(path: &str, every: i64, grace: i64, generator: &str) -> pb::SetRotationRequest {
    pb::SetRotationRequest {
        path: path.into(),
        every_seconds: every,
        window_seconds: 0,
        grace_seconds: grace,
        generator: generator.into(),
    }
}

fn show(path: &str) -> pb::SecretPathRequest {
    pb::SecretPathRequest { path: path.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_advance_on_schedule_and_grace_ends() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    let mut watch = c
        .watch(pb::WatchSecretRequest {
            path: "rot/a".into(),
            after_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // Nothing to read yet, so the first version is made at once.
    c.set_rotation(rotation(
        "rot/a",
        4,
        2,
        "random:length=24,charset=hex,field=key",
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let v = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("a version within 20 s")
            .unwrap()
            .unwrap();
        assert_eq!(field(&v, "key").len(), 24);
        if let Some(prev) = seen.last() {
            let prev: &pb::SecretVersion = prev;
            // Replaced during its grace: still readable, marked previous.
            let old = c
                .get(get("rot/a", prev.version))
                .await
                .unwrap()
                .into_inner();
            assert!(
                old.previous,
                "version {} is previous during grace",
                old.version
            );
            assert_eq!(field(&old, "key"), field(prev, "key"));
            let gap = v.created_at - prev.created_at;
            // Never early; late by at most a little on a loaded machine.
            assert!((4..=7).contains(&gap), "rotations {gap}s apart, period 4s");
        }
        seen.push(v);
    }
    assert_eq!(
        seen.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // After grace the replaced version is retired: deleted, no longer readable.
    eventually(10, || {
        let mut c = c.clone();
        async move {
            match c.get(get("rot/a", 2)).await {
                Err(e) if e.code() == Code::FailedPrecondition => {
                    assert!(
                        e.message().starts_with("version 2 was deleted at "),
                        "{}",
                        e.message()
                    );
                    Some(())
                }
                _ => None,
            }
        }
    })
    .await;
    assert!(!c.get(get("rot/a", 3)).await.unwrap().into_inner().previous);
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.policy_dir = policy_with(tmp.path(), &serde_json::json!({}));
    let s = TestServer::initialized_with_config(cfg.clone()).await;
    let mut c = s.clients().await.secrets;
    c.put(put("rot/kept", &[("value", "first")], None))
        .await
        .unwrap();
    let set = c
        .set_rotation(rotation("rot/kept", 3600, 60, "random"))
        .await
        .unwrap()
        .into_inner();
    let now = i64::try_from(sigil::clock::unix_seconds(sigil::clock::now())).unwrap();
    assert!(
        (now + 3599..=now + 3600).contains(&set.next_due),
        "{} vs {now}",
        set.next_due
    );
    s.stop().await;

    let s = TestServer::start_with(cfg).await;
    unseal(&mut s.clients().await).await;
    let mut c = s.clients().await.secrets;
    let shown = c
        .show_rotation(show("rot/kept"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        shown.next_due, set.next_due,
        "the due time survives the restart"
    );
    assert_eq!(
        shown.generator,
        "random:length=32,charset=alnum,field=value"
    );
    let schedules = s.server.secrets().schedules();
    assert_eq!(schedules.len(), 1);
    assert_eq!(i64::try_from(schedules[0].rotate_at).unwrap(), set.next_due);
    // Rotating now still works, and the first version stays as previous.
    let r = c.rotate(show("rot/kept")).await.unwrap().into_inner();
    assert_eq!(r.version, 2);
    assert!(
        c.get(get("rot/kept", 1))
            .await
            .unwrap()
            .into_inner()
            .previous
    );
    // The task saw the rotation begin and woke, but does not rotate again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = c
        .meta(pb::SecretMetaRequest {
            path: "rot/kept".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.current_version, 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_generator_is_retried_and_reported() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    c.set_rotation(rotation(
        "rot/pg",
        3600,
        60,
        "postgres:connection=db/missing,roles=r_a+r_b",
    ))
    .await
    .unwrap();
    let want = "postgres connection secret db/missing: no secret at db/missing";
    let shown = eventually(15, || {
        let mut c = c.clone();
        async move {
            let s = c.show_rotation(show("rot/pg")).await.unwrap().into_inner();
            (s.failures >= 2).then_some(s)
        }
    })
    .await;
    assert_eq!(shown.last_error, want);
    assert!(shown.retry_at > 0 && !shown.pending);
    assert_eq!(
        c.get(get("rot/pg", 0)).await.unwrap_err().code(),
        Code::NotFound,
        "nothing written"
    );
    // Rotating by hand says why, too.
    let e = c.rotate(show("rot/pg")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, want));
    // And the audit log has each failed attempt.
    let mut audit = h.server.clients().await.audit;
    let records = audit
        .tail(pb::TailAuditRequest { count: 2000 })
        .await
        .unwrap()
        .into_inner()
        .records;
    let failed = records
        .iter()
        .filter(|r| r.contains("\"secret.rotate\"") && r.contains("\"failed\"") && r.contains(want))
        .count();
    assert!(failed >= 3, "{records:#?}");
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_the_last_version_seen() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    for i in 1..=4 {
        c.put(put("w/s", &[("n", &i.to_string())], None))
            .await
            .unwrap();
    }
    let mut watch = c
        .watch(pb::WatchSecretRequest {
            path: "w/s".into(),
            after_version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    async fn next(w: &mut tonic::Streaming<pb::SecretVersion>) -> pb::SecretVersion {
        tokio::time::timeout(Duration::from_secs(10), w.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
    assert_eq!(next(&mut watch).await.version, 3);
    assert_eq!(next(&mut watch).await.version, 4);
    c.put(put("w/s", &[("n", "5")], None)).await.unwrap();
    let v = next(&mut watch).await;
    assert_eq!((v.version, field(&v, "n")), (5, "5".into()));
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_watcher_reconnects_and_misses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.policy_dir = policy_with(tmp.path(), &serde_json::json!({}));
    let s = TestServer::initialized_with_config(cfg.clone()).await;
    let mut c = s.clients().await.secrets;
    c.put(put("w/cli", &[("n", "1")], None)).await.unwrap();
    let admin = s.admin.to_str().unwrap().to_owned();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["secret", "watch", "w/cli", "--field", "n", "--count", "4"])
        .env("SIGIL_ADMIN_SOCKET", &admin)
        .env("SIGIL_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Each line is read as the watcher prints it, so every step below
    // happens after the watcher has seen the one before.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    async fn line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the watcher prints within 20 s")
            .expect("the watcher is running")
    }
    assert_eq!(line(&mut lines).await, "1");
    c.put(put("w/cli", &[("n", "2")], None)).await.unwrap();
    assert_eq!(line(&mut lines).await, "2");
    s.stop().await;
    // Written while the watcher is away.
    let s = TestServer::start_with(cfg).await;
    unseal(&mut s.clients().await).await;
    let mut c = s.clients().await.secrets;
    c.put(put("w/cli", &[("n", "3")], None)).await.unwrap();
    c.put(put("w/cli", &[("n", "4")], None)).await.unwrap();
    assert_eq!(line(&mut lines).await, "3");
    assert_eq!(line(&mut lines).await, "4");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming after version 2"), "{stderr}");
    s.stop().await;
}
