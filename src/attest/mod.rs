//! Unix workload attestation (SPEC §1.1, §2 "attests workloads by their peer
//! credentials"): from the credentials the kernel reports for a Workload API
//! connection (`SO_PEERCRED`, pinned by `SO_PEERPIDFD`) and from `/proc` and
//! `/etc`, compute the caller's `unix:` selectors. Nothing the caller says
//! is consulted.
//!
//! This is edge code. It reads `/proc/<pid>`, `/etc/passwd` and `/etc/group`
//! and may hash a large executable, so [`Attestor::attest`] blocks; async
//! callers run it under `tokio::task::spawn_blocking`.
//! [`Attestor::attest_cached`] only checks a cached result and never waits
//! on a filesystem, so it may run in place. Pure parsing lives in `parse`.
//!
//! What attestation cannot see: a process that connects and then `exec`s
//! another binary, while it (or a child that inherited the socket) keeps
//! the connection, is attested as the new binary, because the pid and the
//! pidfd still name the same process. SPIRE has the same limit.
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
mod error;
mod names;
mod parse;
mod pin;
mod procfs;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::id::Selector;
use cache::{Bounded, DigestCache, FileKey, Freshness};
use names::NameStamp;
use procfs::ProcDir;

pub use error::AttestError;
pub use pin::{PeerPin, Pidfd};

/// How many executable digests an [`Attestor`] remembers.
const DIGEST_CACHE_ENTRIES: usize = 1024;

/// How many attestation results an [`Attestor`] remembers (one per live
/// workload process and binary; each is a few hundred bytes).
const RESULT_CACHE_ENTRIES: usize = 1024;

/// How long a cached result's slowly changing inputs — the ids and groups in
/// `status`, the account files and the executable's path — are trusted
/// before a hit reads them again. What `exec` changes (the executable's
/// identity) and the pin are checked on every call; only `setuid`/`setgroups`
/// without `exec`, a renamed user or group, and a renamed running binary may
/// take up to this long to be seen, on a connection whose caller was already
/// attested.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

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

/// What a cached attestation is filed under: the process (pid and start
/// time), the executable it runs, and the ids the socket reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProcessKey {
    pid: i32,
    start_time: u64,
    exe: FileKey,
    uid: u32,
    gid: u32,
}

/// What one round of reads found out about the process behind a socket.
#[derive(Debug)]
struct Facts {
    proc: ProcDir,
    key: ProcessKey,
    exe_path: PathBuf,
    groups: Vec<u32>,
    names: NameStamp,
    /// The `/proc/<pid>` directory, when opened by these reads: kept by the
    /// pin once confirmed.
    opened: Option<std::os::fd::OwnedFd>,
}

/// One cached attestation: the selectors and the inputs, beyond the key,
/// that they were computed from, and when those inputs were last confirmed
/// (milliseconds after the attestor's epoch).
#[derive(Debug)]
struct Attested {
    exe_path: PathBuf,
    groups: Vec<u32>,
    names: NameStamp,
    selectors: Arc<[Selector]>,
    checked_ms: AtomicU64,
}

impl Attested {
    /// Whether the slowly changing inputs were confirmed within
    /// [`RECHECK_AFTER`] of `now_ms`.
    fn recently_checked(&self, now_ms: u64) -> bool {
        let recheck = u64::try_from(RECHECK_AFTER.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(self.checked_ms.load(Ordering::Acquire)) < recheck
    }

    /// Whether this result still describes a process whose key matched and
    /// which now shows `exe_path`, `groups` and account files `names`.
    fn still_holds(&self, exe_path: &Path, groups: &[u32], names: &NameStamp) -> bool {
        self.exe_path == exe_path && self.groups == groups && self.names == *names
    }
}

/// Attests local workloads; holds the configuration and bounded caches of
/// executable digests and of attestation results. `Send + Sync`: share one
/// per agent.
pub struct Attestor {
    cfg: AttestConfig,
    digests: DigestCache,
    results: Bounded<ProcessKey, Arc<Attested>>,
    /// What `Attested::checked_ms` counts from.
    epoch: Instant,
}

impl fmt::Debug for Attestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attestor")
            .field("cfg", &self.cfg)
            .field("cached_digests", &self.digests.len())
            .field("cached_results", &self.results.len())
            .finish()
    }
}

/// Attests one caller without caches; see [`Attestor::attest`].
pub fn attest(
    cred: &PeerCred,
    pin: &PeerPin,
    cfg: &AttestConfig,
) -> Result<Arc<[Selector]>, AttestError> {
    Attestor::new(cfg.clone()).attest(cred, pin)
}

impl Attestor {
    /// An attestor with empty caches.
    pub fn new(cfg: AttestConfig) -> Self {
        Self {
            cfg,
            digests: DigestCache::new(DIGEST_CACHE_ENTRIES),
            results: Bounded::new(RESULT_CACHE_ENTRIES),
            epoch: crate::clock::monotonic(),
        }
    }

