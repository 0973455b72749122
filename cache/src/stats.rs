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
    /// Bytes of entry files on disk.
    pub bytes: u64,
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
    /// The entry's key in hex (its file name without `.cfe`).
    pub key: String,
    /// Why it failed.
    pub reason: String,
}

/// What [`ResponseCache::verify`](crate::ResponseCache::verify) found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entry files checked.
    pub checked: u64,
    /// Entry files whose HMAC, length and key are right.
    pub valid: u64,
    /// Entry files that failed.
    pub bad: Vec<BadEntry>,
    /// Bad entries removed (only with `fix`).
    pub removed: u64,
    /// Valid entry files the index did not know (copied in by hand, or left by an older
    /// version that renamed before recording); indexed with `fix`.
    pub orphans: u64,
    /// Index entries whose file was missing or of another size (a crash between a
    /// journal record and its rename leaves these); corrected with `fix`.
    pub stale_index: u64,
    /// Temp files older than an hour, left by crashed writers, removed (only with `fix`).
    pub stale_temps_removed: u64,
}

impl VerifyReport {
    /// True if every entry was valid and the index matched the files.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.bad.is_empty() && self.orphans == 0 && self.stale_index == 0
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
