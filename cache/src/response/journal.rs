//! The index journal: an append-only file of fixed-size records that every process
//! sharing the cache directory replays and extends while holding the directory lock.
//!
//! ```text
//! header (32 bytes): magic "CFRCJNL1", generation u64, 8 zero bytes, checksum u64
//! record (80 bytes): kind u8, reason u8, 6 zero, key [32], a u64, b u64, c u64, d u64,
//!                    checksum u64 (over the first 72 bytes)
//! ```
//!
//! A record with a bad checksum, or a partial record, ends the valid part: it can only be
//! the torn tail of an append cut short by a crash, and the next lock holder truncates it.
//! Compaction writes a snapshot (one `Put` per live entry in LRU order and one
//! `Counters` with the totals) under a new random generation and renames it over the journal; other
//! processes notice the new generation and replay it from the start.

use std::io::{self, Read as _, Seek, SeekFrom, Write};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions};

use crate::files;
use crate::key::CacheKey;

/// Name of the journal in the cache directory.
pub(crate) const JOURNAL_NAME: &str = "index.cfj";
const TMP_SUFFIX: &str = ".cfj-tmp";
const MAGIC: &[u8; 8] = b"CFRCJNL1";
/// Length of the journal header.
pub(crate) const HEADER_LEN: u64 = 32;
/// Length of one record.
pub(crate) const RECORD_LEN: usize = 80;

/// Why an entry left the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoveReason {
    /// Evicted to keep the cache under its size limit.
    Evicted = 1,
    /// Past its expiry.
    Expired = 2,
    /// Failed its HMAC, length or key check.
    Integrity = 3,
    /// Its file vanished, or it was removed on request; not counted in any statistic.
    Dropped = 4,
}

/// Additions to the persistent counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CounterDelta {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) tokens_saved: u64,
    pub(crate) cost_saved_usd: f64,
    /// Only in snapshots; live removals count through `Remove` records.
    pub(crate) evictions: u64,
    /// Only in snapshots.
    pub(crate) expirations: u64,
    /// Only in snapshots.
    pub(crate) integrity_failures: u64,
}

impl CounterDelta {
    pub(crate) fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// One journal record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Record {
    /// The entry file of `key` now has `size` bytes (insert or replace).
    Put {
        key: CacheKey,
        size: u64,
        expires_ms: u64,
        at_ms: u64,
        hits: u64,
    },
    /// `key` was read `hits` more times, last at `at_ms`.
    Access {
        key: CacheKey,
        at_ms: u64,
        hits: u64,
    },
    /// The entry file of `key` was removed.
    Remove { key: CacheKey, reason: RemoveReason },
    /// Counter increments.
    Counters(CounterDelta),
}

/// Checksum of a record or header body (a multiple of 8 bytes): a multiply-rotate mix
/// over 64-bit words. It catches torn and zeroed writes; it is no defence against an
/// attacker, and needs none: the index only steers eviction, entries carry their own MAC.
fn checksum(data: &[u8]) -> u64 {
    data.chunks_exact(8)
        .fold(0x243f_6a88_85a3_08d3_u64, |h, w| {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            (h ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29)
        })
}

fn word(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(bytes)
}

