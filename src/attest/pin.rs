//! Pinning the process behind a Workload API connection (SPEC §2), so that a
//! recycled pid is never attested in its place.
//!
//! `SO_PEERCRED` names the connecting process by pid, and pids are reused:
//! by the time `/proc/<pid>` is read, the process that connected may have
//! exited and its pid been handed to another. `SO_PEERPIDFD` (Linux 6.5)
//! gives a pidfd for the connecting process itself, taken once at accept.
//! After the attestor has read `/proc/<pid>`, it asks the pidfd whether its
//! process still holds that pid. A pid is freed only when its process is
//! reaped and is never given back to the same process, so if the pidfd's
//! process holds the pid after the reads, it held it throughout them and
//! every read was of the connecting process.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Once};

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt::PeerPidfd};

use super::AttestError;
use super::parse::{self, PidfdPid};

/// How the process behind one connection is pinned; taken at accept.
#[derive(Debug, Clone)]
pub enum PeerPin {
    /// A pidfd for the connecting process, from `SO_PEERPIDFD`.
    Pidfd(Arc<OwnedFd>),
    /// This kernel has no `SO_PEERPIDFD` (before Linux 6.5): attestation
    /// falls back to re-reading the start time, which cannot see a pid
    /// reused before the first read.
    Unsupported,
    /// `SO_PEERPIDFD` exists but failed for this connection (for instance
    /// the peer was already reaped). Attestation is refused: falling back
    /// here would let exactly the race the pidfd closes through.
    Failed {
        /// The error number `getsockopt` returned.
        errno: i32,
    },
}

/// Set once the weaker fallback has been logged.
static FALLBACK_LOGGED: Once = Once::new();

impl PeerPin {
    /// Pins the peer of the connected Unix socket `socket`.
    pub fn of_socket(socket: &impl AsFd) -> Self {
        match getsockopt(socket, PeerPidfd) {
            Ok(fd) => Self::Pidfd(Arc::new(fd)),
            Err(Errno::ENOPROTOOPT) => {
                FALLBACK_LOGGED.call_once(|| {
                    tracing::warn!(
                        "this kernel has no SO_PEERPIDFD (Linux 6.5+): workload attestation \
                         falls back to a start-time re-check, which a pid reused before the \
                         first /proc read can fool"
                    );
                });
                Self::Unsupported
            }
            Err(errno) => Self::Failed {
                errno: errno as i32,
            },
        }
    }
}

/// Confirms that the process `pidfd` refers to still holds `pid` in our pid
/// namespace (the `Pid:` line of its fdinfo); see the module doc for why
/// this, checked after the `/proc` reads, proves they were of that process.
pub(crate) fn confirm(pidfd: &OwnedFd, pid: i32) -> Result<(), AttestError> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let text = std::fs::read_to_string(path).map_err(|e| AttestError::PinUnreadable {
        pid,
        message: e.to_string(),
    })?;
    match parse::parse_pidfd_pid(&text) {
        Some(PidfdPid::Running(held)) if held == pid => Ok(()),
        // Another pid (or none in our namespace): the socket's pid no longer
        // names the process that connected.
        Some(PidfdPid::Running(_) | PidfdPid::Invisible) => Err(AttestError::PidReused { pid }),
        Some(PidfdPid::Reaped) => Err(AttestError::ProcessGone { pid }),
        None => Err(AttestError::PinUnreadable {
            pid,
            message: "pidfd fdinfo has no valid Pid line".into(),
        }),
    }
}
