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

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Once, OnceLock};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt::PeerPidfd};

use super::AttestError;
use super::cache::{FileKey, Freshness};
use super::parse::{self, PidfdPid};
use super::procfs::{read_proc_file, read_status_at};

/// How the process behind one connection is pinned; taken at accept and
/// shared by every request on the connection.
#[derive(Debug, Clone)]
pub enum PeerPin {
    /// A pidfd for the connecting process, from `SO_PEERPIDFD`.
    Pidfd(Arc<Pidfd>),
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
            Ok(fd) => Self::Pidfd(Arc::new(Pidfd {
                fd,
                confirmed: OnceLock::new(),
            })),
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

    /// What an earlier attestation on this connection confirmed about
    /// `pid`, if any.
    pub(crate) fn confirmed(&self, pid: i32) -> Option<&Confirmed> {
        match self {
            Self::Pidfd(pidfd) => pidfd.confirmed.get().filter(|c| c.pid == pid),
            Self::Unsupported | Self::Failed { .. } => None,
        }
    }
}

/// A pidfd for the process that connected, and what the first attestation
/// of its connection confirmed through it.
pub struct Pidfd {
    fd: OwnedFd,
    confirmed: OnceLock<Confirmed>,
}

impl std::fmt::Debug for Pidfd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pidfd")
            .field("fd", &self.fd.as_raw_fd())
            .field("confirmed_pid", &self.confirmed.get().map(|c| c.pid))
            .finish()
    }
}

/// The process a pidfd was confirmed to hold, recorded by the first
/// attestation of a connection so later ones need not derive it again.
///
/// Once the pidfd has been shown to hold `pid`, its process *is* that pid
/// with that start time for as long as it has not exited, so a later
/// attestation only has to show that it has not (see [`Pidfd::confirm`]).
#[derive(Debug)]
pub(crate) struct Confirmed {
    pub(crate) pid: i32,
    pub(crate) start_time: u64,
    /// `/proc/<pid>`, opened before the confirmation. An open `/proc/<pid>`
    /// stays bound to the process it was opened for: names looked up in it
    /// (`exe`, `status`) can never reach a later holder of the pid (lookups
    /// fail once the process is gone), and they skip the walk from `/`. One
    /// descriptor per connection, beside the socket and the pidfd.
    dir: OwnedFd,
}

impl Confirmed {
    /// The identity of the executable the process runs now.
    pub(crate) fn exe_key(&self, fresh: Freshness) -> io::Result<FileKey> {
        FileKey::of_at(&self.dir, "exe", fresh)
    }

    /// The current text of the process's `status`.
    pub(crate) fn read_status(&self) -> io::Result<String> {
        read_status_at(&self.dir)
    }
}

impl Pidfd {
    /// Confirms, after the `/proc` reads of one attestation, that the pidfd's
    /// process still holds `pid` (see the module doc for why this proves
    /// the reads were of it).
    ///
    /// The first time, through the `Pid:` line of the pidfd's fdinfo, which
    /// also shows that `/proc` numbers the process as the socket did; then
    /// `start_time` and the `/proc/<pid>` directory (opened during the reads) are recorded.
    /// After that, a zero-timeout `poll`, which reports the process as soon
    /// as it has exited (a zombie included), is enough: a process that has
    /// not exited still holds its pid.
    pub(crate) fn confirm(
        &self,
        pid: i32,
        start_time: u64,
        opened: Option<OwnedFd>,
    ) -> Result<(), AttestError> {
        if let Some(known) = self.confirmed.get().filter(|c| c.pid == pid) {
            if known.start_time != start_time {
                return Err(AttestError::PidReused { pid });
            }
            return match self.has_exited() {
                Ok(false) => Ok(()),
                Ok(true) => Err(AttestError::ProcessGone { pid }),
                Err(errno) => Err(AttestError::PinUnreadable {
                    pid,
                    message: format!("poll: {errno}"),
                }),
            };
        }
        confirm_by_fdinfo(&self.fd, pid)?;
        if let Some(dir) = opened {
            // A concurrent first attestation may have recorded it already;
            // both confirmed the same process, so either record is right.
            let _ = self.confirmed.set(Confirmed {
                pid,
                start_time,
                dir,
            });
        }
        Ok(())
    }

    /// Whether the process has exited: the pidfd polls readable then.
    fn has_exited(&self) -> Result<bool, Errno> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO)?;
        // Unknown event bits count as exited: refuse rather than guess.
        Ok(fds.first().and_then(PollFd::any).unwrap_or(true))
    }
}

/// Confirms that the process `pidfd` refers to still holds `pid` in our pid
/// namespace (the `Pid:` line of its fdinfo).
fn confirm_by_fdinfo(pidfd: &OwnedFd, pid: i32) -> Result<(), AttestError> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let text = read_proc_file(Path::new(&path)).map_err(|e| AttestError::PinUnreadable {
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
