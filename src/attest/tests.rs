//! Attestation against the real `/proc` of this test process and of children
//! it spawns; `peer` covers pidfds of processes that connect, exit and exec.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::*;

mod peer;

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap()
}

/// The default settings, but hashing binaries of any size: an unoptimized
/// test binary with debug info outgrows the default limit (256 MiB), and the
/// limit has its own test.
fn test_config() -> AttestConfig {
    AttestConfig {
        max_exe_bytes: u64::MAX,
        ..AttestConfig::default()
    }
}

fn own_status() -> parse::StatusIds {
    parse::parse_status(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap()
}

fn own_cred() -> PeerCred {
    let status = own_status();
    PeerCred {
        pid: i32::try_from(std::process::id()).unwrap(),
        uid: status.effective_uid(),
        gid: status.effective_gid(),
    }
}

/// A pidfd for this process: the peer of one end of a socket pair is the
/// process that made the pair.
fn own_pin() -> PeerPin {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let pin = PeerPin::of_socket(&a);
    assert!(matches!(pin, PeerPin::Pidfd(_)), "{pin:?}");
    pin
}

/// Attests `cred` pinned by `pin` with a fresh attestor.
fn attest_with(
    cred: &PeerCred,
    pin: &PeerPin,
    cfg: &AttestConfig,
) -> Result<Vec<Selector>, AttestError> {
    attest(cred, pin, cfg).map(|s| s.to_vec())
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
}

fn name(db: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(db).unwrap_or_default();
    parse::name_for_id(&text, id).map(str::to_owned)
}

/// The selectors attestation must give for a process with these facts.
fn expected(cred: &PeerCred, groups: &[u32], exe: &Path, digest: Option<String>) -> Vec<Selector> {
    let mut out = vec![
        sel(&format!("unix:uid:{}", cred.uid)),
        sel(&format!("unix:gid:{}", cred.gid)),
        sel(&format!("unix:path:{}", exe.display())),
    ];
    if let Some(user) = name("/etc/passwd", cred.uid) {
        out.push(sel(&format!("unix:user:{user}")));
    }
    if let Some(group) = name("/etc/group", cred.gid) {
        out.push(sel(&format!("unix:group:{group}")));
    }
    for gid in groups {
        out.push(sel(&format!("unix:supplementary_gid:{gid}")));
    }
    if let Some(hex) = digest {
        out.push(sel(&format!("unix:sha256:{hex}")));
    }
    out.sort();
    out.dedup();
    out
}

/// A child process killed and reaped when dropped.
struct Kid(Child);

impl Kid {
    fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.spawn().unwrap())
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }

    /// Waits until the child has exec'd a binary whose path ends with `suffix`.
    fn exe_when(&self, suffix: &str) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(target) = std::fs::read_link(format!("/proc/{}/exe", self.pid()))
                && target.to_string_lossy().ends_with(suffix)
            {
                return target;
            }
            assert!(Instant::now() < deadline, "child never ran {suffix}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn attests_own_process_exactly() {
    let cred = own_cred();
    let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
    let want = expected(&cred, &own_status().groups, &exe, Some(sha256_hex(&exe)));
    let got = Attestor::new(test_config())
        .attest(&cred, &own_pin())
        .unwrap();
    assert_eq!(got.to_vec(), want);
    assert!(got.contains(&sel(&format!("unix:uid:{}", cred.uid))));
}

#[test]
fn root_is_named_root() {
    let cred = own_cred();
    if cred.uid != 0 || name("/etc/passwd", 0).as_deref() != Some("root") {
        return;
    }
    let got = attest_with(&cred, &own_pin(), &test_config()).unwrap();
    assert!(got.contains(&sel("unix:user:root")));
}

#[test]
fn digest_is_cached_by_file_identity() {
    let attestor = Attestor::new(test_config());
    let first = attestor.attest(&own_cred(), &own_pin()).unwrap();
    assert_eq!(attestor.digests.len(), 1);
    let second = attestor.attest(&own_cred(), &own_pin()).unwrap();
    assert_eq!(first, second);
    assert_eq!(attestor.digests.len(), 1);
}

#[test]
fn repeat_attestation_is_served_from_the_result_cache() {
    let attestor = Attestor::new(test_config());
    let pin = own_pin();
    let first = attestor.attest(&own_cred(), &pin).unwrap();
    let second = attestor.attest(&own_cred(), &pin).unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second call was recomputed"
    );
    assert_eq!(attestor.results.len(), 1);
    // Another connection from the same process hits the same entry.
    let third = attestor.attest(&own_cred(), &own_pin()).unwrap();
    assert!(Arc::ptr_eq(&first, &third));
}

