//! The LLM response cache: [`ResponseCache`], on an SQLite database.
//!
//! Modules: `db` (the tables and every query), `seal` (the HMAC binding a value to its
//! key and its write), `memory` (the in-process layer), `pending` (reads not yet
//! written), `admin` (verify, prune, clear), `legacy` (a directory of the older
//! file-per-entry format).

mod admin;
mod db;
mod legacy;
mod memory;
mod pending;
pub(crate) mod seal;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use cap_std::fs::Dir;
use rusqlite::Connection;

use crate::clock::{Clock, SystemClock, duration_ms, ms_to_time};
use crate::config::{CacheConfig, Durability};
use crate::error::Error;
use crate::key::CacheKey;
use crate::private;
use crate::secret::{self, Secret};
use crate::sqlite::{self, SweepPace};
use crate::stats::Stats;
use db::{Counts, NewEntry, Tx};
use memory::MemoryLayer;
use pending::{Pending, Removal, State};

pub(crate) use db::DB_NAME;

/// Bytes an entry with a payload of `payload_len` bytes is charged against
/// [`CacheConfig::max_bytes`]: what it occupies in the database (the payload, its MAC
/// and metadata, overflow pages whole when it spans pages, and its index rows).
#[must_use]
pub fn entry_size(payload_len: u64) -> u64 {
    db::charged_size(payload_len)
}

/// Flush pending reads to the database after this many lookups…
const FLUSH_EVENTS: u64 = 1024;
/// …or when the last flush is this old.
const FLUSH_AGE: Duration = Duration::from_secs(2);
/// Expired entries removed by each write, through the expiry index: expired entries go
/// in small steps, not in one long pause.
const SWEEP_STEP: u64 = 16;
/// A read is recorded as an entry's last use (and in its hit count) only when its
/// recorded last use is at least this old, as memcached moves an item in its LRU at most
/// once a minute: recording every read of a cached batch rewrote the index at every
/// flush and cost more than the lookups. The cache's totals count every read.
pub(crate) const LRU_RESOLUTION_MS: u64 = 60_000;
/// Reader connections kept open for lookups.
const MAX_IDLE_READERS: usize = 8;

/// What the caller stores beside a payload.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EntryMeta {
    /// Tokens of the original call; summed into [`Stats::tokens_saved`] on each hit.
    pub tokens: u64,
    /// Cost of the original call in USD; `None` when unpriced. Summed into
    /// [`Stats::cost_saved_usd`] on each hit. A negative or non-finite cost is stored as
    /// `None`.
    pub cost_usd: Option<f64>,
    /// Lifetime of this entry; `None` for [`CacheConfig::ttl`]. A zero TTL stores
    /// nothing (an existing entry of the key is left as it is).
    pub ttl: Option<Duration>,
}

/// One entry for [`ResponseCache::put_many`].
#[derive(Debug, Clone, Copy)]
pub struct Put<'a> {
    /// The agent (namespace) storing it: nothing is stored for an excluded agent.
    pub agent: &'a str,
    /// Its key.
    pub key: &'a CacheKey,
    /// The bytes to store.
    pub payload: &'a [u8],
    /// What is stored beside them.
    pub meta: EntryMeta,
}

/// A cached response, verified against its HMAC when it was read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedEntry {
    /// The payload given to `put` (shared, cheap to clone).
    pub payload: Arc<[u8]>,
    /// Tokens of the original call.
    pub tokens: u64,
    /// Cost of the original call in USD, if it was priced.
    pub cost_usd: Option<f64>,
    created_ms: u64,
    expires_ms: u64,
    /// The write that stored it (its value's number in the database).
    seq: u64,
    /// Its last use as recorded in the database when it was read (or stored).
    used_ms: u64,
}

impl CachedEntry {
    pub(crate) fn new(
        payload: Arc<[u8]>,
        tokens: u64,
        cost_usd: Option<f64>,
        created_ms: u64,
        expires_ms: u64,
        seq: u64,
        used_ms: u64,
    ) -> Self {
        Self {
            payload,
            tokens,
            cost_usd,
            created_ms,
            expires_ms,
            seq,
            used_ms,
        }
    }

    /// When the entry was stored.
    #[must_use]
    pub fn created(&self) -> SystemTime {
        ms_to_time(self.created_ms)
    }

    /// When the entry expires.
    #[must_use]
    pub fn expires(&self) -> SystemTime {
        ms_to_time(self.expires_ms)
    }
}

