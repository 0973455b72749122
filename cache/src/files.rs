//! File operations inside a capability directory, shared by the agent stores and the
//! response cache: no-follow opens, reads bounded by a size limit, temp-file-and-rename
//! writes, removal of regular files only, and the advisory lock that serialises the
//! bookkeeping of several processes.
//!
//! Every name passed here is built by this crate from hex digits and fixed suffixes;
//! none comes from request or guest data.

use std::io::{self, Read, Write};

use cap_fs_ext::{
    FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt, OpenOptionsSyncExt,
};
use cap_std::fs::{Dir, Metadata, OpenOptions, OpenOptionsExt};

use crate::error::Error;

/// What reading one of our files found.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// No such name.
    Missing,
    /// The name exists but is not a regular file (a symlink, a directory, a FIFO):
    /// something this crate did not create. It is neither read nor touched.
    NotRegular,
    /// A regular file longer than the caller's limit; holds its length.
    TooLong(u64),
    /// The whole content.
    Data(Vec<u8>),
}

/// Opens `name` for reading without following a symlink and without blocking on a FIFO.
fn open_read(dir: &Dir, name: &str) -> io::Result<cap_std::fs::File> {
    let mut options = OpenOptions::new();
    options.read(true).follow(FollowSymlinks::No).nonblock(true);
    dir.open_with(name, &options)
}

/// Reads the regular file `name` whole if it is at most `max_len` bytes.
pub(crate) fn read_regular(dir: &Dir, name: &str, max_len: u64) -> io::Result<ReadOutcome> {
    let mut unchecked = |_: &Metadata| Ok::<(), std::convert::Infallible>(());
    match read_opened(dir, name, max_len, &mut unchecked)? {
        Ok(outcome) => Ok(outcome),
        Err(never) => match never {},
    }
}

/// [`read_regular`], refusing the file when `check` refuses its metadata (taken from the
/// opened file, so the file checked is the file read). I/O errors are reported as
/// reading `context`.
pub(crate) fn read_checked(
    dir: &Dir,
    name: &str,
    max_len: u64,
    context: &str,
    mut check: impl FnMut(&Metadata) -> Result<(), Error>,
) -> Result<ReadOutcome, Error> {
    match read_opened(dir, name, max_len, &mut check) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(refused)) => Err(refused),
        Err(e) => Err(Error::io(format!("reading {context}"), e)),
    }
}

