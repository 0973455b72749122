//! What a fleet of hosts shares on Redis: one concurrency limit per API account.
//!
//! [`RedisLimit`] is a lease semaphore: a sorted set of slot ids (one per attempt in
//! flight, 128 random bits each), scored by the Redis server's clock (`TIME`, never a
//! host's) at the slot's last heartbeat. Three Lua scripts, each one atomic decision:
//!
//! - **acquire**: drop the slots whose last heartbeat is older than the lease, then add
//!   this one if fewer than the limit remain;
//! - **heartbeat** (every third of the lease while the attempt runs): refresh this
//!   slot's score, only if it is still there (`ZADD XX`: a slot that was pruned is never
//!   brought back);
//! - **release**: remove this slot id — idempotent, and it can only ever remove the
//!   caller's own slot.
//!
//! A cancelled call, a trapped guest, a deadline: the lease is dropped, and released.
//! A killed process: its heartbeats stop and its slots are pruned after one lease.
//! So no slot outlives its attempt by more than the lease.
//!
//! The key is `cf:{<account>}:slots`: the account (a digest of the API key, never the
//! key) is a hash tag, so that every key of an account lives on one Redis Cluster slot.
//!
//! **When Redis cannot be reached** (an error, or no answer within
//! [`FleetConfig::op_timeout`]), [`FailMode`] decides: `Closed` fails the model call
//! (`LlmError::Connection`, typed), `Open` lets it go under this host's own limit
//! only — loudly: a warning when the outage starts and when it ends, and
//! [`FleetStats`] (`redis_errors`, `degraded`) for `/metrics` and `/readyz`. Never
//! silently `limit × hosts`.

mod cache;
pub mod testing;

pub use cache::{CacheConfig, CacheStats, RedisCache};

use cf_llm::{BoxFuture, Lease, LlmError, SharedLimit};
use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Adds the slot if fewer than the limit are alive. KEYS[1] the set; ARGV: slot id,
/// limit, lease in ms. Returns 1 (acquired) or 0 (full).
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0
";

/// Refreshes the slot's score if it is still there. KEYS[1] the set; ARGV: slot id,
/// lease in ms. Returns 1 (refreshed) or 0 (the slot was pruned: the lease was lost).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
";

/// Removes the slot. KEYS[1] the set; ARGV[1] the slot id. Returns how many were
/// removed (0 or 1).
const RELEASE: &str = r"
return redis.call('ZREM', KEYS[1], ARGV[1])
";

/// Counts the slots alive now. KEYS[1] the set; ARGV[1] the lease in ms.
const ALIVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
";

/// What a model call does when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// No model call without a lease: the call fails with a typed error.
    #[default]
    Closed,
    /// The call goes under this host's own limit, loudly (a warning, a metric,
    /// `/readyz` degraded).
    Open,
}

impl FailMode {
    /// `closed` or `open`.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "closed" => Ok(Self::Closed),
            "open" => Ok(Self::Open),
            other => Err(format!("{other:?} is not `closed` or `open`")),
        }
    }
}

/// How a [`RedisLimit`] works.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The limit of the whole fleet: slots in flight at once.
    pub limit: usize,
    /// The account the limit is of ([`account_of`] an API key).
    pub account: String,
    /// How long a slot lives without a heartbeat (a killed process's slots are freed
    /// after this). Default 10 s.
    pub lease: Duration,
    /// What a call does when Redis cannot be reached. Default: closed.
    pub fail: FailMode,
    /// The longest one Redis operation may take before Redis counts as unreachable.
    /// Default 1 s.
    pub op_timeout: Duration,
}

impl FleetConfig {
    /// A fleet limit of `limit` for `account`, with the default lease, failure mode
    /// and operation timeout.
    pub fn new(limit: usize, account: impl Into<String>) -> Self {
        Self {
            limit: limit.max(1),
            account: account.into(),
            lease: Duration::from_secs(10),
            fail: FailMode::Closed,
            op_timeout: Duration::from_secs(1),
        }
    }
}