/// What the shared index knows of one entry (see [`ResponseCache::entry_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    /// Bytes it is charged against the size limit: what it occupies in the database
    /// (payload, MAC, metadata and index rows, as SQLite lays them out in pages).
    pub size: u64,
    /// Reads recorded against it, over all processes and restarts: a read less than a
    /// minute after its recorded last use is not recorded (the LRU's resolution is a
    /// minute, as in memcached); [`Stats::hits`] counts every read.
    pub hits: u64,
    /// Its last use as recorded (stored, or read, to within a minute), over all
    /// processes and restarts: the least recent goes first when the cache is full.
    pub last_access: SystemTime,
    /// When it expires.
    pub expires: SystemTime,
}

/// The response cache. Cheap to clone (`Arc` inside); `Send + Sync`. Several handles, in
/// one process or in several, may share one directory.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: Dir,
    secret: Secret,
    ttl_ms: u64,
    max_bytes: u64,
    sync: sqlite::Sync,
    exclude: HashSet<String>,
    clock: Arc<dyn Clock>,
    /// The connection that writes, and what it last saw of the database.
    writer: Mutex<Writer>,
    /// Idle connections for lookups (WAL: they never wait for the writer), with the
    /// [`Inner::epoch`] they were opened in.
    readers: Mutex<Vec<(u64, Connection)>>,
    /// Bumped when the database file is replaced (set aside as damaged, here or by
    /// another process): connections of an older epoch are closed, not reused.
    epoch: AtomicU64,
    /// The inode of the database file the connections have open.
    db_ino: AtomicU64,
    /// Rows stepped through in full scans by lookups.
    read_scans: AtomicU64,
    /// The memory layer and pending reads: held for moments, never across a query.
    state: Mutex<State>,
    /// A background flush of pending reads is running.
    flushing: std::sync::atomic::AtomicBool,
    /// When writes sweep expired entries.
    sweeps: SweepPace,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    scans: u64,
    /// The write number and generation this handle last saw: a database whose write
    /// number went back was replaced by an older copy; a new generation, cleared.
    seen: Option<(u64, u64)>,
}

/// What checking a stored value found.
enum Checked {
    Valid(CachedEntry),
    Bad { seq: Option<u64>, why: &'static str },
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a row read for `key` against its MAC.
    fn check(&self, key: &CacheKey, row: db::Row) -> Checked {
        let body = match row.body {
            Ok(body) => body,
            Err(why) => return Checked::Bad { seq: row.seq, why },
        };
        let meta = seal::Meta {
            seq: row.seq.unwrap_or_default(),
            created_ms: body.created_ms,
            expires_ms: row.expires_ms,
            tokens: body.tokens,
            cost_usd: body.cost_usd,
        };
        if !seal::verify(&self.secret, key, &meta, &body.payload, &body.mac) {
            return Checked::Bad {
                seq: row.seq,
                why: "its MAC does not match its key, write and value",
            };
        }
        Checked::Valid(CachedEntry::new(
            Arc::from(body.payload),
            body.tokens,
            body.cost_usd,
            body.created_ms,
            row.expires_ms,
            meta.seq,
            row.used_ms,
        ))
    }

    /// Runs `f` on a reader connection.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection, &mut u64) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .filter(|(e, _)| *e == epoch);
        let conn = match idle {
            Some((_, conn)) => conn,
            None => sqlite::open(&self.dir, DB_NAME, self.sync, "")
                .map_err(|e| Error::io("opening a reader of the cache", sqlite::io(e)))?,
        };
        let mut scans = 0;
        let out = f(&conn, &mut scans);
        self.read_scans.fetch_add(scans, Ordering::Relaxed);
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if readers.len() < MAX_IDLE_READERS && self.epoch.load(Ordering::Acquire) == epoch {
            readers.push((epoch, conn));
        }
        out.map_err(|e| Error::io("reading the cache", sqlite::io(e)))
    }