impl Record {
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let (kind, reason, key, words) = match *self {
            Self::Put {
                key,
                size,
                expires_ms,
                at_ms,
                hits,
            } => (1, 0, *key.as_bytes(), [size, expires_ms, at_ms, hits]),
            Self::Access { key, at_ms, hits } => (2, 0, *key.as_bytes(), [at_ms, hits, 0, 0]),
            Self::Remove { key, reason } => (3, reason as u8, *key.as_bytes(), [0; 4]),
            Self::Counters(d) => {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&d.hits.to_le_bytes());
                key[8..16].copy_from_slice(&d.misses.to_le_bytes());
                key[16..24].copy_from_slice(&d.tokens_saved.to_le_bytes());
                key[24..].copy_from_slice(&d.cost_saved_usd.to_bits().to_le_bytes());
                (
                    4,
                    0,
                    key,
                    [d.evictions, d.expirations, d.integrity_failures, 0],
                )
            }
        };
        out[0] = kind;
        out[1] = reason;
        out[8..40].copy_from_slice(&key);
        for (i, w) in words.iter().enumerate() {
            out[40 + 8 * i..48 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        let sum = checksum(&out[..72]);
        out[72..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// `None` for a torn, zeroed or unknown record.
    pub(crate) fn decode(data: &[u8]) -> Option<Self> {
        let data = data.get(..RECORD_LEN)?;
        if checksum(&data[..72]) != word(data, 72) || data[2..8] != [0; 6] {
            return None;
        }
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&data[8..40]);
        let key = CacheKey::from_bytes(raw);
        let [a, b, c, d] = [
            word(data, 40),
            word(data, 48),
            word(data, 56),
            word(data, 64),
        ];
        match (data[0], data[1]) {
            (1, 0) => Some(Self::Put {
                key,
                size: a,
                expires_ms: b,
                at_ms: c,
                hits: d,
            }),
            (2, 0) => Some(Self::Access {
                key,
                at_ms: a,
                hits: b,
            }),
            (3, reason) => {
                let reason = match reason {
                    1 => RemoveReason::Evicted,
                    2 => RemoveReason::Expired,
                    3 => RemoveReason::Integrity,
                    4 => RemoveReason::Dropped,
                    _ => return None,
                };
                Some(Self::Remove { key, reason })
            }
            (4, 0) => Some(Self::Counters(CounterDelta {
                hits: word(&raw, 0),
                misses: word(&raw, 8),
                tokens_saved: word(&raw, 16),
                cost_saved_usd: f64::from_bits(word(&raw, 24)),
                evictions: a,
                expirations: b,
                integrity_failures: c,
            })),
            _ => None,
        }
    }
}

fn encode_header(generation: u64) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    let sum = checksum(&out[..24]);
    out[24..].copy_from_slice(&sum.to_le_bytes());
    out
}

fn decode_header(data: &[u8]) -> Option<u64> {
    let data = data.get(..HEADER_LEN as usize)?;
    (&data[..8] == MAGIC && checksum(&data[..24]) == word(data, 24)).then(|| word(data, 8))
}

/// What reading the journal found.
#[derive(Debug)]
pub(crate) enum Scan {
    /// No journal file.
    Missing,
    /// A file that is not a journal (or not a regular file): rebuild from the directory.
    Unreadable,
    /// Records from the requested offset, or from the start if the generation changed.
    Records(Tail),
}

/// Records read from a journal.
#[derive(Debug)]
pub(crate) struct Tail {
    pub(crate) generation: u64,
    /// True if these records start at the beginning (new generation): replay from empty.
    pub(crate) from_start: bool,
    pub(crate) records: Vec<Record>,
    /// Offset just past the last valid record.
    pub(crate) valid_end: u64,
    /// Length of the file; more than `valid_end` if it has a torn tail.
    pub(crate) file_len: u64,
    /// The file's inode number: a compaction or a clear replaces the file.
    pub(crate) ino: u64,
}

/// The longest journal read. Compaction keeps it near four 80-byte records per live
/// entry, so this covers some 800,000 entries; anything longer is not a journal this
/// crate wrote (a sparse 100 GB file would otherwise be read into memory) and is
/// treated as damaged: the index is rebuilt from the entry files and the journal
/// rewritten, as `verify(true)` does.
pub(crate) const MAX_JOURNAL_BYTES: u64 = 256 * 1024 * 1024;

fn open_options(write: bool) -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(write).follow(FollowSymlinks::No);
    options
}

