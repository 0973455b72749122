//! Configuration of the response cache. Every default is one `default_*` function,
//! shared by [`CacheConfig::new`] and documented on its field.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::secret::Secret;

/// When a write is considered done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// SQLite's `synchronous = NORMAL` with its write-ahead log (the default): a
    /// committed `put` survives a process crash; a power loss may lose the last
    /// transactions, never the database.
    #[default]
    Fast,
    /// `synchronous = FULL`: a `put` is on disk when it returns, at the cost of an
    /// fsync per transaction (a few milliseconds on most disks).
    Fsync,
}

/// Settings of a [`ResponseCache`](crate::ResponseCache).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The cache directory, created if missing. Everything the cache touches is inside.
    pub dir: PathBuf,
    /// HMAC secret. `None` (default): a random 32-byte secret generated once per cache
    /// directory (`cache.secret`, mode 0600). There is no built-in secret.
    pub secret: Option<Secret>,
    /// Lifetime of an entry put without its own TTL. Default 24 hours.
    pub ttl: Duration,
    /// Most bytes the entries may occupy in the database (payloads, MACs, metadata and
    /// index rows, as SQLite lays them out: [`entry_size`](crate::entry_size)); least
    /// recently used entries are evicted past it. Default 100 MiB.
    pub max_bytes: u64,
    /// Most entries kept in the in-process memory layer; 0 disables it. Default 1000.
    pub memory_max_entries: usize,
    /// Most payload bytes kept in the memory layer. Default 16 MiB.
    pub memory_max_bytes: u64,
    /// Whether writes are fsynced. Default [`Durability::Fast`].
    pub durability: Durability,
    /// Agents (or namespaces) for which `get` and `put` do nothing. Default empty.
    pub exclude_agents: Vec<String>,
}

/// Default of [`CacheConfig::ttl`]: 24 hours.
pub const fn default_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}
/// Default of [`CacheConfig::max_bytes`]: 100 MiB.
pub const fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}
/// Default of [`CacheConfig::memory_max_entries`]: 1000.
pub const fn default_memory_max_entries() -> usize {
    1000
}
/// Default of [`CacheConfig::memory_max_bytes`]: 16 MiB.
pub const fn default_memory_max_bytes() -> u64 {
    16 * 1024 * 1024
}

impl CacheConfig {
    /// The defaults, with the cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            secret: None,
            ttl: default_ttl(),
            max_bytes: default_max_bytes(),
            memory_max_entries: default_memory_max_entries(),
            memory_max_bytes: default_memory_max_bytes(),
            durability: Durability::default(),
            exclude_agents: Vec::new(),
        }
    }

    /// Checks the values: a positive TTL and size limit.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ttl.is_zero() {
            return Err(Error::InvalidConfig("ttl must be greater than zero".into()));
        }
        if self.max_bytes == 0 {
            return Err(Error::InvalidConfig(
                "max_bytes must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let cfg = CacheConfig::new("/tmp/x");
        assert_eq!(cfg.ttl, Duration::from_secs(86_400));
        assert_eq!(cfg.max_bytes, 104_857_600);
        assert_eq!(cfg.durability, Durability::Fast);
        assert!(cfg.secret.is_none() && cfg.exclude_agents.is_empty());
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut cfg = CacheConfig::new("/tmp/x");
        cfg.max_bytes = 0;
        assert!(cfg.validate().is_err());
        let mut cfg = CacheConfig::new("/tmp/x");
        cfg.ttl = Duration::ZERO;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let mut cfg = CacheConfig::new("/tmp/x");
        cfg.secret = Some(Secret::new("0123456789abcdefSECRET").expect("secret"));
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("Secret(<redacted>)") && !shown.contains("abcdefSECRET"),
            "{shown}"
        );
    }
}
