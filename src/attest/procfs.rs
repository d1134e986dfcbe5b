//! Reads what the Unix attestor needs from `/proc/<pid>` and hashes the
//! executable (SPEC §2). Every read maps "the process is gone" to
//! [`AttestError::ProcessGone`] so callers can tell an exited workload from
//! a broken host.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ring::digest;
use rustix::fs::{Mode, OFlags};

use super::AttestError;
use super::cache::{DigestCache, FileKey, Freshness};
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

    pub(crate) fn io_error(&self, what: &'static str, err: &io::Error) -> AttestError {
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
        read_proc_file(&self.dir.join(what)).map_err(|e| self.io_error(what, &e))
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

    /// `/proc/<pid>` itself, as a path-only descriptor to look names up in.
    pub(crate) fn open_dir(&self) -> Result<OwnedFd, AttestError> {
        rustix::fs::open(
            &self.dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io_error("the directory", &io::Error::from(e)))
    }

    /// The uid, gid and supplementary group lines from the text of `status`
    /// (`read` reads it; its errors are classified like every other read).
    pub(crate) fn status(
        &self,
        read: impl FnOnce() -> io::Result<String>,
    ) -> Result<StatusIds, AttestError> {
        let text = read().map_err(|e| self.io_error("status", &e))?;
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
    pub(crate) fn exe_key(&self, fresh: Freshness) -> Result<FileKey, AttestError> {
        FileKey::of_path(&self.dir.join("exe"), fresh).map_err(|e| self.io_error("exe", &e))
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
        let fstat = |f: &File| FileKey::of_file(f).map_err(|e| self.io_error("exe", &e));
        if fstat(&file)? != key {
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
        if total != key.size() || fstat(&file)? != key {
            return Err(changed);
        }
        Ok(hex::encode(ctx.finish().as_ref()))
    }
}

/// The longest `/proc` text file read. `status` is about 1.5 KiB, but its
/// `Groups:` line alone can reach several hundred KiB for a process with
/// the maximum of 65,536 supplementary groups.
const MAX_PROC_FILE: usize = 1024 * 1024;

/// Reads `status` in the `/proc/<pid>` directory `dir` whole.
pub(crate) fn read_status_at(dir: &OwnedFd) -> io::Result<String> {
    let fd = rustix::fs::openat(
        dir,
        "status",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    read_whole(&File::from(fd))
}

/// Reads a `/proc` text file whole; see [`read_whole`].
pub(crate) fn read_proc_file(path: &Path) -> io::Result<String> {
    read_whole(&File::open(path)?)
}

/// Reads an open `/proc` text file whole from its start, without moving
/// its offset, so a kept-open file can be read again (procfs regenerates
/// the text when a read starts at offset 0).
///
/// Unlike `std::fs::read_to_string` this skips the `fstat` for a size hint
/// (procfs reports size 0 anyway). It reads to end of file and refuses a
/// longer file rather than cut it: a cut `Groups:` line would end in a
/// group id the process does not have. Bytes that are not UTF-8 (a command
/// name may hold any) become U+FFFD instead of failing the whole read.
pub(crate) fn read_whole(file: &File) -> io::Result<String> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= MAX_PROC_FILE {
                return Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("{MAX_PROC_FILE} bytes or longer"),
                ));
            }
            buf.resize(len.saturating_mul(2), 0);
        }
        let Some(spare) = buf.get_mut(len..) else {
            return Err(io::ErrorKind::InvalidData.into());
        };
        let n = file.read_at(spare, u64::try_from(len).unwrap_or(u64::MAX))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    buf.truncate(len);
    Ok(String::from_utf8(buf)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}