/// The account of an API key as the fleet's keys name it: 16 hex digits of a SHA-256
/// over it (the key itself never reaches Redis).
pub fn account_of(api_key: &str) -> String {
    Sha256::digest(format!("cf-fleet account\0{api_key}").as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the fleet's limit has seen, for metrics and readiness.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Redis operations that failed or timed out.
    pub redis_errors: AtomicU64,
    /// Whether the last operation failed (calls go under the local limit when the
    /// failure mode is open).
    pub degraded: AtomicBool,
    /// Leases granted.
    pub leases: AtomicU64,
    /// Leases found pruned at a heartbeat (their attempt outlived the lease without
    /// reaching Redis).
    pub lost: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    conn: ConnectionManager,
    key: String,
    config: FleetConfig,
    acquire: Script,
    heartbeat: Script,
    release: Script,
    alive: Script,
    stats: FleetStats,
    /// One waiter per host asks Redis at a time; the others queue here (in order), so
    /// that a host with hundreds of calls waiting sends one request per poll, not
    /// hundreds.
    turn: tokio::sync::Mutex<()>,
}

/// The fleet's concurrency limit on Redis (see the crate's docs).
#[derive(Debug, Clone)]
pub struct RedisLimit {
    inner: Arc<Inner>,
}

impl RedisLimit {
    /// Connects to `url` (`redis://host:port/db`); the connection is re-established
    /// when it breaks.
    pub async fn connect(url: &str, config: FleetConfig) -> Result<Self, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("the Redis URL {}: {e}", without_password(url)))?;
        let conn = tokio::time::timeout(
            config.op_timeout.max(Duration::from_secs(2)),
            ConnectionManager::new(client),
        )
        .await
        .map_err(|_| format!("Redis at {} did not answer", without_password(url)))?
        .map_err(|e| format!("Redis at {}: {e}", without_password(url)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                key: format!("cf:{{{}}}:slots", config.account),
                config,
                acquire: Script::new(ACQUIRE),
                heartbeat: Script::new(HEARTBEAT),
                release: Script::new(RELEASE),
                alive: Script::new(ALIVE),
                stats: FleetStats::default(),
                turn: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// What the limit has seen.
    pub fn stats(&self) -> &FleetStats {
        &self.inner.stats
    }

    /// Whether calls go under the local limit when Redis is away.
    pub fn fails_open(&self) -> bool {
        self.inner.config.fail == FailMode::Open
    }

    /// The fleet's limit.
    pub fn limit(&self) -> usize {
        self.inner.config.limit
    }

    /// Slots alive now, across the fleet.
    pub async fn slots_in_use(&self) -> Result<usize, String> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let n: usize = inner
            .alive
            .key(&inner.key)
            .arg(inner.config.lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(n)
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.inner.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(self.inner.config.op_timeout, ping).await,
            Ok(Ok(_))
        )
    }

    async fn try_acquire(&self, slot: &str) -> Result<bool, String> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut invocation = inner.acquire.prepare_invoke();
        invocation
            .key(&inner.key)
            .arg(slot)
            .arg(inner.config.limit)
            .arg(inner.config.lease.as_millis() as u64);
        let call = invocation.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(inner.config.op_timeout, call).await {
            Ok(Ok(n)) => Ok(n == 1),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                inner.config.op_timeout.as_millis()
            )),
        }
    }

    /// Notes a Redis failure; the error the call fails with (closed) or `None` (open).
    fn unreachable(&self, why: &str) -> Option<LlmError> {
        let stats = &self.inner.stats;
        stats.redis_errors.fetch_add(1, Ordering::Relaxed);
        let was = stats.degraded.swap(true, Ordering::Relaxed);
        match self.inner.config.fail {
            FailMode::Closed => {
                if !was {
                    tracing::error!(error = %why, "Redis is unreachable: model calls fail until it is back (fail-closed)");
                }
                Some(LlmError::Connection(format!(
                    "the fleet's concurrency limit is unreachable (Redis: {why}); the host fails closed: no model call without a lease"
                )))
            }
            FailMode::Open => {
                if !was {
                    tracing::warn!(error = %why, "Redis is unreachable: model calls go under this host's own limit only (fail-open) until it is back");
                }
                None
            }
        }
    }

    fn reachable(&self) {
        if self.inner.stats.degraded.swap(false, Ordering::Relaxed) {
            tracing::warn!("Redis is reachable again: the fleet's limit applies");
        }
    }
}

