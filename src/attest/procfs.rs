//! Reads what the Unix attestor needs from `/proc/<pid>` and hashes the
//! executable (SPEC §2). Every read maps "the process is gone" to
//! [`AttestError::ProcessGone`] so callers can tell an exited workload from
//! a broken host.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ring::digest;

use super::AttestError;
use super::cache::{DigestCache, FileKey};
use super::parse::{self, ProcStat, StatusIds};

/// The `/proc` directory of one process.
#[derive(Debug)]
pub(crate) struct ProcDir {
    pid: i32,
    dir: PathBuf,
}

/// ESRCH: some /proc reads fail this way once the process has exited.
const ESRCH: i32 = 3;

impl ProcDir {
    pub(crate) fn new(pid: i32) -> Self {
        Self {
            pid,
            dir: PathBuf::from(format!("/proc/{pid}")),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    fn io_error(&self, what: &'static str, err: &io::Error) -> AttestError {
        if err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(ESRCH) {
            AttestError::ProcessGone { pid: self.pid }
        } else {
            AttestError::ProcRead {
                pid: self.pid,
                what,
                message: err.to_string(),
            }
        }
    }

    fn read_text(&self, what: &'static str) -> Result<String, AttestError> {
        std::fs::read_to_string(self.dir.join(what)).map_err(|e| self.io_error(what, &e))
    }

    /// The state and start time from `stat`; an exited process is gone.
    pub(crate) fn stat(&self) -> Result<ProcStat, AttestError> {
        let text = self.read_text("stat")?;
        let stat = parse::parse_stat(&text).ok_or(AttestError::ProcFormat {
            pid: self.pid,
            what: "stat",
        })?;
        if stat.has_exited() {
            return Err(AttestError::ProcessGone { pid: self.pid });
        }
        Ok(stat)
    }

    /// The uid, gid and supplementary group lines from `status`.
    pub(crate) fn status(&self) -> Result<StatusIds, AttestError> {
        let text = self.read_text("status")?;
        parse::parse_status(&text).ok_or(AttestError::ProcFormat {
            pid: self.pid,
            what: "status",
        })
    }

    /// The target of the `exe` link, as the kernel reports it (in the
    /// process's own mount namespace).
    pub(crate) fn exe_target(&self) -> Result<PathBuf, AttestError> {
        std::fs::read_link(self.dir.join("exe")).map_err(|e| self.io_error("exe", &e))
    }

    /// The identity of the file the process is running (`stat` through the
    /// `exe` link, which reaches the inode even if its path is gone).
    pub(crate) fn exe_key(&self) -> Result<FileKey, AttestError> {
        std::fs::metadata(self.dir.join("exe"))
            .map(|meta| FileKey::of(&meta))
            .map_err(|e| self.io_error("exe", &e))
    }

    /// The SHA-256 of the executable `key` describes as lowercase hex, or
    /// `None` when it is larger than `max_bytes`.
    ///
    /// The file is read through `/proc/<pid>/exe`, which opens the inode the
    /// process is running even if the path now names another file or none;
    /// if that is no longer the file `key` describes, the result is
    /// [`AttestError::ExeChanged`].
    pub(crate) fn exe_digest(
        &self,
        key: FileKey,
        cache: &DigestCache,
        max_bytes: u64,
    ) -> Result<Option<String>, AttestError> {
        if key.size() > max_bytes {
            tracing::warn!(
                pid = self.pid,
                size = key.size(),
                max_exe_bytes = max_bytes,
                "executable larger than the hashing limit; no sha256 selector"
            );
            return Ok(None);
        }
        if let Some(hex) = cache.get(&key) {
            return Ok(Some(hex));
        }
        let hex = self.hash_file(&self.dir.join("exe"), key)?;
        cache.insert(key, hex.clone());
        Ok(Some(hex))
    }

    /// Hashes the file, refusing the result if it is not exactly the file
    /// `key` describes from start to end: a digest of a file that changed
    /// while being read describes no binary at all.
    fn hash_file(&self, link: &Path, key: FileKey) -> Result<String, AttestError> {
        let changed = AttestError::ExeChanged { pid: self.pid };
        let file = File::open(link).map_err(|e| self.io_error("exe", &e))?;
        let fstat = |f: &File| f.metadata().map_err(|e| self.io_error("exe", &e));
        if FileKey::of(&fstat(&file)?) != key {
            return Err(changed);
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        // Read one byte past the expected size so growth is noticed.
        let mut reader = (&file).take(key.size().saturating_add(1));
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| self.io_error("exe", &e))?;
            let Some(chunk) = buf.get(..n) else {
                return Err(changed);
            };
            if chunk.is_empty() {
                break;
            }
            ctx.update(chunk);
            total = total.saturating_add(n as u64);
        }
        if total != key.size() || FileKey::of(&fstat(&file)?) != key {
            return Err(changed);
        }
        Ok(hex::encode(ctx.finish().as_ref()))
    }
}
