//! Statistics and reports of the response cache, serialisable for `--json` output.

use serde::Serialize;

/// Counters of a cache directory since it was created or last cleared, summed over every
/// process that used it, plus this process's memory layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups not answered (absent, expired or rejected entries).
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 when there was no lookup.
    pub hit_rate: f64,
    /// Entries removed to keep the cache under its size limit.
    pub evictions: u64,
    /// Entries removed because they were past their expiry.
    pub expirations: u64,
    /// Entries removed because they failed their HMAC, length or key check.
    pub integrity_failures: u64,
    /// Entries on disk.
    pub entries: u64,
    /// Bytes the entries are charged against the size limit: what they occupy in the
    /// database (payloads, MACs, metadata and index rows, as SQLite lays them out).
    pub bytes: u64,
    /// Bytes of the cache's database files on disk (the database, its write-ahead log
    /// and its shared-memory index), as the file system allocates them.
    pub disk_bytes: u64,
    /// The size limit in bytes.
    pub max_bytes: u64,
    /// Tokens of the original calls, summed over hits.
    pub tokens_saved: u64,
    /// Cost in USD of the original calls, summed over hits that had a cost.
    pub cost_saved_usd: f64,
    /// Entries in this process's memory layer.
    pub memory_entries: u64,
    /// Payload bytes in this process's memory layer.
    pub memory_bytes: u64,
}

/// One entry that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEntry {
    /// The entry's key in hex.
    pub key: String,
    /// Why it failed.
    pub reason: String,
}

/// What [`ResponseCache::verify`](crate::ResponseCache::verify) found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: u64,
    /// Entries whose value matches its MAC (its key, its write, its bytes).
    pub valid: u64,
    /// Entries that failed.
    pub bad: Vec<BadEntry>,
    /// Bad entries removed (only with `fix`).
    pub removed: u64,
    /// Values no index row names; removed with `fix`.
    pub orphans: u64,
    /// Index rows whose value is missing; removed with `fix`.
    pub stale_index: u64,
    /// The totals (bytes, entries) differed from the rows; corrected with `fix`.
    pub totals_wrong: bool,
    /// What SQLite's `quick_check` found wrong with the database file (empty when
    /// sound). Not fixed by `fix`: clear the cache.
    pub database: Vec<String>,
}

impl VerifyReport {
    /// True if the database is sound, every entry was valid and nothing was stale.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.bad.is_empty()
            && self.orphans == 0
            && self.stale_index == 0
            && !self.totals_wrong
            && self.database.is_empty()
    }
}

/// What [`ResponseCache::prune`](crate::ResponseCache::prune) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Expired entries removed.
    pub removed: u64,
    /// Bytes they occupied.
    pub freed_bytes: u64,
}
