//! The writer against the attacks it exists for. These run as root (like the
//! rest of the suite); files and links "planted by another user" are handed
//! to uid 65534 with `lchown`, which is what the ownership checks look at.
//! The attacks run by a real second uid are in tests/it/files.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;
use std::os::unix::fs::PermissionsExt;

const NOBODY: u32 = 65534;
const KEY: &[u8] = b"-----BEGIN PRIVATE KEY-----\nsecret\n";

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn give_to_nobody(p: &Path) {
    std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn new_files_get_their_modes_and_no_temporary_file_remains() {
    let tmp = tempfile::tempdir().unwrap();
    let out = OutDir::open(tmp.path()).unwrap();
    out.write("key.pem", KEY, Access::Private).unwrap();
    out.write("svid.pem", b"cert", Access::Public).unwrap();
    assert_eq!(mode(&tmp.path().join("key.pem")), 0o600);
    assert_eq!(mode(&tmp.path().join("svid.pem")), 0o644);
    assert_eq!(std::fs::read(tmp.path().join("key.pem")).unwrap(), KEY);
    // Writing again replaces the content.
    out.write("svid.pem", b"cert 2", Access::Public).unwrap();
    assert_eq!(
        std::fs::read(tmp.path().join("svid.pem")).unwrap(),
        b"cert 2"
    );
    assert_eq!(names(tmp.path()), ["key.pem", "svid.pem"]);
}

#[test]
fn a_planted_symlink_is_replaced_and_its_target_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    let link = dir.join("key.pem");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    give_to_nobody(&link);
    // A dangling link must not make its target spring into existence.
    let nowhere = tmp.path().join("stolen");
    std::os::unix::fs::symlink(&nowhere, dir.join("svid.pem")).unwrap();

    let out = OutDir::open(&dir).unwrap();
    out.write("key.pem", KEY, Access::Private).unwrap();
    out.write("svid.pem", b"cert", Access::Public).unwrap();

    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    assert!(!nowhere.exists());
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!((meta.uid(), mode(&link)), (0, 0o600));
    assert_eq!(std::fs::read(&link).unwrap(), KEY);
}

#[test]
fn a_precreated_file_never_receives_the_content() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let planted = dir.join("key.pem");
    std::fs::write(&planted, b"").unwrap();
    chmod(&planted, 0o666);
    give_to_nobody(&planted);
    // What the planter keeps: an open descriptor and a second name.
    let kept = tmp.path().join("kept");
    std::fs::hard_link(&planted, &kept).unwrap();
    let mut held = File::open(&planted).unwrap();

    OutDir::open(&dir)
        .unwrap()
        .write("key.pem", KEY, Access::Private)
        .unwrap();

    let mut through_fd = Vec::new();
    std::io::Read::read_to_end(&mut held, &mut through_fd).unwrap();
    assert!(through_fd.is_empty());
    assert!(std::fs::read(&kept).unwrap().is_empty());
    // The old file kept its owner and mode: nothing was chmodded.
    assert_eq!(mode(&kept), 0o666);
    assert_eq!(std::fs::metadata(&kept).unwrap().uid(), NOBODY);
    let meta = std::fs::metadata(&planted).unwrap();
    assert_eq!((meta.uid(), mode(&planted)), (0, 0o600));
    assert_eq!(std::fs::read(&planted).unwrap(), KEY);
}

#[test]
fn a_directory_others_can_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for m in [0o777, 0o775, 0o757] {
        let dir = tmp.path().join(format!("d{m:o}"));
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, m);
        let err = OutDir::open(&dir).unwrap_err();
        assert!(
            matches!(&err, FileError::DirWritableByOthers { dir: d, mode } if d == &dir && *mode == m),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "directory {} is writable by other users (mode {m:o}): write to a directory only you can change",
                dir.display()
            )
        );
        let err = OutDir::create(&dir, Access::Private).unwrap_err();
        assert!(matches!(err, FileError::DirWritableByOthers { .. }));
        assert!(names(&dir).is_empty());
    }
}

