//! Quota accounting of one agent directory: the usage file kept under the directory's
//! lock, and the scan that rebuilds it.
//!
//! The usage file holds the bytes and entries of the directory. Every writer updates it
//! while holding the lock, so all handles in all processes see the same totals. A crash
//! between an entry rename and the usage update can leave it stale; opening a scope
//! rescans the directory (agent directories are small) and rewrites it.

use std::io;

use cap_std::fs::Dir;

use super::record::{self, USAGE_NAME};
use crate::files::{self, ReadOutcome};

const MAGIC: &[u8; 8] = b"CFKVUSE1";

/// Bytes and entries charged to an agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreUsage {
    /// Sum over entries of key length plus value length, in bytes.
    pub bytes: u64,
    /// Number of entry files, including expired ones not yet removed.
    pub entries: u64,
}

/// Reads the usage file; `None` if it is missing or malformed.
pub(crate) fn read(dir: &Dir) -> io::Result<Option<StoreUsage>> {
    let data = match files::read_regular(dir, USAGE_NAME, 64)? {
        ReadOutcome::Data(data) => data,
        _ => return Ok(None),
    };
    if data.len() != 24 || &data[..8] != MAGIC {
        return Ok(None);
    }
    let word = |i: usize| {
        data.get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    Ok(word(8)
        .zip(word(16))
        .map(|(bytes, entries)| StoreUsage { bytes, entries }))
}

/// Replaces the usage file (temp file + rename).
pub(crate) fn write(dir: &Dir, usage: StoreUsage) -> io::Result<()> {
    let tmp = format!("{USAGE_NAME}.{}", files::random_hex(8)?);
    files::write_atomic(
        dir,
        USAGE_NAME,
        &tmp,
        &[
            MAGIC,
            &usage.bytes.to_le_bytes(),
            &usage.entries.to_le_bytes(),
        ],
        false,
    )
}

/// What a scan of an agent directory found and did.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) usage: StoreUsage,
    pub(crate) expired_removed: u64,
}

/// Sums the entry files of `dir`, removing leftover temp files (only valid under the lock:
/// writers create temp files only while holding it) and, with `expire_before`, entries
/// whose expiry is at or before that time. Touches nothing it did not create.
pub(crate) fn scan(dir: &Dir, expire_before: Option<u64>) -> io::Result<Scan> {
    let mut scan = Scan::default();
    for item in dir.entries()? {
        let item = item?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let meta = item.metadata()?;
        if !meta.is_file() {
            continue;
        }
        if record::is_tmp_name(name) || is_usage_tmp(name) {
            files::remove_regular(dir, name)?;
            continue;
        }
        if !record::is_entry_name(name) {
            continue;
        }
        if let Some(now) = expire_before
            && let ReadOutcome::Data(header) = files::read_prefix(dir, name, record::HEADER_LEN)?
            && record::decode_expiry(&header).is_some_and(|exp| exp <= now)
            && files::remove_regular(dir, name)?
        {
            scan.expired_removed += 1;
            continue;
        }
        scan.usage.bytes += record::charged_len(meta.len());
        scan.usage.entries += 1;
    }
    Ok(scan)
}

fn is_usage_tmp(name: &str) -> bool {
    name.strip_prefix(USAGE_NAME)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|nonce| nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    #[test]
    fn usage_round_trips_and_scan_counts_only_ours() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("open");
        assert_eq!(read(&dir).expect("read"), None);
        write(
            &dir,
            StoreUsage {
                bytes: 7,
                entries: 2,
            },
        )
        .expect("write");
        assert_eq!(
            read(&dir).expect("read"),
            Some(StoreUsage {
                bytes: 7,
                entries: 2
            })
        );

        let mut live = record::encode_header("a", 2, 100);
        live.extend_from_slice(b"axy");
        dir.write(record::entry_name("a"), &live).expect("live");
        let mut old = record::encode_header("b", 1, 10);
        old.extend_from_slice(b"bz");
        dir.write(record::entry_name("b"), &old).expect("old");
        dir.write("foreign.txt", b"not ours").expect("foreign");
        let tmp_name = format!("{}{}.0123456789abcdef", record::TMP_PREFIX, "0".repeat(64));
        dir.write(&tmp_name, b"debris").expect("tmp");

        let all = scan(&dir, None).expect("scan");
        assert_eq!(
            all.usage,
            StoreUsage {
                bytes: 5,
                entries: 2
            }
        );
        assert!(!dir.exists(&tmp_name), "temp debris is removed");
        let swept = scan(&dir, Some(50)).expect("scan");
        assert_eq!(
            swept.usage,
            StoreUsage {
                bytes: 3,
                entries: 1
            }
        );
        assert_eq!(swept.expired_removed, 1);
        assert!(dir.exists("foreign.txt"));
    }
}
