//! Each agent's private key-value store: [`AgentStores`] opens the parent once,
//! [`AgentStores::scope`] hands out one agent's [`AgentStore`].
//!
//! Each agent has a directory of its own, opened without following symlinks from the
//! parent and checked to be the user's alone; agent names are restricted to
//! `[a-zA-Z0-9_-]{1,64}`, so one agent's store can never name another's. In it, one
//! SQLite database (`db.rs`) holds the entries: keys are values in a table, never
//! paths. A store in the older one-file-per-entry format (`record.rs`) is imported once
//! (`legacy.rs`).
//!
//! A full store behaves like a cache by default: a `set` that would pass the quota
//! evicts the least recently used entries ([`WhenFull::Evict`]); an operator may have
//! it refuse instead ([`WhenFull::Refuse`]). Either way through indexes, in constant
//! time per entry, never a scan.

mod db;
mod legacy;
pub(crate) mod record;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::error::{Error, StoreError, shown};
use crate::private;
use crate::sqlite::SweepPace;

/// Bytes and entries charged to an agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreUsage {
    /// Sum over entries of key length plus value length, in bytes.
    pub bytes: u64,
    /// Entries, including expired ones not swept yet.
    pub entries: u64,
}

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest agent name accepted, in bytes.
pub const MAX_AGENT_NAME_BYTES: usize = 64;

/// Limits of every agent's store. The defaults are those of [`StoreLimits::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most bytes (keys plus values) one agent may keep. Default 10 MiB.
    pub max_bytes: u64,
    /// Most entries one agent may keep. Default 1000.
    pub max_entries: u64,
    /// Largest value accepted by one `set`. Default 1 MiB.
    pub max_value_bytes: u64,
    /// Lifetime of an entry set without a TTL. Default 24 hours.
    pub default_ttl: Duration,
    /// What a `set` that would pass a quota does. Default [`WhenFull::Evict`].
    pub when_full: WhenFull,
}

/// What a `set` that would pass the store's quota does, once expired entries are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Evict the least recently used entries until the new one fits: the store is a
    /// cache, and an agent must be ready to find a key gone.
    #[default]
    Evict,
    /// Refuse the `set` with `quota-exceeded`, keeping every entry until it expires.
    Refuse,
}

impl std::fmt::Display for WhenFull {
    /// The policy's name in settings: `evict` or `refuse`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Evict => "evict",
            Self::Refuse => "refuse",
        })
    }
}

/// Default of [`StoreLimits::max_bytes`]: 10 MiB.
pub const fn default_store_max_bytes() -> u64 {
    10 * 1024 * 1024
}
/// Default of [`StoreLimits::max_entries`]: 1000.
pub const fn default_store_max_entries() -> u64 {
    1000
}
/// Default of [`StoreLimits::max_value_bytes`]: 1 MiB.
pub const fn default_store_max_value_bytes() -> u64 {
    1024 * 1024
}
/// Default of [`StoreLimits::default_ttl`]: 24 hours.
pub const fn default_store_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_bytes: default_store_max_bytes(),
            max_entries: default_store_max_entries(),
            max_value_bytes: default_store_max_value_bytes(),
            default_ttl: default_store_ttl(),
            when_full: WhenFull::default(),
        }
    }
}

impl StoreLimits {
    /// Checks that every limit is positive.
    pub fn validate(&self) -> Result<(), Error> {
        let zero = [
            ("max_bytes", self.max_bytes == 0),
            ("max_entries", self.max_entries == 0),
            ("max_value_bytes", self.max_value_bytes == 0),
            ("default_ttl", self.default_ttl.is_zero()),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((field, _)) => Err(Error::InvalidConfig(format!(
                "store limit {field} must be greater than zero"
            ))),
            None => Ok(()),
        }
    }
}

/// Checks an agent name against `^[a-zA-Z0-9_-]{1,64}$`.
pub fn validate_agent_name(name: &str) -> Result<(), Error> {
    let ok = (1..=MAX_AGENT_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidAgentName(shown(name)))
    }
}

/// Checks a key: 1 to 256 bytes, no control character (NUL included).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(format!(
            "the key is {} bytes long, more than {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(StoreError::InvalidKey(format!(
            "the key {} contains a control character",
            shown(key)
        )));
    }
    Ok(())
}