#[test]
fn a_cached_result_still_refuses_changed_ids_and_dead_pins() {
    let attestor = Attestor::new(test_config());
    let real = own_cred();
    attestor.attest(&real, &own_pin()).unwrap();
    let cred = PeerCred { uid: 12345, ..real };
    assert_eq!(
        attestor.attest(&cred, &own_pin()),
        Err(AttestError::CredentialMismatch {
            pid: real.pid,
            what: "uid",
            expected: 12345,
            found: real.uid,
        })
    );
    let failed = PeerPin::Failed { errno: 22 };
    assert_eq!(
        attestor.attest(&real, &failed),
        Err(AttestError::PinFailed {
            pid: real.pid,
            errno: 22
        })
    );
}

#[test]
fn a_cached_result_follows_renamed_users() {
    let cred = own_cred();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("svc-a:x:{}:0::/:/bin/sh\n", cred.uid)).unwrap();
    let attestor = Attestor::new(AttestConfig {
        passwd_path: passwd.clone(),
        ..test_config()
    });
    let pin = own_pin();
    assert!(
        attestor
            .attest(&cred, &pin)
            .unwrap()
            .contains(&sel("unix:user:svc-a"))
    );
    // Replaced the way account tools do it: a new file renamed over the old.
    let next = dir.path().join("passwd+");
    std::fs::write(&next, format!("svc-b:x:{}:0::/:/bin/sh\n", cred.uid)).unwrap();
    std::fs::rename(&next, &passwd).unwrap();
    let got = attestor.attest(&cred, &pin).unwrap();
    assert!(got.contains(&sel("unix:user:svc-b")), "{got:?}");
    assert!(!got.contains(&sel("unix:user:svc-a")), "{got:?}");
}

#[test]
fn a_hit_needs_the_same_path_groups_and_names() {
    let names = NameStamp::now(&test_config(), Freshness::Synced);
    let entry = Attested {
        exe_path: PathBuf::from("/usr/bin/a"),
        groups: vec![4, 24],
        names,
        selectors: Vec::new().into(),
        checked_ms: std::sync::atomic::AtomicU64::new(0),
    };
    assert!(entry.still_holds(Path::new("/usr/bin/a"), &[4, 24], &names));
    assert!(!entry.still_holds(Path::new("/usr/bin/b"), &[4, 24], &names));
    // A dropped supplementary group must not keep matching.
    assert!(!entry.still_holds(Path::new("/usr/bin/a"), &[4], &names));
    let moved = NameStamp::now(
        &AttestConfig {
            passwd_path: PathBuf::from("/nonexistent/passwd"),
            ..test_config()
        },
        Freshness::Synced,
    );
    assert!(!entry.still_holds(Path::new("/usr/bin/a"), &[4, 24], &moved));
}

#[test]
fn size_limit_omits_only_sha256() {
    let cred = own_cred();
    let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
    let cfg = AttestConfig {
        max_exe_bytes: 1,
        ..test_config()
    };
    let got = attest_with(&cred, &own_pin(), &cfg).unwrap();
    assert_eq!(got, expected(&cred, &own_status().groups, &exe, None));
    assert!(!got.iter().any(|s| s.value().starts_with("sha256:")));
}

#[test]
fn names_come_from_configured_files() {
    let cred = own_cred();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("svc-x:x:{}:0::/:/bin/sh\n", cred.uid)).unwrap();
    let cfg = AttestConfig {
        passwd_path: passwd,
        group_path: dir.path().join("missing"),
        ..test_config()
    };
    let got = attest_with(&cred, &own_pin(), &cfg).unwrap();
    assert!(got.contains(&sel("unix:user:svc-x")));
    assert!(!got.iter().any(|s| s.value().starts_with("group:")));
}

#[test]
fn attests_child_sleep() {
    let kid = Kid::spawn(Command::new("sleep").arg("30"));
    let exe = kid.exe_when("sleep");
    let cred = PeerCred {
        pid: kid.pid(),
        ..own_cred()
    };
    // No pidfd for a process that never connected: the start-time fallback.
    let got = attest_with(&cred, &PeerPin::Unsupported, &test_config()).unwrap();
    assert!(got.contains(&sel(&format!("unix:path:{}", exe.display()))));
    assert!(got.contains(&sel(&format!("unix:sha256:{}", sha256_hex(&exe)))));
}

