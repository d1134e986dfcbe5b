//! Every file sigil writes, attacked by another local user (uid 65534 run
//! through setpriv): a pre-created 0666 file the attacker keeps a hard link
//! to, symbolic links planted at the output names, a directory others can
//! write, and a shared sticky directory like /tmp. The key must never reach
//! the attacker and no link target may be touched.

use crate::common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `script` with `sh` as `uid`.
fn as_uid(uid: u32, script: &str) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

fn run_as(uid: u32, script: &str) {
    let out = as_uid(uid, script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A shared sticky directory (like /tmp), the attacker's own directory, and
/// a file of the victim's that a planted link points at.
struct Scene {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    shared: PathBuf,
    loot: PathBuf,
    victim: PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    chmod(&root, 0o755);
    let shared = root.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let loot = root.join("loot");
    std::fs::create_dir(&loot).unwrap();
    std::os::unix::fs::chown(&loot, Some(NOBODY), Some(NOBODY)).unwrap();
    let victim = root.join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    Scene {
        _tmp: tmp,
        root,
        shared,
        loot,
        victim,
    }
}

impl Scene {
    /// As the attacker, in `dir`: each of `names` pre-created 0666, with a
    /// hard link kept in the loot to see what it receives.
    fn plant_files(&self, dir: &Path, names: &[&str]) {
        let (d, loot) = (dir.display(), self.loot.display());
        let mut script = format!("set -e; cd {d}; ");
        for n in names {
            script.push_str(&format!(": > {n}; chmod 666 {n}; ln {n} {loot}/{n}; "));
        }
        run_as(NOBODY, &script);
    }

    /// As the attacker, in `dir`: `to_loot` linked to (missing) files in the
    /// loot, `to_victim` linked to the victim's file.
    fn plant_links(&self, dir: &Path, to_loot: &[&str], to_victim: &[&str]) {
        let (d, loot, victim) = (dir.display(), self.loot.display(), self.victim.display());
        let mut script = format!("set -e; cd {d}; ");
        for n in to_loot {
            script.push_str(&format!("ln -s {loot}/{n} {n}; "));
        }
        for n in to_victim {
            script.push_str(&format!("ln -s {victim} {n}; "));
        }
        run_as(NOBODY, &script);
    }

    /// Nothing reached the attacker and no link target changed.
    fn assert_nothing_leaked(&self, files: &[&str], to_loot: &[&str]) {
        for n in files {
            let kept = std::fs::read(self.loot.join(n)).unwrap();
            assert!(
                kept.is_empty(),
                "the planted {n} received {} bytes",
                kept.len()
            );
            assert_eq!(
                mode(&self.loot.join(n)),
                0o666,
                "the planted {n} was chmodded"
            );
        }
        for n in to_loot {
            assert!(!self.loot.join(n).exists(), "a write followed the link {n}");
        }
        assert_eq!(std::fs::read(&self.victim).unwrap(), b"victim");
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// `dir/name` is a regular file of `uid` with `mode`.
fn assert_own_file(dir: &Path, name: &str, uid: u32, want: u32) {
    let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
    assert!(meta.file_type().is_file(), "{name} is not a regular file");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (uid, want), "{name}");
}

/// The attacker cannot read `path`.
fn assert_unreadable_by_attacker(path: &Path) {
    let out = as_uid(NOBODY, &format!("cat {}", path.display()));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

fn mint(s: &TestServer, dir: &Path) -> Output {
    sigil(
        &[
            "svid",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/admin-tool",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[("SIGIL_ADMIN_SOCKET", s.admin.to_str().unwrap())],
    )
}

fn failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr.clone())
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_mint_never_writes_through_planted_files() {
    let sc = scene();
    let s = TestServer::initialized(&sc.root.join("server")).await;
    sc.plant_files(&sc.shared, &["key.pem"]);
    sc.plant_links(&sc.shared, &["svid.pem"], &["bundle.pem"]);

    ok(mint(&s, &sc.shared));
    sc.assert_nothing_leaked(&["key.pem"], &["svid.pem"]);
    assert_own_file(&sc.shared, "key.pem", 0, 0o600);
    assert_own_file(&sc.shared, "svid.pem", 0, 0o644);
    assert_own_file(&sc.shared, "bundle.pem", 0, 0o644);
    let pem = std::fs::read(sc.shared.join("key.pem")).unwrap();
    sigil::tls::key_from_pem("key.pem", &pem).unwrap();
    assert_unreadable_by_attacker(&sc.shared.join("key.pem"));

    // A directory others can write is refused before anything is issued.
    let open = sc.root.join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let mints = || async {
        let mut c = s.clients().await;
        let tail = c
            .audit
            .tail(sigil::api::pb::TailAuditRequest { count: 1000 })
            .await
            .unwrap()
            .into_inner()
            .records;
        tail.iter().filter(|r| r.contains("\"svid.mint\"")).count()
    };
    let before = mints().await;
    let err = failure(&mint(&s, &open));
    assert_eq!(
        err,
        format!(
            "error: directory {} is writable by other users (mode 777): write to a directory only you can change",
            open.display()
        )
    );
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
    assert_eq!(mints().await, before, "nothing was issued");

    // A sticky directory that belongs to the attacker is theirs to rearrange.
    run_as(
        NOBODY,
        &format!("mkdir -m 1777 {}/mine", sc.shared.display()),
    );
    let err = failure(&mint(&s, &sc.shared.join("mine")));
    assert_eq!(
        err,
        format!(
            "error: directory {}/mine belongs to uid 65534, not to you (uid 0) or root",
            sc.shared.display()
        )
    );
    // So is a link the attacker planted in place of the directory.
    run_as(
        NOBODY,
        &format!("ln -s {} {}/out", sc.loot.display(), sc.shared.display()),
    );
    let err = failure(&mint(&s, &sc.shared.join("out")));
    assert_eq!(
        err,
        format!(
            "error: {}/out is a symbolic link owned by uid 65534, not by you (uid 0) or root: not following it",
            sc.shared.display()
        )
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_fetch_never_writes_through_planted_files() {
    let sc = scene();
    let s = TestServer::initialized(&sc.root.join("server")).await;
    let agent = TestAgent::start(&s, &sc.root.join("agent"), "node1").await;
    chmod(&sc.root.join("agent"), 0o755);
    register(&s, &agent.id, "/root-svc", 0, "", 0).await;
    register(&s, &agent.id, "/nobody-svc", NOBODY, "", 0).await;
    crate::agent::identities(&agent, 1).await;
    let endpoint = format!("unix://{}", agent.socket.display());

    // The admin (root) fetches into the shared directory.
    sc.plant_files(&sc.shared, &["key.pem"]);
    sc.plant_links(&sc.shared, &["svid.pem"], &["bundle.pem"]);
    let fetch = |dir: &Path| {
        sigil(
            &["svid", "fetch", "--write", dir.to_str().unwrap()],
            &[("SPIFFE_ENDPOINT_SOCKET", &endpoint)],
        )
    };
    ok(fetch(&sc.shared));
    sc.assert_nothing_leaked(&["key.pem"], &["svid.pem"]);
    assert_own_file(&sc.shared, "key.pem", 0, 0o600);
    assert_own_file(&sc.shared, "svid.pem", 0, 0o644);
    assert_own_file(&sc.shared, "bundle.pem", 0, 0o644);
    assert_unreadable_by_attacker(&sc.shared.join("key.pem"));

    let open = sc.root.join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let err = failure(&fetch(&open));
    assert!(
        err.starts_with(&format!(
            "error: directory {} is writable by other users",
            open.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);

    // An unprivileged user in a sticky directory where another user (4242)
    // planted key.pem: the sticky bit forbids replacing it, so the write
    // fails and the planted file stays empty.
    let other = sc.shared.join("other");
    std::fs::create_dir(&other).unwrap();
    chmod(&other, 0o1777);
    run_as(
        4242,
        &format!("cd {}; : > key.pem; chmod 666 key.pem", other.display()),
    );
    let out = as_uid(
        NOBODY,
        &format!(
            "SPIFFE_ENDPOINT_SOCKET={endpoint} SIGIL_LOG=error {} svid fetch --write {}",
            env!("CARGO_BIN_EXE_sigil"),
            other.display()
        ),
    );
    assert_eq!(
        failure(&out),
        format!(
            "error: cannot replace {}/key.pem: Operation not permitted (os error 1)",
            other.display()
        )
    );
    assert!(std::fs::read(other.join("key.pem")).unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    // In a directory it creates itself, the same user gets its files.
    let mine = sc.shared.join("nobody-out");
    run_as(
        NOBODY,
        &format!(
            "SPIFFE_ENDPOINT_SOCKET={endpoint} SIGIL_LOG=error {} svid fetch --write {}",
            env!("CARGO_BIN_EXE_sigil"),
            mine.display()
        ),
    );
    assert_eq!(
        (std::fs::metadata(&mine).unwrap().uid(), mode(&mine)),
        (NOBODY, 0o700)
    );
    assert_own_file(&mine, "key.pem", NOBODY, 0o600);
    agent.stop().await;
    s.stop().await;
}

/// Starts (attests) an agent called `name` with its data in `data_dir`.
async fn start_agent(
    s: &TestServer,
    bootstrap: &Path,
    data_dir: &Path,
    name: &str,
) -> Result<(), sigil::agent::run::AgentRunError> {
    let token = s
        .clients()
        .await
        .agents
        .create_join_token(sigil::api::pb::CreateJoinTokenRequest {
            ttl_seconds: 0,
            agent_name: name.into(),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let opts = sigil::agent::run::AgentOptions {
        server: s.addr.to_string(),
        trust_bundle: bootstrap.to_owned(),
        data_dir: data_dir.to_owned(),
        attest: sigil::attest::AttestConfig::default(),
        limits: sigil::net::Limits::workload(),
    };
    sigil::agent::run::Agent::start(&opts, Some(&sigil::secret::Secret::from(token)))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_never_writes_its_key_through_planted_files() {
    let sc = scene();
    let s = TestServer::initialized(&sc.root.join("server")).await;
    let pem = s
        .clients()
        .await
        .bundle
        .get(sigil::api::pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .pem;
    let bootstrap = sc.root.join("bootstrap.pem");
    std::fs::write(&bootstrap, pem).unwrap();

    // Also at the names a writer might use for a temporary file.
    sc.plant_files(&sc.shared, &["agent_key.pem", "agent_key.tmp"]);
    sc.plant_links(
        &sc.shared,
        &[
            "agent_svid.pem",
            "bundle.json",
            "agent_svid.tmp",
            "bundle.tmp",
        ],
        &["bundle.pem"],
    );
    start_agent(&s, &bootstrap, &sc.shared, "n1").await.unwrap();
    sc.assert_nothing_leaked(
        &["agent_key.pem", "agent_key.tmp"],
        &[
            "agent_svid.pem",
            "bundle.json",
            "agent_svid.tmp",
            "bundle.tmp",
        ],
    );
    assert_own_file(&sc.shared, "agent_key.pem", 0, 0o600);
    assert_own_file(&sc.shared, "agent_svid.pem", 0, 0o644);
    assert_own_file(&sc.shared, "bundle.pem", 0, 0o644);
    assert_own_file(&sc.shared, "bundle.json", 0, 0o644);
    assert_unreadable_by_attacker(&sc.shared.join("agent_key.pem"));

    // A data directory others can write is refused before attesting.
    let open = sc.root.join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let err = start_agent(&s, &bootstrap, &open, "n2").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "directory {} is writable by other users (mode 777): write to a directory only you can change",
            open.display()
        )
    );
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
    // A missing data directory is created for the owner alone.
    let fresh = sc.root.join("fresh/state");
    start_agent(&s, &bootstrap, &fresh, "n3").await.unwrap();
    assert_eq!(mode(&fresh), 0o700);
    s.stop().await;
}

fn dev(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "dev",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .env("SIGIL_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `sigil dev` on `dir` until it prints its environment, then stops it.
fn dev_once(dir: &Path) {
    let mut child = dev(dir);
    // Kept open until the end: dev must not meet a closed stdout on its way out.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("SIGIL_CA_BUNDLE"), "{line}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sigil dev exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    drop(stdout);
}

/// What `sigil dev` writes, checked after a run on `dir`.
fn assert_dev_files(dir: &Path) {
    assert_own_file(dir, "bundle.pem", 0, 0o644);
    assert_own_file(dir, "dev-unseal.key", 0, 0o600);
    assert_own_file(&dir.join("policies"), "sigil.rego", 0, 0o644);
    assert_eq!(mode(&dir.join("policies")), 0o755);
    assert_eq!(mode(&dir.join("server")), 0o700);
    assert_eq!(mode(&dir.join("agent")), 0o700);
    assert_own_file(&dir.join("agent"), "agent_key.pem", 0, 0o600);
    assert_unreadable_by_attacker(&dir.join("dev-unseal.key"));
}

#[test]
fn dev_never_writes_through_planted_files() {
    let sc = scene();
    let d = sc.shared.display().to_string();
    // Names dev reuses when present are refused when another user made them:
    // a policy directory they can write, or an unseal key they know.
    run_as(NOBODY, &format!("mkdir {d}/policies"));
    let out = dev(&sc.shared).wait_with_output().unwrap();
    assert_eq!(
        failure(&out),
        format!("error: directory {d}/policies belongs to uid 65534, not to you (uid 0) or root")
    );
    run_as(
        NOBODY,
        &format!(
            "rmdir {d}/policies; cd {d}; echo known > dev-unseal.key; chmod 600 dev-unseal.key"
        ),
    );
    let out = dev(&sc.shared).wait_with_output().unwrap();
    assert_eq!(
        failure(&out),
        format!(
            "error: {d}/dev-unseal.key belongs to uid 65534, not to you (uid 0) or root: it holds a secret"
        )
    );
    run_as(NOBODY, &format!("rm {d}/dev-unseal.key"));

    // The bundle, written on every run: pre-created 0666 by the attacker.
    sc.plant_files(&sc.shared, &["bundle.pem"]);
    dev_once(&sc.shared);
    sc.assert_nothing_leaked(&["bundle.pem"], &[]);
    assert_dev_files(&sc.shared);

    // Elsewhere, a link to the victim's file in its place.
    let sc = scene();
    sc.plant_links(&sc.shared, &[], &["bundle.pem"]);
    dev_once(&sc.shared);
    sc.assert_nothing_leaked(&[], &[]);
    assert_dev_files(&sc.shared);

    // A data directory others can write is refused.
    let open = sc.root.join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let out = dev(&open).wait_with_output().unwrap();
    assert_eq!(
        failure(&out),
        format!(
            "error: directory {} is writable by other users (mode 777): write to a directory only you can change",
            open.display()
        )
    );
}
