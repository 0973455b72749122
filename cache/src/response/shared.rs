//! The state shared by every process using one cache directory, and the protocol that
//! keeps each process's copy of it exact.
//!
//! A [`Locked`] session holds the handle's session mutex (the synced index) and the
//! directory's file lock; the state readers touch (memory layer, pending reads) has a
//! mutex of its own, taken only for moments, so a lookup never waits behind file I/O.
//! Opening one first syncs: it replays the journal records other processes appended
//! since this process last looked (or the whole journal, if it was compacted or cleared
//! meanwhile, or rebuilds it from the entry files if it is missing). Every change a
//! session makes is a record: [`Locked::push`] applies it to the index at once, so later
//! decisions in the same session see it, and [`Locked::write_out`] appends them all.
//! Since all processes apply the same records in the same order, their sizes and totals
//! agree; since file renames and removals happen under the same lock as their records,
//! those totals equal the files on disk.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Instant;

use super::entry::{self, OVERHEAD};
use super::index::Index;
#[cfg(test)]
use super::index::IndexEntry;
use super::journal::{self, CounterDelta, Record};
use super::memory::MemoryLayer;
use super::{CachedEntry, Inner};
use crate::error::Error;
use crate::files::{self, LockGuard, ReadOutcome};
use crate::key::CacheKey;

/// Compact when the journal holds more than `4 × entries + COMPACT_SLACK` records.
pub(crate) const COMPACT_SLACK: u64 = 16_384;

/// The index as of a journal position.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) index: Index,
    generation: u64,
    offset: u64,
    file_records: u64,
    /// The journal file's inode number as of `offset`, when known: the journal is
    /// unchanged since this index was synced if its inode and length still match.
    journal_ino: Option<u64>,
}

impl Shared {
    /// The journal's identity (inode, length) under which `key` is surely absent: this
    /// index lacks it and knows the journal as of its last sync. While the journal
    /// still has that identity no process has stored an entry since, for every entry
    /// is recorded before its file appears. `None` when this index cannot tell.
    pub(crate) fn absent_while(&self, key: &CacheKey) -> Option<(u64, u64)> {
        let ino = self.journal_ino?;
        self.index.get(key).is_none().then_some((ino, self.offset))
    }
}

/// One read not yet in the journal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingAccess {
    at_ms: u64,
    order: u64,
    hits: u64,
    size: u64,
    expires_ms: u64,
}

/// Reads and counters this process has not yet written to the journal.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    accesses: HashMap<CacheKey, PendingAccess>,
    pub(crate) counters: CounterDelta,
    events: u64,
    order: u64,
}

impl Pending {
    pub(crate) fn hit(&mut self, key: &CacheKey, entry: &CachedEntry, now_ms: u64) {
        self.order += 1;
        let order = self.order;
        let access = self.accesses.entry(*key).or_insert(PendingAccess {
            at_ms: now_ms,
            order,
            hits: 0,
            size: entry.payload.len() as u64 + OVERHEAD,
            expires_ms: entry.expires_ms,
        });
        access.at_ms = access.at_ms.max(now_ms);
        access.order = order;
        access.hits += 1;
        let c = &mut self.counters;
        c.hits += 1;
        c.tokens_saved = c.tokens_saved.saturating_add(entry.tokens);
        c.cost_saved_usd += entry.cost_usd.unwrap_or(0.0);
        self.events += 1;
    }

    /// A hit on an entry the caller served itself: counters only.
    pub(crate) fn counted_hit(&mut self, tokens: u64, cost_usd: Option<f64>) {
        let c = &mut self.counters;
        c.hits += 1;
        c.tokens_saved = c.tokens_saved.saturating_add(tokens);
        c.cost_saved_usd += cost_usd.unwrap_or(0.0);
        self.events += 1;
    }

    pub(crate) fn miss(&mut self) {
        self.counters.misses += 1;
        self.events += 1;
    }

    pub(crate) fn events(&self) -> u64 {
        self.events
    }
}

/// What lookups touch, behind the handle's state mutex (held for moments only).
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) memory: MemoryLayer,
    pub(crate) pending: Pending,
    pub(crate) last_flush: Instant,
}

/// A session holding the session mutex and the directory lock, synced with the journal.
/// Lock order: session mutex, directory lock, then the state mutex for moments.
pub(crate) struct Locked<'a> {
    inner: &'a Inner,
    pub(crate) shared: MutexGuard<'a, Option<Shared>>,
    outbox: Vec<Record>,
    _flock: LockGuard<'a>,
}

impl Inner {
    /// Takes the session mutex, then the directory lock, then syncs with the journal.
    pub(crate) fn locked(&self) -> Result<Locked<'_>, Error> {
        let shared = self.session();
        let flock = self
            .lock
            .lock()
            .map_err(|e| Error::io("locking the cache directory", e))?;
        let mut locked = Locked {
            inner: self,
            shared,
            outbox: Vec::new(),
            _flock: flock,
        };
        locked.sync()?;
        Ok(locked)
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if !self.outbox.is_empty() {
            // Changes applied to the index never reached the journal: forget the index,
            // the next session replays the journal, which is the truth.
            *self.shared = None;
        }
    }
}

