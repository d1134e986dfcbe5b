//! Attacks on the audit log with the server stopped, by someone who can
//! write the data directory but does not know the passphrase: a forged
//! "entry.delete allow" appended with a valid plain link, and a run of
//! wrong-passphrase records erased with the rest re-linked. Unseal and
//! `audit verify` refuse both and name what is wrong.

use crate::audit::{offline_verify, passphrase_file};
use crate::common::*;
use ring::digest::{SHA256, digest};
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

/// A line as an attacker makes it: the tag is the SHA-256 of the body,
/// which is all a plain hash chain asks for.
fn plain_line(body: &str) -> String {
    format!("{} {body}", hex::encode(digest(&SHA256, body.as_bytes())))
}

/// `body` with its sequence number and link replaced.
fn relinked(body: &str, seq: usize, prev: &str) -> String {
    let rest = &body[body.find(",\"auth\"").unwrap()..];
    format!("{{\"seq\":{seq},\"prev\":\"{prev}\"{rest}")
}

fn forged_delete(seq: usize, prev: &str, auth: &str) -> String {
    plain_line(&format!(
        "{{\"seq\":{seq},\"prev\":\"{prev}\",\"auth\":\"{auth}\",\"gen\":99,\"event\":{{\"time\":1700000000,\"subject\":\"uid:0\",\"authn\":\"admin_socket\",\"action\":\"entry.delete\",\"resource\":\"entry:0b3c\",\"decision\":\"allow\",\"reasons\":[\"operator on the admin socket\"],\"source\":\"unix:uid=0\"}}}}"
    ))
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
    let n = original.len();
    let prev = original[n - 1][..64].to_owned();

    // Like the records around it ("auth":"hmac"), but without the key.
    let mut forged = original.clone();
    forged.push(forged_delete(n + 1, &prev, "hmac"));
    write_lines(&log, &forged);
    let e = unseal_error(tmp.path()).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let want = format!("audit record {}: keyed HMAC does not verify", n + 1);
    assert!(e.message().contains(&want), "{}", e.message());
    let err = verify_error(tmp.path());
    assert!(err.contains(&want), "{err}");

    // Marked as written while sealed: a sealed server never allows a
    // delete, so the server does not even start on it.
    let mut forged = original.clone();
    forged.push(forged_delete(n + 1, &prev, "none"));
    write_lines(&log, &forged);
    let want = format!(
        "audit record {}: unauthenticated record claims entry.delete was allowed, which a sealed server never allows: it was forged",
        n + 1
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
    // The three attempts: an "allow" and a "failed" record each, then the
    // right unseal's record and the re-anchor stating 7.
    let failed = original
        .iter()
        .filter(|l| l.contains("\"decision\":\"failed\""))
        .count();
    assert_eq!(failed, 3, "{original:#?}");
    let first = original
        .iter()
        .position(|l| l.contains("\"action\":\"operator.unseal\""))
        .unwrap();
    let cut = first..first + 6;
    assert!(original[cut.end + 1].contains("\"sealed_records\":7"));

    // Erase them and re-link everything after: fix numbers, links and the
    // re-anchor's count, and recompute each tag the only way the attacker
    // can.
    let mut forged: Vec<String> = original[..cut.start].to_vec();
    for line in &original[cut.end..] {
        let prev = forged.last().unwrap()[..64].to_owned();
        let body = relinked(&line[65..], forged.len() + 1, &prev)
            .replace("\"sealed_records\":7", "\"sealed_records\":1");
        forged.push(plain_line(&body));
    }
    write_lines(&log, &forged);
    let e = unseal_error(tmp.path()).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let bad = cut.start + 2;
    assert!(
        e.message()
            .contains(&format!("audit record {bad}: keyed HMAC does not verify")),
        "{}",
        e.message()
    );
    assert!(
        verify_error(tmp.path()).contains(&format!("audit record {bad}")),
        "erased records named"
    );

    // Cut without re-linking: the numbering breaks where they were.
    let mut cut_only = original[..cut.start].to_vec();
    cut_only.extend_from_slice(&original[cut.end..]);
    write_lines(&log, &cut_only);
    let refused = sigil::server::Server::open(config(tmp.path()))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains(&format!(
            "audit record {}: sequence number out of order",
            cut.start + 1
        )),
        "{refused}"
    );
}
