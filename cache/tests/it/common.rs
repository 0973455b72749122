//! Helpers shared by the test modules.

use std::path::Path;
use std::sync::Arc;

use cf_cache::{AgentStores, ManualClock, StoreLimits};

/// A fresh directory, agent stores on it, and the manual clock they read.
pub fn stores(limits: StoreLimits) -> (tempfile::TempDir, AgentStores, ManualClock) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000);
    let stores = AgentStores::open_with_clock(tmp.path(), limits, Arc::new(clock.clone()))
        .expect("open stores");
    (tmp, stores, clock)
}

/// Every path under `root` (relative, sorted), symlinks not followed.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("prefix");
            out.push(rel.to_string_lossy().into_owned());
            if entry.file_type().expect("file type").is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

use cf_cache::{CacheConfig, CacheKey, KeyBuilder, ResponseCache, Secret};

/// The key of a test request numbered `n`.
pub fn key(n: u64) -> CacheKey {
    KeyBuilder::new("test-v1").field_u64("n", n).finish()
}

/// A config for `dir` with a fixed secret (so reopened handles agree).
pub fn config(dir: &Path) -> CacheConfig {
    let mut cfg = CacheConfig::new(dir);
    cfg.secret = Some(Secret::new(*b"0123456789abcdef0123456789abcdef").expect("secret"));
    cfg
}

/// A cache on `cfg` reading `clock`.
pub fn open(cfg: CacheConfig, clock: &ManualClock) -> ResponseCache {
    ResponseCache::open_with_clock(cfg, Arc::new(clock.clone())).expect("open cache")
}

/// A manual clock at a fixed date.
pub fn clock() -> ManualClock {
    ManualClock::new(1_700_000_000_000)
}

/// The cache's database file in `dir`.
pub const DB_FILE: &str = "responses.sqlite";

/// A second connection to the cache's database in `dir`, as another process (or a
/// person with `sqlite3`) would open it. The database is in WAL mode, so what is written
/// here is seen by the cache's handles.
pub fn db(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open the database");
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .expect("busy timeout");
    conn
}

/// Index rows in the database of `dir` and the sum of their charged sizes, after
/// checking that the rows agree: every index row names a body, every body is named by
/// an index row, and the totals in `meta` equal the rows.
pub fn rows(dir: &Path) -> (u64, u64) {
    let conn = db(dir);
    let (entries, bytes): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count entries");
    let (bodies, stale, orphans): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM bodies),
                    (SELECT COUNT(*) FROM entries WHERE seq NOT IN (SELECT seq FROM bodies)),
                    (SELECT COUNT(*) FROM bodies WHERE seq NOT IN (SELECT seq FROM entries))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("count bodies");
    assert_eq!(
        (bodies, stale, orphans),
        (entries, 0, 0),
        "one body per index row"
    );
    let totals: (i64, i64) = conn
        .query_row("SELECT entries, bytes FROM meta WHERE id = 0", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("totals");
    assert_eq!(totals, (entries, bytes), "the totals equal the rows");
    (entries as u64, bytes as u64)
}

/// The write number (`seq`) the index row of `key` names, if there is one.
pub fn seq_of(conn: &rusqlite::Connection, key: &CacheKey) -> Option<i64> {
    use rusqlite::OptionalExtension as _;
    conn.query_row(
        "SELECT seq FROM entries WHERE key = ?1",
        [&key.as_bytes()[..]],
        |r| r.get(0),
    )
    .optional()
    .expect("read an index row")
}