impl Locked<'_> {
    /// The synced index.
    pub(crate) fn index(&self) -> &Index {
        &self
            .shared
            .as_ref()
            .expect("a session is synced when created and stays synced until dropped")
            .index
    }

    /// Applies `record` to the index (and drops the key from the memory layer if its
    /// file changed), and queues it for the journal.
    pub(crate) fn push(&mut self, record: Record) {
        if let Some(shared) = self.shared.as_mut()
            && let Some(changed) = shared.index.apply(&record)
        {
            self.inner.state().memory.remove(&changed);
        }
        self.outbox.push(record);
    }

    /// Appends the queued records to the journal, compacting it when it has grown.
    pub(crate) fn write_out(&mut self) -> Result<(), Error> {
        let fsync = self.inner.fsync();
        let Some(shared) = self.shared.as_mut() else {
            self.outbox.clear();
            return Ok(());
        };
        if self.outbox.is_empty() {
            return Ok(());
        }
        let dir = &self.inner.dir;
        shared.offset = journal::append(dir, shared.offset, &self.outbox, fsync)
            .map_err(|e| Error::io("appending to the cache journal", e))?;
        shared.file_records += self.outbox.len() as u64;
        self.outbox.clear();
        let slack = self
            .inner
            .compact_slack
            .load(std::sync::atomic::Ordering::Relaxed);
        if shared.file_records > 4 * shared.index.len() as u64 + slack {
            let snapshot = shared.index.snapshot();
            let (generation, offset) = journal::rewrite(dir, &snapshot, fsync)
                .map_err(|e| Error::io("compacting the cache journal", e))?;
            shared.generation = generation;
            shared.offset = offset;
            shared.file_records = snapshot.len() as u64;
            shared.journal_ino = None;
        }
        Ok(())
    }

    /// The journal generation this session is synced to.
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.generation)
    }

    /// The index entry of `key`.
    #[cfg(test)]
    pub(crate) fn entry(&self, key: &CacheKey) -> Option<IndexEntry> {
        self.index().get(key).copied()
    }

    /// Replaces the journal with an empty one (a new generation): for `clear`.
    pub(crate) fn reset(&mut self) -> Result<(), Error> {
        self.outbox.clear();
        let (generation, offset) = journal::rewrite(&self.inner.dir, &[], self.inner.fsync())
            .map_err(|e| Error::io("resetting the cache journal", e))?;
        *self.shared = Some(Shared {
            index: Index::default(),
            generation,
            offset,
            file_records: 0,
            journal_ino: None,
        });
        let mut state = self.inner.state();
        state.memory.clear();
        state.pending = Pending::default();
        Ok(())
    }

    /// Turns this process's pending reads and counters into records.
    pub(crate) fn flush_pending(&mut self) -> Result<(), Error> {
        let pending = {
            let mut state = self.inner.state();
            state.last_flush = Instant::now();
            std::mem::take(&mut state.pending)
        };
        let mut accesses: Vec<(CacheKey, PendingAccess)> = pending.accesses.into_iter().collect();
        accesses.sort_by_key(|(_, a)| (a.at_ms, a.order));
        for (key, access) in accesses {
            if self.index().get(&key).is_some() {
                self.push(Record::Access {
                    key,
                    at_ms: access.at_ms,
                    hits: access.hits,
                });
            } else if self.is_orphan(&key, access.size, access.expires_ms)? {
                // Served from a file the index did not know (a crash came between its
                // rename and its record): index it now.
                self.push(Record::Put {
                    key,
                    size: access.size,
                    expires_ms: access.expires_ms,
                    at_ms: access.at_ms,
                    hits: access.hits,
                });
            }
        }
        if !pending.counters.is_zero() {
            self.push(Record::Counters(pending.counters));
        }
        // An adopted orphan may have taken the cache over its limit.
        self.evict_to_limit(None)
    }

    /// Removes entries, expired ones first and then the least recently used, until the
    /// cache is within its size limit; never `keep`.
    pub(crate) fn evict_to_limit(&mut self, keep: Option<&CacheKey>) -> Result<(), Error> {
        let now = self.inner.clock.now_ms();
        let none = CacheKey::from_bytes([0; 32]);
        let keep = keep.unwrap_or(&none);
        while self.index().total_bytes() > self.inner.max_bytes {
            let Some((victim, reason)) = self.index().victim(now, keep) else {
                break;
            };
            files::remove_regular(&self.inner.dir, &entry::entry_name(&victim))
                .map_err(|e| Error::io("evicting an entry", e))?;
            self.push(Record::Remove {
                key: victim,
                reason,
            });
        }
        Ok(())
    }

    /// True if `key`'s entry file exists with this size and expiry but is not indexed.
    fn is_orphan(&self, key: &CacheKey, size: u64, expires_ms: u64) -> Result<bool, Error> {
        let name = entry::entry_name(key);
        let header = files::read_prefix(&self.inner.dir, &name, entry::HEADER_LEN as u64)
            .map_err(|e| Error::io("reading an entry header", e))?;
        let ReadOutcome::Data(header) = header else {
            return Ok(false);
        };
        let len = files::regular_len(&self.inner.dir, &name)
            .map_err(|e| Error::io("inspecting an entry", e))?;
        Ok(entry::frame(&header).is_some_and(|f| {
            f.key == *key && f.expires_ms == expires_ms && f.file_len == size && len == Some(size)
        }))
    }

    /// Brings the index up to date with the journal.
    fn sync(&mut self) -> Result<(), Error> {
        let dir = &self.inner.dir;
        let position = self.shared.as_ref().map(|s| (s.generation, s.offset));
        let read =
            journal::read(dir, position).map_err(|e| Error::io("reading the cache journal", e))?;
        let tail = match read {
            journal::Scan::Records(tail) => tail,
            journal::Scan::Missing | journal::Scan::Unreadable => return self.rebuild(),
        };
        if tail.file_len > tail.valid_end {
            tracing::warn!(
                torn_bytes = tail.file_len - tail.valid_end,
                "cutting a torn tail off the cache journal"
            );
            journal::truncate(dir, tail.valid_end)
                .map_err(|e| Error::io("repairing the cache journal", e))?;
        }
        match self.shared.as_mut() {
            Some(shared) if !tail.from_start => {
                let changed: Vec<CacheKey> = tail
                    .records
                    .iter()
                    .filter_map(|record| shared.index.apply(record))
                    .collect();
                if !changed.is_empty() {
                    let mut state = self.inner.state();
                    for key in &changed {
                        state.memory.remove(key);
                    }
                }
                shared.offset = tail.valid_end;
                shared.file_records += tail.records.len() as u64;
                shared.journal_ino = Some(tail.ino);
            }
            _ => {
                let index = Index::replay(&tail.records);
                self.install(
                    index,
                    tail.generation,
                    tail.valid_end,
                    tail.records.len() as u64,
                    Some(tail.ino),
                );
            }
        }
        Ok(())
    }

    /// Installs a freshly replayed index, keeping only memory entries it agrees with.
    fn install(
        &mut self,
        index: Index,
        generation: u64,
        offset: u64,
        file_records: u64,
        journal_ino: Option<u64>,
    ) {
        self.inner.state().memory.retain(|key, cached| {
            index.get(key).is_some_and(|e| {
                e.expires_ms == cached.expires_ms
                    && e.size == cached.payload.len() as u64 + OVERHEAD
            })
        });
        *self.shared = Some(Shared {
            index,
            generation,
            offset,
            file_records,
            journal_ino,
        });
    }

    /// Rebuilds the journal from the entry files' headers (no journal yet, or one that
    /// is not ours). Expensive for a large directory; happens once.
    fn rebuild(&mut self) -> Result<(), Error> {
        let dir = &self.inner.dir;
        let mut found: Vec<(u64, Record)> = Vec::new();
        let items = dir
            .entries()
            .map_err(|e| Error::io("listing the cache directory", e))?;
        for item in items {
            let item = item.map_err(|e| Error::io("listing the cache directory", e))?;
            let name = item.file_name();
            let Some(key) = name.to_str().and_then(entry::parse_entry_name) else {
                continue;
            };
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let header =
                files::read_prefix(dir, &entry::entry_name(&key), entry::HEADER_LEN as u64)
                    .map_err(|e| Error::io("reading an entry header", e))?;
            let ReadOutcome::Data(header) = header else {
                continue;
            };
            match entry::frame(&header) {
                Some(f) if f.key == key && f.file_len == meta.len() => found.push((
                    f.created_ms,
                    Record::Put {
                        key,
                        size: f.file_len,
                        expires_ms: f.expires_ms,
                        at_ms: f.created_ms,
                        hits: 0,
                    },
                )),
                // A bad entry is left for `get` or `verify` to judge with the secret.
                _ => {}
            }
        }
        found.sort_by_key(|(created, _)| *created);
        let records: Vec<Record> = found.into_iter().map(|(_, r)| r).collect();
        if !records.is_empty() {
            tracing::info!(
                entries = records.len(),
                "rebuilt the cache journal from its entry files"
            );
        }
        let (generation, offset) = journal::rewrite(dir, &records, self.inner.fsync())
            .map_err(|e| Error::io("writing the cache journal", e))?;
        self.install(
            Index::replay(&records),
            generation,
            offset,
            records.len() as u64,
            None,
        );
        Ok(())
    }
}