/// The handles of one store directory opened by [`AgentStores::shared_scope`], each
/// with the limits it was opened with.
type SharedScopes = Vec<(StoreLimits, Arc<AgentStore>)>;

/// The parent of all agent stores: `<root>/agents`. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct AgentStores {
    inner: Arc<StoresInner>,
}

#[derive(Debug)]
struct StoresInner {
    agents: Dir,
    /// Where `agents` is, for error messages.
    agents_path: std::path::PathBuf,
    limits: StoreLimits,
    clock: Arc<dyn Clock>,
    /// Scopes opened by [`AgentStores::shared_scope`], by directory name, with the
    /// limits they were opened with.
    shared: Mutex<HashMap<String, SharedScopes>>,
}

impl AgentStores {
    /// Opens (creating if missing) `<root>/agents`. This is the only place where the
    /// stores use ambient authority; everything else goes through the opened directory.
    pub fn open(root: &Path, limits: StoreLimits) -> Result<Self, Error> {
        Self::open_with_clock(root, limits, Arc::new(SystemClock))
    }

    /// [`AgentStores::open`] with another time source (tests, simulations).
    pub fn open_with_clock(
        root: &Path,
        limits: StoreLimits,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        limits.validate()?;
        let root_dir = private::open_dir(root)?;
        let agents_path = root.join("agents");
        let agents = private::open_subdir(&root_dir, "agents", &agents_path)?;
        Ok(Self {
            inner: Arc::new(StoresInner {
                agents,
                agents_path,
                limits,
                clock,
                shared: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The store of `agent` (of the plugin qualified by `qualifier`, as in
    /// [`qualified_scope`](Self::qualified_scope)) with `limits`, opened once and then
    /// shared: every later call with the same name and limits gets the same handle.
    /// Opening a store (its directory checked, its database connected, the old format
    /// looked for) costs far more than an operation on it, and a host runs an agent
    /// thousands of times; the handle also keeps the directory it checked, whatever
    /// happens to the path later.
    pub fn shared_scope(
        &self,
        agent: &str,
        qualifier: Option<&str>,
        limits: StoreLimits,
    ) -> Result<Arc<AgentStore>, Error> {
        let name = match qualifier {
            Some(q) => format!("{agent}.{q}"),
            None => agent.to_owned(),
        };
        let found = self
            .inner
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .and_then(|opened| opened.iter().find(|(l, _)| *l == limits))
            .map(|(_, store)| Arc::clone(store));
        if let Some(store) = found {
            return Ok(store);
        }
        // Opened outside the lock (it is file I/O); two first calls at once open it
        // twice and the first to finish is kept.
        let store = Arc::new(match qualifier {
            Some(q) => self.qualified_scope(agent, q, limits.clone())?,
            None => self.scope_with_limits(agent, limits.clone())?,
        });
        let mut shared = self
            .inner
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let opened = shared.entry(name).or_default();
        if let Some((_, kept)) = opened.iter().find(|(l, _)| *l == limits) {
            return Ok(Arc::clone(kept));
        }
        opened.push((limits, Arc::clone(&store)));
        Ok(store)
    }

    /// The limits every scope enforces.
    #[must_use]
    pub fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// The store of one agent: its own subdirectory and database, created if missing.
    /// `agent` must match `^[a-zA-Z0-9_-]{1,64}$`, else [`Error::InvalidAgentName`].
    pub fn scope(&self, agent: &str) -> Result<AgentStore, Error> {
        self.scope_with_limits(agent, self.inner.limits.clone())
    }

    /// [`scope`](Self::scope) with limits of its own for this agent (a plugin's
    /// granted quota), each capped by the limits of every scope.
    pub fn scope_with_limits(&self, agent: &str, limits: StoreLimits) -> Result<AgentStore, Error> {
        validate_agent_name(agent)?;
        self.open_scope(agent, limits)
    }

    /// The store of a third-party plugin: `agents/<agent>.<qualifier>/`, apart from
    /// the store of any other component reporting the same name (the host passes a
    /// prefix of the component's SHA-256 as `qualifier`: 1 to 64 lowercase hex digits).
    /// Limits as in [`scope_with_limits`](Self::scope_with_limits).
    pub fn qualified_scope(
        &self,
        agent: &str,
        qualifier: &str,
        limits: StoreLimits,
    ) -> Result<AgentStore, Error> {
        validate_agent_name(agent)?;
        let hex = (1..=64).contains(&qualifier.len())
            && qualifier
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex {
            return Err(Error::InvalidAgentName(shown(qualifier)));
        }
        self.open_scope(&format!("{agent}.{qualifier}"), limits)
    }

    fn open_scope(&self, agent: &str, limits: StoreLimits) -> Result<AgentStore, Error> {
        let base = &self.inner.limits;
        let limits = StoreLimits {
            max_bytes: limits.max_bytes.min(base.max_bytes),
            max_entries: limits.max_entries.min(base.max_entries),
            max_value_bytes: limits.max_value_bytes.min(base.max_value_bytes),
            default_ttl: limits.default_ttl.min(base.default_ttl),
            when_full: limits.when_full,
        };
        let inner = &self.inner;
        let context = |step: &str| format!("{step} the store of agent {agent}");
        // No-follow: a symlink `agents/a -> b` must not hand agent a the store of b; and
        // a directory someone else made (or may write) is not this agent's alone.
        let dir = private::open_subdir(&inner.agents, agent, &inner.agents_path.join(agent))?;
        let mut db = db::Db::open(&dir)
            .map_err(|e| Error::io(context("opening"), std::io::Error::other(e)))?;
        let imported = legacy::import(&dir, &mut db, inner.clock.now_ms(), limits.max_value_bytes)
            .map_err(|e| Error::io(context("importing the old files of"), e))?;
        if imported.entries + imported.dropped > 0 {
            tracing::info!(
                agent,
                imported = imported.entries,
                dropped = imported.dropped,
                "imported an agent store of the old format into its database"
            );
        }
        Ok(AgentStore {
            agent: agent.to_owned(),
            db: Mutex::new(db),
            limits,
            clock: Arc::clone(&inner.clock),
            sweeps: SweepPace::default(),
        })
    }
}

/// One agent's key-value store. `Send + Sync`; several handles on the same agent, in one
/// process or in several, share one consistent quota (one database, its transactions).
#[derive(Debug)]
pub struct AgentStore {
    agent: String,
    db: Mutex<db::Db>,
    limits: StoreLimits,
    clock: Arc<dyn Clock>,
    /// When writes sweep expired entries (a write short of quota sweeps whenever it
    /// needs the room).
    sweeps: SweepPace,
}

fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::Io(format!("the store's database: {e}"))
}

impl AgentStore {
    /// The agent this store belongs to.
    #[must_use]
    pub fn agent(&self) -> &str {
        &self.agent
    }

    fn db(&self) -> std::sync::MutexGuard<'_, db::Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value stored under `key`; `None` if absent or expired (it is then removed).
    /// A hit counts as a use for the LRU order.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_key(key)?;
        let now = self.clock.now_ms();
        self.db()
            .write(|tx| match tx.get(key)? {
                Some(found) if found.expires_ms > now => Ok(Some(found.value)),
                Some(_) => {
                    tx.delete_if_expired(key, now)?;
                    Ok(None)
                }
                None => Ok(None),
            })
            .map_err(db_error)
    }

    /// Stores `value` under `key`, replacing any previous value. `ttl`: lifetime, `None`
    /// for [`StoreLimits::default_ttl`]. Expired entries are swept first (a few per
    /// write, all of them when the quota is short); then, if it still would not fit, the
    /// least recently used entries are evicted or the write is refused, as
    /// [`StoreLimits::when_full`] says.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        validate_key(key)?;
        let value_len = value.len() as u64;
        let limits = &self.limits;
        if value_len > limits.max_value_bytes {
            return Err(StoreError::TooLarge(format!(
                "a value of {value_len} bytes exceeds the limit of {} bytes per entry",
                limits.max_value_bytes
            )));
        }
        let charge = key.len() as u64 + value_len;
        if charge > limits.max_bytes {
            return Err(StoreError::QuotaExceeded(format!(
                "agent {}: an entry of {charge} bytes is over the store's limit of {} bytes",
                self.agent, limits.max_bytes
            )));
        }
        let now = self.clock.now_ms();
        let expires_ms = now.saturating_add(duration_ms(ttl.unwrap_or(limits.default_ttl)));
        let refusal = std::cell::Cell::new(None);
        let sweep = self.sweeps.due(now);
        let swept = std::cell::Cell::new(None);
        let written = self.db().write(|tx| {
            // Whether entries expired at `now` may be left: not once a sweep in this
            // transaction found fewer than a step (it took every one there was).
            let full_step = |n: usize| n >= db::SWEEP_STEP as usize;
            let mut expired_left = true;
            if sweep {
                let n = tx.sweep(now, db::SWEEP_STEP)?;
                swept.set(Some(n));
                expired_left = full_step(n);
            }
            let fits = |tx: &mut db::Tx<'_>| -> rusqlite::Result<Option<StoreUsage>> {
                let usage = tx.usage()?;
                let old = tx.size_of(key)?;
                let projected = StoreUsage {
                    bytes: usage.bytes - old.unwrap_or(0).min(usage.bytes) + charge,
                    entries: usage.entries + u64::from(old.is_none()),
                };
                Ok(
                    (projected.bytes > limits.max_bytes || projected.entries > limits.max_entries)
                        .then_some(projected),
                )
            };
            while let Some(projected) = fits(tx)? {
                // Expired entries go first, through the expiry index.
                if expired_left {
                    let n = tx.sweep(now, db::SWEEP_STEP)?;
                    expired_left = full_step(n);
                    if n > 0 {
                        continue;
                    }
                }
                if limits.when_full == WhenFull::Refuse {
                    refusal.set(Some(self.over_quota(projected)));
                    return Ok(false);
                }
                if tx.evict_one()?.is_none() {
                    break;
                }
            }
            tx.put(key, value, charge, expires_ms, false)?;
            Ok(true)
        });
        if let (Ok(_), Some(n)) = (&written, swept.get()) {
            self.sweeps.swept(now, n as u64, u64::from(db::SWEEP_STEP));
        }
        match written.map_err(db_error)? {
            true => Ok(()),
            false => Err(refusal
                .take()
                .unwrap_or_else(|| StoreError::QuotaExceeded("the store is full".into()))),
        }
    }

    fn over_quota(&self, projected: StoreUsage) -> StoreError {
        let limits = &self.limits;
        StoreError::QuotaExceeded(if projected.bytes > limits.max_bytes {
            format!(
                "agent {}: this write would bring the store to {} bytes, over its limit of {} bytes",
                self.agent, projected.bytes, limits.max_bytes
            )
        } else {
            format!(
                "agent {}: this write would bring the store to {} entries, over its limit of {} entries",
                self.agent, projected.entries, limits.max_entries
            )
        })
    }

    /// Removes `key`; returns whether a live (unexpired) value was there.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        let now = self.clock.now_ms();
        let removed = self.db().write(|tx| tx.delete(key)).map_err(db_error)?;
        Ok(removed.is_some_and(|expires_ms| expires_ms > now))
    }

    /// Bytes and entries charged to this agent now (expired entries count until swept).
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        self.db().write(|tx| tx.usage()).map_err(db_error)
    }

