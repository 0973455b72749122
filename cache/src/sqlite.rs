//! Opening an SQLite database inside a directory handle: what the agents' stores and the
//! response cache share.
//!
//! The database file is created through the directory's handle (no-follow, mode 0600,
//! which SQLite gives its `-wal` and `-shm` files too), and a file of that name that is
//! not a regular file is refused. SQLite then opens it by path: through
//! `/proc/self/fd/<dir>/<name>`, which it resolves to the directory's real path. That
//! path is safe because the directory and its ancestors passed the ownership checks
//! (0700, the user's own): nobody else can swap a file in it between the check and the
//! open. (`SQLITE_OPEN_NOFOLLOW` cannot be used: it refuses the `/proc` link.)

use std::os::fd::AsRawFd as _;
use std::time::Duration;

use cap_std::fs::Dir;
use rusqlite::{Connection, OpenFlags};

/// How long a writer waits for another process's transaction before giving up with an
/// error (a call must not hang on a lock held elsewhere).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// After a sweep of expired entries that found less than its step, the next write
/// sweeps only this much later (one that found a full step sweeps again at the next
/// write). Sweeping at every write cost both databases a statement per write (the
/// agent store 40 % of a write's CPU), nearly always to find nothing; expired entries
/// are misses whether swept or not.
pub(crate) const SWEEP_EVERY_MS: u64 = 1_000;

/// When writes sweep expired entries, in small steps at a pace ([`SWEEP_EVERY_MS`]):
/// the response cache's and each agent store's.
#[derive(Debug, Default)]
pub(crate) struct SweepPace {
    /// When the next write sweeps (ms on the owner's clock); 0: at the next write.
    next_ms: std::sync::atomic::AtomicU64,
}

impl SweepPace {
    /// Whether a write at `now_ms` sweeps.
    pub(crate) fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a committed sweep at `now_ms` that removed `swept` entries of a step of
    /// `step`.
    pub(crate) fn swept(&self, now_ms: u64, swept: u64, step: u64) {
        let next = if swept < step {
            now_ms.saturating_add(SWEEP_EVERY_MS)
        } else {
            0
        };
        self.next_ms
            .store(next, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a database commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// `synchronous = NORMAL` in WAL mode: a process crash loses nothing committed, a
    /// power loss may lose the last transactions, never the database.
    Normal,
    /// `synchronous = FULL`: every commit is on disk when it returns.
    Full,
}

/// Opens (creating if missing) the database `name` in `dir`: write-ahead log, the busy
/// timeout, `sync`. `before_wal` runs first on the connection of a new (empty) file:
/// settings such as `auto_vacuum` that must precede the first table.
pub(crate) fn open(
    dir: &Dir,
    name: &str,
    sync: Sync,
    before_wal: &str,
) -> rusqlite::Result<Connection> {
    let fresh = match dir.symlink_metadata(name) {
        Ok(meta) if !meta.is_file() => {
            return Err(rusqlite::Error::InvalidPath(name.into()));
        }
        Ok(meta) => meta.len() == 0,
        Err(_) => {
            use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
            use cap_std::fs::{OpenOptions, OpenOptionsExt as _};
            let mut options = OpenOptions::new();
            options
                .write(true)
                .create(true)
                .follow(FollowSymlinks::No)
                .mode(0o600);
            dir.open_with(name, &options)
                .map_err(|_| rusqlite::Error::InvalidPath(name.into()))?;
            true
        }
    };
    let path = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Only on a new file: on an existing one some of these settings (`auto_vacuum`)
    // take the write lock, and opening must not wait for another process's
    // transaction.
    if fresh && !before_wal.is_empty() {
        conn.execute_batch(before_wal)?;
    }
    // Switching a new database to WAL returns SQLITE_BUSY at once, without calling the
    // busy handler, while another connection is doing the same: retried here for as
    // long as the busy timeout would have waited.
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            other => break other?,
        }
    }
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Sync::Normal => "NORMAL",
            Sync::Full => "FULL",
        },
    )?;
    Ok(conn)
}

/// True if `e` says the database file is not a database or is damaged.
pub(crate) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// An SQLite error as an I/O error, for [`crate::Error::io`].
pub(crate) fn io(e: rusqlite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// Runs the cached statement `sql` through `run`, adding the rows it stepped through in
/// full-table scans to `scans`: tests assert that the hot paths never scan.
pub(crate) fn counted<T>(
    conn: &Connection,
    scans: &mut u64,
    sql: &str,
    run: impl FnOnce(&mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let mut stmt = conn.prepare_cached(sql)?;
    let out = run(&mut stmt)?;
    *scans += stmt.get_status(rusqlite::StatementStatus::FullscanStep) as u64;
    stmt.reset_status(rusqlite::StatementStatus::FullscanStep);
    Ok(out)
}
