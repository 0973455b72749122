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

/// Reads and counters this process has not yet written to the database.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    accesses: HashMap<CacheKey, Access>,
    pub(crate) counts: Counts,
    events: u64,
}

impl Pending {
    pub(crate) fn hit(&mut self, key: &CacheKey, entry: &CachedEntry, now_ms: u64) {
        let recent = now_ms < entry.used_ms.saturating_add(super::LRU_RESOLUTION_MS);
        if recent && !self.accesses.contains_key(key) {
            // Its recorded last use is recent enough: the totals only.
            self.counted_hit(entry.tokens, entry.cost_usd);
            return;
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
        tx.add(&self.counts)
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
}
