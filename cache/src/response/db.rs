//! The response cache's SQLite database, `responses.sqlite` in the cache directory.
//!
//! Two tables. `entries` is the index: one small row per key (the key, the `seq` of its
//! current value, its charged size, expiry, last use and hits), with an index on the
//! expiry (sweeps, `prune`) and one on (last use, seq) (LRU eviction). `bodies` holds
//! the values by `seq` (created, tokens, cost, payload, MAC). Keeping the values apart
//! keeps the index dense (recording a read rewrites a small row, not the payload's
//! page) and lets a reader check that the body it got is the one the index names (the
//! MAC covers the `seq`: `seal.rs`). Triggers keep the one-row `meta` table's totals
//! (bytes, entries) and remove a body when its index row goes or moves to a new `seq`,
//! so nothing on the hot path runs a `SUM`, a `COUNT` or a scan; [`Tx`] counts the rows
//! SQLite steps through in full scans so that tests can assert there are none.
//!
//! **Sizes count the disk.** An entry is charged what SQLite really spends on it: the
//! body's cell as the file format lays it out (a payload larger than a page goes to
//! overflow pages, each a whole page) plus its index rows at the fill of a B-tree that
//! takes random keys ([`charged_size`]; a test holds it to the database's pages).

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::key::CacheKey;

/// The database's file name in the cache directory.
pub(crate) const DB_NAME: &str = "responses.sqlite";

/// The page size, set before the first table is made.
pub(crate) const PAGE_SIZE: u64 = 4096;

/// The layout version in `PRAGMA user_version`; a database of a later one is refused.
const FORMAT: i64 = 1;

/// Settings that must precede the first table.
pub(crate) const BEFORE_WAL: &str = "PRAGMA page_size = 4096; PRAGMA auto_vacuum = INCREMENTAL;";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key BLOB PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER NOT NULL,
    hits INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries(expires_ms);
CREATE INDEX IF NOT EXISTS entries_by_use ON entries(used_ms, seq);
CREATE TABLE IF NOT EXISTS bodies (
    seq INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    cost_usd REAL,
    payload BLOB NOT NULL,
    mac BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    bytes INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    misses INTEGER NOT NULL,
    evictions INTEGER NOT NULL,
    expirations INTEGER NOT NULL,
    integrity_failures INTEGER NOT NULL,
    tokens_saved INTEGER NOT NULL,
    cost_saved_usd REAL NOT NULL
);
INSERT OR IGNORE INTO meta VALUES (0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0.0);
CREATE TRIGGER IF NOT EXISTS entries_inserted AFTER INSERT ON entries BEGIN
    UPDATE meta SET bytes = bytes + NEW.size, entries = entries + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_deleted AFTER DELETE ON entries BEGIN
    UPDATE meta SET bytes = bytes - OLD.size, entries = entries - 1 WHERE id = 0;
    DELETE FROM bodies WHERE seq = OLD.seq;
END;
CREATE TRIGGER IF NOT EXISTS entries_replaced AFTER UPDATE OF seq, size ON entries BEGIN
    UPDATE meta SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
    DELETE FROM bodies WHERE seq = OLD.seq AND OLD.seq != NEW.seq;
END;
";

/// Bytes of a body's record besides the payload: the record header and the created,
/// tokens, cost and MAC columns.
const BODY_FIXED: u64 = 64;
/// Bytes of one key's index rows (its `entries` row and its two index entries, with
/// their cell pointers and headers), divided by the two-thirds fill of a B-tree that
/// takes random keys.
const INDEX_ROWS: u64 = 240;

/// The bytes an entry of `payload_len` occupies in the database: its body's cell in a
/// table leaf (with its overflow pages, whole, when it does not fit in one page) plus
/// its index rows. Follows the SQLite file format (section 1.6, "Cell payload overflow
/// pages") for pages of [`PAGE_SIZE`] with no reserved bytes.
pub(crate) fn charged_size(payload_len: u64) -> u64 {
    let u = PAGE_SIZE;
    let record = payload_len + BODY_FIXED;
    // Cell pointer (2), payload size (up to 3 varint bytes at these sizes), rowid (up
    // to 4).
    let cell_header = 2 + 3 + 4;
    let max_local = u - 35;
    let min_local = (u - 12) * 32 / 255 - 23;
    let body = if record <= max_local {
        record + cell_header
    } else {
        let k = min_local + (record - min_local) % (u - 4);
        let local = if k <= max_local { k } else { min_local };
        let overflow_pages = (record - local).div_ceil(u - 4);
        local + cell_header + 4 + overflow_pages * u
    };
    body + INDEX_ROWS
}