    /// Runs `f` in a write transaction, after writing this process's pending reads in
    /// it (they are put back if the transaction fails) and checking that the database
    /// is the one this handle saw last (not replaced by an older copy, not cleared).
    fn write<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> rusqlite::Result<T>) -> Result<T, Error> {
        self.write_raw(f).map_err(|e| {
            if sqlite::is_damage(&e) {
                tracing::error!(
                    dir = ?self.dir,
                    "the response cache's database is damaged; `cf-host cache clear` starts it afresh"
                );
            }
            Error::io("writing to the cache", sqlite::io(e))
        })
    }

    /// [`write`](Self::write) with SQLite's error as it is.
    fn write_raw<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.follow_replacement(&mut writer)?;
        let taken = {
            let mut state = self.state();
            state.last_flush = Instant::now();
            std::mem::take(&mut state.pending)
        };
        let outcome = self.write_with(&mut writer, &taken, f);
        let mut state = self.state();
        if outcome.is_err() {
            state.pending.restore(taken);
            state.failed_at = Some(Instant::now());
        } else {
            state.failed_at = None;
        }
        drop(state);
        outcome
    }

    /// The inode of the file now named `responses.sqlite`, if any.
    fn current_ino(&self) -> Option<u64> {
        self.dir
            .symlink_metadata(DB_NAME)
            .ok()
            .map(|m| cap_std::fs::MetadataExt::ino(&m))
    }

    /// If the database file was replaced since the connections opened it (another
    /// process set a damaged one aside), reopens on the new one: one `stat` per write
    /// transaction.
    fn follow_replacement(&self, writer: &mut Writer) -> rusqlite::Result<()> {
        match self.current_ino() {
            Some(ino) if ino != self.db_ino.load(Ordering::Acquire) => self.reopen(writer),
            _ => Ok(()),
        }
    }

    /// Opens the file now named `responses.sqlite` (made if missing) for this handle:
    /// a new writer, readers of a new epoch, an empty memory layer.
    fn reopen(&self, writer: &mut Writer) -> rusqlite::Result<()> {
        let conn = db::open(&self.dir, self.sync).map_err(|e| match e {
            db::OpenError::Newer(v) => rusqlite::Error::InvalidPath(format!("layout {v}").into()),
            db::OpenError::Sqlite(e) => e,
        })?;
        *writer = Writer {
            conn,
            scans: writer.scans,
            seen: None,
        };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.db_ino
            .store(self.current_ino().unwrap_or(0), Ordering::Release);
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let mut state = self.state();
        state.memory.clear();
        state.pending = Pending::default();
        Ok(())
    }

    /// Sets the damaged database aside and starts an empty one. If another process
    /// already did (the name is another file than the one open here), only reopens.
    fn start_over(&self) -> Result<(), Error> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let context = |e| Error::io("starting the cache afresh", e);
        if self.current_ino() == Some(self.db_ino.load(Ordering::Acquire)) {
            let aside = db::set_aside(&self.dir).map_err(context)?;
            tracing::warn!(
                dir = ?self.dir,
                "moved the damaged response cache database to {aside} and started an empty one"
            );
        }
        self.reopen(&mut writer).map_err(|e| context(sqlite::io(e)))
    }

    fn write_with<T>(
        &self,
        writer: &mut Writer,
        pending: &Pending,
        f: impl FnOnce(&mut Tx<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let Writer { conn, scans, seen } = writer;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut tx = Tx { tx, scans };
        let meta = tx.meta()?;
        let mut forget_memory = false;
        if let Some((seq, generation)) = *seen {
            if meta.next_seq < seq {
                self.rolled_back(&mut tx, &meta, seq)?;
                forget_memory = true;
            } else if meta.generation != generation {
                forget_memory = true;
            }
        }
        pending.write(&mut tx)?;
        let out = f(&mut tx)?;
        let after = tx.meta()?;
        tx.tx.commit()?;
        *seen = Some((after.next_seq, after.generation));
        if forget_memory {
            self.state().memory.clear();
        }
        Ok(out)
    }

    /// The database's write number went back from `seen` to `meta.next_seq`: it was
    /// replaced by an older copy, whose values may be older than ones since stored over
    /// them. None of them is trusted: all are removed (counted as integrity failures),
    /// and the write number jumps 2^32 past `seen` (another handle may have seen more
    /// than this one), so no number is used twice.
    fn rolled_back(&self, tx: &mut Tx<'_>, meta: &db::Meta, seen: u64) -> rusqlite::Result<()> {
        tracing::error!(
            dir = ?self.dir,
            "the response cache's database was replaced by an older copy; dropping its {} entries",
            meta.entries
        );
        tx.tx
            .execute_batch("DELETE FROM entries; DELETE FROM bodies;")?;
        tx.tx.execute(
            "UPDATE meta SET next_seq = ?1, generation = generation + 1,
                 integrity_failures = integrity_failures + ?2 WHERE id = 0",
            rusqlite::params![
                i64::try_from(seen.saturating_add(1 << 32)).unwrap_or(i64::MAX),
                i64::try_from(meta.entries).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(())
    }

    /// Writes the pending reads; with `always`, also when there are none (the write
    /// transaction checks the database: rolled back, cleared).
    fn flush(&self, always: bool) -> Result<(), Error> {
        if !always && self.state().pending.events() == 0 {
            return Ok(());
        }
        self.write(|_| Ok(()))
    }

    /// Bytes of the database's files on disk (the database, its write-ahead log and
    /// its shared-memory index).
    fn disk_bytes(&self) -> u64 {
        [DB_NAME, "responses.sqlite-wal", "responses.sqlite-shm"]
            .iter()
            .filter_map(|name| self.dir.symlink_metadata(name).ok())
            .filter(|m| m.is_file())
            .map(|m| cap_std::fs::MetadataExt::blocks(&m) * 512)
            .sum()
    }

    /// Statistics from the database's `meta` (if read) and this process's state.
    fn stats_from(&self, meta: Option<&db::Meta>) -> Stats {
        let mut stats = Stats::default();
        if let Some(m) = meta {
            let c = &m.counts;
            stats = Stats {
                hits: c.hits,
                misses: c.misses,
                evictions: c.evictions,
                expirations: c.expirations,
                integrity_failures: c.integrity_failures,
                entries: m.entries,
                bytes: m.bytes,
                tokens_saved: c.tokens_saved,
                cost_saved_usd: c.cost_saved_usd,
                ..stats
            };
        }
        let state = self.state();
        let (c, memory) = (&state.pending.counts, &state.memory);
        stats.hits += c.hits;
        stats.misses += c.misses;
        stats.tokens_saved += c.tokens_saved;
        stats.cost_saved_usd += c.cost_saved_usd;
        let lookups = stats.hits + stats.misses;
        stats.hit_rate = if lookups == 0 {
            0.0
        } else {
            stats.hits as f64 / lookups as f64
        };
        stats.max_bytes = self.max_bytes;
        stats.memory_entries = memory.len() as u64;
        stats.memory_bytes = memory.bytes();
        drop(state);
        stats.disk_bytes = self.disk_bytes();
        stats
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.flush(false) {
            tracing::warn!(error = %e, "could not record the cache's last reads");
        }
    }
}

impl ResponseCache {
    /// Opens (creating if missing) the cache directory of `cfg` and its database.
    ///
    /// Opening is O(1) in the number of entries: it opens the directory, the secret
    /// and the database (SQLite reads its schema, not its rows). A directory in the
    /// older file-per-entry format has its entries dropped, with one warning.
    pub fn open(cfg: CacheConfig) -> Result<Self, Error> {
        Self::open_with_clock(cfg, Arc::new(SystemClock))
    }

    /// [`ResponseCache::open`] with another time source (tests, simulations).
    pub fn open_with_clock(cfg: CacheConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        cfg.validate()?;
        let context = |step: &str| format!("{step} the cache directory {}", cfg.dir.display());
        let dir = private::open_dir(&cfg.dir)?;
        let secret = match cfg.secret {
            Some(secret) => secret,
            None => secret::load_or_create(&dir, &cfg.dir)?,
        };
        legacy::drop_old_entries(&dir, &cfg.dir)
            .map_err(|e| Error::io(context("removing the old-format entries of"), e))?;
        let sync = match cfg.durability {
            Durability::Fast => sqlite::Sync::Normal,
            Durability::Fsync => sqlite::Sync::Full,
        };
        let conn = db::open_or_set_aside(&dir, &cfg.dir, sync).map_err(|e| match e {
            db::OpenError::Newer(v) => Error::InvalidConfig(format!(
                "the cache database in {} has layout {v}, written by a later cf-cache; \
                 use that version, or clear the directory",
                cfg.dir.display()
            )),
            db::OpenError::Sqlite(e) => {
                Error::io(context("opening the database of"), sqlite::io(e))
            }
        })?;
        let db_ino = dir
            .symlink_metadata(DB_NAME)
            .map_or(0, |m| cap_std::fs::MetadataExt::ino(&m));
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                secret,
                ttl_ms: duration_ms(cfg.ttl),
                max_bytes: cfg.max_bytes,
                sync,
                exclude: cfg.exclude_agents.into_iter().collect(),
                clock,
                writer: Mutex::new(Writer {
                    conn,
                    scans: 0,
                    seen: None,
                }),
                readers: Mutex::new(Vec::new()),
                epoch: AtomicU64::new(0),
                db_ino: AtomicU64::new(db_ino),
                read_scans: AtomicU64::new(0),
                state: Mutex::new(State {
                    memory: MemoryLayer::new(cfg.memory_max_entries, cfg.memory_max_bytes),
                    pending: Pending::default(),
                    last_flush: Instant::now(),
                    failed_at: None,
                }),
                flushing: std::sync::atomic::AtomicBool::new(false),
                sweeps: SweepPace::default(),
            }),
        })
    }

    /// True if `agent` is in [`CacheConfig::exclude_agents`].
    #[must_use]
    pub fn is_excluded(&self, agent: &str) -> bool {
        self.inner.exclude.contains(agent)
    }

    /// The entry of `key`, if present, unexpired and intact. For an excluded agent:
    /// always `None`, and nothing is counted.
    ///
    /// An expired entry is a miss, removed (and counted in [`Stats::expirations`]) by
    /// this handle's next write; an entry that fails its MAC (or whose row was damaged)
    /// is a miss, removed and counted in [`Stats::integrity_failures`] the same way. A
    /// lookup never takes the write lock, so it never waits for another process.
    /// Database errors are logged and are misses too: a cache failure must not fail
    /// the call.
    pub fn get(&self, agent: &str, key: &CacheKey) -> Option<CachedEntry> {
        if self.is_excluded(agent) {
            return None;
        }
        let inner = &*self.inner;
        let now = inner.clock.now_ms();
        let memory_hit = {
            let mut guard = inner.state();
            let state = &mut *guard;
            match state.memory.get(key) {
                Some(entry) if entry.expires_ms > now => {
                    let entry = entry.clone();
                    if state.pending.hit(key, &entry, now) {
                        state.memory.set_used(key, now);
                    }
                    Some((entry, flush_due(state)))
                }
                Some(_) => {
                    state.memory.remove(key);
                    None
                }
                None => None,
            }
        };
        if let Some((entry, due)) = memory_hit {
            self.flush_if_due(due);
            return Some(entry);
        }
        match inner.read(|conn, scans| db::lookup(conn, scans, key)) {
            Ok(None) => self.note(|state| state.pending.miss()),
            Ok(Some(row)) => match inner.check(key, row) {
                Checked::Valid(mut entry) if entry.expires_ms > now => {
                    self.note(|state| {
                        if state.pending.hit(key, &entry, now) {
                            entry.used_ms = now;
                        }
                        state.memory.insert(*key, entry.clone());
                    });
                    return Some(entry);
                }
                Checked::Valid(entry) => self.note(|state| {
                    state.pending.remove(key, Some(entry.seq), Removal::Expired);
                }),
                Checked::Bad { seq, why } => {
                    tracing::warn!(key = %key, fault = why, "removing a cache entry that failed its integrity check");
                    self.note(|state| state.pending.remove(key, seq, Removal::Bad));
                }
            },
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cache lookup failed; treated as a miss");
                self.note(|state| state.pending.miss());
            }
        }
        None
    }

    /// Notes a read in this process's pending state, then flushes the pending reads if
    /// that is due.
    fn note(&self, record: impl FnOnce(&mut State)) {
        let due = {
            let mut state = self.inner.state();
            record(&mut state);
            flush_due(&state)
        };
        self.flush_if_due(due);
    }

    /// Counts a hit the caller served itself from an answer it is about to store (one
    /// written behind, say) in the statistics, as [`get`](Self::get) counts its hits.
    /// For an excluded agent: nothing is counted.
    pub fn count_hit(&self, agent: &str, tokens: u64, cost_usd: Option<f64>) {
        if self.is_excluded(agent) {
            return;
        }
        let cost_usd = cost_usd.filter(|c| c.is_finite() && *c >= 0.0);
        self.note(|state| state.pending.counted_hit(tokens, cost_usd));
    }

    /// Flushes pending reads if `due`, on a thread of its own: a lookup runs on the
    /// caller's thread (often an async worker), which must not wait for a write
    /// transaction. At most one such flush runs at a time; a failure is logged, never
    /// returned to a reader.
    fn flush_if_due(&self, due: bool) {
        if !due || self.inner.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag when the flush ends, panic or not.
        struct Done(Arc<Inner>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.flushing.store(false, Ordering::Release);
            }
        }
        let done = Done(Arc::clone(&self.inner));
        let spawned = std::thread::Builder::new()
            .name("cf-cache-flush".into())
            .spawn(move || {
                if let Err(e) = done.0.flush(false) {
                    tracing::warn!(error = %e, "could not record cache reads");
                }
            });
        if let Err(e) = spawned {
            self.inner.flushing.store(false, Ordering::Release);
            tracing::warn!(error = %e, "could not start a thread to record cache reads");
        }
    }

    /// Stores `payload` under `key`, evicting least recently used entries (after a few
    /// expired ones) to stay under [`CacheConfig::max_bytes`]. For an excluded agent:
    /// does nothing. [`Error::TooLarge`] if the entry alone exceeds the size limit.
    pub fn put(
        &self,
        agent: &str,
        key: &CacheKey,
        payload: &[u8],
        meta: EntryMeta,
    ) -> Result<(), Error> {
        self.put_many(&[Put {
            agent,
            key,
            payload,
            meta,
        }])
        .pop()
        .unwrap_or(Ok(()))
    }

    /// Stores several entries as [`put`](Self::put) does, one result per entry in order,
    /// in one transaction (a group commit). An entry refused on its own (too large) does
    /// not stop the others; a failed transaction fails them all, and stores none.
    pub fn put_many(&self, puts: &[Put<'_>]) -> Vec<Result<(), Error>> {
        let inner = &*self.inner;
        let now = inner.clock.now_ms();
        let mut results: Vec<Result<(), Error>> = Vec::with_capacity(puts.len());
        // (index in `puts`, charged size, expiry, cost)
        let mut todo = Vec::with_capacity(puts.len());
        for (i, put) in puts.iter().enumerate() {
            results.push(Ok(()));
            if self.is_excluded(put.agent) || put.meta.ttl.is_some_and(|t| t.is_zero()) {
                continue;
            }
            let size = db::charged_size(put.payload.len() as u64);
            if size > inner.max_bytes {
                results[i] = Err(Error::TooLarge(format!(
                    "an entry of {size} bytes exceeds the cache's limit of {} bytes",
                    inner.max_bytes
                )));
                continue;
            }
            let ttl_ms = put.meta.ttl.map_or(inner.ttl_ms, duration_ms);
            let cost = put.meta.cost_usd.filter(|c| c.is_finite() && *c >= 0.0);
            // SQLite's integers are signed: what is sealed is what is stored.
            let expires_ms = now.saturating_add(ttl_ms).min(db::MAX_INT);
            todo.push((i, size, expires_ms, cost));
        }
        if todo.is_empty() {
            return results;
        }
        let stored = inner.write(|tx| {
            let first = tx.take_seqs(todo.len() as u64)?;
            let mut seqs = Vec::with_capacity(todo.len());
            for (n, &(i, size, expires_ms, cost_usd)) in todo.iter().enumerate() {
                let put = &puts[i];
                let meta = seal::Meta {
                    seq: first + n as u64,
                    created_ms: now,
                    expires_ms,
                    tokens: put.meta.tokens.min(db::MAX_INT),
                    cost_usd,
                };
                let mac = seal::seal(&inner.secret, put.key, &meta, put.payload);
                tx.insert(
                    &NewEntry {
                        key: put.key,
                        seq: meta.seq,
                        size,
                        created_ms: now,
                        expires_ms,
                        tokens: meta.tokens,
                        cost_usd,
                        payload: put.payload,
                        mac: &mac,
                    },
                    now,
                )?;
                seqs.push(meta.seq);
            }
            let swept = inner
                .sweeps
                .due(now)
                .then(|| tx.sweep(now, SWEEP_STEP))
                .transpose()?
                .map(|sizes| sizes.len() as u64);
            let mut counts = Counts {
                expirations: swept.unwrap_or(0),
                ..Counts::default()
            };
            let mut evicted = HashSet::new();
            while tx.meta()?.bytes > inner.max_bytes {
                match tx.evict_one()? {
                    Some(key) => {
                        evicted.insert(key);
                        counts.evictions += 1;
                    }
                    None => break,
                }
            }
            tx.add(&counts)?;
            if counts.evictions + counts.expirations > 0 {
                tx.shrink_if_sparse()?;
            }
            Ok((seqs, evicted, swept))
        });
        match stored {
            Ok((seqs, evicted, swept)) => {
                if let Some(n) = swept {
                    inner.sweeps.swept(now, n, SWEEP_STEP);
                }
                let mut state = inner.state();
                for key in &evicted {
                    if let Ok(bytes) = <[u8; 32]>::try_from(&key[..]) {
                        state.memory.remove(&CacheKey::from_bytes(bytes));
                    }
                }
                for (&(i, _, expires_ms, cost_usd), seq) in todo.iter().zip(seqs) {
                    let put = &puts[i];
                    if evicted.contains(&put.key.as_bytes()[..]) {
                        continue;
                    }
                    let cached = CachedEntry::new(
                        Arc::from(put.payload),
                        put.meta.tokens.min(db::MAX_INT),
                        cost_usd,
                        now,
                        expires_ms,
                        seq,
                        now,
                    );
                    state.memory.insert(*put.key, cached);
                }
            }
            Err(e) => {
                for &(i, ..) in &todo {
                    results[i] = Err(e.duplicate());
                }
            }
        }
        results
    }

    /// Writes this process's pending reads (hits, last access) and counters to the
    /// database, and checks it (replaced by an older copy: every entry dropped; cleared
    /// by another process: the memory layer emptied). Done automatically every 1024
    /// lookups or 2 s of activity (in the background), with every other write, and when
    /// the last handle is dropped.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.flush(true)
    }

    /// Counters of the directory over all processes, after flushing this one's.
    /// If the database cannot be read, logs why and returns what this process knows.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        match inner.write(|tx| tx.meta()) {
            Ok(meta) => inner.stats_from(Some(&meta)),
            Err(e) => {
                tracing::warn!(error = %e, "cache statistics may be stale");
                inner.stats_from(None)
            }
        }
    }

    /// What the database knows of `key`, after flushing this process's reads.
    pub fn entry_info(&self, key: &CacheKey) -> Result<Option<EntryInfo>, Error> {
        let row = self.inner.write(|tx| tx.index_row(key))?;
        Ok(row.map(|e| EntryInfo {
            size: e.size,
            hits: e.hits,
            last_access: ms_to_time(e.used_ms),
            expires: ms_to_time(e.expires_ms),
        }))
    }

    /// Rows SQLite stepped through in full-table scans for this handle's lookups and
    /// writes (admin calls excepted, which read everything on purpose). Tests assert
    /// that it stays zero: every hot-path query goes through an index.
    #[doc(hidden)]
    pub fn full_scan_steps(&self) -> u64 {
        let writes = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .scans;
        writes + self.inner.read_scans.load(Ordering::Relaxed)
    }
}

