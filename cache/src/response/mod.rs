//! The LLM response cache: [`ResponseCache`].
//!
//! Modules: `entry` (file format and HMAC), `journal` (the shared index log), `index`
//! (the in-memory index with LRU and expiry order), `memory` (the in-process layer),
//! `shared` (the locking and sync protocol between processes), `admin` (verify, prune,
//! clear).

mod admin;
pub(crate) mod entry;
mod index;
mod journal;
mod memory;
mod shared;

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use cap_std::fs::Dir;

use crate::clock::{Clock, SystemClock, duration_ms, ms_to_time};
use crate::config::{CacheConfig, Durability};
use crate::error::Error;
use crate::files::{self, LockFile, ReadOutcome};
use crate::key::CacheKey;
use crate::private;
use crate::secret::{self, Secret};
use crate::stats::Stats;
use entry::{Fault, OVERHEAD};
use journal::{Record, RemoveReason};
use memory::MemoryLayer;
use shared::{Pending, State};

/// Name of the lock file in the cache directory.
const LOCK_NAME: &str = "cache.lock";
/// Flush pending reads to the journal after this many lookups…
const FLUSH_EVENTS: u64 = 1024;
/// …or when the last flush is this old.
const FLUSH_AGE: Duration = Duration::from_secs(2);

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

/// An entry written to its temp file, waiting to be renamed into place.
struct Staged {
    tmp: String,
    size: u64,
    meta: entry::Meta,
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
}

