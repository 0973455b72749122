//! The in-memory index of the cache directory: sizes, expiry and last access of every
//! entry, kept in three structures so that each operation is O(log n): a hash map by
//! key, an ordered map by (last access, sequence) for LRU eviction, and an ordered map
//! by (expiry, sequence) for pruning. A full replay fills the hash map alone and then
//! bulk-builds the ordered maps from sorted runs, which is several times faster than
//! inserting record by record.
//!
//! The index changes only by [`Index::apply`] of journal records, in journal order, so
//! every process that replays the same journal holds the same sizes and totals.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use super::journal::{CounterDelta, Record, RemoveReason};
use crate::key::CacheKey;

/// What the index knows of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Length of the entry file.
    pub(crate) size: u64,
    pub(crate) expires_ms: u64,
    pub(crate) last_access_ms: u64,
    /// Order of the last access among accesses in the same millisecond.
    pub(crate) seq: u64,
    pub(crate) hits: u64,
}

/// Persistent counters, summed from `Counters` and `Remove` records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Totals {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) evictions: u64,
    pub(crate) expirations: u64,
    pub(crate) integrity_failures: u64,
    pub(crate) tokens_saved: u64,
    pub(crate) cost_saved_usd: f64,
}

/// Hashes a [`CacheKey`] (already a SHA-256 digest) by one keyed multiply of its first
/// eight bytes: much cheaper than SipHash over 32 bytes. The per-process random seed
/// keeps bucket positions unpredictable to whoever chooses the requests.
#[derive(Debug, Clone, Copy)]
struct DigestHash {
    seed: u64,
}

impl Default for DigestHash {
    fn default() -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1,
        }
    }
}

impl BuildHasher for DigestHash {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            seed: self.seed,
            state: 0,
        }
    }
}

#[derive(Debug)]
struct DigestHasher {
    seed: u64,
    state: u64,
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The first eight bytes are enough: a digest's bytes are uniformly distributed.
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.state ^= u64::from_le_bytes(word);
    }

    fn finish(&self) -> u64 {
        let product = u128::from(self.state ^ self.seed) * u128::from(0x9e37_79b9_7f4a_7c15_u64);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

/// The index.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: HashMap<CacheKey, IndexEntry, DigestHash>,
    lru: BTreeMap<(u64, u64), CacheKey>,
    by_expiry: BTreeMap<(u64, u64), CacheKey>,
    total_bytes: u64,
    totals: Totals,
    next_seq: u64,
    /// During [`Index::replay`]: only the hash map is maintained.
    bulk: bool,
}

impl Index {
    /// The index that `records` build from empty.
    pub(crate) fn replay(records: &[Record]) -> Self {
        let mut index = Self {
            bulk: true,
            ..Self::default()
        };
        index.entries.reserve(records.len());
        for record in records {
            index.apply(record);
        }
        index.bulk = false;
        // Live entries in the order of their last placement (a counting sort by their
        // unique sequence numbers). A snapshot is written in LRU order, so both sort keys
        // then arrive almost sorted and the ordered maps build in near-linear time.
        let mut by_seq: Vec<Option<(CacheKey, u64, u64)>> = vec![None; index.next_seq as usize + 1];
        for (key, e) in &index.entries {
            by_seq[e.seq as usize] = Some((*key, e.last_access_ms, e.expires_ms));
        }
        let live: Vec<(CacheKey, u64, u64, u64)> = by_seq
            .into_iter()
            .enumerate()
            .filter_map(|(seq, slot)| {
                slot.map(|(key, last, expires)| (key, seq as u64, last, expires))
            })
            .collect();
        index.lru = live
            .iter()
            .map(|(key, seq, last, _)| ((*last, *seq), *key))
            .collect();
        index.by_expiry = live
            .iter()
            .map(|(key, seq, _, expires)| ((*expires, *seq), *key))
            .collect();
        index
    }

