//! cf-cache: per-agent key-value stores and the LLM response cache of cf-host.
//!
//! Four things live here, all touching the disk only through [`cap_std::fs::Dir`]
//! handles opened once from a configured root:
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
//! One directory, opened once; no name in it is built from request data:
//!
//! * `responses.sqlite` (with SQLite's `-wal` and `-shm`, all mode 0600): the entries.
//!   Table `entries` is the index, one small row per key: the key, the number of the
//!   write that stored its current value (`seq`), its charged size, expiry, last use and
//!   hits, with an index on the expiry and one on (last use, seq). Table `bodies` holds
//!   the values by `seq`: created, tokens, cost, payload and an HMAC-SHA256 over all of
//!   them, the key and the `seq` (`response/seal.rs` documents it). A one-row table
//!   `meta` keeps the totals (bytes, entries; by triggers), the next `seq`, a
//!   generation bumped by `clear`, and the counters of every process.
//! * `cache.secret`: the generated HMAC secret (32 random bytes, mode 0600), created by
//!   writing a temp file and hard-linking it into place, so racing processes agree on
//!   one and nobody reads a partial one. Absent when [`CacheConfig::secret`] is set.
//!
//! **A lookup** reads the key's index row joined with the body it names, and checks
//! the MAC in constant time, computed over the key asked for and the `seq` the index
//! names, before it interprets anything else. So a value moved under another key, an
//! older value of the key written back over the current one, a value sealed with
//! another secret or a damaged row (a column of another type, a missing body) is a
//! miss; the row is removed and counted in [`Stats::integrity_failures`] by the
//! handle's next write (a lookup never takes the write lock). A handle that sees the
//! database's write number go back (the file replaced by an older copy) drops every
//! entry at its next write, and one that finds the name `responses.sqlite` on another
//! file (another process set a damaged one aside) reopens it there. (A rollback of a key's index row and body together,
//! to an older pair that was once current, is not detectable from the file alone: it
//! is a value that was the right answer to that request when it was stored, still
//! bound by its own expiry.)
//!
//! **Opening** opens the directory, the secret and the database: SQLite reads its
//! schema, not its rows, so it is O(1) in the entries. It never takes the write lock
//! once the tables exist, so it does not wait for another process's transaction. A
//! file that is not a database is moved aside to `responses.sqlite.damaged-<ms>` (with
//! a warning) and an empty cache started.
//!
//! **Sharing between processes** is SQLite's: one writer at a time (`BEGIN
//! IMMEDIATE`, waiting up to 5 s), readers on a write-ahead log that never wait for it.
//! Totals live in the database and move in the same transaction as the rows, so every
//! process sees the same counts. Reads are batched: hits and last-use times are kept per
//! process and written in one transaction every 1024 lookups or 2 s of activity (on a
//! thread of its own, so a lookup never waits for it), with every `put`, `stats` and
//! admin call, and on drop. An entry's last use has a resolution of a minute, as in
//! memcached: a read less than a minute after the recorded one is counted in the totals
//! but not written (recording every read of a cached batch rewrote the index at every
//! flush and cost more than the lookups themselves).
//!
//! **Size.** [`CacheConfig::max_bytes`] bounds the bytes the entries occupy in the
//! database: each is charged its body's cell as SQLite lays it out in 4 KiB pages (a
//! value larger than a page takes whole overflow pages) plus its index rows
//! ([`entry_size`]); a test holds the sum to the database's used pages. Every `put`
//! removes a few expired entries through the expiry index, then evicts the least
//! recently used ones through the use index until the total is under the limit: no
//! scan on any hot path ([`ResponseCache::full_scan_steps`] counts them; tests assert
//! zero). Pages freed by a prune or a clear go back to the file system
//! (`auto_vacuum = INCREMENTAL`); the write-ahead log adds up to a few MiB between
//! checkpoints. [`Stats::disk_bytes`] reports what the files really take.
//!
//! **Memory layer.** Each handle keeps verified entries in memory, bounded by
//! [`CacheConfig::memory_max_entries`] and [`CacheConfig::memory_max_bytes`] (LRU). It
//! serves an entry only while unexpired; after another process's `clear` it is emptied
//! at this handle's next write.
//!
//! **Crash safety** is SQLite's: a transaction is all or nothing across a `kill -9`.
//! With [`Durability::Fast`] (`synchronous = NORMAL`) a power loss may lose the last
//! transactions, never the database; with [`Durability::Fsync`] (`FULL`) a `put` is on
//! disk when it returns.
//!
//! **Older directories.** A directory of the file-per-entry format of earlier versions
//! (`<key hex>.cfe` files, `index.cfj`, `cache.lock`) has those files removed when it
//! is opened, with one warning: its responses are dropped (each is fetched again when
//! needed); its secret is kept. Any other file in the directory is never read,
//! rewritten or removed, not even by [`ResponseCache::clear`], which deletes rows.
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
