//! Unix workload attestation (SPEC §1.1, §2 "attests workloads by their peer
//! credentials"): from the credentials the kernel reports for a Workload API
//! connection (`SO_PEERCRED`) and from `/proc` and `/etc`, compute the
//! caller's `unix:` selectors. Nothing the caller says is consulted.
//!
//! This is edge code. It reads `/proc/<pid>`, `/etc/passwd` and `/etc/group`
//! and may hash a large executable, so every call blocks; async callers run
//! it under `tokio::task::spawn_blocking`. Pure parsing lives in `parse`.
//!
//! # Selectors produced
//!
//! `unix:uid:<n>` and `unix:gid:<n>` from the socket credentials;
//! `unix:user:<name>` and `unix:group:<name>` when the passwd/group files
//! name those ids; `unix:supplementary_gid:<n>` per entry of the `Groups:`
//! line; `unix:path:<abs>` from the `exe` link (absent for a deleted binary);
//! `unix:sha256:<hex>` of the executable (absent above
//! [`AttestConfig::max_exe_bytes`]). Leaving a selector out can only make a
//! caller match fewer entries, so every "cannot tell" case omits rather
//! than guesses.

mod cache;
mod parse;
mod procfs;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use crate::id::Selector;
use cache::DigestCache;
use procfs::ProcDir;

/// How many executable digests an [`Attestor`] remembers.
const DIGEST_CACHE_ENTRIES: usize = 1024;

/// What the kernel reported about the peer of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// The process that connected, in this process's pid namespace.
    pub pid: i32,
    /// Its effective uid at `connect()` time.
    pub uid: u32,
    /// Its effective gid at `connect()` time.
    pub gid: u32,
}

impl TryFrom<tokio::net::unix::UCred> for PeerCred {
    type Error = AttestError;

    /// Fails with [`AttestError::NoPid`] when the kernel gave no pid (e.g. a
    /// peer in another pid namespace that has no pid in ours).
    fn try_from(cred: tokio::net::unix::UCred) -> Result<Self, AttestError> {
        match cred.pid() {
            Some(pid) if pid > 0 => Ok(Self {
                pid,
                uid: cred.uid(),
                gid: cred.gid(),
            }),
            _ => Err(AttestError::NoPid),
        }
    }
}

/// Settings for the Unix attestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestConfig {
    /// Executables larger than this are not hashed (no `unix:sha256`
    /// selector; a warning is logged). Default 256 MiB.
    pub max_exe_bytes: u64,
    /// Where user names are looked up. Default `/etc/passwd`.
    pub passwd_path: PathBuf,
    /// Where group names are looked up. Default `/etc/group`.
    pub group_path: PathBuf,
}

impl Default for AttestConfig {
    fn default() -> Self {
        Self {
            max_exe_bytes: 256 * 1024 * 1024,
            passwd_path: PathBuf::from("/etc/passwd"),
            group_path: PathBuf::from("/etc/group"),
        }
    }
}

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
    /// The process's start time changed during attestation: the pid now
    /// belongs to a different process.
    #[error("process {pid} was replaced during attestation (pid reused)")]
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
    /// The executable changed while it was being hashed, so its digest
    /// describes no binary.
    #[error("executable of process {pid} changed while it was hashed")]
    ExeChanged {
        /// The pid from the socket credentials.
        pid: i32,
    },
}

/// Attests local workloads; holds the configuration and a bounded cache of
/// executable digests. `Send + Sync`: share one per agent.
pub struct Attestor {
    cfg: AttestConfig,
    digests: DigestCache,
}

impl fmt::Debug for Attestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attestor")
            .field("cfg", &self.cfg)
            .field("cached_digests", &self.digests.len())
            .finish()
    }
}

/// Attests one caller without a digest cache; see [`Attestor::attest`].
pub fn attest(cred: &PeerCred, cfg: &AttestConfig) -> Result<Vec<Selector>, AttestError> {
    Attestor::new(cfg.clone()).attest(cred)
}

