//! Why a workload could not be attested (SPEC §2). These carry pids and
//! system error text: the Workload API logs them and tells the caller only
//! that attestation failed.

/// Why a workload could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The kernel reported no process id (or a non-positive one) for the
    /// peer, so there is no process to inspect.
    #[error("peer credentials carry no process id")]
    NoPid,
    /// The process exited (or is a zombie) before attestation finished.
    #[error("process {pid} is gone")]
    ProcessGone {
        /// The pid from the socket credentials.
        pid: i32,
    },
    /// A `/proc` file could not be read for a reason other than the process
    /// being gone (e.g. permissions).
    #[error("cannot read /proc/{pid}/{what}: {message}")]
    ProcRead {
        /// The pid from the socket credentials.
        pid: i32,
        /// Which file under `/proc/<pid>`.
        what: &'static str,
        /// The operating system's error text.
        message: String,
    },
    /// A `/proc` file is not in the format the kernel documents.
    #[error("/proc/{pid}/{what} is not in the expected format")]
    ProcFormat {
        /// The pid from the socket credentials.
        pid: i32,
        /// Which file under `/proc/<pid>`.
        what: &'static str,
    },
    /// The pid no longer names the process that connected: the pidfd's
    /// process holds another pid (or none in our namespace), or, without a
    /// pidfd, the start time changed during attestation.
    #[error("process {pid} is not the process that connected (pid reused)")]
    PidReused {
        /// The pid from the socket credentials.
        pid: i32,
    },
    /// The effective uid or gid in `/proc` is not what the kernel reported
    /// for the socket: the process changed identity since it connected, or
    /// the pid is no longer the connecting process.
    #[error("process {pid}: {what} is {found} in /proc but {expected} on the socket")]
    CredentialMismatch {
        /// The pid from the socket credentials.
        pid: i32,
        /// `uid` or `gid`.
        what: &'static str,
        /// The id from the socket credentials.
        expected: u32,
        /// The effective id `/proc` shows now.
        found: u32,
    },
    /// The executable changed while it was being read or hashed (the
    /// process ran `exec`, or the file was rewritten), so the path and
    /// digest would not describe one binary.
    #[error("executable of process {pid} changed while it was read")]
    ExeChanged {
        /// The pid from the socket credentials.
        pid: i32,
    },
    /// The kernel has `SO_PEERPIDFD` but gave no pidfd for this connection
    /// (typically: the peer was already reaped at accept), so the process
    /// cannot be pinned.
    #[error("no pidfd for process {pid}: errno {errno}")]
    PinFailed {
        /// The pid from the socket credentials.
        pid: i32,
        /// The error number `getsockopt(SO_PEERPIDFD)` returned.
        errno: i32,
    },
    /// The pidfd's `/proc/self/fdinfo` entry could not be read or has no
    /// valid `Pid:` line, so whether the process is still there is unknown.
    #[error("cannot confirm process {pid} through its pidfd: {message}")]
    PinUnreadable {
        /// The pid from the socket credentials.
        pid: i32,
        /// What went wrong.
        message: String,
    },
}