fn flush_due(state: &State) -> bool {
    let backing_off = state.failed_at.is_some_and(|t| t.elapsed() < FLUSH_AGE);
    !backing_off
        && (state.pending.events() >= FLUSH_EVENTS || state.last_flush.elapsed() >= FLUSH_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::sqlite::SWEEP_EVERY_MS;

    fn key(n: u64) -> CacheKey {
        crate::KeyBuilder::new("t").field_u64("n", n).finish()
    }

    fn config(dir: &std::path::Path) -> CacheConfig {
        let mut cfg = CacheConfig::new(dir);
        cfg.secret = Some(Secret::new(vec![1u8; 32]).expect("secret"));
        cfg
    }

    #[test]
    fn lookups_do_not_wait_for_a_writer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(tmp.path());
        cfg.memory_max_entries = 0;
        let cache = ResponseCache::open(cfg).expect("open");
        cache
            .put("x", &key(1), b"on disk", EntryMeta::default())
            .expect("put");
        // Another handle (another process, as far as SQLite knows) in the middle of a
        // write transaction.
        let other = ResponseCache::open(config(tmp.path())).expect("open");
        let held = other.inner.writer.lock().expect("writer");
        held.conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let (done, finished) = std::sync::mpsc::channel();
        let reader = cache.clone();
        std::thread::spawn(move || {
            let hit = reader.get("x", &key(1)).map(|e| e.payload.to_vec());
            let miss = reader.get("x", &key(2));
            let _ = done.send((hit, miss));
        });
        let (hit, miss) = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("lookups return while the write transaction is open");
        assert_eq!(hit.as_deref(), Some(&b"on disk"[..]));
        assert_eq!(miss, None);
        held.conn.execute_batch("ROLLBACK").expect("rollback");
        drop(held);
        assert_eq!(cache.stats().hits, 1, "the hit is counted");
    }

    /// The charged sizes are what the database really holds: summed over entries of
    /// sizes from a few bytes to several pages, they are within a fifth of the bytes of
    /// the database's used pages.
    #[test]
    fn charged_bytes_are_what_the_database_holds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = ResponseCache::open(config(tmp.path())).expect("open");
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut payload_bytes = 0;
        for chunk in 0..40u64 {
            let payloads: Vec<Vec<u8>> = (0..100)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Mostly answers of a few hundred bytes, some of several pages.
                    let len = if rng.is_multiple_of(10) {
                        rng % 20_000
                    } else {
                        200 + rng % 800
                    };
                    vec![(rng >> 8) as u8; len as usize]
                })
                .collect();
            payload_bytes += payloads.iter().map(Vec::len).sum::<usize>() as u64;
            let keys: Vec<CacheKey> = (0..100).map(|i| key(chunk * 100 + i)).collect();
            let puts: Vec<Put<'_>> = keys
                .iter()
                .zip(&payloads)
                .map(|(key, payload)| Put {
                    agent: "x",
                    key,
                    payload,
                    meta: EntryMeta::default(),
                })
                .collect();
            assert!(cache.put_many(&puts).iter().all(Result::is_ok));
        }
        let charged = cache.stats().bytes;
        let used = db::used_bytes(&cache.inner.writer.lock().expect("writer").conn).expect("used");
        let ratio = used as f64 / charged as f64;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "charged {charged} B, the database uses {used} B (payloads {payload_bytes} B)"
        );
    }

    /// Expired entries are swept by writes: a full step runs again at the next write,
    /// a sweep that found less waits [`SWEEP_EVERY_MS`], and none is skipped for longer.
    #[test]
    fn writes_sweep_expired_entries_at_a_pace() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000_000);
        let mut cfg = config(tmp.path());
        cfg.memory_max_entries = 0;
        let cache = ResponseCache::open_with_clock(cfg, Arc::new(clock.clone())).expect("open");
        let short = EntryMeta {
            ttl: Some(Duration::from_millis(10)),
            ..EntryMeta::default()
        };
        let n = SWEEP_STEP + 4;
        for i in 0..n {
            cache.put("x", &key(i), b"soon gone", short).expect("put");
        }
        let expirations = |cache: &ResponseCache| cache.stats().expirations;
        // (The first of those writes swept, finding nothing: the pace applies.)
        clock.advance(Duration::from_millis(SWEEP_EVERY_MS + 20));
        // All `n` expired: the first write sweeps a full step, the next the rest.
        cache
            .put("x", &key(1_000), b"a", EntryMeta::default())
            .expect("put");
        assert_eq!(expirations(&cache), SWEEP_STEP);
        cache
            .put("x", &key(1_001), b"b", EntryMeta::default())
            .expect("put");
        assert_eq!(expirations(&cache), n);
        // That sweep found less than a step: entries expiring now wait for the pace…
        cache.put("x", &key(2_000), b"c", short).expect("put");
        clock.advance(Duration::from_millis(20));
        cache
            .put("x", &key(1_002), b"d", EntryMeta::default())
            .expect("put");
        assert_eq!(
            expirations(&cache),
            n,
            "swept again within {SWEEP_EVERY_MS} ms"
        );
        // …and are swept by the first write after it (a lookup would have found it a
        // miss meanwhile, and had it removed: not done here, to see the sweep).
        clock.advance(Duration::from_millis(SWEEP_EVERY_MS));
        cache
            .put("x", &key(1_003), b"e", EntryMeta::default())
            .expect("put");
        assert_eq!(expirations(&cache), n + 1);
        assert_eq!(cache.stats().entries, 4);
    }

    #[test]
    fn the_hot_paths_never_scan() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000_000);
        let mut cfg = config(tmp.path());
        cfg.max_bytes = 50 * db::charged_size(100);
        cfg.memory_max_entries = 0;
        let cache = ResponseCache::open_with_clock(cfg, Arc::new(clock.clone())).expect("open");
        for n in 0..200 {
            clock.advance(Duration::from_millis(1));
            let ttl = (n % 3 == 0).then(|| Duration::from_millis(5));
            let meta = EntryMeta {
                ttl,
                ..EntryMeta::default()
            };
            cache.put("x", &key(n), &[n as u8; 100], meta).expect("put");
            cache.get("x", &key(n / 2));
            cache.get("x", &key(n + 1_000));
        }
        cache.flush().expect("flush");
        let stats = cache.stats();
        assert!(stats.evictions > 0 && stats.expirations > 0, "{stats:?}");
        assert!(stats.bytes <= stats.max_bytes, "{stats:?}");
        assert_eq!(cache.full_scan_steps(), 0);
        // The counter counts: an admin call that reads everything is not a hot path,
        // but the same query on the writer's connection is seen.
        let mut writer = cache.inner.writer.lock().expect("writer");
        let Writer { conn, scans, .. } = &mut *writer;
        crate::sqlite::counted(
            conn,
            scans,
            "SELECT COUNT(*) FROM bodies WHERE payload = x'00'",
            |s| s.query_row([], |r| r.get::<_, i64>(0)),
        )
        .expect("a scan");
        assert!(*scans > 0);
    }
}