#[test]
fn attests_child_under_other_uid() {
    let kid = Kid::spawn(Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sleep",
        "30",
    ]));
    let exe = kid.exe_when("/sleep");
    let cred = PeerCred {
        pid: kid.pid(),
        uid: 65534,
        gid: 65534,
    };
    let got = attest_with(&cred, &PeerPin::Unsupported, &test_config()).unwrap();
    assert_eq!(got, expected(&cred, &[], &exe, Some(sha256_hex(&exe))));
    assert!(got.contains(&sel("unix:uid:65534")));
    if name("/etc/passwd", 65534).as_deref() == Some("nobody") {
        assert!(got.contains(&sel("unix:user:nobody")));
    }
}

#[test]
fn exited_process_is_gone() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    child.wait().unwrap();
    let cred = PeerCred { pid, ..own_cred() };
    assert_eq!(
        attest_with(&cred, &PeerPin::Unsupported, &test_config()),
        Err(AttestError::ProcessGone { pid })
    );
}

#[test]
fn claimed_uid_must_match_proc() {
    let real = own_cred();
    let cred = PeerCred { uid: 12345, ..real };
    assert_eq!(
        attest_with(&cred, &own_pin(), &test_config()),
        Err(AttestError::CredentialMismatch {
            pid: real.pid,
            what: "uid",
            expected: 12345,
            found: real.uid,
        })
    );
}

#[test]
fn claimed_gid_must_match_proc() {
    let real = own_cred();
    let cred = PeerCred {
        gid: real.gid.wrapping_add(7),
        ..real
    };
    assert_eq!(
        attest_with(&cred, &own_pin(), &test_config()),
        Err(AttestError::CredentialMismatch {
            pid: real.pid,
            what: "gid",
            expected: real.gid.wrapping_add(7),
            found: real.gid,
        })
    );
}

#[test]
fn non_positive_pid_is_no_pid() {
    for pid in [0, -1] {
        let cred = PeerCred { pid, ..own_cred() };
        assert_eq!(
            attest_with(&cred, &own_pin(), &test_config()),
            Err(AttestError::NoPid)
        );
    }
}

#[tokio::test]
async fn socket_credentials_convert_and_attest() {
    let (a, _b) = tokio::net::UnixStream::pair().unwrap();
    let cred = PeerCred::try_from(a.peer_cred().unwrap()).unwrap();
    assert_eq!(cred, own_cred());
    let pin = PeerPin::of_socket(&a);
    let attestor = Attestor::new(test_config());
    let got = tokio::task::spawn_blocking(move || attestor.attest(&cred, &pin))
        .await
        .unwrap()
        .unwrap();
    assert!(got.contains(&sel(&format!("unix:uid:{}", cred.uid))));
}

#[test]
fn attestor_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Attestor>();
}

#[test]
fn a_recent_hit_rereads_status_and_names_only_after_the_recheck_interval() {
    let cred = own_cred();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("svc-a:x:{}:0::/:/bin/sh\n", cred.uid)).unwrap();
    let mut attestor = Attestor::new(AttestConfig {
        passwd_path: passwd.clone(),
        ..test_config()
    });
    let pin = own_pin();
    // The first call on the connection is a full attestation and confirms the pin.
    let first = attestor.attest(&cred, &pin).unwrap();
    assert!(first.contains(&sel("unix:user:svc-a")), "{first:?}");
    let next = dir.path().join("passwd.new");
    std::fs::write(&next, format!("svc-b:x:{}:0::/:/bin/sh\n", cred.uid)).unwrap();
    std::fs::rename(&next, &passwd).unwrap();
    // Within the interval a hit checks only the executable and the pin.
    let recent = attestor.attest_cached(&cred, &pin).unwrap();
    assert!(Arc::ptr_eq(&first, &recent), "served from the recent check");
    // Once the interval has passed, the account files are read again: the
    // renamed user is not served from the cache.
    attestor.epoch -= RECHECK_AFTER + Duration::from_millis(1);
    assert_eq!(attestor.attest_cached(&cred, &pin), None);
    let fresh = attestor.attest(&cred, &pin).unwrap();
    assert!(fresh.contains(&sel("unix:user:svc-b")), "{fresh:?}");
}

#[test]
fn a_recent_hit_needs_a_confirmed_pin_and_the_same_uid() {
    let attestor = Attestor::new(test_config());
    let cred = own_cred();
    let pin = own_pin();
    attestor.attest(&cred, &pin).unwrap();
    assert!(attestor.attest_cached(&cred, &pin).is_some());
    // Another uid on the socket is another key: no recent hit for it.
    let other = PeerCred { uid: 12345, ..cred };
    assert_eq!(attestor.attest_cached(&other, &pin), None);
    // A connection whose pin was never confirmed takes the full check.
    let fresh_pin = own_pin();
    assert!(attestor.recent_hit(&cred, &fresh_pin).is_none());
    assert!(attestor.recent_hit(&cred, &pin).is_some());
}
