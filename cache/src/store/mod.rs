//! Each agent's private key-value directory: [`AgentStores`] opens the parent once,
//! [`AgentStores::scope`] hands out one agent's [`AgentStore`].
//!
//! Keys are validated and then hashed (SHA-256) into file names, so no key text ever
//! becomes a path. Each scope is its own cap-std [`Dir`] opened without following
//! symlinks from the parent, and agent names are restricted to `[a-zA-Z0-9_-]{1,64}`, so
//! one agent's store can never name a file of another's. The on-disk format is in
//! `record.rs`; quota accounting in `usage.rs`.

pub(crate) mod record;
mod usage;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cap_std::fs::Dir;

pub use usage::StoreUsage;

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::error::{Error, StoreError, shown};
use crate::files::{self, LockFile, LockGuard, ReadOutcome};
use crate::private;
use record::{HEADER_LEN, LOCK_NAME, TMP_PREFIX};

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
            }),
        })
    }

    /// The limits every scope enforces.
    #[must_use]
    pub fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// The store of one agent: its own subdirectory, created if missing. `agent` must
    /// match `^[a-zA-Z0-9_-]{1,64}$`, else [`Error::InvalidAgentName`]. Opening rescans
    /// the directory to settle its usage (agent directories are small).
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
        };
        let inner = &self.inner;
        let context = |step: &str| format!("{step} the store of agent {agent}");
        // No-follow: a symlink `agents/a -> b` must not hand agent a the store of b; and
        // a directory someone else made (or may write) is not this agent's alone.
        let dir = private::open_subdir(&inner.agents, agent, &inner.agents_path.join(agent))?;
        let lock = LockFile::open(&dir, LOCK_NAME).map_err(|e| Error::io(context("locking"), e))?;
        {
            let _held = lock.lock().map_err(|e| Error::io(context("locking"), e))?;
            let scan = usage::scan(&dir, None).map_err(|e| Error::io(context("scanning"), e))?;
            usage::write(&dir, scan.usage).map_err(|e| Error::io(context("accounting"), e))?;
        }
        Ok(AgentStore {
            agent: agent.to_owned(),
            dir,
            lock,
            serial: Mutex::new(()),
            limits,
            clock: Arc::clone(&inner.clock),
        })
    }
}

/// One agent's key-value store. `Send + Sync`; several handles on the same agent, in one
/// process or in several, share one consistent quota.
#[derive(Debug)]
pub struct AgentStore {
    agent: String,
    dir: Dir,
    lock: LockFile,
    /// Threads sharing this handle share one `flock` description, which does not
    /// exclude them from each other; this mutex does.
    serial: Mutex<()>,
    limits: StoreLimits,
    clock: Arc<dyn Clock>,
}

/// Both locks, in order: the handle's mutex, then the directory's file lock.
struct Held<'a> {
    _file: LockGuard<'a>,
    _serial: MutexGuard<'a, ()>,
}

impl AgentStore {
    /// The agent this store belongs to.
    #[must_use]
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The value stored under `key`; `None` if absent, expired (it is then removed),
    /// or unreadable as an entry of this key.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_key(key)?;
        let name = record::entry_name(key);
        let max_len = HEADER_LEN + MAX_KEY_BYTES as u64 + self.limits.max_value_bytes;
        let data = match files::read_regular(&self.dir, &name, max_len) {
            Ok(ReadOutcome::Data(data)) => data,
            Ok(_) => return Ok(None),
            Err(e) => return Err(StoreError::io("reading an entry", &e)),
        };
        let Some(entry) = record::decode(&data) else {
            return Ok(None);
        };
        if entry.key != key.as_bytes() {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        if entry.expires_ms <= now {
            self.remove_if_expired(&name, now)?;
            return Ok(None);
        }
        Ok(Some(entry.value.to_vec()))
    }

    /// Stores `value` under `key`, replacing any previous value. `ttl`: lifetime, `None`
    /// for [`StoreLimits::default_ttl`]. Expired entries are swept before a quota refusal.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        validate_key(key)?;
        let value_len = value.len() as u64;
        if value_len > self.limits.max_value_bytes {
            return Err(StoreError::TooLarge(format!(
                "a value of {value_len} bytes exceeds the limit of {} bytes per entry",
                self.limits.max_value_bytes
            )));
        }
        let now = self.clock.now_ms();
        let ttl = duration_ms(ttl.unwrap_or(self.limits.default_ttl));
        let expires_ms = now.saturating_add(ttl);
        let name = record::entry_name(key);
        let charge = key.len() as u64 + value_len;