impl Attestor {
    /// An attestor with an empty digest cache.
    pub fn new(cfg: AttestConfig) -> Self {
        Self {
            cfg,
            digests: DigestCache::new(DIGEST_CACHE_ENTRIES),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AttestConfig {
        &self.cfg
    }

    /// The selectors of the process behind `cred`, sorted and without
    /// duplicates.
    ///
    /// PID reuse: `cred.pid` names the process that connected, but pids are
    /// recycled, and by the time we read `/proc/<pid>` another process may
    /// hold it. Attesting that one would hand its identity to our caller.
    /// So the start time (stat field 22, fixed for a process's life) is read
    /// first and again last, and in between `/proc` must show the effective
    /// uid and gid the socket reported. A changed start time means the pid
    /// was reused mid-way; a changed identity means it is not the process
    /// that connected (or it changed credentials, which we also refuse).
    ///
    /// What this cannot see: a pid reused *before* the first read by a
    /// process with the same uid and gid (the connecting process must have
    /// exited and not passed on its socket), and an `exec` by the same
    /// process, which keeps the pid and start time. Closing those needs a
    /// pidfd from `SO_PEERPIDFD`, which needs unsafe code.
    pub fn attest(&self, cred: &PeerCred) -> Result<Vec<Selector>, AttestError> {
        if cred.pid <= 0 {
            return Err(AttestError::NoPid);
        }
        let proc = ProcDir::new(cred.pid);
        let before = proc.stat()?;
        let exe = proc.exe_target()?;
        let digest = proc.exe_digest(&self.digests, self.cfg.max_exe_bytes)?;
        let status = proc.status()?;
        check_ids(&proc, cred, &status)?;
        let after = proc.stat()?;
        if after.start_time != before.start_time {
            return Err(AttestError::PidReused { pid: proc.pid() });
        }

        let mut out = Vec::new();
        push(&mut out, "uid", &cred.uid.to_string());
        push(&mut out, "gid", &cred.gid.to_string());
        if let Some(name) = lookup_name(&self.cfg.passwd_path, cred.uid) {
            push(&mut out, "user", &name);
        }
        if let Some(name) = lookup_name(&self.cfg.group_path, cred.gid) {
            push(&mut out, "group", &name);
        }
        for gid in &status.groups {
            push(&mut out, "supplementary_gid", &gid.to_string());
        }
        match exe.to_str().and_then(parse::exe_path_value) {
            Some(path) => push(&mut out, "path", path),
            None => tracing::debug!(pid = cred.pid, exe = ?exe, "no path selector"),
        }
        if let Some(hex) = digest {
            push(&mut out, "sha256", &hex);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The name for `id` in a passwd or group file. A missing or unreadable file
/// gives no name: names are extra selectors, and leaving one out only narrows
/// what the caller matches.
fn lookup_name(path: &std::path::Path, id: u32) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(db) => parse::name_for_id(&db, id).map(str::to_owned),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read account names");
            None
        }
    }
}

/// `SO_PEERCRED` records the *effective* uid and gid at `connect()`, so
/// those are what `/proc` must still show.
fn check_ids(
    proc: &ProcDir,
    cred: &PeerCred,
    status: &parse::StatusIds,
) -> Result<(), AttestError> {
    let pairs = [
        ("uid", cred.uid, status.effective_uid()),
        ("gid", cred.gid, status.effective_gid()),
    ];
    for (what, expected, found) in pairs {
        if expected != found {
            return Err(AttestError::CredentialMismatch {
                pid: proc.pid(),
                what,
                expected,
                found,
            });
        }
    }
    Ok(())
}

/// Adds `unix:<key>:<value>`, or logs and leaves it out when the value is not
/// a valid selector (e.g. a path with control characters or over 1024 bytes).
fn push(out: &mut Vec<Selector>, key: &str, value: &str) {
    match Selector::new("unix", &format!("{key}:{value}")) {
        Ok(sel) => out.push(sel),
        Err(err) => tracing::warn!(key, %err, "attested value is not a valid selector; omitted"),
    }
}
