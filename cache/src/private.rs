//! Whose is it? The host keeps secrets, compiled native code and every agent's data
//! under one directory. Anyone else who can write there can forge cache entries, plant
//! code that runs as the user, or read an agent's data; so, as OpenSSH does with its
//! keys, what the host finds there must be the user's own and writable by nobody else.
//!
//! * A directory the host uses must be owned by the effective user and not writable by
//!   group or others; each of its ancestors must be owned by the user or root and, if
//!   writable by group or others, have the sticky bit (as `/tmp` has), or else someone
//!   could rename the directory away and put their own in its place.
//! * A secret file must be a regular file owned by the user and readable or writable by
//!   nobody else (mode `0600` or stricter).
//! * What the host creates, it creates private: directories `0700`, files `0600`.
//!
//! Each check happens on the opened handle (`fstat`), not on a path looked up again,
//! so the object checked is the object used.

use std::io;
use std::path::{Path, PathBuf};

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, Metadata, MetadataExt};

use crate::error::Error;

/// The effective user id of this process: the owner everything the host uses must have.
#[must_use]
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens the directory `path`, creating it (and missing parents) with mode `0700`, and
/// checks that it and its ancestors are safe to keep private data in (see the module
/// docs). This is the one place where a private directory is opened by path with
/// ambient authority; everything inside is opened through the returned handle.
pub fn open_dir(path: &Path) -> Result<Dir, Error> {
    let authority = cap_std::ambient_authority();
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .recursive(true)
        .create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    for ancestor in canonical.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)
            .map_err(|e| Error::io(format!("inspecting {}", ancestor.display()), e))?;
        check_ancestor(&meta, ancestor)?;
    }
    let dir = Dir::open_ambient_dir(&canonical, authority)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let meta = dir
        .dir_metadata()
        .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
    check_dir_meta(&meta, &canonical)?;
    Ok(dir)
}

/// Opens the subdirectory `name` of `parent` without following a symlink, creating it
/// with mode `0700` if missing, and checks that it is the user's own and writable by
/// nobody else. `shown` is the path named in an error.
pub fn open_subdir(parent: &Dir, name: &str, shown: &Path) -> Result<Dir, Error> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    match parent.create_dir_with(name, &builder) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(Error::io(format!("creating {}", shown.display()), e));
        }
        _ => {}
    }
    let dir = parent.open_dir_nofollow(name).map_err(|e| {
        if parent.symlink_metadata(name).is_ok_and(|m| m.is_symlink()) {
            not_private(shown, "it is a symbolic link".into(), "remove it")
        } else {
            Error::io(format!("opening {}", shown.display()), e)
        }
    })?;
    let meta = dir
        .dir_metadata()
        .map_err(|e| Error::io(format!("inspecting {}", shown.display()), e))?;
    check_dir_meta(&meta, shown)?;
    Ok(dir)
}

/// Checks the metadata of a secret file: a regular file owned by the user, with no
/// permission for group or others.
pub fn check_secret_file(meta: &Metadata, shown: &Path) -> Result<(), Error> {
    if !meta.is_file() {
        return Err(not_private(
            shown,
            "it is not a regular file".into(),
            "remove it",
        ));
    }
    check_owner(meta.uid(), shown)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(not_private(
            shown,
            format!("its mode is {mode:04o}: group or others may read or write it"),
            "remove it so that a new one is generated (anything it protected may have been read or forged), or `chmod 600` it if it never left your hands",
        ));
    }
    Ok(())
}

fn check_dir_meta(meta: &Metadata, shown: &Path) -> Result<(), Error> {
    if !meta.is_dir() {
        return Err(not_private(
            shown,
            "it is not a directory".into(),
            "remove it",
        ));
    }
    check_owner(meta.uid(), shown)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(not_private(
            shown,
            format!(
                "its mode is {:04o}: group or others may write in it",
                mode & 0o777
            ),
            "`chmod go-w` it after checking what it holds, or choose another directory",
        ));
    }
    Ok(())
}

fn check_ancestor(meta: &std::fs::Metadata, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = meta.uid();
    if uid != 0 && uid != effective_uid() {
        return Err(not_private(
            path,
            format!(
                "this ancestor of the directory is owned by uid {uid}, who could replace what is in it"
            ),
            "choose a directory under one you or root own",
        ));
    }
    let mode = meta.mode();
    const STICKY: u32 = 0o1000;
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        return Err(not_private(
            path,
            format!(
                "this ancestor of the directory has mode {:04o}: others may rename what is in it",
                mode & 0o7777
            ),
            "choose a directory whose parents only you or root may write",
        ));
    }
    Ok(())
}