/// Reads the journal from `offset` if its generation is still `generation`, else whole.
pub(crate) fn read(dir: &Dir, position: Option<(u64, u64)>) -> io::Result<Scan> {
    let file = match dir.open_with(JOURNAL_NAME, &open_options(false)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Scan::Missing),
        Err(_) if files::regular_len(dir, JOURNAL_NAME)?.is_none() => return Ok(Scan::Unreadable),
        Err(e) => return Err(e),
    };
    let mut file = file.into_std();
    let metadata = file.metadata()?;
    let (file_len, ino) = (
        metadata.len(),
        std::os::unix::fs::MetadataExt::ino(&metadata),
    );
    let mut header = [0u8; HEADER_LEN as usize];
    if !metadata.is_file()
        || !(HEADER_LEN..=MAX_JOURNAL_BYTES).contains(&file_len)
        || file.read_exact(&mut header).is_err()
    {
        return Ok(Scan::Unreadable);
    }
    let Some(generation) = decode_header(&header) else {
        return Ok(Scan::Unreadable);
    };
    let (start, from_start) = match position {
        Some((g, offset)) if g == generation && (HEADER_LEN..=file_len).contains(&offset) => {
            (offset, false)
        }
        _ => (HEADER_LEN, true),
    };
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::with_capacity(usize::try_from(file_len - start).unwrap_or(0));
    // Bounded even if the file grows after the stat.
    (&mut file)
        .take(MAX_JOURNAL_BYTES - start)
        .read_to_end(&mut data)?;
    let mut records = Vec::with_capacity(data.len() / RECORD_LEN);
    let mut valid_end = start;
    for chunk in data.chunks_exact(RECORD_LEN) {
        let Some(record) = Record::decode(chunk) else {
            break;
        };
        records.push(record);
        valid_end += RECORD_LEN as u64;
    }
    Ok(Scan::Records(Tail {
        generation,
        from_start,
        records,
        valid_end,
        file_len: start + data.len() as u64,
        ino,
    }))
}

/// The journal's inode number and length now, for a cheap check that nobody has
/// appended to it or replaced it: a `stat`, no read.
pub(crate) fn identity(dir: &Dir) -> io::Result<(u64, u64)> {
    use cap_std::fs::MetadataExt as _;
    let metadata = dir.symlink_metadata(JOURNAL_NAME)?;
    Ok((metadata.ino(), metadata.len()))
}

/// Cuts a torn tail off the journal (lock held).
pub(crate) fn truncate(dir: &Dir, len: u64) -> io::Result<()> {
    dir.open_with(JOURNAL_NAME, &open_options(true))?
        .set_len(len)
}

/// Writes `records` at `offset`, the end of the valid journal (lock held); returns the
/// new end.
pub(crate) fn append(dir: &Dir, offset: u64, records: &[Record], fsync: bool) -> io::Result<u64> {
    if records.is_empty() {
        return Ok(offset);
    }
    let mut bytes = Vec::with_capacity(records.len() * RECORD_LEN);
    for record in records {
        bytes.extend_from_slice(&record.encode());
    }
    let mut file = dir.open_with(JOURNAL_NAME, &open_options(true))?.into_std();
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&bytes)?;
    if fsync {
        file.sync_data()?;
    }
    Ok(offset + bytes.len() as u64)
}

/// Replaces the journal with `records` under a new random generation (lock held);
/// returns the generation and the end offset.
pub(crate) fn rewrite(dir: &Dir, records: &[Record], fsync: bool) -> io::Result<(u64, u64)> {
    let mut generation = [0u8; 8];
    getrandom::fill(&mut generation).map_err(|e| io::Error::other(e.to_string()))?;
    let generation = u64::from_le_bytes(generation);
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize + records.len() * RECORD_LEN);
    bytes.extend_from_slice(&encode_header(generation));
    for record in records {
        bytes.extend_from_slice(&record.encode());
    }
    let tmp = format!("{JOURNAL_NAME}.{}{TMP_SUFFIX}", files::random_hex(8)?);
    files::write_atomic(dir, JOURNAL_NAME, &tmp, &[&bytes], fsync)?;
    Ok((generation, bytes.len() as u64))
}