        let _held = self.hold()?;
        let mut projected = self.project(&name, charge)?;
        if let Err(first) = self.check_quota(projected) {
            let scan = usage::scan(&self.dir, Some(now))
                .map_err(|e| StoreError::io("sweeping expired entries", &e))?;
            self.write_usage(scan.usage)?;
            projected = self.project(&name, charge)?;
            if self.check_quota(projected).is_err() {
                return Err(first);
            }
        }
        let tmp = format!(
            "{TMP_PREFIX}{}.{}",
            &name[..64],
            files::random_hex(8).map_err(|e| StoreError::io("naming a temp file", &e))?
        );
        let header = record::encode_header(key, value_len, expires_ms);
        files::write_atomic(
            &self.dir,
            &name,
            &tmp,
            &[&header, key.as_bytes(), value],
            false,
        )
        .map_err(|e| StoreError::io("writing an entry", &e))?;
        self.write_usage(projected)
    }

    /// Removes `key`; returns whether a live (unexpired) value was there.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        let name = record::entry_name(key);
        let _held = self.hold()?;
        let Some(len) = self.entry_len(&name)? else {
            return Ok(false);
        };
        let live = match files::read_regular(&self.dir, &name, len) {
            Ok(ReadOutcome::Data(data)) => record::decode(&data).is_some_and(|entry| {
                entry.key == key.as_bytes() && entry.expires_ms > self.clock.now_ms()
            }),
            Ok(_) => false,
            Err(e) => return Err(StoreError::io("reading an entry", &e)),
        };
        self.remove_locked(&name, len)?;
        Ok(live)
    }

    /// Bytes and entries charged to this agent now (expired entries count until removed).
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        let _held = self.hold()?;
        self.current_usage()
    }

    fn hold(&self) -> Result<Held<'_>, StoreError> {
        let serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let file = self
            .lock
            .lock()
            .map_err(|e| StoreError::io("locking the store", &e))?;
        Ok(Held {
            _file: file,
            _serial: serial,
        })
    }

    /// Usage after replacing `name` with an entry charged `charge` bytes (lock held).
    fn project(&self, name: &str, charge: u64) -> Result<StoreUsage, StoreError> {
        let usage = self.current_usage()?;
        let old = self.entry_len(name)?.map(record::charged_len);
        Ok(StoreUsage {
            bytes: usage.bytes.saturating_sub(old.unwrap_or(0)) + charge,
            entries: usage.entries + u64::from(old.is_none()),
        })
    }

    fn check_quota(&self, projected: StoreUsage) -> Result<(), StoreError> {
        let limits = &self.limits;
        if projected.bytes > limits.max_bytes {
            return Err(StoreError::QuotaExceeded(format!(
                "agent {}: this write would bring the store to {} bytes, over its limit of {} bytes",
                self.agent, projected.bytes, limits.max_bytes
            )));
        }
        if projected.entries > limits.max_entries {
            return Err(StoreError::QuotaExceeded(format!(
                "agent {}: this write would bring the store to {} entries, over its limit of {} entries",
                self.agent, projected.entries, limits.max_entries
            )));
        }
        Ok(())
    }

    /// Usage from the usage file, or from a rescan if that file is missing (lock held).
    fn current_usage(&self) -> Result<StoreUsage, StoreError> {
        match usage::read(&self.dir) {
            Ok(Some(usage)) => Ok(usage),
            Ok(None) => {
                let scan = usage::scan(&self.dir, None)
                    .map_err(|e| StoreError::io("scanning the store", &e))?;
                self.write_usage(scan.usage)?;
                Ok(scan.usage)
            }
            Err(e) => Err(StoreError::io("reading the usage file", &e)),
        }
    }

    fn write_usage(&self, usage: StoreUsage) -> Result<(), StoreError> {
        usage::write(&self.dir, usage).map_err(|e| StoreError::io("writing the usage file", &e))
    }

    fn entry_len(&self, name: &str) -> Result<Option<u64>, StoreError> {
        files::regular_len(&self.dir, name).map_err(|e| StoreError::io("inspecting an entry", &e))
    }

    /// Removes the entry file `name` of length `len` and credits its usage (lock held).
    fn remove_locked(&self, name: &str, len: u64) -> Result<(), StoreError> {
        let usage = self.current_usage()?;
        let removed = files::remove_regular(&self.dir, name)
            .map_err(|e| StoreError::io("removing an entry", &e))?;
        if removed {
            self.write_usage(StoreUsage {
                bytes: usage.bytes.saturating_sub(record::charged_len(len)),
                entries: usage.entries.saturating_sub(1),
            })?;
        }
        Ok(())
    }

    /// Removes `name` if, under the lock, it is still expired at `now`: another handle
    /// may have replaced it with a fresh value since it was read.
    fn remove_if_expired(&self, name: &str, now: u64) -> Result<(), StoreError> {
        let _held = self.hold()?;
        let Some(len) = self.entry_len(name)? else {
            return Ok(());
        };
        let header = files::read_prefix(&self.dir, name, HEADER_LEN)
            .map_err(|e| StoreError::io("reading an entry", &e))?;
        let expired = matches!(header, ReadOutcome::Data(h)
            if record::decode_expiry(&h).is_some_and(|exp| exp <= now));
        if expired {
            self.remove_locked(name, len)?;
        }
        Ok(())
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