impl CachedEntry {
    pub(crate) fn new(
        payload: Arc<[u8]>,
        tokens: u64,
        cost_usd: Option<f64>,
        created_ms: u64,
        expires_ms: u64,
    ) -> Self {
        Self {
            payload,
            tokens,
            cost_usd,
            created_ms,
            expires_ms,
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
    /// Length of the entry file in bytes (payload plus 120 bytes of header and MAC).
    pub size: u64,
    /// Times it was served, over all processes and restarts.
    pub hits: u64,
    /// Last time it was served (or stored), over all processes and restarts.
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

impl ResponseCache {
    /// The cache directory, for the fuzzing harness to plant entry files in.
    pub(crate) fn dir(&self) -> &Dir {
        &self.inner.dir
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: Dir,
    lock: LockFile,
    secret: Secret,
    ttl_ms: u64,
    max_bytes: u64,
    durability: Durability,
    exclude: HashSet<String>,
    clock: Arc<dyn Clock>,
    /// The memory layer and pending reads: held for moments, never across file I/O.
    state: Mutex<State>,
    /// The index synced with the journal: held for a whole locked session.
    session: Mutex<Option<shared::Shared>>,
    /// [`shared::COMPACT_SLACK`], lowered by tests to exercise compaction.
    compact_slack: std::sync::atomic::AtomicU64,
}

/// What reading an entry file found.
enum Lookup {
    Absent,
    Valid(CachedEntry),
    Bad(Fault),
    /// Larger than the size limit: written under a larger limit.
    Oversize,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn session(&self) -> MutexGuard<'_, Option<shared::Shared>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True if `key` is surely not on disk, known without touching the directory: this
    /// handle's index is synced, lacks the key, and the journal has not changed since
    /// (one `stat`). A lookup of a missing file takes the directory's lock in the
    /// kernel, and waits there behind file creations; most lookups in a batch of new
    /// requests are misses. Never waits for the session mutex: when a session holds
    /// it, the answer is "not known".
    fn known_absent(&self, key: &CacheKey) -> bool {
        let Ok(session) = self.session.try_lock() else {
            return false;
        };
        let Some(expected) = session.as_ref().and_then(|s| s.absent_while(key)) else {
            return false;
        };
        drop(session);
        // Any append or replacement since the index saw the journal changes this.
        journal::identity(&self.dir).is_ok_and(|now| now == expected)
    }

    fn fsync(&self) -> bool {
        self.durability == Durability::Fsync
    }

    fn read_entry(&self, key: &CacheKey) -> io::Result<Lookup> {
        let name = entry::entry_name(key);
        let data = match files::read_regular(&self.dir, &name, self.max_bytes)? {
            ReadOutcome::Missing | ReadOutcome::NotRegular => return Ok(Lookup::Absent),
            ReadOutcome::TooLong(_) => return Ok(Lookup::Oversize),
            ReadOutcome::Data(data) => data,
        };
        Ok(match entry::open(&self.secret, key, &data) {
            Ok(opened) => Lookup::Valid(CachedEntry::new(
                Arc::from(&data[opened.payload]),
                opened.meta.tokens,
                opened.meta.cost_usd,
                opened.meta.created_ms,
                opened.meta.expires_ms,
            )),
            Err(fault) => Lookup::Bad(fault),
        })
    }

    /// Removes `key`'s file for `reason` if, re-read under the lock, the reason still
    /// holds: another process may have replaced the file since it was read.
    fn remove_checked(&self, key: &CacheKey, reason: RemoveReason) -> Result<(), Error> {
        let mut locked = self.locked()?;
        let now = self.clock.now_ms();
        let lookup = self
            .read_entry(key)
            .map_err(|e| Error::io("re-reading an entry", e))?;
        let still = match (&lookup, reason) {
            (Lookup::Valid(entry), RemoveReason::Expired) => entry.expires_ms <= now,
            (Lookup::Bad(_), RemoveReason::Integrity)
            | (Lookup::Oversize, RemoveReason::Evicted) => true,
            _ => false,
        };
        if still {
            files::remove_regular(&self.dir, &entry::entry_name(key))
                .map_err(|e| Error::io("removing an entry", e))?;
            locked.push(Record::Remove { key: *key, reason });
        } else if matches!(lookup, Lookup::Absent) && locked.index().get(key).is_some() {
            locked.push(Record::Remove {
                key: *key,
                reason: RemoveReason::Dropped,
            });
        }
        locked.write_out()
    }

    fn flush(&self) -> Result<(), Error> {
        if self.state().pending.events() == 0 {
            // Nothing to record: no need to take the lock and load the index.
            return Ok(());
        }
        let mut locked = self.locked()?;
        locked.flush_pending()?;
        locked.write_out()
    }

    /// Statistics from a synced index (if any) and this process's pending counters.
    fn stats_from(&self, shared: Option<&shared::Shared>) -> Stats {
        let mut stats = Stats::default();
        if let Some(shared) = shared {
            let t = shared.index.totals();
            stats = Stats {
                hits: t.hits,
                misses: t.misses,
                evictions: t.evictions,
                expirations: t.expirations,
                integrity_failures: t.integrity_failures,
                entries: shared.index.len() as u64,
                bytes: shared.index.total_bytes(),
                tokens_saved: t.tokens_saved,
                cost_saved_usd: t.cost_saved_usd,
                ..stats
            };
        }
        let state = self.state();
        let (c, memory) = (&state.pending.counters, &state.memory);
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
        stats
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pending = self.state().pending.events();
        if pending > 0
            && let Err(e) = self.flush()
        {
            tracing::warn!(error = %e, "could not record the cache's last reads");
        }
    }
}

impl ResponseCache {
    /// Opens (creating if missing) the cache directory of `cfg`.
    ///
    /// Opening is O(1) in the number of entries: it opens the directory, the lock file
    /// and the secret, nothing else. The index is loaded from the journal by the first
    /// operation that needs it (a `put`, `stats` or an admin call; a `get` reads the
    /// entry file directly).
    pub fn open(cfg: CacheConfig) -> Result<Self, Error> {
        Self::open_with_clock(cfg, Arc::new(SystemClock))
    }

    /// [`ResponseCache::open`] with another time source (tests, simulations).
    pub fn open_with_clock(cfg: CacheConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        cfg.validate()?;
        let context = |step: &str| format!("{step} the cache directory {}", cfg.dir.display());
        let dir = private::open_dir(&cfg.dir)?;
        let lock = LockFile::open(&dir, LOCK_NAME).map_err(|e| Error::io(context("locking"), e))?;
        let secret = match cfg.secret {
            Some(secret) => secret,
            None => secret::load_or_create(&dir, &cfg.dir)?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                lock,
                secret,
                ttl_ms: duration_ms(cfg.ttl),
                max_bytes: cfg.max_bytes,
                durability: cfg.durability,
                exclude: cfg.exclude_agents.into_iter().collect(),
                clock,
                state: Mutex::new(State {
                    memory: MemoryLayer::new(cfg.memory_max_entries, cfg.memory_max_bytes),
                    pending: Pending::default(),
                    last_flush: Instant::now(),
                }),
                session: Mutex::new(None),
                compact_slack: std::sync::atomic::AtomicU64::new(shared::COMPACT_SLACK),
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
    /// An expired entry is removed; an entry that fails its HMAC, length or key check
    /// is removed and counted in [`Stats::integrity_failures`]. Both are misses. I/O
    /// errors are logged and are misses too: a cache failure must not fail the call.
    ///
    /// A miss is decided without reading the directory when this handle's index is
    /// synced, lacks `key`, and the journal has not changed since (entries are
    /// recorded before their files appear). A file the journal does not know (copied
    /// in by hand) is therefore read only by a handle whose index is not current, and
    /// indexed by `verify(true)`.
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
                    state.pending.hit(key, &entry, now);
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
        let lookup = if inner.known_absent(key) {
            Ok(Lookup::Absent)
        } else {
            inner.read_entry(key)
        };
        let outcome = match lookup {
            Ok(Lookup::Valid(entry)) if entry.expires_ms > now => {
                self.note(|state| {
                    state.pending.hit(key, &entry, now);
                    state.memory.insert(*key, entry.clone());
                });
                return Some(entry);
            }
            Ok(Lookup::Valid(_)) => inner.remove_checked(key, RemoveReason::Expired),
            Ok(Lookup::Bad(fault)) => {
                tracing::warn!(key = %key, fault = fault.describe(), "removing a cache entry that failed its integrity check");
                inner.remove_checked(key, RemoveReason::Integrity)
            }
            Ok(Lookup::Oversize) => inner.remove_checked(key, RemoveReason::Evicted),
            Ok(Lookup::Absent) => Ok(()),
            Err(e) => Err(Error::io("reading an entry", e)),
        };
        if let Err(e) = outcome {
            tracing::warn!(key = %key, error = %e, "cache lookup failed; treated as a miss");
        }
        self.note(|state| state.pending.miss());
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

    /// Flushes pending reads if `due`; a failure is logged, never returned to a reader.
    fn flush_if_due(&self, due: bool) {
        if due && let Err(e) = self.inner.flush() {
            tracing::warn!(error = %e, "could not record cache reads");
        }
    }

    /// Stores `payload` under `key`, evicting least recently used entries (expired ones
    /// first) to stay under [`CacheConfig::max_bytes`]. For an excluded agent: does
    /// nothing. [`Error::TooLarge`] if the entry alone exceeds the size limit.
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
    /// with one turn of the directory lock and one journal append for all of them (a
    /// group commit): each entry file is written outside the lock, then all are renamed
    /// into place and recorded together. A failed entry does not stop the others.
    pub fn put_many(&self, puts: &[Put<'_>]) -> Vec<Result<(), Error>> {
        let inner = &*self.inner;
        let now = inner.clock.now_ms();
        let mut results: Vec<Result<(), Error>> = Vec::with_capacity(puts.len());
        let mut staged = Vec::with_capacity(puts.len());
        for (i, put) in puts.iter().enumerate() {
            match self.stage(put, now) {
                Ok(Some(s)) => {
                    staged.push((i, s));
                    results.push(Ok(()));
                }
                Ok(None) => results.push(Ok(())),
                Err(e) => results.push(Err(e)),
            }
        }
        if staged.is_empty() {
            return results;
        }
        // Records first, files second: a crash in between leaves records whose file is
        // missing (a miss, dropped from the index when read), never a file the journal
        // does not know. So an unchanged journal proves that no entry appeared, which
        // lets `get` answer a miss without touching the directory.
        let installed = inner.locked().and_then(|mut locked| {
            locked.flush_pending()?;
            for (i, s) in &staged {
                locked.push(Record::Put {
                    key: *puts[*i].key,
                    size: s.size,
                    expires_ms: s.meta.expires_ms,
                    at_ms: now,
                    hits: 0,
                });
            }
            let last = staged.last().map(|(i, _)| puts[*i].key);
            locked.evict_to_limit(last)?;
            locked.write_out()?;
            let mut installed = vec![false; puts.len()];
            for (i, s) in &staged {
                let key = puts[*i].key;
                let ours = locked
                    .index()
                    .get(key)
                    .is_some_and(|e| e.size == s.size && e.expires_ms == s.meta.expires_ms);
                if !ours {
                    // Evicted in this session, or replaced by a later entry of the
                    // group: its file goes.
                    let _ = inner.dir.remove_file(&s.tmp);
                    continue;
                }
                let name = entry::entry_name(key);
                match files::rename_into_place(&inner.dir, &s.tmp, &name, inner.fsync()) {
                    Ok(()) => installed[*i] = true,
                    Err(e) => {
                        results[*i] = Err(Error::io("installing an entry", e));
                        locked.push(Record::Remove {
                            key: *key,
                            reason: RemoveReason::Dropped,
                        });
                    }
                }
            }
            locked.write_out()?;
            // Into the memory layer: what was installed.
            let mut state = inner.state();
            for (i, s) in staged.iter().filter(|(i, _)| installed[*i]) {
                let cached = CachedEntry::new(
                    Arc::from(puts[*i].payload),
                    s.meta.tokens,
                    s.meta.cost_usd,
                    now,
                    s.meta.expires_ms,
                );
                state.memory.insert(*puts[*i].key, cached);
            }
            Ok(())
        });
        if let Err(e) = installed {
            for (i, s) in &staged {
                // A failure before the renames leaves only temp files, which go; one
                // after them leaves records the next sync reads.
                let _ = inner.dir.remove_file(&s.tmp);
                results[*i] = Err(e.duplicate());
            }
        }
        results
    }

    /// Checks one entry and writes it to a temp file; `None` when nothing is to be stored.
    fn stage(&self, put: &Put<'_>, now: u64) -> Result<Option<Staged>, Error> {
        let inner = &*self.inner;
        let Put {
            agent,
            key,
            payload,
            meta,
        } = *put;
        if self.is_excluded(agent) || meta.ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Ok(None);
        }
        let size = payload.len() as u64 + OVERHEAD;
        if size > inner.max_bytes {
            return Err(Error::TooLarge(format!(
                "an entry of {size} bytes exceeds the cache's limit of {} bytes",
                inner.max_bytes
            )));
        }
        let ttl_ms = meta.ttl.map_or(inner.ttl_ms, duration_ms);
        let sealed_meta = entry::Meta {
            created_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            tokens: meta.tokens,
            cost_usd: meta.cost_usd.filter(|c| c.is_finite() && *c >= 0.0),
        };
        let (header, mac) = entry::seal(&inner.secret, key, &sealed_meta, payload);
        let nonce = files::random_hex(8).map_err(|e| Error::io("naming a temp file", e))?;
        let tmp = entry::tmp_name(key, &nonce);
        files::write_new(&inner.dir, &tmp, &[&header, payload, &mac], inner.fsync())
            .map_err(|e| Error::io("writing an entry", e))?;
        Ok(Some(Staged {
            tmp,
            size,
            meta: sealed_meta,
        }))
    }

    /// Writes this process's pending reads (hits, last access) and counters to the shared
    /// journal. Done automatically every 1024 lookups, every 2 s of activity, on every
    /// `put`, `stats` and admin call, and when the last handle is dropped.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.flush()
    }

    /// Counters of the directory over all processes, after flushing this one's.
    /// If the journal cannot be read, logs why and returns what this process knows.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let synced = inner.locked().and_then(|mut locked| {
            locked.flush_pending()?;
            locked.write_out()?;
            Ok(inner.stats_from(locked.shared.as_ref()))
        });
        synced.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cache statistics may be stale");
            inner.stats_from(inner.session().as_ref())
        })
    }

