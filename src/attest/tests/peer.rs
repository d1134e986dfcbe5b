//! Processes that really connect: the pidfd taken at accept catches a
//! connecting process that is gone even while its pid names a live process,
//! and a process that runs `exec` is attested as its new binary.
//!
//! The connecting process is this test binary started again to run only
//! [`peer_process`], told what to do through the environment.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::*;

const PEER_SOCKET: &str = "SIGIL_TEST_PEER_SOCKET";
const PEER_THEN: &str = "SIGIL_TEST_PEER_THEN";

/// The body of the connecting process the tests below start; without the
/// environment they set it does nothing. It connects, waits for one byte,
/// then either exits or `exec`s `sleep` with the connection as its stdin.
#[test]
fn peer_process() {
    let Ok(path) = std::env::var(PEER_SOCKET) else {
        return;
    };
    let stream = UnixStream::connect(path).unwrap();
    let mut go = [0u8; 1];
    (&stream).read_exact(&mut go).unwrap();
    if std::env::var(PEER_THEN).as_deref() == Ok("exec") {
        let err = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::from(OwnedFd::from(stream)))
            .exec();
        panic!("exec failed: {err}");
    }
}

/// A connected peer process, seen from the accepting side.
struct Peer {
    kid: Kid,
    conn: UnixStream,
    cred: PeerCred,
    pin: PeerPin,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Starts a peer that will `then` ("exit" or "exec") once told to go,
    /// accepts its connection and pins it, as the Workload API does.
    fn connect(then: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let kid = Kid::spawn(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "attest::tests::peer::peer_process",
                    "--exact",
                    "--test-threads=1",
                ])
                .env(PEER_SOCKET, &path)
                .env(PEER_THEN, then)
                .stdout(Stdio::null()),
        );
        let (conn, _) = listener.accept().unwrap();
        let ucred = getsockopt(&conn, PeerCredentials).unwrap();
        let cred = PeerCred {
            pid: ucred.pid(),
            uid: ucred.uid(),
            gid: ucred.gid(),
        };
        assert_eq!(cred.pid, kid.pid());
        let pin = PeerPin::of_socket(&conn);
        assert!(matches!(pin, PeerPin::Pidfd(_)), "{pin:?}");
        Self {
            kid,
            conn,
            cred,
            pin,
            _dir: dir,
        }
    }

    fn go(&mut self) {
        self.conn.write_all(b"g").unwrap();
    }
}

/// A live process with our uid and gid, so that `/proc/<pid>` reads and
/// the id check succeed for it: what a reused pid would look like.
fn bystander() -> (Kid, PeerCred) {
    let kid = Kid::spawn(Command::new("sleep").arg("30"));
    kid.exe_when("sleep");
    let cred = PeerCred {
        pid: kid.pid(),
        ..own_cred()
    };
    (kid, cred)
}

#[test]
fn a_gone_peer_is_never_attested_as_the_process_now_at_its_pid() {
    let mut peer = Peer::connect("exit");
    peer.go();
    peer.kid.0.wait().unwrap();
    // The peer is reaped; its pidfd now says so. Whatever process the pid
    // names now (here: a live bystander), attestation must refuse.
    let (_kid, reused) = bystander();
    let attestor = Attestor::new(test_config());
    assert_eq!(
        attestor.attest(&reused, &peer.pin),
        Err(AttestError::ProcessGone { pid: reused.pid })
    );
    // Its own pid is gone from /proc as well.
    assert_eq!(
        attestor.attest(&peer.cred, &peer.pin),
        Err(AttestError::ProcessGone { pid: peer.cred.pid })
    );
    // The start-time fallback cannot tell: this is the race the pidfd closes.
    assert!(attestor.attest(&reused, &PeerPin::Unsupported).is_ok());
}

#[test]
fn a_confirmed_peer_that_exits_is_gone() {
    let mut peer = Peer::connect("exit");
    let attestor = Attestor::new(test_config());
    attestor.attest(&peer.cred, &peer.pin).unwrap();
    assert_eq!(
        peer.pin.confirmed(peer.cred.pid).map(|c| c.pid),
        Some(peer.cred.pid)
    );
    assert!(attestor.attest_cached(&peer.cred, &peer.pin).is_some());
    peer.go();
    peer.kid.0.wait().unwrap();
    assert_eq!(attestor.attest_cached(&peer.cred, &peer.pin), None);
    assert_eq!(
        attestor.attest(&peer.cred, &peer.pin),
        Err(AttestError::ProcessGone { pid: peer.cred.pid })
    );
    let (_kid, reused) = bystander();
    assert_eq!(attestor.attest_cached(&reused, &peer.pin), None);
    assert_eq!(
        attestor.attest(&reused, &peer.pin),
        Err(AttestError::ProcessGone { pid: reused.pid })
    );
}

#[test]
fn a_pidfd_for_another_live_process_is_pid_reuse() {
    let peer = Peer::connect("exit");
    let (_kid, other) = bystander();
    let attestor = Attestor::new(test_config());
    assert_eq!(
        attestor.attest(&other, &peer.pin),
        Err(AttestError::PidReused { pid: other.pid })
    );
    // A cached result for the bystander does not change that.
    attestor.attest(&other, &PeerPin::Unsupported).unwrap();
    assert_eq!(
        attestor.attest(&other, &peer.pin),
        Err(AttestError::PidReused { pid: other.pid })
    );
    assert!(attestor.attest(&peer.cred, &peer.pin).is_ok());
}

#[test]
fn exec_is_noticed_on_the_inherited_connection() {
    let mut peer = Peer::connect("exec");
    let attestor = Attestor::new(test_config());
    let before = attestor.attest(&peer.cred, &peer.pin).unwrap();
    let test_exe = std::env::current_exe().unwrap().canonicalize().unwrap();
    assert!(before.contains(&sel(&format!("unix:path:{}", test_exe.display()))));
    assert!(before.contains(&sel(&format!("unix:sha256:{}", sha256_hex(&test_exe)))));

    peer.go();
    let sleep = peer.kid.exe_when("/sleep");
    // Same pid, same start time, same pidfd: only the binary changed.
    let after = attestor.attest(&peer.cred, &peer.pin).unwrap();
    assert!(
        after.contains(&sel(&format!("unix:path:{}", sleep.display()))),
        "{after:?}"
    );
    assert!(after.contains(&sel(&format!("unix:sha256:{}", sha256_hex(&sleep)))));
    assert!(
        !after
            .iter()
            .any(|s| s.value().contains(&*test_exe.to_string_lossy()))
    );
    assert!(!after.contains(&sel(&format!("unix:sha256:{}", sha256_hex(&test_exe)))));
    // And the new result is what later calls are served.
    let again = attestor.attest(&peer.cred, &peer.pin).unwrap();
    assert!(Arc::ptr_eq(&after, &again));
}
