//! The in-process memory layer in front of the disk: a map bounded in entries and
//! payload bytes, evicting its least recently used entry (O(log n) through an ordered
//! map of access ticks).
//!
//! It serves entries whose HMAC was verified when they were read or written, while they
//! are unexpired. A value another process stored over one held here, or evicted, was a
//! valid answer to the same request, and may be served until it expires; a `clear` by
//! another process empties this layer at this handle's next write transaction (every
//! put, flush, `stats` or admin call; reads are flushed every 1024 lookups or 2 s).

use std::collections::{BTreeMap, HashMap};

use super::CachedEntry;
use crate::key::CacheKey;

#[derive(Debug)]
struct Slot {
    entry: CachedEntry,
    tick: u64,
}

/// The memory layer.
#[derive(Debug)]
pub(crate) struct MemoryLayer {
    map: HashMap<CacheKey, Slot>,
    order: BTreeMap<u64, CacheKey>,
    bytes: u64,
    tick: u64,
    max_entries: usize,
    max_bytes: u64,
}

impl MemoryLayer {
    pub(crate) fn new(max_entries: usize, max_bytes: u64) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            tick: 0,
            max_entries,
            max_bytes,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry of `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &CacheKey) -> Option<&CachedEntry> {
        self.tick += 1;
        let slot = self.map.get_mut(key)?;
        self.order.remove(&slot.tick);
        slot.tick = self.tick;
        self.order.insert(self.tick, *key);
        Some(&slot.entry)
    }

    /// Keeps `entry` if it fits, evicting least recently used entries as needed. A
    /// value of a later write already held for the key stays: a lookup that read the
    /// older value before a `put` committed must not put it back over the newer one.
    pub(crate) fn insert(&mut self, key: CacheKey, entry: CachedEntry) {
        if self
            .map
            .get(&key)
            .is_some_and(|slot| slot.entry.seq > entry.seq)
        {
            return;
        }
        self.remove(&key);
        let size = entry.payload.len() as u64;
        if self.max_entries == 0 || size > self.max_bytes {
            return;
        }
        while self.map.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.map.remove(&oldest) {
                self.bytes -= slot.entry.payload.len() as u64;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.bytes += size;
        self.map.insert(
            key,
            Slot {
                entry,
                tick: self.tick,
            },
        );
    }

    /// Notes that `key`'s last use was recorded at `at_ms`.
    pub(crate) fn set_used(&mut self, key: &CacheKey, at_ms: u64) {
        if let Some(slot) = self.map.get_mut(key) {
            slot.entry.used_ms = slot.entry.used_ms.max(at_ms);
        }
    }

    pub(crate) fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.map.remove(key) {
            self.order.remove(&slot.tick);
            self.bytes -= slot.entry.payload.len() as u64;
        }
    }

    /// Keeps only the entries for which `keep` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&CacheKey, &CachedEntry) -> bool) {
        let gone: Vec<CacheKey> = self
            .map
            .iter()
            .filter(|(key, slot)| !keep(key, &slot.entry))
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            self.remove(&key);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(len: usize) -> CachedEntry {
        entry_of(len, 1)
    }

    fn entry_of(len: usize, seq: u64) -> CachedEntry {
        CachedEntry::new(Arc::from(vec![0u8; len]), 0, None, 0, u64::MAX, seq, 0)
    }

    #[test]
    fn an_older_write_never_replaces_a_newer_one() {
        let mut memory = MemoryLayer::new(10, 1_000);
        memory.insert(key(1), entry_of(2, 6));
        memory.insert(key(1), entry_of(5, 5));
        assert_eq!(memory.get(&key(1)).map(|e| e.payload.len()), Some(2));
        memory.insert(key(1), entry_of(7, 7));
        assert_eq!(memory.get(&key(1)).map(|e| e.payload.len()), Some(7));
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    #[test]
    fn bounded_in_entries_least_recently_used_goes_first() {
        let mut memory = MemoryLayer::new(2, 1_000);
        memory.insert(key(1), entry(1));
        memory.insert(key(2), entry(1));
        assert!(memory.get(&key(1)).is_some());
        memory.insert(key(3), entry(1));
        assert!(memory.get(&key(2)).is_none(), "2 was least recently used");
        assert!(memory.get(&key(1)).is_some() && memory.get(&key(3)).is_some());
        assert_eq!(memory.len(), 2);
    }

    #[test]
    fn bounded_in_bytes() {
        let mut memory = MemoryLayer::new(100, 10);
        memory.insert(key(1), entry(6));
        memory.insert(key(2), entry(4));
        assert_eq!(memory.bytes(), 10);
        memory.insert(key(3), entry(5));
        assert_eq!((memory.len(), memory.bytes()), (2, 9));
        memory.insert(key(4), entry(11));
        assert!(memory.get(&key(4)).is_none(), "larger than the whole layer");
        memory.insert(key(2), entry(1));
        assert_eq!(memory.bytes(), 6, "replacement accounts for the old size");
        memory.retain(|k, _| *k != key(3));
        assert_eq!((memory.len(), memory.bytes()), (1, 1));
        memory.clear();
        assert_eq!((memory.len(), memory.bytes()), (0, 0));
    }

    #[test]
    fn disabled_when_zero_entries() {
        let mut memory = MemoryLayer::new(0, 1_000);
        memory.insert(key(1), entry(1));
        assert_eq!(memory.len(), 0);
    }
}