fn check_owner(uid: u32, shown: &Path) -> Result<(), Error> {
    let me = effective_uid();
    if uid != me {
        return Err(not_private(
            shown,
            format!("it is owned by uid {uid}, not by you (uid {me})"),
            "remove it if you did not create it, or choose another directory",
        ));
    }
    Ok(())
}

fn not_private(path: &Path, reason: String, fix: &str) -> Error {
    Error::NotPrivate {
        path: PathBuf::from(path),
        reason,
        fix: fix.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn creates_private_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("a/b");
        let dir = open_dir(&root).expect("open");
        let mode = std::fs::metadata(&root).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        open_subdir(&dir, "sub", &root.join("sub")).expect("sub");
        let mode = std::fs::metadata(root.join("sub"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn an_existing_readable_directory_of_ours_is_accepted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        set_mode(tmp.path(), 0o755);
        open_dir(tmp.path()).expect("0755 of our own is fine");
    }

    #[test]
    fn a_group_or_world_writable_directory_is_refused() {
        for mode in [0o770, 0o777, 0o702] {
            let tmp = tempfile::tempdir().expect("tempdir");
            set_mode(tmp.path(), mode);
            let err = open_dir(tmp.path()).expect_err("writable by others");
            assert!(err.is_not_private(), "{err}");
            let text = err.to_string();
            assert!(text.contains(&tmp.path().display().to_string()), "{text}");
            assert!(text.contains("chmod go-w"), "{text}");
            let sub = tempfile::tempdir().expect("tempdir");
            let parent =
                Dir::open_ambient_dir(sub.path(), cap_std::ambient_authority()).expect("open");
            std::fs::create_dir(sub.path().join("s")).expect("mkdir");
            set_mode(&sub.path().join("s"), mode);
            let err = open_subdir(&parent, "s", &sub.path().join("s")).expect_err("sub");
            assert!(err.is_not_private(), "{err}");
        }
    }

    #[test]
    fn an_ancestor_writable_by_others_without_sticky_bit_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        set_mode(&shared, 0o777);
        let err = open_dir(&shared.join("mine")).expect_err("open parent");
        assert!(err.is_not_private(), "{err}");
        assert!(err.to_string().contains("ancestor"), "{err}");
        set_mode(&shared, 0o1777);
        open_dir(&shared.join("mine")).expect("a sticky parent, like /tmp, is fine");
    }

    #[test]
    fn a_symlinked_subdirectory_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("elsewhere");
        std::os::unix::fs::symlink(elsewhere.path(), tmp.path().join("s")).expect("link");
        let parent = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).expect("open");
        let err = open_subdir(&parent, "s", &tmp.path().join("s")).expect_err("symlink");
        assert!(err.is_not_private(), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn secret_files_must_be_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("k");
        std::fs::write(&path, b"0123456789abcdef").expect("write");
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).expect("open");
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            set_mode(&path, mode);
            let meta = dir.symlink_metadata("k").expect("meta");
            assert_eq!(check_secret_file(&meta, &path).is_ok(), ok, "mode {mode:o}");
        }
    }

    /// Needs root to give a file to another user; CI runs as root.
    #[test]
    fn what_another_user_owns_is_refused() {
        if effective_uid() != 0 {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        set_mode(&theirs, 0o700);
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).expect("chown");
        let err = open_dir(&theirs).expect_err("another user's directory");
        assert!(err.to_string().contains("uid 4242"), "{err}");
        let parent = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).expect("open");
        assert!(open_subdir(&parent, "theirs", &theirs).is_err());
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"0123456789abcdef").expect("write");
        set_mode(&secret, 0o600);
        std::os::unix::fs::chown(&secret, Some(4242), None).expect("chown");
        let meta = parent.symlink_metadata("secret").expect("meta");
        assert!(check_secret_file(&meta, &secret).is_err());
        // Their directory as an ancestor: they could swap ours out.
        set_mode(&theirs, 0o755);
        std::fs::create_dir(theirs.join("mine")).expect("mkdir");
        let err = open_dir(&theirs.join("mine")).expect_err("under another user's directory");
        assert!(err.to_string().contains("ancestor"), "{err}");
    }
}