    /// Rows this handle's statements stepped through in full-table scans: zero when
    /// every query went through an index, which the tests check.
    #[must_use]
    pub fn full_scan_steps(&self) -> u64 {
        self.db().full_scan_steps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn stores(limits: StoreLimits) -> (tempfile::TempDir, AgentStores, ManualClock) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000_000);
        let stores = AgentStores::open_with_clock(tmp.path(), limits, Arc::new(clock.clone()))
            .expect("open");
        (tmp, stores, clock)
    }

    #[test]
    fn agent_names_follow_the_pattern() {
        for good in ["a", "Agent_1", "code-reviewer", &"x".repeat(64)] {
            assert!(validate_agent_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a.b",
            "ä",
            "a b",
            "a\0",
            &"x".repeat(65),
        ] {
            assert!(validate_agent_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_shared_scope_is_opened_once_per_name_and_limits() {
        let (_tmp, stores, _clock) = stores(StoreLimits::default());
        let a = stores
            .shared_scope("p", None, StoreLimits::default())
            .expect("opens");
        let again = stores
            .shared_scope("p", None, StoreLimits::default())
            .expect("shared");
        assert!(Arc::ptr_eq(&a, &again), "the same handle");
        let smaller = StoreLimits {
            max_entries: 5,
            ..StoreLimits::default()
        };
        let capped = stores
            .shared_scope("p", None, smaller)
            .expect("other limits");
        assert!(!Arc::ptr_eq(&a, &capped), "other limits: another handle");
        let plugin = stores
            .shared_scope("p", Some("0123abcd"), StoreLimits::default())
            .expect("qualified");
        assert!(!Arc::ptr_eq(&a, &plugin));
        // One database under them: what one handle writes the other reads.
        a.set("k", b"v", None).expect("set");
        assert_eq!(capped.get("k").expect("get").as_deref(), Some(&b"v"[..]));
        assert_eq!(
            plugin.get("k").expect("get"),
            None,
            "a plugin's scope is its own"
        );
        assert!(
            stores
                .shared_scope("../x", None, StoreLimits::default())
                .is_err()
        );
    }

    #[test]
    fn qualified_scopes_are_apart_from_each_other_and_from_the_plain_scope() {
        let (tmp, stores, _clock) = stores(StoreLimits::default());
        let plain = stores.scope("p").expect("plain");
        let one = stores
            .qualified_scope("p", "0123abcd", StoreLimits::default())
            .expect("one");
        let two = stores
            .qualified_scope("p", "ffff0000", StoreLimits::default())
            .expect("two");
        plain.set("k", b"plain", None).expect("set");
        one.set("k", b"one", None).expect("set");
        assert_eq!(two.get("k").expect("get"), None);
        assert_eq!(one.get("k").expect("get").as_deref(), Some(&b"one"[..]));
        assert_eq!(plain.get("k").expect("get").as_deref(), Some(&b"plain"[..]));
        assert!(tmp.path().join("agents/p.0123abcd").is_dir());
        for bad in ["", "ABCD", "../x", "a.b", &"0".repeat(65)] {
            let err = stores.qualified_scope("p", bad, StoreLimits::default());
            assert!(err.is_err_and(|e| e.is_invalid_agent_name()), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("k").is_ok());
        assert!(validate_key(&"k".repeat(256)).is_ok());
        assert!(validate_key("../ünï/ĉode").is_ok());
        for bad in ["", "a\0b", "a\nb", "\u{7f}", "\u{85}", &"k".repeat(257)] {
            assert!(
                matches!(validate_key(bad), Err(StoreError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let limits = StoreLimits {
            max_entries: 0,
            ..StoreLimits::default()
        };
        let err = AgentStores::open(tmp.path(), limits).expect_err("zero refused");
        assert!(err.to_string().contains("max_entries"), "{err}");
    }

    #[test]
    fn set_get_delete_round_trip() {
        let (_tmp, stores, _clock) = stores(StoreLimits::default());
        let store = stores.scope("a").expect("scope");
        assert_eq!(store.get("k").expect("get"), None);
        store.set("k", b"v1", None).expect("set");
        assert_eq!(store.get("k").expect("get").as_deref(), Some(&b"v1"[..]));
        assert_eq!(
            store.usage().expect("usage"),
            StoreUsage {
                bytes: 3,
                entries: 1
            }
        );
        assert!(store.delete("k").expect("delete"));
        assert!(!store.delete("k").expect("delete again"));
        assert_eq!(store.usage().expect("usage"), StoreUsage::default());
    }

    #[test]
    fn expiry_is_a_miss_and_frees_quota() {
        let (_tmp, stores, clock) = stores(StoreLimits::default());
        let store = stores.scope("a").expect("scope");
        store
            .set("k", b"value", Some(Duration::from_secs(10)))
            .expect("set");
        clock.advance(Duration::from_secs(9));
        assert!(store.get("k").expect("get").is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(store.get("k").expect("get"), None);
        assert_eq!(store.usage().expect("usage"), StoreUsage::default());
    }
}
