//! One agent's store as an SQLite database, `store.sqlite` in its directory.
//!
//! SQLite (bundled through `rusqlite`) does the transactions, the crash safety (WAL)
//! and the locking between processes that the hand-written entry files, journal-less
//! usage file and `flock` did before. Every query on the hot path goes through an index:
//! the key (primary key), the expiry (sweeps) and the last use (LRU eviction). The
//! totals that quotas compare against are kept by triggers in a one-row table, so no
//! `SUM`/`COUNT` over the entries is ever run. [`Db::full_scan_steps`] counts the rows
//! SQLite stepped through in full-table scans, so tests can assert there were none.
//!
//! The database file is opened through the agent directory's handle (`sqlite.rs`).

use cap_std::fs::Dir;
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreUsage;

/// The database's file name in the agent's directory.
pub(crate) const DB_NAME: &str = "store.sqlite";

/// Expired entries removed per write, through the expiry index: the sweep goes on in
/// small steps instead of one long pause.
pub(crate) const SWEEP_STEP: u32 = 16;

/// The layout version in `PRAGMA user_version`.
const FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries(expires_ms);
CREATE INDEX IF NOT EXISTS entries_by_use ON entries(used);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    bytes INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    tick INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (id, bytes, entries, tick) VALUES (0, 0, 0, 0);
CREATE TRIGGER IF NOT EXISTS entries_inserted AFTER INSERT ON entries BEGIN
    UPDATE totals SET bytes = bytes + NEW.size, entries = entries + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_deleted AFTER DELETE ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size, entries = entries - 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_resized AFTER UPDATE OF size ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
";

/// An open store database.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Connection,
    /// Rows stepped through in full scans since opening.
    full_scan_steps: u64,
}

/// An entry read back.
pub(crate) struct Found {
    pub(crate) value: Vec<u8>,
    pub(crate) expires_ms: u64,
}

impl Db {
    /// Opens (creating if missing) the database of the agent directory `dir`.
    pub(crate) fn open(dir: &Dir) -> rusqlite::Result<Self> {
        // NORMAL: a crash loses at most the last transactions, never the database (a
        // store is a cache, an answer can be redone).
        let conn = crate::sqlite::open(dir, DB_NAME, crate::sqlite::Sync::Normal, "")?;
        // Making the tables takes the write lock: only when they are not made yet (the
        // layout version is 0), so that opening never waits for another process's
        // transaction.
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < FORMAT {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", FORMAT)?;
            tx.commit()?;
        }
        Ok(Self {
            conn,
            full_scan_steps: 0,
        })
    }

    /// Rows stepped through in full-table scans by this handle's statements.
    pub(crate) fn full_scan_steps(&self) -> u64 {
        self.full_scan_steps
    }

    /// Runs `f` in an immediate (write-locked) transaction.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut t = Tx {
            tx,
            scans: &mut self.full_scan_steps,
        };
        let out = f(&mut t)?;
        t.tx.commit()?;
        Ok(out)
    }
}

/// A write transaction, counting full-scan steps of every statement it runs.
pub(crate) struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    scans: &'a mut u64,
}

