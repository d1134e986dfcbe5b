//! User and group names for the `unix:user` and `unix:group` selectors
//! (SPEC §2), read from the configured passwd and group files, and the
//! identity of those files, so a cached attestation can tell whether the
//! names it holds still stand without reading the files again.

use std::path::Path;

use super::AttestConfig;
use super::cache::{FileKey, Freshness};
use super::parse;

/// Which versions of the passwd and group files names were read from;
/// `None` for a file that could not be `stat`ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameStamp {
    passwd: Option<FileKey>,
    group: Option<FileKey>,
}

impl NameStamp {
    /// The current versions (two `stat` calls, as fresh as `fresh` says).
    ///
    /// A stamp is taken *before* the files are read: a file changed after
    /// that shows a new stamp next time, so an entry built from it is
    /// rebuilt rather than kept. (Files are usually replaced by rename, which
    /// gives a new inode; an in-place write changes size or ctime.)
    pub(crate) fn now(cfg: &AttestConfig, fresh: Freshness) -> Self {
        let key = |path: &Path| FileKey::of_path(path, fresh).ok();
        Self {
            passwd: key(&cfg.passwd_path),
            group: key(&cfg.group_path),
        }
    }
}

/// The name for `id` in a passwd or group file. A missing or unreadable file
/// gives no name: names are extra selectors, and leaving one out only narrows
/// what the caller matches.
pub(crate) fn lookup(path: &Path, id: u32) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(db) => parse::name_for_id(&db, id).map(str::to_owned),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read account names");
            None
        }
    }
}
