//! Administration of the response cache: `verify`, `prune`, `clear`. Each is one write
//! transaction. They read every row on purpose, so their scans are not counted in
//! [`ResponseCache::full_scan_steps`].

use super::db::{self, Counts};
use super::{Checked, ResponseCache};
use crate::error::Error;
use crate::key::CacheKey;
use crate::stats::{BadEntry, PruneReport, VerifyReport};

impl ResponseCache {
    /// Checks SQLite's file structure (`PRAGMA quick_check`), every value against its
    /// MAC, every index row against its value, and the totals against the rows. With
    /// `fix`: removes bad entries (counted as integrity failures), index rows whose value
    /// is missing and values no index row names, and corrects the totals. A damaged file
    /// structure is reported, not fixed: `clear` the cache (or delete its directory).
    pub fn verify(&self, fix: bool) -> Result<VerifyReport, Error> {
        let inner = &*self.inner;
        let checked = inner.write_raw(|tx| {
            let mut report = VerifyReport::default();
            {
                let mut stmt = tx.tx.prepare("PRAGMA quick_check")?;
                let lines = stmt.query_map([], |r| r.get::<_, String>(0))?;
                for line in lines {
                    let line = line?;
                    if line != "ok" {
                        report.database.push(line);
                    }
                }
            }
            let rows: Vec<(Vec<u8>, db::Row)> = {
                let sql = format!("SELECT e.key, {}", db::ROW_COLUMNS);
                let mut stmt = tx.tx.prepare(&sql)?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, db::row_from(r, 1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut remove = Vec::new();
            for (raw_key, row) in rows {
                report.checked += 1;
                let key = <[u8; 32]>::try_from(&raw_key[..])
                    .ok()
                    .map(CacheKey::from_bytes);
                let missing_body = matches!(row.body, Err(db::MISSING_BODY));
                let checked = match key {
                    Some(key) => inner.check(&key, row),
                    None => Checked::Bad {
                        seq: row.seq,
                        why: "its key is not 32 bytes",
                    },
                };
                match checked {
                    Checked::Valid(_) => report.valid += 1,
                    Checked::Bad { .. } if missing_body => {
                        report.stale_index += 1;
                        remove.push((raw_key, false));
                    }
                    Checked::Bad { why, .. } => {
                        report.bad.push(BadEntry {
                            key: crate::files::hex(&raw_key),
                            reason: why.to_owned(),
                        });
                        remove.push((raw_key, true));
                    }
                }
            }
            report.orphans = tx.tx.query_row(
                "SELECT COUNT(*) FROM bodies WHERE seq NOT IN (SELECT seq FROM entries)",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
            let (bytes, entries): (i64, i64) = tx.tx.query_row(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let meta = tx.meta()?;
            let last_seq: i64 =
                tx.tx
                    .query_row("SELECT COALESCE(MAX(seq), 0) FROM bodies", [], |r| r.get(0))?;
            report.totals_wrong = (meta.bytes, meta.entries) != (bytes as u64, entries as u64)
                || meta.next_seq <= last_seq.max(0) as u64;
            if fix {
                let mut counts = Counts::default();
                for (raw_key, bad) in remove {
                    tx.tx
                        .execute("DELETE FROM entries WHERE key = ?1", [&raw_key])?;
                    if bad {
                        report.removed += 1;
                        counts.integrity_failures += 1;
                    }
                }
                tx.tx.execute(
                    "DELETE FROM bodies WHERE seq NOT IN (SELECT seq FROM entries)",
                    [],
                )?;
                tx.tx.execute(
                    "UPDATE meta SET bytes = (SELECT COALESCE(SUM(size), 0) FROM entries),
                         entries = (SELECT COUNT(*) FROM entries),
                         next_seq = MAX(next_seq, (SELECT COALESCE(MAX(seq), 0) + 1 FROM bodies))
                     WHERE id = 0",
                    [],
                )?;
                tx.add(&counts)?;
            }
            Ok(report)
        });
        let report = match checked {
            Ok(report) => report,
            // Damage past reading the rows: reported as the database's, for `clear`.
            Err(e) if crate::sqlite::is_damage(&e) => VerifyReport {
                database: vec![e.to_string()],
                ..VerifyReport::default()
            },
            Err(e) => return Err(Error::io("verifying the cache", crate::sqlite::io(e))),
        };
        if fix && !report.bad.is_empty() {
            // A value removed here may be in this handle's memory layer.
            self.inner.state().memory.clear();
        }
        Ok(report)
    }

    /// Removes every expired entry, through the expiry index.
    pub fn prune(&self) -> Result<PruneReport, Error> {
        let inner = &*self.inner;
        let now = inner.clock.now_ms();
        let report = inner.write(|tx| {
            let sizes = tx.sweep(now, u64::MAX >> 1)?;
            let report = PruneReport {
                removed: sizes.len() as u64,
                freed_bytes: sizes.iter().sum(),
            };
            tx.add(&Counts {
                expirations: report.removed,
                ..Counts::default()
            })?;
            tx.shrink_if_sparse()?;
            Ok(report)
        })?;
        inner
            .state()
            .memory
            .retain(|_, entry| entry.expires_ms > now);
        Ok(report)
    }

    /// Removes every entry and resets the counters; returns how many entries were
    /// removed. Nothing but the database's rows is touched: no file in the directory is
    /// removed. Other processes' memory layers are emptied at their next write. A
    /// database too damaged to delete from is moved aside to
    /// `responses.sqlite.damaged-<ms>` and an empty one started (0 is returned).
    pub fn clear(&self) -> Result<u64, Error> {
        let inner = &*self.inner;
        let removed = inner.write_raw(|tx| {
            let entries = tx.meta()?.entries;
            tx.tx.execute_batch(
                "DELETE FROM bodies;
                 DELETE FROM entries;
                 UPDATE meta SET bytes = 0, entries = 0, generation = generation + 1,
                     hits = 0, misses = 0, evictions = 0, expirations = 0,
                     integrity_failures = 0, tokens_saved = 0, cost_saved_usd = 0.0
                 WHERE id = 0;
                 PRAGMA incremental_vacuum;",
            )?;
            Ok(entries)
        });
        let removed = match removed {
            Ok(n) => n,
            Err(e) if crate::sqlite::is_damage(&e) => {
                inner.start_over()?;
                0
            }
            Err(e) => return Err(Error::io("clearing the cache", crate::sqlite::io(e))),
        };
        let mut state = inner.state();
        state.memory.clear();
        state.pending = super::Pending::default();
        Ok(removed)
    }
}