impl Tx<'_> {
    fn counted<T>(
        &mut self,
        sql: &str,
        run: impl FnOnce(&mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        crate::sqlite::counted(&self.tx, self.scans, sql, run)
    }

    /// The totals the quotas compare against.
    pub(crate) fn usage(&mut self) -> rusqlite::Result<StoreUsage> {
        self.counted("SELECT bytes, entries FROM totals WHERE id = 0", |s| {
            s.query_row([], |r| {
                Ok(StoreUsage {
                    bytes: r.get::<_, i64>(0)?.max(0) as u64,
                    entries: r.get::<_, i64>(1)?.max(0) as u64,
                })
            })
        })
    }

    /// The next value of the use counter (LRU order).
    fn tick(&mut self) -> rusqlite::Result<i64> {
        self.counted(
            "UPDATE totals SET tick = tick + 1 WHERE id = 0 RETURNING tick",
            |s| s.query_row([], |r| r.get(0)),
        )
    }

    /// The entry under `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &str) -> rusqlite::Result<Option<Found>> {
        let found = self.counted(
            "SELECT value, expires_ms FROM entries WHERE key = ?1",
            |s| {
                s.query_row([key], |r| {
                    Ok(Found {
                        value: r.get(0)?,
                        expires_ms: r.get::<_, i64>(1)?.max(0) as u64,
                    })
                })
                .optional()
            },
        )?;
        if found.is_some() {
            let tick = self.tick()?;
            self.counted("UPDATE entries SET used = ?2 WHERE key = ?1", |s| {
                s.execute(params![key, tick])
            })?;
        }
        Ok(found)
    }

    /// The size charged for `key` now, if it is there.
    pub(crate) fn size_of(&mut self, key: &str) -> rusqlite::Result<Option<u64>> {
        self.counted("SELECT size FROM entries WHERE key = ?1", |s| {
            s.query_row([key], |r| r.get::<_, i64>(0))
                .optional()
                .map(|v| v.map(|v| v.max(0) as u64))
        })
    }

    /// Stores `value` under `key`, charged `size` bytes, as the most recent use; an
    /// existing value is replaced, or with `keep_existing` left alone (an import must not
    /// overwrite what a run wrote since).
    pub(crate) fn put(
        &mut self,
        key: &str,
        value: &[u8],
        size: u64,
        expires_ms: u64,
        keep_existing: bool,
    ) -> rusqlite::Result<()> {
        let sql = if keep_existing {
            "INSERT INTO entries (key, value, size, expires_ms, used) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key) DO NOTHING"
        } else {
            "INSERT INTO entries (key, value, size, expires_ms, used) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, size = excluded.size,
                 expires_ms = excluded.expires_ms, used = excluded.used"
        };
        let tick = self.tick()?;
        self.counted(sql, |s| {
            s.execute(params![
                key,
                value,
                i64::try_from(size).unwrap_or(i64::MAX),
                i64::try_from(expires_ms).unwrap_or(i64::MAX),
                tick
            ])
        })?;
        Ok(())
    }

    /// Removes `key`; its expiry if it was there.
    pub(crate) fn delete(&mut self, key: &str) -> rusqlite::Result<Option<u64>> {
        self.counted(
            "DELETE FROM entries WHERE key = ?1 RETURNING expires_ms",
            |s| {
                s.query_row([key], |r| r.get::<_, i64>(0))
                    .optional()
                    .map(|v| v.map(|v| v.max(0) as u64))
            },
        )
    }

    /// Removes `key` if it is still expired at `now` (another handle may have replaced
    /// it since it was read).
    pub(crate) fn delete_if_expired(&mut self, key: &str, now: u64) -> rusqlite::Result<()> {
        self.counted(
            "DELETE FROM entries WHERE key = ?1 AND expires_ms <= ?2",
            |s| s.execute(params![key, now as i64]),
        )?;
        Ok(())
    }

    /// Removes up to `n` entries expired at `now`, soonest first, through the expiry
    /// index; how many.
    pub(crate) fn sweep(&mut self, now: u64, n: u32) -> rusqlite::Result<usize> {
        // The deletion's subquery builds a temporary table even when it finds nothing;
        // a full store sweeps before each eviction, nearly always finding nothing: a
        // look at the expiry index's first row comes first.
        let any: bool = self.counted(
            "SELECT EXISTS (SELECT 1 FROM entries WHERE expires_ms <= ?1)",
            |s| s.query_row(params![now as i64], |r| r.get(0)),
        )?;
        if !any {
            return Ok(0);
        }
        self.counted(
            "DELETE FROM entries WHERE key IN
                 (SELECT key FROM entries WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2)",
            |s| s.execute(params![now as i64, n]),
        )
    }

    /// Removes the least recently used entry, through the use index; its key and size.
    pub(crate) fn evict_one(&mut self) -> rusqlite::Result<Option<(String, u64)>> {
        self.counted(
            "DELETE FROM entries WHERE key = (SELECT key FROM entries ORDER BY used LIMIT 1)
             RETURNING key, size",
            |s| {
                s.query_row([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
                    .optional()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    /// The scan counter counts: without it, "no full scan" would be vacuous.
    #[test]
    fn full_scans_are_counted_and_indexed_queries_are_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("dir");
        let mut db = Db::open(&dir).expect("open");
        db.write(|tx| {
            for i in 0..100u64 {
                tx.put(&format!("k{i}"), b"v", 3, 1_000 + i, false)?;
            }
            tx.get("k5")?;
            tx.sweep(1_010, SWEEP_STEP)?;
            tx.evict_one()?;
            Ok(())
        })
        .expect("indexed work");
        assert_eq!(db.full_scan_steps(), 0);
        db.write(|tx| {
            tx.counted("SELECT COUNT(*) FROM entries WHERE value = x'00'", |s| {
                s.query_row([], |r| r.get::<_, i64>(0))
            })
        })
        .expect("a scan");
        assert!(db.full_scan_steps() >= 80, "{}", db.full_scan_steps());
    }
}
