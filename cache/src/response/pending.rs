//! Reads this process has not yet written to the database: hits and last-access times
//! per entry, and the counters. Recording every read in its own transaction would put
//! a database write on every cache hit; they are written in one transaction every
//! [`FLUSH_EVENTS`](super::FLUSH_EVENTS) lookups, every [`FLUSH_AGE`](super::FLUSH_AGE)
//! of activity, and with every other write.

use std::collections::HashMap;
use std::time::Instant;

use super::CachedEntry;
use super::db::{Counts, Tx};
use super::memory::MemoryLayer;
use crate::key::CacheKey;

/// Reads of one value not yet written.
#[derive(Debug, Clone, Copy)]
struct Access {
    seq: u64,
    at_ms: u64,
    hits: u64,
}

/// Why a lookup found a value to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Past its expiry.
    Expired,
    /// Failed its check (`None`: its index row itself is damaged).
    Bad,
}

/// Reads and counters this process has not yet written to the database, and values
/// lookups found expired or bad: a lookup runs on its caller's thread and never waits
/// for a write transaction, so it leaves their removal to the next one.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    accesses: HashMap<CacheKey, Access>,
    removals: HashMap<CacheKey, (Option<u64>, Removal)>,
    pub(crate) counts: Counts,
    events: u64,
}

impl Pending {
    /// A hit; true if it is to be recorded as the entry's last use (false when the
    /// recorded one is less than a minute old: the totals only).
    pub(crate) fn hit(&mut self, key: &CacheKey, entry: &CachedEntry, now_ms: u64) -> bool {
        let recent = now_ms < entry.used_ms.saturating_add(super::LRU_RESOLUTION_MS);
        if recent && !self.accesses.contains_key(key) {
            self.counted_hit(entry.tokens, entry.cost_usd);
            return false;
        }
        let access = self.accesses.entry(*key).or_insert(Access {
            seq: entry.seq,
            at_ms: now_ms,
            hits: 0,
        });
        if access.seq != entry.seq {
            // A newer value of the key: reads of the old one no longer matter.
            *access = Access {
                seq: entry.seq,
                at_ms: now_ms,
                hits: 0,
            };
        }
        access.at_ms = access.at_ms.max(now_ms);
        access.hits += 1;
        self.counted_hit(entry.tokens, entry.cost_usd);
        true
    }

    /// A value `seq` of `key` (any value of it for `None`) that a lookup found to be
    /// removed; a miss.
    pub(crate) fn remove(&mut self, key: &CacheKey, seq: Option<u64>, why: Removal) {
        self.removals.insert(*key, (seq, why));
        self.miss();
    }

    /// A hit on an entry the caller served itself: counters only.
    pub(crate) fn counted_hit(&mut self, tokens: u64, cost_usd: Option<f64>) {
        let c = &mut self.counts;
        c.hits += 1;
        c.tokens_saved = c.tokens_saved.saturating_add(tokens);
        c.cost_saved_usd += cost_usd.unwrap_or(0.0);
        self.events += 1;
    }

    pub(crate) fn miss(&mut self) {
        self.counts.misses += 1;
        self.events += 1;
    }

    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Writes these reads in `tx`. Reads of a value that was replaced or removed since
    /// are dropped (their hits still count in the totals).
    pub(crate) fn write(&self, tx: &mut Tx<'_>) -> rusqlite::Result<()> {
        for (key, a) in &self.accesses {
            tx.record_reads(key, a.seq, a.at_ms, a.hits)?;
        }
        let mut counts = self.counts;
        // Only what is still there counts: another handle may have removed or replaced
        // it since (a value's expiry is part of its write, so `seq` names it exactly).
        for (key, &(seq, why)) in &self.removals {
            if tx.remove_value(key, seq)? {
                match why {
                    Removal::Expired => counts.expirations += 1,
                    Removal::Bad => counts.integrity_failures += 1,
                }
            }
        }
        tx.add(&counts)
    }

    /// Puts back reads taken for a transaction that failed, so that none is lost.
    pub(crate) fn restore(&mut self, taken: Pending) {
        for (key, a) in taken.accesses {
            let mine = self.accesses.entry(key).or_insert(Access { hits: 0, ..a });
            if mine.seq == a.seq {
                mine.at_ms = mine.at_ms.max(a.at_ms);
                mine.hits += a.hits;
            }
        }
        for (key, removal) in taken.removals {
            self.removals.entry(key).or_insert(removal);
        }
        let (c, t) = (&mut self.counts, taken.counts);
        c.hits += t.hits;
        c.misses += t.misses;
        c.tokens_saved = c.tokens_saved.saturating_add(t.tokens_saved);
        c.cost_saved_usd += t.cost_saved_usd;
        self.events += taken.events;
    }
}

/// What lookups touch, behind the handle's state mutex (held for moments only).
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) memory: MemoryLayer,
    pub(crate) pending: Pending,
    pub(crate) last_flush: Instant,
    /// When the last write of the pending reads failed: the next attempt waits
    /// [`FLUSH_AGE`](super::FLUSH_AGE), not the next lookup.
    pub(crate) failed_at: Option<Instant>,
}