fn read_opened<E>(
    dir: &Dir,
    name: &str,
    max_len: u64,
    check: &mut dyn FnMut(&Metadata) -> Result<(), E>,
) -> io::Result<Result<ReadOutcome, E>> {
    let file = match open_read(dir, name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(ReadOutcome::Missing)),
        Err(e) if is_not_regular(dir, name, &e) => return Ok(Ok(ReadOutcome::NotRegular)),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Ok(ReadOutcome::NotRegular));
    }
    if let Err(refused) = check(&meta) {
        return Ok(Err(refused));
    }
    let len = meta.len();
    if len > max_len {
        return Ok(Ok(ReadOutcome::TooLong(len)));
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take` guards against a file that grows between the stat and the read.
    file.into_std().take(max_len).read_to_end(&mut data)?;
    Ok(Ok(ReadOutcome::Data(data)))
}

/// After an open failed with `e`: is the name something other than a regular file (a
/// symlink refused by `O_NOFOLLOW` or by cap-std, a directory, a socket)?
fn is_not_regular(dir: &Dir, name: &str, e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::IsADirectory
        || dir.symlink_metadata(name).is_ok_and(|meta| !meta.is_file())
}

/// The length of the regular file `name`; `None` if it is missing or not a regular file.
pub(crate) fn regular_len(dir: &Dir, name: &str) -> io::Result<Option<u64>> {
    match dir.symlink_metadata(name) {
        Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` if it is a regular file; returns whether it did. A symlink or
/// directory under one of our names was not made by us and stays.
pub(crate) fn remove_regular(dir: &Dir, name: &str) -> io::Result<bool> {
    if regular_len(dir, name)?.is_none() {
        return Ok(false);
    }
    match dir.remove_file(name) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `tmp_name` exclusively (mode 0600, no-follow) and writes `parts` into it,
/// syncing it when `fsync`. The caller renames it into place.
pub(crate) fn write_new(dir: &Dir, tmp_name: &str, parts: &[&[u8]], fsync: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .follow(FollowSymlinks::No)
        .mode(0o600);
    let mut file = dir.open_with(tmp_name, &options)?.into_std();
    // One write of the whole content: entries are small, and a buffer of its own per
    // file (64 KiB before) made the allocator grow and trim its heap on every write.
    let written = file.write_all(&parts.concat());
    let written = written.and_then(|()| if fsync { file.sync_all() } else { Ok(()) });
    if let Err(e) = written {
        let _ = dir.remove_file(tmp_name);
        return Err(e);
    }
    Ok(())
}

/// Writes `parts` to a fresh temp file and renames it over `name`; a reader sees the old
/// content or the new, never a mix. With `fsync`, the file and the directory are synced.
pub(crate) fn write_atomic(
    dir: &Dir,
    name: &str,
    tmp_name: &str,
    parts: &[&[u8]],
    fsync: bool,
) -> io::Result<()> {
    write_new(dir, tmp_name, parts, fsync)?;
    rename_into_place(dir, tmp_name, name, fsync)
}

/// Renames `tmp_name` to `name` (replacing it), removing the temp file if that fails.
pub(crate) fn rename_into_place(
    dir: &Dir,
    tmp_name: &str,
    name: &str,
    fsync: bool,
) -> io::Result<()> {
    if let Err(e) = dir.rename(tmp_name, dir, name) {
        let _ = dir.remove_file(tmp_name);
        return Err(e);
    }
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Syncs the directory itself, so that a rename survives a power loss.
pub(crate) fn sync_dir(dir: &Dir) -> io::Result<()> {
    // cap-std may hold directories as `O_PATH` descriptors, which cannot be synced:
    // open the directory itself for reading.
    let mut options = OpenOptions::new();
    options.read(true).maybe_dir(true);
    dir.open_with(".", &options)?.sync_all()
}

/// `n` random bytes as lowercase hex, for temp-file names.
pub(crate) fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(hex(&bytes))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The 32 bytes named by 64 lowercase hex digits, if `text` is exactly that.
pub(crate) fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn temp_dir() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("open");
        (tmp, dir)
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37));
        assert_eq!(parse_hex32(&hex(&bytes)), Some(bytes));
        assert_eq!(parse_hex32(&hex(&bytes).to_uppercase()), None);
        assert_eq!(parse_hex32("00"), None);
    }

    #[test]
    fn atomic_write_then_bounded_read() {
        let (_tmp, dir) = temp_dir();
        write_atomic(&dir, "a", "a.tmp", &[b"hello ", b"world"], true).expect("write");
        assert!(!dir.exists("a.tmp"));
        match read_regular(&dir, "a", 100).expect("read") {
            ReadOutcome::Data(d) => assert_eq!(d, b"hello world"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            read_regular(&dir, "a", 3).expect("read"),
            ReadOutcome::TooLong(11)
        ));
        assert!(matches!(
            read_regular(&dir, "b", 3).expect("read"),
            ReadOutcome::Missing
        ));
    }

    #[test]
    fn symlinks_are_neither_read_nor_removed() {
        let (tmp, dir) = temp_dir();
        let outside = tempfile::NamedTempFile::new().expect("outside");
        std::fs::write(outside.path(), b"secret").expect("write outside");
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("link")).expect("symlink");
        assert!(matches!(
            read_regular(&dir, "link", 100).expect("read"),
            ReadOutcome::NotRegular
        ));
        assert!(!remove_regular(&dir, "link").expect("remove"));
        assert!(tmp.path().join("link").symlink_metadata().is_ok());
        assert_eq!(
            std::fs::read(outside.path()).expect("read outside"),
            b"secret"
        );
    }

    #[test]
    fn write_new_refuses_existing_names() {
        let (_tmp, dir) = temp_dir();
        write_new(&dir, "x", &[b"1"], false).expect("first");
        assert!(write_new(&dir, "x", &[b"2"], false).is_err());
    }
}
