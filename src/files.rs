//! Every file sigil writes — SVIDs, private keys and bundles from the command
//! line, the agent's own SVID and key, the dev-mode files — goes through
//! [`OutDir`], so another local user can neither read a private key by
//! preparing the place it is written to nor redirect a write elsewhere.
//!
//! The rules, and why:
//! - The directory is opened once and every later step is relative to that
//!   descriptor (`openat`, `renameat`), so replacing the path after the
//!   check cannot move the write into another directory.
//! - The opened directory must belong to the caller (effective uid) or root,
//!   and nobody else may write to it unless it is sticky: in a directory
//!   others can write, they could plant names between our steps; the sticky
//!   bit stops them from removing or renaming what is not theirs.
//! - A directory path that is itself a symbolic link is followed only when
//!   the link belongs to the caller or root (the same rule the kernel's
//!   `protected_symlinks` applies in sticky directories); wherever it leads,
//!   the directory reached is checked as above. A link in an earlier path
//!   component can therefore only lead to another directory that passes.
//! - A file is written to a new temporary file in that directory, created
//!   with `O_CREAT | O_EXCL | O_NOFOLLOW` (an existing name or a planted
//!   symlink makes creation fail rather than be reused), mode 0600 or 0644,
//!   then fsynced and renamed over the target, and the directory is fsynced.
//!   An existing file at the target is replaced as a name: it is never
//!   opened, written or chmodded, so a pre-created file (and any hard link or
//!   open descriptor to it) never receives the new content, and a symbolic
//!   link at the target is replaced while whatever it points to is untouched.
//! - Modes are the most a file or created directory gets; the umask can only
//!   narrow them, and nothing is ever widened afterwards.
//! - Missing directories are created 0700 when they will hold private
//!   material and 0755 when everything in them is public (see [`Access`]).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

/// The sticky bit of `st_mode`: only a name's owner (or the directory's)
/// may remove or rename it.
const S_ISVTX: u32 = 0o1000;

/// Write bits for the group and for others.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// How many fresh temporary names are tried before giving up.
const TEMP_ATTEMPTS: usize = 8;

/// Who may read what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only the owner: private keys, unseal keys (files 0600, directories 0700).
    Private,
    /// Everyone may read: certificates, bundles, policies (files 0644,
    /// directories 0755).
    Public,
}

impl Access {
    fn file_mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Public => 0o644,
        }
    }

    fn dir_mode(self) -> u32 {
        match self {
            Access::Private => 0o700,
            Access::Public => 0o755,
        }
    }
}

/// Why a file was not written. Every message names the path and the rule.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Users other than the owner may write to the directory and it is not
    /// sticky, so they could replace or plant names in it.
    #[error(
        "directory {dir} is writable by other users (mode {mode:o}): write to a directory only you can change"
    )]
    DirWritableByOthers {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory belongs to another user, who could change what it holds.
    #[error("directory {dir} belongs to uid {owner}, not to you (uid {caller}) or root")]
    DirOwnedByOther {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The caller's effective uid.
        caller: u32,
    },
    /// The directory path is a symbolic link that belongs to another user.
    #[error(
        "{dir} is a symbolic link owned by uid {owner}, not by you (uid {caller}) or root: not following it"
    )]
    SymlinkOwnedByOther {
        /// The link.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The caller's effective uid.
        caller: u32,
    },
    /// The path names something other than a directory.
    #[error("{dir} is not a directory")]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// A file name must be one plain path segment.
    #[error("file name {name:?} must be a single path segment")]
    BadName {
        /// The name given.
        name: String,
    },
    /// The system gave no randomness for a temporary file name.
    #[error("no randomness for a temporary file name in {dir}")]
    NoRandomness {
        /// The directory.
        dir: PathBuf,
    },
    /// A system call failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_owned();
    move |source| FileError::Io { op, path, source }
}

fn caller_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A directory checked to be safe to write into, held open.
#[derive(Debug)]
pub struct OutDir {
    dir: File,
    path: PathBuf,
}

