//! cf-cache: per-agent key-value stores and the LLM response cache of cf-host.
//!
//! Two independent things live here, both touching the disk only through
//! [`cap_std::fs::Dir`] handles opened once from a configured root:
//!
//! * [`AgentStores`] / [`AgentStore`]: each agent's private key-value store (an SQLite
//!   database in a directory of its own), behind the WIT `cache` interface
//!   (quota-checked `get` / `set` / `delete`).
//! * [`ResponseCache`]: the host's cache of LLM responses, keyed by a [`CacheKey`] over
//!   the whole request, HMAC-checked, size-limited by LRU, shared by processes.
//! * [`CompiledStore`]: compiled components, each authenticated (HMAC under a private
//!   per-directory key) before it is handed back to be deserialized as native code.
//! * [`private`]: the ownership checks every directory and secret above passes first:
//!   the user's own, writable (or, for a secret, readable) by nobody else.
//!
//! ```
//! use std::time::Duration;
//! use cf_cache::{AgentStores, CacheConfig, EntryMeta, KeyBuilder, ResponseCache, StoreLimits};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root = tempfile::tempdir()?;
//!
//! // An agent's own store.
//! let stores = AgentStores::open(root.path(), StoreLimits::default())?;
//! let store = stores.scope("code-reviewer")?;
//! store.set("last-run", b"2026-11-27", Some(Duration::from_secs(3600)))?;
//! assert_eq!(store.get("last-run")?.as_deref(), Some(&b"2026-11-27"[..]));
//!
//! // The response cache.
//! let cache = ResponseCache::open(CacheConfig::new(root.path().join("responses")))?;
//! let key = KeyBuilder::new("v1")
//!     .field_str("namespace", "code-reviewer")
//!     .field_str("model", "claude-sonnet-4-5")
//!     .field_str("system", "You review Rust code.")
//!     .field_list("messages", ["user\0Review this diff"])
//!     .field_f64("temperature", 0.0)
//!     .field_u64("max_tokens", 1024)
//!     .finish();
//! assert!(cache.get("code-reviewer", &key).is_none());
//! let meta = EntryMeta { tokens: 1200, cost_usd: Some(0.0105), ttl: None };
//! cache.put("code-reviewer", &key, br#"{"content":"LGTM"}"#, meta)?;
//! let hit = cache.get("code-reviewer", &key).expect("cached");
//! assert_eq!(&*hit.payload, br#"{"content":"LGTM"}"#);
//! let stats = cache.stats();
//! assert_eq!((stats.hits, stats.misses, stats.tokens_saved), (1, 1, 1200));
//! # Ok(())
//! # }
//! ```
//!
//! # Agent stores on disk
//!
//! `<root>/agents/<agent>/` per agent (mode 0700; the agent name must match
//! `^[a-zA-Z0-9_-]{1,64}$`, and the directory is opened without following symlinks, so
//! a link `agents/a -> b` is refused rather than handing `a` the store of `b`). In it:
//!
//! * `store.sqlite` (with SQLite's `-wal` and `-shm`): one table of entries (key, value,
//!   charged size = key + value bytes, expiry, last use) with an index on the expiry and
//!   one on the last use, and a one-row table of totals kept by triggers. SQLite's
//!   transactions and locks make every handle in every process enforce one quota, and
//!   its write-ahead log keeps the file whole across a crash. Keys (1–256 bytes, no
//!   control characters) are rows, never paths. A `set` sweeps a few expired entries
//!   through the expiry index; when the quota would still be passed it evicts the least
//!   recently used entries through the use index ([`WhenFull::Evict`], the default) or
//!   refuses with `quota-exceeded` ([`WhenFull::Refuse`]); never a scan of the table.
//! * A directory in the older format (one `<sha256(key)>.kv` file per entry, `cfkv.lock`,
//!   `cfkv.usage`) is imported into the database when the store is first opened, and
//!   those files removed; torn, misplaced or expired ones are dropped.
//!
//! # Response cache on disk
//!
//! One flat directory, opened once; no name in it is built from request data:
//!
//! * `<key hex>.cfe`: one entry: a fixed 88-byte header (magic, key, created, expires,
//!   tokens, cost, payload length), the payload, and an HMAC-SHA256 over both
//!   (`response/entry.rs` documents the layout). A reader checks the length, that the
//!   key inside is the key asked for (an entry copied over another's file is rejected),
//!   and the MAC in constant time before it interprets anything else. A failed check is
//!   a miss; the file is removed and counted in [`Stats::integrity_failures`].
//! * `<key hex>.<nonce>.cfe-tmp`: an entry being written; renamed into place.
//! * `index.cfj`: the index journal: fixed 80-byte checksummed records (`Put`,
//!   `Access`, `Remove`, `Counters`), appended under the lock.
//! * `cache.lock`: the lock file (`flock`), never replaced.
//! * `cache.secret`: the generated HMAC secret (32 random bytes, mode 0600), created by
//!   writing a temp file and hard-linking it into place, so racing processes agree on
//!   one and nobody reads a partial one. Absent when [`CacheConfig::secret`] is set.
//!
//! **Opening** opens the directory, the lock file and the secret: O(1), a few
//! microseconds with 100,000 entries. A `get` needs nothing more: it reads
//! `<key hex>.cfe` directly. The index is loaded by the first operation that needs it
//! (`put`, `stats`, admin calls): one sequential read of the journal and a replay
//! (about 30 ms for 100,000 entries on the benchmark machine).
//!
//! **Sharing between processes.** Every change to the set of entry files (rename into
//! place, eviction, removal) happens while holding `cache.lock`, together with the
//! journal record that describes it. A process taking the lock first replays the
//! records others appended since it last looked, so all processes hold the same index
//! and the same byte total, equal to the sum of the entry files: nothing is counted
//! twice. When the journal exceeds four records per live entry (plus slack), the lock
//! holder compacts it into a snapshot under a new generation number, and others replay
//! that from the start. Reads are batched: hits and last-access times are buffered per
//! process and appended every 1024 lookups, every 2 s of activity, on `put`, `stats`,
//! admin calls and drop.
//!
//! **LRU.** The index keeps entries ordered by (last access, sequence) and by expiry in
//! B-tree maps: picking a victim is O(log n); eviction removes expired entries first,
//! then the least recently used. Last access and hit counts are journal records, so they
//! survive restarts and are shared by processes.
//!
//! **Memory layer.** Each handle keeps verified entries in memory, bounded by
//! [`CacheConfig::memory_max_entries`] and [`CacheConfig::memory_max_bytes`] (LRU). It
//! serves an entry only while unexpired; it learns of other processes' removals and
//! overwrites when it next syncs with the journal.
//!
//! **Crash safety.** Entries and journal snapshots are written to temp files and
//! renamed. A `kill -9` can leave: a temp file (removed by `verify(true)` or `clear`
//! after an hour), a torn journal tail (cut by the next lock holder; records are
//! checksummed), or an entry renamed without its record (served normally, indexed when
//! read or by `verify(true)`). None of these is ever served corrupt: a torn or zeroed
//! entry fails its length or MAC check. With [`Durability::Fsync`] the same holds across
//! power loss.
//!
//! **Staying in its lane.** Entry, temp and journal names are recognised exactly; any
//! other file or directory is never read, rewritten or removed, not even by
//! [`ResponseCache::clear`]. Files are opened with `O_NOFOLLOW`, a symlink under one of
//! our names is neither followed nor removed (a `put` of that key renames over the
//! link itself, never writing to its target), and cap-std refuses any path that would
//! leave the directory.
#![deny(missing_docs)]

mod clock;
mod compiled;
mod config;
mod error;
mod files;
#[doc(hidden)]
pub mod fuzzing;
mod key;
pub mod private;
mod response;
mod secret;
mod sqlite;
mod stats;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use compiled::{Compiled, CompiledStore};
pub use config::{
    CacheConfig, Durability, default_max_bytes, default_memory_max_bytes,
    default_memory_max_entries, default_ttl,
};
pub use error::{Error, StoreError};
pub use key::{CacheKey, KeyBuilder};
pub use response::{CachedEntry, EntryInfo, EntryMeta, Put, ResponseCache, entry_size};
pub use secret::{SECRET_ENV, Secret};
pub use stats::{BadEntry, PruneReport, Stats, VerifyReport};
pub use store::{
    AgentStore, AgentStores, MAX_AGENT_NAME_BYTES, MAX_KEY_BYTES, StoreLimits, StoreUsage,
    WhenFull, default_store_max_bytes, default_store_max_entries, default_store_max_value_bytes,
    default_store_ttl, validate_agent_name, validate_key,
};