    /// Milliseconds since this attestor's epoch.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The configuration in force.
    pub fn config(&self) -> &AttestConfig {
        &self.cfg
    }

    /// The selectors of the process that connected with `cred`, pinned by
    /// `pin`: sorted and without duplicates.
    ///
    /// PID reuse: `cred.pid` names the process that connected, but pids are
    /// recycled, and by the time `/proc/<pid>` is read another process may
    /// hold it; attesting that one would hand its identity to our caller.
    /// So every read of `/proc/<pid>` comes first, and only then is the pid
    /// confirmed: through the pidfd (its process still holds the pid, so it
    /// held it throughout the reads; see `pin`), or, on kernels without
    /// `SO_PEERPIDFD`, by reading the start time again (stat field 22, fixed
    /// for a process's life), which cannot see a pid reused before the first
    /// read by a process with the same uid and gid. In both cases `/proc`
    /// must also show the effective uid and gid the socket reported: a
    /// process that changed identity since it connected is refused.
    ///
    /// Caching: results are kept per [`ProcessKey`] (pid, start time,
    /// executable identity, socket uid and gid). A hit skips reading the
    /// passwd and group files, hashing and building selectors, but checks:
    /// - the start time of the key: from `stat` (which also shows a
    ///   zombie), or, on a connection whose pidfd an earlier call confirmed,
    ///   from that confirmation: the pinned process keeps its start time
    ///   until it exits, and whether it exited is what the pin checks;
    /// - the executable's identity and the `exe` link: `exec` keeps pid and
    ///   start time but changes these, so `unix:path` and `unix:sha256`
    ///   follow the new binary;
    /// - `status`: uid, gid and supplementary groups can change without
    ///   `exec` (`setuid`, `setgroups`); a process that dropped a group
    ///   must not keep matching entries that require it, so a hit whose
    ///   groups differ is recomputed, and changed ids are refused as above;
    /// - the identity of the passwd and group files, so renamed users and
    ///   groups are not served from the cache;
    /// - the pid confirmation above, which no cache may skip: the key names
    ///   a process, but only the pin proves the reads were of the caller.
    ///
    /// `status` and the account files change rarely and cost the most (the
    /// kernel formats all of `status` for each read), so on a connection
    /// whose pin is already confirmed a hit re-reads them only when they
    /// were last confirmed more than [`RECHECK_AFTER`] ago (see
    /// [`Attestor::attest_cached`]), and so is the executable's path; the
    /// executable's identity and the pin are checked on every call.
    pub fn attest(&self, cred: &PeerCred, pin: &PeerPin) -> Result<Arc<[Selector]>, AttestError> {
        let facts = self.read_facts(cred, pin, Freshness::Synced)?;
        let selectors = match self.cached(&facts) {
            Some(selectors) => selectors,
            None => self.compute(&facts)?,
        };
        confirm(pin, facts)?;
        Ok(selectors)
    }

    /// A cached attestation that still holds, or `None` (then call
    /// [`Attestor::attest`], which reports why when it fails).
    ///
    /// Makes every check [`Attestor::attest`] makes on a hit, but never
    /// waits on a filesystem: it reads only `/proc`, which the kernel
    /// answers from memory, and states files with `AT_STATX_DONT_SYNC`, so
    /// an executable on a stalled network or FUSE mount cannot hold up the
    /// caller. Async callers may run it on their own thread.
    pub fn attest_cached(&self, cred: &PeerCred, pin: &PeerPin) -> Option<Arc<[Selector]>> {
        if let Some(selectors) = self.recent_hit(cred, pin) {
            return Some(selectors);
        }
        let facts = self.read_facts(cred, pin, Freshness::Cached).ok()?;
        let selectors = self.cached(&facts)?;
        confirm(pin, facts).ok()?;
        Some(selectors)
    }

    /// A hit on a connection whose pin an earlier attestation confirmed,
    /// for a result whose `status`, account files and executable path were
    /// checked within [`RECHECK_AFTER`]: only what `exec` changes (the
    /// executable's identity: device, inode, size, times) is read again, and
    /// the pin is confirmed after. `None` sends the caller down the full
    /// check.
    ///
    /// The path is left to the recheck because only a rename of the running
    /// binary changes it without changing the file: the selectors then still
    /// describe the same code (same file, same digest) for at most
    /// [`RECHECK_AFTER`]. An `exec` of anything else changes the identity.
    fn recent_hit(&self, cred: &PeerCred, pin: &PeerPin) -> Option<Arc<[Selector]>> {
        let PeerPin::Pidfd(pidfd) = pin else {
            return None;
        };
        let known = pin.confirmed(cred.pid)?;
        let key = ProcessKey {
            pid: cred.pid,
            start_time: known.start_time,
            exe: known.exe_key(Freshness::Cached).ok()?,
            uid: cred.uid,
            gid: cred.gid,
        };
        let hit = self.results.get(&key)?;
        if !hit.recently_checked(self.now_ms()) {
            return None;
        }
        // The reads above were of the caller only if it still holds its pid.
        pidfd.confirm(key.pid, key.start_time, None).ok()?;
        Some(hit.selectors.clone())
    }