#[test]
fn a_sticky_directory_is_accepted_only_from_the_caller_or_root() {
    let tmp = tempfile::tempdir().unwrap();
    let sticky = tmp.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    OutDir::open(&sticky)
        .unwrap()
        .write("key.pem", KEY, Access::Private)
        .unwrap();
    assert_eq!(mode(&sticky.join("key.pem")), 0o600);

    // Sticky, but its owner is another user: they may rename anything in it.
    give_to_nobody(&sticky);
    let err = OutDir::open(&sticky).unwrap_err();
    assert!(
        matches!(
            err,
            FileError::DirOwnedByOther {
                owner: NOBODY,
                caller: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "directory {} belongs to uid 65534, not to you (uid 0) or root",
            sticky.display()
        )
    );

    // Not writable by others at all, but owned by another user.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    give_to_nobody(&theirs);
    let err = OutDir::open(&theirs).unwrap_err();
    assert!(matches!(
        err,
        FileError::DirOwnedByOther { owner: NOBODY, .. }
    ));
}

#[test]
fn a_directory_symlink_is_followed_only_when_it_is_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    OutDir::open(&link)
        .unwrap()
        .write("key.pem", KEY, Access::Private)
        .unwrap();
    assert_eq!(std::fs::read(real.join("key.pem")).unwrap(), KEY);

    give_to_nobody(&link);
    let err = OutDir::open(&link).unwrap_err();
    assert!(
        matches!(&err, FileError::SymlinkOwnedByOther { dir, owner: NOBODY, caller: 0 } if dir == &link),
        "{err:?}"
    );
    assert!(
        err.to_string().ends_with(
            "is a symbolic link owned by uid 65534, not by you (uid 0) or root: not following it"
        ),
        "{err}"
    );
    let err = OutDir::create(&link, Access::Private).unwrap_err();
    assert!(matches!(err, FileError::SymlinkOwnedByOther { .. }));

    // Our own link leads somewhere others can write: the target is checked.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let link2 = tmp.path().join("link2");
    std::os::unix::fs::symlink(&open, &link2).unwrap();
    let err = OutDir::open(&link2).unwrap_err();
    assert!(matches!(
        err,
        FileError::DirWritableByOthers { mode: 0o777, .. }
    ));
}

#[test]
fn missing_directories_are_created_private_or_public() {
    let tmp = tempfile::tempdir().unwrap();
    let private = tmp.path().join("a/b/private");
    OutDir::create(&private, Access::Private).unwrap();
    assert_eq!(mode(&private), 0o700);
    assert_eq!(mode(&tmp.path().join("a/b")), 0o700);
    let public = tmp.path().join("public");
    OutDir::create(&public, Access::Public).unwrap();
    assert_eq!(mode(&public), 0o755);
    // An existing directory is taken as it is (and checked).
    chmod(&public, 0o750);
    OutDir::create(&public, Access::Private).unwrap();
    assert_eq!(mode(&public), 0o750);
    chmod(&public, 0o777);
    let err = OutDir::create(&public, Access::Public).unwrap_err();
    assert!(matches!(err, FileError::DirWritableByOthers { .. }));
}

#[test]
fn names_and_non_directories_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = OutDir::open(tmp.path()).unwrap();
    for bad in ["", ".", "..", "a/b", "a\0b"] {
        let err = out.write(bad, KEY, Access::Private).unwrap_err();
        assert!(
            matches!(&err, FileError::BadName { name } if name == bad),
            "{err:?}"
        );
    }
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = OutDir::open(&file).unwrap_err();
    assert!(
        matches!(&err, FileError::NotADirectory { dir } if dir == &file),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{} is not a directory", file.display())
    );
    let err = OutDir::open(&tmp.path().join("missing")).unwrap_err();
    assert!(
        matches!(&err, FileError::Io { op: "inspect", source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn a_failed_replace_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("key.pem")).unwrap();
    std::fs::write(tmp.path().join("key.pem/inside"), b"x").unwrap();
    let err = OutDir::open(tmp.path())
        .unwrap()
        .write("key.pem", KEY, Access::Private)
        .unwrap_err();
    assert!(
        matches!(err, FileError::Io { op: "replace", .. }),
        "{err:?}"
    );
    assert_eq!(names(tmp.path()), ["key.pem"]);
    assert_eq!(
        std::fs::read(tmp.path().join("key.pem/inside")).unwrap(),
        b"x"
    );
}

#[test]
fn contains_does_not_follow_links() {
    let tmp = tempfile::tempdir().unwrap();
    let out = OutDir::open(tmp.path()).unwrap();
    assert!(!out.contains("x").unwrap());
    std::os::unix::fs::symlink("/nonexistent", tmp.path().join("x")).unwrap();
    assert!(out.contains("x").unwrap());
}