impl SharedLimit for RedisLimit {
    fn acquire(
        &self,
        deadline: Option<Instant>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn Lease>>, LlmError>> {
        Box::pin(async move {
            let slot = slot_id();
            let mut wait = Duration::from_millis(1);
            let _turn = self.inner.turn.lock().await;
            loop {
                match self.try_acquire(&slot).await {
                    Ok(true) => {
                        self.reachable();
                        self.inner.stats.leases.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(
                            Box::new(RedisLease::start(self.clone(), slot)) as Box<dyn Lease>
                        ));
                    }
                    Ok(false) => self.reachable(),
                    Err(why) => {
                        return match self.unreachable(&why) {
                            Some(error) => Err(error),
                            None => Ok(None),
                        };
                    }
                }
                // Full: try again soon (jittered, so that waiting hosts do not move
                // in step), never past the deadline.
                let pause = wait.mul_f64(0.5 + fastrand_f64());
                wait = (wait * 2).min(Duration::from_millis(5));
                let until = Instant::now() + pause;
                match deadline {
                    Some(d) if d <= Instant::now() => {
                        return Err(LlmError::Timeout(
                            "the run's deadline was reached while waiting for a slot of the fleet's concurrency limit".into(),
                        ));
                    }
                    Some(d) => tokio::time::sleep_until(until.min(d)).await,
                    None => tokio::time::sleep_until(until).await,
                }
            }
        })
    }
}

/// A number in [0, 1) from the OS's generator (no extra dependency for jitter).
fn fastrand_f64() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// 128 random bits in hex: a slot id no other attempt has.
pub(crate) fn slot_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Without the OS's generator, the time and a counter are unique in this
        // process, and the pid across processes.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = u128::from(NEXT.fetch_add(1, Ordering::Relaxed));
        b = (t ^ (n << 64) ^ u128::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A held slot: heartbeats while held, released when dropped.
#[derive(Debug)]
struct RedisLease {
    limit: RedisLimit,
    slot: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Lease for RedisLease {}

impl RedisLease {
    fn start(limit: RedisLimit, slot: String) -> Self {
        let (beat_limit, beat_slot) = (limit.clone(), slot.clone());
        let heartbeat = tokio::spawn(async move {
            let inner = &beat_limit.inner;
            let every = inner.config.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                let mut conn = inner.conn.clone();
                let mut invocation = inner.heartbeat.prepare_invoke();
                invocation
                    .key(&inner.key)
                    .arg(&beat_slot)
                    .arg(inner.config.lease.as_millis() as u64);
                let beat = invocation.invoke_async::<i64>(&mut conn);
                match tokio::time::timeout(inner.config.op_timeout, beat).await {
                    Ok(Ok(1)) => {}
                    Ok(Ok(_)) => {
                        inner.stats.lost.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "a slot of the fleet's limit was lost (no heartbeat reached Redis for a whole lease)"
                        );
                        return;
                    }
                    Ok(Err(e)) => {
                        let _ = beat_limit.unreachable(&e.to_string());
                    }
                    Err(_) => {
                        let _ = beat_limit.unreachable("a heartbeat timed out");
                    }
                }
            }
        });
        Self {
            limit,
            slot,
            heartbeat,
        }
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.heartbeat.abort();
        let (limit, slot) = (self.limit.clone(), std::mem::take(&mut self.slot));
        // Released in the background: a drop cannot wait. Without a runtime (a process
        // going away), the slot is pruned after one lease.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let inner = &limit.inner;
                let mut conn = inner.conn.clone();
                let mut invocation = inner.release.prepare_invoke();
                invocation.key(&inner.key).arg(&slot);
                let release = invocation.invoke_async::<i64>(&mut conn);
                if !matches!(
                    tokio::time::timeout(inner.config.op_timeout, release).await,
                    Ok(Ok(_))
                ) {
                    let _ = limit.unreachable("releasing a slot failed");
                }
            });
        }
    }
}

/// `url` with any password replaced, for messages.
pub(crate) fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://[redacted]@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages_and_accounts_hide_keys() {
        assert_eq!(
            without_password("redis://user:hunter2@127.0.0.1:6379/0"),
            "redis://[redacted]@127.0.0.1:6379/0"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let account = account_of("sk-ant-secret");
        assert_eq!(account.len(), 16);
        assert!(!account.contains("secret"));
        assert_ne!(account, account_of("sk-ant-other"));
        assert_eq!(FailMode::parse("open"), Ok(FailMode::Open));
        assert!(FailMode::parse("ajar").is_err());
    }
}