/// Opens (creating if missing) the database in `dir` and makes its tables.
pub(crate) fn open(
    dir: &cap_std::fs::Dir,
    sync: crate::sqlite::Sync,
) -> Result<Connection, OpenError> {
    let conn = crate::sqlite::open(dir, DB_NAME, sync, BEFORE_WAL)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > FORMAT {
        return Err(OpenError::Newer(version));
    }
    conn.execute_batch("PRAGMA journal_size_limit = 4194304")?;
    if version < FORMAT {
        // Making the tables takes the write lock: only when they are not made yet, so
        // that opening never waits for another process's transaction.
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", FORMAT)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// [`open`], and when the file is not a database or is damaged past SQLite's opening
/// it: renames it (with its `-wal` and `-shm`) to `responses.sqlite.damaged-<ms>`,
/// with a warning, and starts an empty one. A cache is worth less than the host
/// serving; the damaged file is kept for whoever wants to look.
pub(crate) fn open_or_set_aside(
    dir: &cap_std::fs::Dir,
    shown: &std::path::Path,
    sync: crate::sqlite::Sync,
) -> Result<Connection, OpenError> {
    match open(dir, sync) {
        Err(OpenError::Sqlite(e)) if crate::sqlite::is_damage(&e) => {
            let aside = set_aside(dir).map_err(|_| OpenError::Sqlite(e_clone(&e)))?;
            tracing::warn!(
                "the response cache's database in {} was damaged ({e}); moved it to {aside} and started an empty one",
                shown.display()
            );
            open(dir, sync)
        }
        other => other,
    }
}

/// Renames the database (with its `-wal` and `-shm`) to `responses.sqlite.damaged-<ms>`;
/// the new name.
pub(crate) fn set_aside(dir: &cap_std::fs::Dir) -> std::io::Result<String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = format!("{DB_NAME}.damaged-{stamp}");
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{DB_NAME}{suffix}");
        if crate::files::regular_len(dir, &from)?.is_some() {
            dir.rename(&from, dir, format!("{aside}{suffix}"))?;
        }
    }
    Ok(aside)
}

fn e_clone(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::InvalidPath(e.to_string().into())
}

/// Why the database could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Written by a later version of this crate.
    Newer(i64),
    /// SQLite refused.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// A stored value as read, before its MAC is checked.
#[derive(Debug)]
pub(crate) struct Row {
    /// `None` when the index row itself is damaged (its `seq` or expiry unreadable).
    pub(crate) seq: Option<u64>,
    pub(crate) expires_ms: u64,
    /// Its last recorded use (0 if unreadable).
    pub(crate) used_ms: u64,
    /// The body, or why it cannot be read as one (missing, a column of the wrong type).
    pub(crate) body: Result<Body, &'static str>,
}

/// A body's columns.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) created_ms: u64,
    pub(crate) tokens: u64,
    pub(crate) cost_usd: Option<f64>,
    pub(crate) payload: Vec<u8>,
    pub(crate) mac: Vec<u8>,
}

fn int(v: ValueRef<'_>) -> Option<u64> {
    match v {
        ValueRef::Integer(i) => u64::try_from(i).ok(),
        _ => None,
    }
}

fn blob(v: ValueRef<'_>) -> Option<Vec<u8>> {
    match v {
        ValueRef::Blob(b) => Some(b.to_vec()),
        _ => None,
    }
}

/// Reads a body from columns `at..at + 5` of `r` (created, tokens, cost, payload, mac),
/// refusing any column of another type than the schema's: a database edited by hand
/// must give a miss, never a panic or a value read differently.
fn body_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Result<Body, &'static str>> {
    if matches!(r.get_ref(at)?, ValueRef::Null) {
        return Ok(Err(MISSING_BODY));
    }
    let created_ms = int(r.get_ref(at)?);
    let tokens = int(r.get_ref(at + 1)?);
    let cost_usd = match r.get_ref(at + 2)? {
        ValueRef::Null => Some(None),
        ValueRef::Real(c) => Some(Some(c)),
        _ => None,
    };
    let payload = blob(r.get_ref(at + 3)?);
    let mac = blob(r.get_ref(at + 4)?);
    Ok(match (created_ms, tokens, cost_usd, payload, mac) {
        (Some(created_ms), Some(tokens), Some(cost_usd), Some(payload), Some(mac)) => Ok(Body {
            created_ms,
            tokens,
            cost_usd,
            payload,
            mac,
        }),
        _ => Err("a column of its value has the wrong type"),
    })
}