    pub(crate) fn get(&self, key: &CacheKey) -> Option<&IndexEntry> {
        self.entries.get(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub(crate) fn totals(&self) -> Totals {
        self.totals
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &CacheKey> {
        self.entries.keys()
    }

    /// Applies one record; returns the key whose file changed or went away, if any.
    pub(crate) fn apply(&mut self, record: &Record) -> Option<CacheKey> {
        match *record {
            Record::Put {
                key,
                size,
                expires_ms,
                at_ms,
                hits,
            } => {
                let seq = self.bump();
                let entry = IndexEntry {
                    size,
                    expires_ms,
                    last_access_ms: at_ms,
                    seq,
                    hits,
                };
                if self.bulk {
                    // One hash probe instead of two: the ordered maps come later.
                    self.total_bytes += size;
                    if let Some(old) = self.entries.insert(key, entry) {
                        self.total_bytes -= old.size;
                    }
                } else {
                    self.remove(&key);
                    self.insert(key, entry);
                }
                Some(key)
            }
            Record::Access { key, at_ms, hits } => {
                if let Some(mut entry) = self.remove(&key) {
                    entry.last_access_ms = entry.last_access_ms.max(at_ms);
                    entry.seq = self.bump();
                    entry.hits = entry.hits.saturating_add(hits);
                    self.insert(key, entry);
                }
                None
            }
            Record::Remove { key, reason } => {
                let t = &mut self.totals;
                match reason {
                    RemoveReason::Evicted => t.evictions += 1,
                    RemoveReason::Expired => t.expirations += 1,
                    RemoveReason::Integrity => t.integrity_failures += 1,
                    RemoveReason::Dropped => {}
                }
                self.remove(&key);
                Some(key)
            }
            Record::Counters(d) => {
                self.add(d);
                None
            }
        }
    }

    fn add(&mut self, d: CounterDelta) {
        let t = &mut self.totals;
        t.hits = t.hits.saturating_add(d.hits);
        t.misses = t.misses.saturating_add(d.misses);
        t.tokens_saved = t.tokens_saved.saturating_add(d.tokens_saved);
        t.cost_saved_usd += d.cost_saved_usd;
        t.evictions = t.evictions.saturating_add(d.evictions);
        t.expirations = t.expirations.saturating_add(d.expirations);
        t.integrity_failures = t.integrity_failures.saturating_add(d.integrity_failures);
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn insert(&mut self, key: CacheKey, entry: IndexEntry) {
        if !self.bulk {
            self.lru.insert((entry.last_access_ms, entry.seq), key);
            self.by_expiry.insert((entry.expires_ms, entry.seq), key);
        }
        self.total_bytes += entry.size;
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &CacheKey) -> Option<IndexEntry> {
        let entry = self.entries.remove(key)?;
        if !self.bulk {
            self.lru.remove(&(entry.last_access_ms, entry.seq));
            self.by_expiry.remove(&(entry.expires_ms, entry.seq));
        }
        self.total_bytes -= entry.size;
        Some(entry)
    }

    /// The entry to drop next to make room, other than `keep`: an expired one if any
    /// (with reason `Expired`), else the least recently used (`Evicted`).
    pub(crate) fn victim(&self, now_ms: u64, keep: &CacheKey) -> Option<(CacheKey, RemoveReason)> {
        let expired = self
            .by_expiry
            .iter()
            .take_while(|((expires, _), _)| *expires <= now_ms)
            .find(|(_, key)| *key != keep)
            .map(|(_, key)| (*key, RemoveReason::Expired));
        expired.or_else(|| {
            self.lru
                .values()
                .find(|key| *key != keep)
                .map(|key| (*key, RemoveReason::Evicted))
        })
    }

    /// Keys expired at `now_ms`, soonest first.
    pub(crate) fn expired(&self, now_ms: u64) -> Vec<CacheKey> {
        self.by_expiry
            .iter()
            .take_while(|((expires, _), _)| *expires <= now_ms)
            .map(|(_, key)| *key)
            .collect()
    }

    /// Records that rebuild this index from empty: one `Put` per entry, least recently
    /// used first, then the totals.
    pub(crate) fn snapshot(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self
            .lru
            .values()
            .filter_map(|key| {
                self.entries.get(key).map(|e| Record::Put {
                    key: *key,
                    size: e.size,
                    expires_ms: e.expires_ms,
                    at_ms: e.last_access_ms,
                    hits: e.hits,
                })
            })
            .collect();
        let t = self.totals;
        records.push(Record::Counters(CounterDelta {
            hits: t.hits,
            misses: t.misses,
            tokens_saved: t.tokens_saved,
            cost_saved_usd: t.cost_saved_usd,
            evictions: t.evictions,
            expirations: t.expirations,
            integrity_failures: t.integrity_failures,
        }));
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    fn put(n: u8, size: u64, at_ms: u64) -> Record {
        Record::Put {
            key: key(n),
            size,
            expires_ms: 1_000,
            at_ms,
            hits: 0,
        }
    }

    #[test]
    fn totals_follow_puts_replacements_and_removals() {
        let mut index = Index::default();
        index.apply(&put(1, 100, 1));
        index.apply(&put(2, 50, 2));
        index.apply(&put(1, 30, 3));
        assert_eq!((index.len(), index.total_bytes()), (2, 80));
        index.apply(&Record::Remove {
            key: key(2),
            reason: RemoveReason::Evicted,
        });
        index.apply(&Record::Remove {
            key: key(9),
            reason: RemoveReason::Integrity,
        });
        assert_eq!((index.len(), index.total_bytes()), (1, 30));
        assert_eq!(index.totals().evictions, 1);
        assert_eq!(index.totals().integrity_failures, 1);
    }

    #[test]
    fn the_victim_is_expired_first_then_least_recently_used() {
        let mut index = Index::default();
        index.apply(&put(1, 10, 1));
        index.apply(&put(2, 10, 2));
        index.apply(&put(3, 10, 3));
        assert_eq!(
            index.victim(0, &key(9)),
            Some((key(1), RemoveReason::Evicted))
        );
        index.apply(&Record::Access {
            key: key(1),
            at_ms: 4,
            hits: 1,
        });
        assert_eq!(
            index.victim(0, &key(9)),
            Some((key(2), RemoveReason::Evicted))
        );
        assert_eq!(
            index.victim(0, &key(2)),
            Some((key(3), RemoveReason::Evicted))
        );
        // A stale access does not move an entry back in time.
        index.apply(&Record::Access {
            key: key(1),
            at_ms: 0,
            hits: 1,
        });
        assert_eq!(
            index.get(&key(1)).map(|e| (e.last_access_ms, e.hits)),
            Some((4, 2))
        );
        assert_eq!(
            index.victim(1_000, &key(9)).map(|v| v.1),
            Some(RemoveReason::Expired)
        );
        assert_eq!(index.expired(999), Vec::<CacheKey>::new());
        assert_eq!(index.expired(1_000).len(), 3);
    }

    #[test]
    fn a_snapshot_replays_to_the_same_index() {
        let mut index = Index::default();
        index.apply(&put(1, 10, 5));
        index.apply(&put(2, 20, 1));
        index.apply(&Record::Access {
            key: key(2),
            at_ms: 9,
            hits: 3,
        });
        index.apply(&Record::Remove {
            key: key(7),
            reason: RemoveReason::Expired,
        });
        index.apply(&Record::Counters(CounterDelta {
            hits: 3,
            misses: 1,
            tokens_saved: 30,
            cost_saved_usd: 0.75,
            ..CounterDelta::default()
        }));
        let replayed = Index::replay(&index.snapshot());
        assert_eq!(replayed.totals(), index.totals());
        assert_eq!(replayed.total_bytes(), 30);
        assert_eq!(replayed.get(&key(2)).map(|e| e.hits), Some(3));
        assert_eq!(replayed.victim(0, &key(9)).map(|v| v.0), Some(key(1)));
        assert_eq!(replayed.expired(1_000).len(), 2);
    }

    #[test]
    fn replay_equals_record_by_record() {
        let mut records = Vec::new();
        for n in 0..50u8 {
            records.push(put(n % 20, u64::from(n), u64::from(n * 3 % 17)));
            if n % 3 == 0 {
                records.push(Record::Access {
                    key: key(n % 7),
                    at_ms: u64::from(n),
                    hits: 1,
                });
            }
            if n % 5 == 0 {
                records.push(Record::Remove {
                    key: key(n % 11),
                    reason: RemoveReason::Evicted,
                });
            }
        }
        let mut stepwise = Index::default();
        for record in &records {
            stepwise.apply(record);
        }
        let bulk = Index::replay(&records);
        assert_eq!(bulk.entries, stepwise.entries);
        assert_eq!(bulk.lru, stepwise.lru);
        assert_eq!(bulk.by_expiry, stepwise.by_expiry);
        assert_eq!(
            (bulk.total_bytes, bulk.totals),
            (stepwise.total_bytes, stepwise.totals)
        );
    }
}