    /// Everything read from `/proc` (and the account files' identities)
    /// before the pid is confirmed, with the uid and gid checked.
    ///
    /// A connection whose pidfd an earlier attestation confirmed skips
    /// `stat` (the pinned process keeps its start time until it exits,
    /// which the confirmation checks) and reads `status` through its kept `/proc/<pid>` directory.
    fn read_facts(
        &self,
        cred: &PeerCred,
        pin: &PeerPin,
        fresh: Freshness,
    ) -> Result<Facts, AttestError> {
        if cred.pid <= 0 {
            return Err(AttestError::NoPid);
        }
        if let PeerPin::Failed { errno } = pin {
            return Err(AttestError::PinFailed {
                pid: cred.pid,
                errno: *errno,
            });
        }
        let proc = ProcDir::new(cred.pid);
        let confirmed = pin.confirmed(cred.pid);
        let start_time = match confirmed {
            Some(known) => known.start_time,
            None => proc.stat()?.start_time,
        };
        let exe = proc.exe_key(fresh)?;
        let exe_path = proc.exe_target()?;
        let (status, opened) = match confirmed {
            Some(known) => (proc.status(|| known.read_status())?, None),
            None => {
                let dir = proc.open_dir()?;
                let ids = proc.status(|| procfs::read_status_at(&dir))?;
                (ids, Some(dir))
            }
        };
        check_ids(&proc, cred, &status)?;
        Ok(Facts {
            key: ProcessKey {
                pid: cred.pid,
                start_time,
                exe,
                uid: cred.uid,
                gid: cred.gid,
            },
            proc,
            exe_path,
            groups: status.groups,
            names: NameStamp::now(&self.cfg, fresh),
            opened,
        })
    }

    /// The cached selectors for `facts`, if an entry still holds.
    fn cached(&self, facts: &Facts) -> Option<Arc<[Selector]>> {
        let hit = self.results.get(&facts.key)?;
        if !hit.still_holds(&facts.exe_path, &facts.groups, &facts.names) {
            return None;
        }
        hit.checked_ms.store(self.now_ms(), Ordering::Release);
        Some(hit.selectors.clone())
    }

    /// The full attestation of a cache miss (names, digest, selectors),
    /// recorded in the cache.
    fn compute(&self, facts: &Facts) -> Result<Arc<[Selector]>, AttestError> {
        let (proc, key) = (&facts.proc, facts.key);
        let digest = proc.exe_digest(key.exe, &self.digests, self.cfg.max_exe_bytes)?;
        // The path was read after the identity; if the process ran `exec`
        // in between, the path and the digest would describe two binaries.
        if proc.exe_key(Freshness::Synced)? != key.exe {
            return Err(AttestError::ExeChanged { pid: key.pid });
        }
        let mut out = Vec::new();
        push(&mut out, "uid", &key.uid.to_string());
        push(&mut out, "gid", &key.gid.to_string());
        if let Some(name) = names::lookup(&self.cfg.passwd_path, key.uid) {
            push(&mut out, "user", &name);
        }
        if let Some(name) = names::lookup(&self.cfg.group_path, key.gid) {
            push(&mut out, "group", &name);
        }
        for gid in &facts.groups {
            push(&mut out, "supplementary_gid", &gid.to_string());
        }
        match facts.exe_path.to_str().and_then(parse::exe_path_value) {
            Some(path) => push(&mut out, "path", path),
            None => tracing::debug!(pid = key.pid, exe = ?facts.exe_path, "no path selector"),
        }
        if let Some(hex) = digest {
            push(&mut out, "sha256", &hex);
        }
        out.sort();
        out.dedup();
        let selectors: Arc<[Selector]> = out.into();
        let entry = Attested {
            exe_path: facts.exe_path.clone(),
            groups: facts.groups.clone(),
            names: facts.names,
            selectors: selectors.clone(),
            checked_ms: AtomicU64::new(self.now_ms()),
        };
        self.results.insert(key, Arc::new(entry));
        Ok(selectors)
    }
}

/// Confirms, after every `/proc` read, that the pid still names the process
/// that connected (see [`Attestor::attest`]).
fn confirm(pin: &PeerPin, facts: Facts) -> Result<(), AttestError> {
    let Facts {
        proc, key, opened, ..
    } = facts;
    match pin {
        PeerPin::Pidfd(pidfd) => pidfd.confirm(key.pid, key.start_time, opened),
        PeerPin::Unsupported => {
            if proc.stat()?.start_time == key.start_time {
                Ok(())
            } else {
                Err(AttestError::PidReused { pid: key.pid })
            }
        }
        PeerPin::Failed { errno } => Err(AttestError::PinFailed {
            pid: key.pid,
            errno: *errno,
        }),
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