/// Why a row has no body: its index row names a value that is not there.
pub(crate) const MISSING_BODY: &str = "its value is missing";

/// `SELECT` of an index row joined with its body, for [`row_from`].
macro_rules! row_columns {
    () => {
        "e.seq, e.expires_ms, b.created_ms, b.tokens, b.cost_usd, \
         b.payload, b.mac, e.used_ms FROM entries e LEFT JOIN bodies b ON b.seq = e.seq"
    };
}
pub(crate) const ROW_COLUMNS: &str = row_columns!();

/// A [`Row`] from columns selected as [`ROW_COLUMNS`] (after `skip` others).
pub(crate) fn row_from(r: &rusqlite::Row<'_>, skip: usize) -> rusqlite::Result<Row> {
    let seq = int(r.get_ref(skip)?);
    let expires_ms = int(r.get_ref(skip + 1)?);
    let used_ms = int(r.get_ref(skip + 7)?).unwrap_or(0);
    Ok(match (seq, expires_ms) {
        (Some(seq), Some(expires_ms)) => Row {
            seq: Some(seq),
            expires_ms,
            used_ms,
            body: body_at(r, skip + 2)?,
        },
        _ => Row {
            seq: None,
            expires_ms: 0,
            used_ms,
            body: Err("its index row has a column of the wrong type"),
        },
    })
}

/// The row of `key`, on any connection (a reader's).
pub(crate) fn lookup(
    conn: &Connection,
    scans: &mut u64,
    key: &CacheKey,
) -> rusqlite::Result<Option<Row>> {
    // One string, not one formatted per lookup.
    const SQL: &str = concat!("SELECT ", row_columns!(), " WHERE e.key = ?1");
    crate::sqlite::counted(conn, scans, SQL, |s| {
        s.query_row([&key.as_bytes()[..]], |r| row_from(r, 0))
            .optional()
    })
}

/// The shared counters and totals in `meta`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Meta {
    pub(crate) bytes: u64,
    pub(crate) entries: u64,
    pub(crate) next_seq: u64,
    pub(crate) generation: u64,
    pub(crate) counts: Counts,
}

/// The counters in `meta`, or counts to add to them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Counts {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) evictions: u64,
    pub(crate) expirations: u64,
    pub(crate) integrity_failures: u64,
    pub(crate) tokens_saved: u64,
    pub(crate) cost_saved_usd: f64,
}

impl Counts {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A new value to store.
pub(crate) struct NewEntry<'a> {
    pub(crate) key: &'a CacheKey,
    pub(crate) seq: u64,
    pub(crate) size: u64,
    pub(crate) created_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) tokens: u64,
    pub(crate) cost_usd: Option<f64>,
    pub(crate) payload: &'a [u8],
    pub(crate) mac: &'a [u8],
}

/// The index row of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexRow {
    pub(crate) seq: u64,
    pub(crate) size: u64,
    pub(crate) expires_ms: u64,
    pub(crate) used_ms: u64,
    pub(crate) hits: u64,
}

/// The largest integer SQLite stores: values sealed into a MAC are clamped to it first.
pub(crate) const MAX_INT: u64 = i64::MAX as u64;

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A write transaction (`BEGIN IMMEDIATE`: one writer at a time over all processes),
/// counting the full-scan steps of its statements.
pub(crate) struct Tx<'a> {
    pub(crate) tx: Transaction<'a>,
    pub(crate) scans: &'a mut u64,
}