impl OutDir {
    /// Opens the existing directory `path` and checks it.
    pub fn open(path: &Path) -> Result<OutDir, FileError> {
        let shown = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let caller = caller_uid();
        let link = std::fs::symlink_metadata(shown).map_err(io_err("inspect", shown))?;
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if link.file_type().is_symlink() {
            if link.uid() != caller && link.uid() != 0 {
                return Err(FileError::SymlinkOwnedByOther {
                    dir: shown.to_owned(),
                    owner: link.uid(),
                    caller,
                });
            }
        } else {
            // Not a link when inspected: if one appears before the open,
            // the open fails instead of following it.
            flags |= OFlags::NOFOLLOW;
        }
        let fd =
            rustix::fs::openat(rustix::fs::CWD, shown, flags, Mode::empty()).map_err(
                |e| match e {
                    rustix::io::Errno::NOTDIR => FileError::NotADirectory {
                        dir: shown.to_owned(),
                    },
                    e => io_err("open directory", shown)(e.into()),
                },
            )?;
        let dir = File::from(fd);
        let meta = dir.metadata().map_err(io_err("inspect", shown))?;
        check_dir(shown, meta.uid(), meta.mode(), caller)?;
        Ok(OutDir {
            dir,
            path: shown.to_owned(),
        })
    }

    /// Opens `path`, first creating it and any missing parents with the
    /// directory mode of `access` (0700 or 0755) when it does not exist.
    pub fn create(path: &Path, access: Access) -> Result<OutDir, FileError> {
        if !path.as_os_str().is_empty() && std::fs::symlink_metadata(path).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(access.dir_mode())
                .create(path)
                .map_err(io_err("create directory", path))?;
        }
        // Whoever created it, the directory is checked as if it had existed.
        Self::open(path)
    }

    /// The directory as it was named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `name` exists in the directory (a symbolic link counts and is
    /// not followed).
    pub fn contains(&self, name: &str) -> Result<bool, FileError> {
        check_name(name)?;
        match rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err("inspect", &self.path.join(name))(e.into())),
        }
    }

    /// Writes `bytes` as `name` in the directory, replacing what was there,
    /// with the file mode of `access`. Either the whole new content is in
    /// place, durably, or the old name is unchanged.
    pub fn write(&self, name: &str, bytes: &[u8], access: Access) -> Result<(), FileError> {
        check_name(name)?;
        let target = self.path.join(name);
        let (temp, file) = self.create_temp(name, access)?;
        let written = write_all_synced(file, bytes)
            .map_err(io_err("write", &target))
            .and_then(|()| {
                rustix::fs::renameat(&self.dir, &temp, &self.dir, name)
                    .map_err(|e| io_err("replace", &target)(e.into()))
            });
        if let Err(e) = written {
            // Best effort: the temporary file is ours and holds no more than
            // the target would have.
            let _ = rustix::fs::unlinkat(&self.dir, &temp, AtFlags::empty());
            return Err(e);
        }
        rustix::fs::fsync(&self.dir).map_err(|e| io_err("sync directory", &self.path)(e.into()))
    }

    /// Creates a new temporary file next to `name`; an existing name (a
    /// planted file or symlink) is never opened, only skipped.
    fn create_temp(&self, name: &str, access: Access) -> Result<(String, File), FileError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(access.file_mode());
        for _ in 0..TEMP_ATTEMPTS {
            let temp = format!(".{name}.{}.tmp", self.random_suffix()?);
            match rustix::fs::openat(&self.dir, temp.as_str(), flags, mode) {
                Ok(fd) => return Ok((temp, File::from(fd))),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(io_err("create a file in", &self.path)(e.into())),
            }
        }
        let taken = rustix::io::Errno::EXIST.into();
        Err(io_err("create a file in", &self.path)(taken))
    }

    /// A random suffix, so names cannot be guessed and taken in advance.
    fn random_suffix(&self) -> Result<String, FileError> {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(|_| {
            FileError::NoRandomness {
                dir: self.path.clone(),
            }
        })?;
        Ok(hex::encode(b))
    }
}

fn check_dir(dir: &Path, owner: u32, mode: u32, caller: u32) -> Result<(), FileError> {
    if owner != caller && owner != 0 {
        return Err(FileError::DirOwnedByOther {
            dir: dir.to_owned(),
            owner,
            caller,
        });
    }
    if mode & WRITABLE_BY_OTHERS != 0 && mode & S_ISVTX == 0 {
        return Err(FileError::DirWritableByOthers {
            dir: dir.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), FileError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(FileError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn write_all_synced(mut file: File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
