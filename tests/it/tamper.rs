//! Attacks on the audit log with the server stopped, by someone who can
//! write the data directory but does not know the passphrase: a forged
//! "entry.delete allow" appended with a valid plain link, and a run of
//! wrong-passphrase records erased with the rest re-linked. Unseal and
//! `audit verify` refuse both and name what is wrong.

use crate::audit::{offline_verify, passphrase_file};
use crate::common::*;
use ring::digest::{SHA256, digest};
use serde_json::Value;
use sigil::api::pb;
use std::path::Path;
use tonic::Code;

/// The log's lines, each without its newline.
fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(log: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(log, text).unwrap();
}

fn body(line: &str) -> Value {
    serde_json::from_str(&line[65..]).unwrap()
}

/// A line as the attacker makes it: the tag is the SHA-256 of the body,
/// which is all a plain hash chain asks for.
fn plain_line(body: &Value) -> String {
    let body = body.to_string();
    format!("{} {body}", hex::encode(digest(&SHA256, body.as_bytes())))
}

/// A record like the last one in `lines` (the same fields, so that it
/// passes for one of them), linked after it, saying an entry was deleted.
fn forged_delete(lines: &[String]) -> Value {
    let last = lines.last().unwrap();
    let mut forged = body(last);
    forged["seq"] = (lines.len() + 1).into();
    forged["prev"] = last[..64].into();
    forged["event"]["subject"] = "uid:0".into();
    forged["event"]["action"] = "entry.delete".into();
    forged["event"]["resource"] = "entry:0b3c".into();
    forged["event"]["decision"] = "allow".into();
    forged
}

async fn unseal_error(dir: &Path) -> tonic::Status {
    let s = TestServer::start_in(dir).await;
    let mut c = s.clients().await;
    let e = c
        .operator
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    drop(c);
    s.stop().await;
    e
}

fn verify_error(dir: &Path) -> String {
    let out = offline_verify(&dir.join("data"), &passphrase_file(dir));
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_append_is_refused_at_unseal_and_by_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    c.entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/web", 1000)),
        })
        .await
        .unwrap();
    drop(c);
    s.stop().await;
    let log = tmp.path().join("data/audit.log");
    let original = lines(&log);
    let forged_at = original.len() + 1;

    // Like the records before it ("auth":"hmac"), but without the key.
    let mut forged = original.clone();
    forged.push(plain_line(&forged_delete(&original)));
    write_lines(&log, &forged);
    let e = unseal_error(tmp.path()).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let want = format!("audit record {forged_at}: keyed HMAC does not verify");
    assert!(e.message().contains(&want), "{}", e.message());
    let err = verify_error(tmp.path());
    assert!(err.contains(&want), "{err}");

    // Marked as written while sealed: a sealed server never allows a
    // delete, so the server does not even start on it.
    let mut forged = original.clone();
    let mut as_sealed = forged_delete(&original);
    as_sealed["auth"] = "none".into();
    forged.push(plain_line(&as_sealed));
    write_lines(&log, &forged);
    let want = format!(
        "audit record {forged_at}: unauthenticated record claims entry.delete was allowed, which a sealed server never allows: it was forged"
    );
    let refused = sigil::server::Server::open(config(tmp.path()))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains(&want), "{refused}");
    let err = verify_error(tmp.path());
    assert!(err.contains(&want), "{err}");

    write_lines(&log, &original);
    ok(offline_verify(
        &tmp.path().join("data"),
        &passphrase_file(tmp.path()),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_records_are_refused_at_unseal_and_by_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    s.stop().await;
    // Wrong-passphrase attempts on a sealed server, then the right one.
    let s = TestServer::start_in(tmp.path()).await;
    let mut c = s.clients().await;
    for _ in 0..3 {
        let e = c
            .operator
            .unseal(pb::UnsealRequest {
                passphrase: b"guessing the passphrase".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    unseal(&mut c).await;
    c.entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/web", 1000)),
        })
        .await
        .unwrap();
    drop(c);
    s.stop().await;

    let log = tmp.path().join("data/audit.log");
    let original = lines(&log);
    // The wrong attempts: every unseal record but the last (the right one),
    // with what follows each (its outcome record).
    let unseals: Vec<usize> = original
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"action\":\"operator.unseal\""))
        .map(|(i, _)| i)
        .collect();
    let cut = unseals[0]..*unseals.last().unwrap();
    assert!(cut.len() >= 3, "{original:#?}");

    // Re-link everything after: fix numbers, links and any re-anchor's
    // count, and recompute each tag the only way the attacker can.
    let mut forged: Vec<String> = original[..cut.start].to_vec();
    for line in &original[cut.end..] {
        let mut b = body(line);
        b["seq"] = (forged.len() + 1).into();
        b["prev"] = forged.last().unwrap()[..64].into();
        if b.get("sealed_records").is_some() {
            let run = forged
                .iter()
                .rev()
                .take_while(|l| body(l)["auth"] == "none")
                .count();
            b["sealed_records"] = run.into();
        }
        forged.push(plain_line(&b));
    }
    write_lines(&log, &forged);
    let e = unseal_error(tmp.path()).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // The right unseal's record, then the re-anchor: the first keyed one.
    let want = format!("audit record {}: keyed HMAC does not verify", cut.start + 2);
    assert!(e.message().contains(&want), "{}", e.message());
    assert!(verify_error(tmp.path()).contains(&want));

    // Cut without re-linking: the numbering breaks where they were.
    let mut cut_only = original[..cut.start].to_vec();
    cut_only.extend_from_slice(&original[cut.end..]);
    write_lines(&log, &cut_only);
    let refused = sigil::server::Server::open(config(tmp.path()))
        .await
        .unwrap_err();
    let want = format!(
        "audit record {}: sequence number out of order",
        cut.start + 1
    );
    assert!(refused.to_string().contains(&want), "{refused}");
}