impl Tx<'_> {
    fn counted<T>(
        &mut self,
        sql: &str,
        run: impl FnOnce(&mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        crate::sqlite::counted(&self.tx, self.scans, sql, run)
    }

    /// The counters and totals; a lost `meta` row is made again from the rows (its
    /// counters start from zero).
    pub(crate) fn meta(&mut self) -> rusqlite::Result<Meta> {
        if let Some(meta) = self.read_meta()? {
            return Ok(meta);
        }
        tracing::warn!("the response cache's totals were lost; recounting them");
        self.tx.execute(
            "INSERT INTO meta VALUES (0,
                 (SELECT COALESCE(SUM(size), 0) FROM entries), (SELECT COUNT(*) FROM entries),
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM bodies), 0, 0, 0, 0, 0, 0, 0, 0.0)",
            [],
        )?;
        self.read_meta()?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
    }

    fn read_meta(&mut self) -> rusqlite::Result<Option<Meta>> {
        self.counted(
            "SELECT bytes, entries, next_seq, generation, hits, misses, evictions, expirations,
                    integrity_failures, tokens_saved, cost_saved_usd FROM meta WHERE id = 0",
            |s| {
                s.query_row([], |r| {
                    let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok(Meta {
                        bytes: n(0)?,
                        entries: n(1)?,
                        next_seq: n(2)?,
                        generation: n(3)?,
                        counts: Counts {
                            hits: n(4)?,
                            misses: n(5)?,
                            evictions: n(6)?,
                            expirations: n(7)?,
                            integrity_failures: n(8)?,
                            tokens_saved: n(9)?,
                            cost_saved_usd: r.get(10)?,
                        },
                    })
                })
                .optional()
            },
        )
    }

    /// Adds `c` to the counters.
    pub(crate) fn add(&mut self, c: &Counts) -> rusqlite::Result<()> {
        if c.is_empty() {
            return Ok(());
        }
        self.counted(
            "UPDATE meta SET hits = hits + ?1, misses = misses + ?2, evictions = evictions + ?3,
                 expirations = expirations + ?4, integrity_failures = integrity_failures + ?5,
                 tokens_saved = tokens_saved + ?6, cost_saved_usd = cost_saved_usd + ?7
             WHERE id = 0",
            |s| {
                s.execute(params![
                    sql_int(c.hits),
                    sql_int(c.misses),
                    sql_int(c.evictions),
                    sql_int(c.expirations),
                    sql_int(c.integrity_failures),
                    sql_int(c.tokens_saved),
                    c.cost_saved_usd
                ])
            },
        )?;
        Ok(())
    }

    /// Reserves `n` write numbers; the first of them. Past every stored value's, even
    /// if `meta` was edited back (the largest `seq` is the last row of `bodies`).
    pub(crate) fn take_seqs(&mut self, n: u64) -> rusqlite::Result<u64> {
        self.counted(
            "UPDATE meta SET next_seq =
                 MAX(next_seq, (SELECT COALESCE(MAX(seq), 0) + 1 FROM bodies)) + ?1
             WHERE id = 0 RETURNING next_seq - ?1",
            |s| {
                s.query_row([sql_int(n)], |r| {
                    r.get::<_, i64>(0).map(|v| v.max(0) as u64)
                })
            },
        )
    }

    /// Stores a value as its key's current one, replacing any other.
    pub(crate) fn insert(&mut self, e: &NewEntry<'_>, now_ms: u64) -> rusqlite::Result<()> {
        self.counted(
            "INSERT INTO bodies (seq, created_ms, tokens, cost_usd, payload, mac)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            |s| {
                s.execute(params![
                    sql_int(e.seq),
                    sql_int(e.created_ms),
                    sql_int(e.tokens),
                    e.cost_usd,
                    e.payload,
                    e.mac
                ])
            },
        )?;
        self.counted(
            "INSERT INTO entries (key, seq, size, expires_ms, used_ms, hits)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, size = excluded.size,
                 expires_ms = excluded.expires_ms, used_ms = excluded.used_ms, hits = 0",
            |s| {
                s.execute(params![
                    &e.key.as_bytes()[..],
                    sql_int(e.seq),
                    sql_int(e.size),
                    sql_int(e.expires_ms),
                    sql_int(now_ms)
                ])
            },
        )?;
        Ok(())
    }

    /// Records reads of `key`'s value `seq` (not of a value that replaced it).
    pub(crate) fn record_reads(
        &mut self,
        key: &CacheKey,
        seq: u64,
        at_ms: u64,
        hits: u64,
    ) -> rusqlite::Result<()> {
        self.counted(
            "UPDATE entries SET used_ms = MAX(used_ms, ?3), hits = hits + ?4
             WHERE key = ?1 AND seq = ?2",
            |s| {
                s.execute(params![
                    &key.as_bytes()[..],
                    sql_int(seq),
                    sql_int(at_ms),
                    sql_int(hits)
                ])
            },
        )?;
        Ok(())
    }

    /// Removes `key` if its value is still `seq` (any value of it for `None`: a
    /// damaged index row); true if it was.
    pub(crate) fn remove_value(
        &mut self,
        key: &CacheKey,
        seq: Option<u64>,
    ) -> rusqlite::Result<bool> {
        self.counted(
            "DELETE FROM entries WHERE key = ?1 AND (?2 IS NULL OR seq = ?2)",
            |s| s.execute(params![&key.as_bytes()[..], seq.map(sql_int)]),
        )
        .map(|n| n > 0)
    }

    /// Removes up to `n` entries expired at `now`, soonest first, through the expiry
    /// index; the bytes they were charged.
    pub(crate) fn sweep(&mut self, now_ms: u64, n: u64) -> rusqlite::Result<Vec<u64>> {
        self.counted(
            "DELETE FROM entries WHERE key IN
                 (SELECT key FROM entries WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2)
             RETURNING size",
            |s| {
                s.query_map(params![sql_int(now_ms), sql_int(n)], |r| {
                    r.get::<_, i64>(0).map(|v| v.max(0) as u64)
                })?
                .collect()
            },
        )
    }

    /// Removes the least recently used entry (oldest last use, then oldest write)
    /// through the use index; its key.
    pub(crate) fn evict_one(&mut self) -> rusqlite::Result<Option<Vec<u8>>> {
        self.counted(
            "DELETE FROM entries WHERE key =
                 (SELECT key FROM entries ORDER BY used_ms, seq LIMIT 1)
             RETURNING key",
            |s| s.query_row([], |r| r.get::<_, Vec<u8>>(0)).optional(),
        )
    }

    /// The index row of `key`.
    pub(crate) fn index_row(&mut self, key: &CacheKey) -> rusqlite::Result<Option<IndexRow>> {
        self.counted(
            "SELECT seq, size, expires_ms, used_ms, hits FROM entries WHERE key = ?1",
            |s| {
                s.query_row([&key.as_bytes()[..]], |r| {
                    let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok(IndexRow {
                        seq: n(0)?,
                        size: n(1)?,
                        expires_ms: n(2)?,
                        used_ms: n(3)?,
                        hits: n(4)?,
                    })
                })
                .optional()
            },
        )
    }

    /// Gives free pages back to the file system when they are more than a quarter of
    /// the file (after a prune, a clear or a shrink of the limit); in steady use, pages
    /// freed by evictions are reused by the next inserts instead.
    pub(crate) fn shrink_if_sparse(&mut self) -> rusqlite::Result<()> {
        let free: i64 = self
            .tx
            .pragma_query_value(None, "freelist_count", |r| r.get(0))?;
        let pages: i64 = self
            .tx
            .pragma_query_value(None, "page_count", |r| r.get(0))?;
        if free > 64 && free * 4 > pages {
            self.tx.execute_batch("PRAGMA incremental_vacuum")?;
        }
        Ok(())
    }
}

/// Bytes of the database's pages that hold data (its pages less its free ones).
#[cfg(test)]
pub(crate) fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charged_sizes_follow_the_page_layout() {
        // Fits in a page: the record and its cell header.
        assert_eq!(charged_size(400), 400 + BODY_FIXED + 9 + INDEX_ROWS);
        // Just over a page: a local part plus whole overflow pages.
        let over = charged_size(PAGE_SIZE);
        assert!(over >= PAGE_SIZE + INDEX_ROWS, "{over}");
        assert!(over <= 2 * PAGE_SIZE + INDEX_ROWS + 64, "{over}");
        // Grows by a page per page of payload, give or take the local part.
        let big = charged_size(100 * PAGE_SIZE);
        assert!(
            (100 * PAGE_SIZE..=102 * PAGE_SIZE + INDEX_ROWS).contains(&big),
            "{big}"
        );
        // Monotonic enough to be a limit: never less than the payload.
        for len in (0..20_000).step_by(97) {
            assert!(charged_size(len) > len, "{len}");
        }
    }
}
