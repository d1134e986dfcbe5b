//! SIGKILL the server in the middle of a stream of entry creates: after a
//! restart and unseal, every acknowledged create is there.

use crate::common::*;
use sigil::api::pb;
use sigil::cli::client::{Clients, Target};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn write_config(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let pass = dir.join("unseal");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"data\"\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"admin.sock\"\n\
             [unseal]\npassphrase_file = \"unseal\"\n[policy]\ndir = \"{}\"\n",
            policy_dir().display()
        ),
    )
    .unwrap();
    cfg
}

fn spawn(cfg: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "--config", cfg.to_str().unwrap()])
        .env("SIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn connect(sock: &Path) -> Clients {
    for _ in 0..200 {
        if let Ok(mut c) = Clients::connect(&Target::Admin(sock.to_owned())).await
            && c.operator.status(pb::StatusRequest {}).await.is_ok()
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path());
    let sock = tmp.path().join("admin.sock");
    let mut child = spawn(&cfg);
    let mut c = connect(&sock).await;
    c.operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.as_bytes().to_vec(),
        })
        .await
        .unwrap();

    // Four concurrent writers; kill the server while they are writing.
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000u32 {
                let e = entry(&format!("/crash/{w}/{i}"), w * 100_000 + i);
                match c
                    .entries
                    .create(pb::CreateEntryRequest { entry: Some(e) })
                    .await
                {
                    Ok(r) => acked.push(r.into_inner().id),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acked = BTreeSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 10,
        "the writers made progress before the kill ({})",
        acked.len()
    );
    drop(c);

    // Restart: the config unseals at start; the store opens cleanly.
    let mut child = spawn(&cfg);
    let mut c = connect(&sock).await;
    let st = c
        .operator
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!st.sealed, "{st:?}");
    let listed: BTreeSet<String> = list_entries(&mut c)
        .await
        .entries
        .into_iter()
        .map(|e| e.id)
        .collect();
    let missing: Vec<_> = acked.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged creates lost: {missing:?}",
        missing.len()
    );
    // The audit chain survived the kill too.
    let report = c
        .audit
        .verify(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{report:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}