    /// What the shared index knows of `key`, after flushing this process's reads.
    pub fn entry_info(&self, key: &CacheKey) -> Result<Option<EntryInfo>, Error> {
        let mut locked = self.inner.locked()?;
        locked.flush_pending()?;
        locked.write_out()?;
        Ok(locked.index().get(key).map(|e| EntryInfo {
            size: e.size,
            hits: e.hits,
            last_access: ms_to_time(e.last_access_ms),
            expires: ms_to_time(e.expires_ms),
        }))
    }
}

fn flush_due(state: &State) -> bool {
    state.pending.events() >= FLUSH_EVENTS || state.last_flush.elapsed() >= FLUSH_AGE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::Ordering;

    fn key(n: u64) -> CacheKey {
        crate::KeyBuilder::new("t").field_u64("n", n).finish()
    }

    fn open(dir: &std::path::Path, clock: &ManualClock) -> ResponseCache {
        let mut cfg = CacheConfig::new(dir);
        cfg.secret = Some(Secret::new(vec![1u8; 32]).expect("secret"));
        cfg.max_bytes = 20 * (100 + OVERHEAD);
        cfg.memory_max_entries = 0;
        let cache = ResponseCache::open_with_clock(cfg, Arc::new(clock.clone())).expect("open");
        cache.inner.compact_slack.store(8, Ordering::Relaxed);
        cache
    }

    fn generation(cache: &ResponseCache) -> u64 {
        cache.inner.locked().expect("locked").generation()
    }

    #[test]
    fn lookups_do_not_wait_for_a_session_doing_file_io() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cfg = CacheConfig::new(tmp.path());
        cfg.secret = Some(Secret::new(vec![1u8; 32]).expect("secret"));
        let cache = ResponseCache::open(cfg).expect("open");
        cache
            .put("x", &key(1), b"in memory", EntryMeta::default())
            .expect("put");
        cache.flush().expect("flush");
        // A writer (in this process) in the middle of a locked session.
        let session = cache.inner.locked().expect("locked");
        let (done, finished) = std::sync::mpsc::channel();
        let reader = cache.clone();
        std::thread::spawn(move || {
            let hit = reader.get("x", &key(1)).map(|e| e.payload.to_vec());
            let miss = reader.get("x", &key(2));
            let _ = done.send((hit, miss));
        });
        let (hit, miss) = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("lookups return while the session is held");
        assert_eq!(hit.as_deref(), Some(&b"in memory"[..]));
        assert_eq!(miss, None);
        drop(session);
        assert_eq!(cache.stats().hits, 1, "the hit is counted");
    }

    #[test]
    fn compaction_keeps_the_index_and_other_handles_follow_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000_000);
        let a = open(tmp.path(), &clock);
        let b = open(tmp.path(), &clock);
        let first = generation(&a);
        for n in 0..60 {
            clock.advance(Duration::from_millis(1));
            a.put("x", &key(n), &[n as u8; 100], EntryMeta::default())
                .expect("put");
            assert!(b.get("x", &key(n)).is_some());
            b.flush().expect("flush");
        }
        assert_ne!(generation(&a), first, "the journal was compacted");
        let journal_len = std::fs::metadata(tmp.path().join(journal::JOURNAL_NAME))
            .expect("journal")
            .len();
        assert!(
            journal_len < journal::HEADER_LEN + 200 * journal::RECORD_LEN as u64,
            "{journal_len}"
        );
        // Both handles agree with each other and with the files.
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(
            (sa.entries, sa.bytes, sa.hits),
            (sb.entries, sb.bytes, sb.hits)
        );
        assert_eq!((sa.entries, sa.evictions, sa.hits), (20, 40, 60));
        let on_disk = std::fs::read_dir(tmp.path())
            .expect("read_dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cfe"))
            .count();
        assert_eq!(on_disk, 20);
        // Hit counts and last access survive compaction.
        let info = a.entry_info(&key(59)).expect("info").expect("indexed");
        assert_eq!(info.hits, 1);
        let locked = a.inner.locked().expect("locked");
        let entry = locked.entry(&key(59)).expect("entry");
        assert_eq!(entry.last_access_ms, 1_000_060);
    }

    #[test]
    fn a_failed_write_out_makes_the_next_session_replay_the_journal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000_000);
        let cache = open(tmp.path(), &clock);
        cache
            .put("x", &key(1), &[1; 100], EntryMeta::default())
            .expect("put");
        {
            let mut locked = cache.inner.locked().expect("locked");
            // A change applied to the index but never written out…
            locked.push(Record::Remove {
                key: key(1),
                reason: RemoveReason::Dropped,
            });
            assert!(locked.entry(&key(1)).is_none());
        }
        // …is forgotten: the journal still has the entry.
        assert_eq!(cache.stats().entries, 1);
    }
}