/// True if `name` is a journal temp file this crate makes.
pub(crate) fn is_tmp_name(name: &str) -> bool {
    name.strip_prefix(JOURNAL_NAME)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(TMP_SUFFIX))
        .is_some_and(|nonce| nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn samples() -> Vec<Record> {
        let key = CacheKey::from_bytes([7; 32]);
        vec![
            Record::Put {
                key,
                size: 1,
                expires_ms: 2,
                at_ms: 3,
                hits: 4,
            },
            Record::Access {
                key,
                at_ms: 5,
                hits: 6,
            },
            Record::Remove {
                key,
                reason: RemoveReason::Integrity,
            },
            Record::Counters(CounterDelta {
                hits: 1,
                misses: 2,
                tokens_saved: 3,
                cost_saved_usd: 0.5,
                evictions: 4,
                expirations: 5,
                integrity_failures: 6,
            }),
        ]
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        for record in samples() {
            let bytes = record.encode();
            assert_eq!(Record::decode(&bytes), Some(record));
            for at in [0, 1, 8, 40, 71, 79] {
                let mut bad = bytes;
                bad[at] ^= 0x10;
                assert_eq!(Record::decode(&bad), None, "{record:?} byte {at}");
            }
        }
        assert_eq!(Record::decode(&[0; RECORD_LEN]), None);
    }

    #[test]
    fn append_read_and_torn_tail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("dir");
        assert!(matches!(read(&dir, None).expect("read"), Scan::Missing));
        let (generation, end) = rewrite(&dir, &samples()[..1], false).expect("rewrite");
        let end = append(&dir, end, &samples()[1..], true).expect("append");
        // A torn record after the valid ones.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(tmp.path().join(JOURNAL_NAME))
            .expect("open");
        f.write_all(&[1; 30]).expect("torn");
        let Scan::Records(tail) = read(&dir, None).expect("read") else {
            panic!("records expected")
        };
        assert_eq!(tail.records, samples());
        assert_eq!(
            (tail.generation, tail.valid_end, tail.file_len),
            (generation, end, end + 30)
        );
        truncate(&dir, tail.valid_end).expect("truncate");
        let Scan::Records(tail) = read(&dir, Some((generation, end))).expect("read") else {
            panic!("records expected")
        };
        assert!(!tail.from_start && tail.records.is_empty());
        let Scan::Records(tail) = read(&dir, Some((generation ^ 1, end))).expect("read") else {
            panic!("records expected")
        };
        assert!(
            tail.from_start && tail.records.len() == 4,
            "new generation replays whole"
        );
    }

    #[test]
    fn a_foreign_journal_is_unreadable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            tmp.path().join(JOURNAL_NAME),
            b"garbage garbage garbage garbage!",
        )
        .expect("w");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("dir");
        assert!(matches!(read(&dir, None).expect("read"), Scan::Unreadable));
    }

    /// Regression: a sparse 100 GB journal was read whole into memory, and every
    /// cache-writing run aborted on the failed allocation.
    #[test]
    fn an_over_long_journal_is_damaged_not_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("dir");
        let (generation, _) = rewrite(&dir, &samples(), false).expect("write");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path().join(JOURNAL_NAME))
            .expect("open");
        file.set_len(100 * 1024 * 1024 * 1024)
            .expect("sparse 100 GB");
        assert!(matches!(read(&dir, None).expect("read"), Scan::Unreadable));
        assert!(matches!(
            read(&dir, Some((generation, HEADER_LEN))).expect("read"),
            Scan::Unreadable
        ));
        file.set_len(MAX_JOURNAL_BYTES).expect("at the bound");
        assert!(matches!(read(&dir, None).expect("read"), Scan::Records(_)));
    }
}
