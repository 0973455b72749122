//! What a fleet of hosts shares on Redis: one concurrency limit per API account, a
//! response cache ([`RedisCache`]) and a durable work queue ([`WorkQueue`]).
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
mod queue;
pub mod testing;

pub use cache::{CacheConfig, CacheStats, RedisCache};
pub use queue::{Job, QueueConfig, Taken, WorkQueue};

use cf_llm::{BoxFuture, Lease, LlmError, SharedLimit};
use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Adds the slot if fewer than the limit are alive and the minute's rates allow the
/// attempt, reserving its estimate, and the API has not asked for a pause. KEYS[1]
/// the set, KEYS[2] the rate window (a hash: `win` the minute, `req`, `in`, `out` its
/// counts), KEYS[3] the pause (until when, in the server's ms); ARGV: slot id, limit, lease in
/// ms, requests/min, input tokens/min, output tokens/min (0: no such limit), the
/// estimate's input and output tokens, the window in ms. Returns `{1, minute}` (acquired), `{0, 0}`
/// (every slot taken) or `{-1, ms}` (a rate is spent until the next minute, in `ms`).
/// An attempt larger than a token rate goes alone, in a minute that is otherwise empty.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then
  return {-1, paused - now}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return {0, 0}
end
local rpm, itpm, otpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local est_in, est_out = tonumber(ARGV[7]), tonumber(ARGV[8])
local window = tonumber(ARGV[9])
local minute = math.floor(now / window)
if rpm > 0 or itpm > 0 or otpm > 0 then
  if tonumber(redis.call('HGET', KEYS[2], 'win') or '-1') ~= minute then
    redis.call('HSET', KEYS[2], 'win', minute, 'req', 0, 'in', 0, 'out', 0)
  end
  local req = tonumber(redis.call('HGET', KEYS[2], 'req'))
  local used_in = tonumber(redis.call('HGET', KEYS[2], 'in'))
  local used_out = tonumber(redis.call('HGET', KEYS[2], 'out'))
  if (rpm > 0 and req + 1 > rpm)
    or (itpm > 0 and used_in > 0 and used_in + est_in > itpm)
    or (otpm > 0 and used_out > 0 and used_out + est_out > otpm) then
    return {-1, window - (now % window)}
  end
  redis.call('HINCRBY', KEYS[2], 'req', 1)
  redis.call('HINCRBY', KEYS[2], 'in', est_in)
  redis.call('HINCRBY', KEYS[2], 'out', est_out)
  redis.call('PEXPIRE', KEYS[2], window * 2)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
return {1, minute}
";

/// Pauses the account's calls until `ARGV[1]` ms from now, unless a longer pause is
/// already set. KEYS[1] the pause.
const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + wait > current then
  redis.call('SET', KEYS[1], now + wait, 'PX', wait + 1000)
  return 1
end
return 0
";

/// Settles an attempt's reservation with what it used, if its minute is still the
/// window's. KEYS[1] the rate window; ARGV: the minute, the input and output
/// differences (used - reserved).
const SETTLE: &str = r"
if tonumber(redis.call('HGET', KEYS[1], 'win') or '-1') == tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'in', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'out', ARGV[3])
end
return 1
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
    /// Requests per minute for the account, across the fleet. Default: no limit.
    pub requests_per_minute: Option<u64>,
    /// Input tokens per minute: each attempt reserves its input estimate before it is
    /// sent and settles with what it used. Default: no limit.
    pub input_tokens_per_minute: Option<u64>,
    /// Output tokens per minute: each attempt reserves its `max_tokens`. Default: no
    /// limit.
    pub output_tokens_per_minute: Option<u64>,
    /// The window the three rates count in. Default: a minute, as the API's do.
    pub rate_window: Duration,
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
            requests_per_minute: None,
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
            rate_window: Duration::from_secs(60),
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
    /// Times a call waited for the next minute because a rate was spent (or for the
    /// end of a pause the API asked for).
    pub rate_waits: AtomicU64,
    /// Pauses the API asked for (its rate-limit headers) that this host passed on to
    /// the fleet.
    pub api_pauses: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    conn: ConnectionManager,
    key: String,
    rate_key: String,
    pause_key: String,
    config: FleetConfig,
    pause: Script,
    /// The end of the longest pause this host asked for (to ask once per pause).
    paused_until: std::sync::Mutex<Option<Instant>>,
    acquire: Script,
    settle: Script,
    heartbeat: Script,
    release: Script,
    alive: Script,
    stats: FleetStats,
    /// One waiter per host asks Redis at a time; the others queue here (in order), so
    /// that a host with hundreds of calls waiting sends one request per poll, not
    /// hundreds.
    turn: tokio::sync::Mutex<()>,
    breaker: Breaker,
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
        let conn = connect(url, config.op_timeout).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                key: format!("cf:{{{}}}:slots", config.account),
                rate_key: format!("cf:{{{}}}:rate", config.account),
                pause_key: format!("cf:{{{}}}:pause", config.account),
                pause: Script::new(PAUSE),
                paused_until: std::sync::Mutex::new(None),
                settle: Script::new(SETTLE),
                config,
                acquire: Script::new(ACQUIRE),
                heartbeat: Script::new(HEARTBEAT),
                release: Script::new(RELEASE),
                alive: Script::new(ALIVE),
                stats: FleetStats::default(),
                turn: tokio::sync::Mutex::new(()),
                breaker: Breaker::default(),
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

    async fn try_acquire(&self, slot: &str, estimate: &cf_llm::Usage) -> Result<Acquired, String> {
        let inner = &self.inner;
        let c = &inner.config;
        let mut conn = inner.conn.clone();
        let mut invocation = inner.acquire.prepare_invoke();
        invocation
            .key(&inner.key)
            .key(&inner.rate_key)
            .key(&inner.pause_key)
            .arg(slot)
            .arg(c.limit)
            .arg(c.lease.as_millis() as u64)
            .arg(c.requests_per_minute.unwrap_or(0))
            .arg(c.input_tokens_per_minute.unwrap_or(0))
            .arg(c.output_tokens_per_minute.unwrap_or(0))
            .arg(estimate.total_input())
            .arg(estimate.output_tokens)
            .arg((c.rate_window.as_millis() as u64).max(1));
        let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
        match tokio::time::timeout(inner.config.op_timeout, call).await {
            Ok(Ok((1, minute))) => Ok(Acquired::Slot(minute)),
            Ok(Ok((-1, ms))) => Ok(Acquired::RateSpent(Duration::from_millis(
                u64::try_from(ms).unwrap_or(0),
            ))),
            Ok(Ok(_)) => Ok(Acquired::Full),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                inner.config.op_timeout.as_millis()
            )),
        }
    }

    /// Notes a Redis failure; the error the call fails with (closed) or `None` (open).
    fn unreachable(&self, why: &str) -> Option<LlmError> {
        self.inner.breaker.failed();
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

    /// A call's outcome while Redis is away and the call is not the probe: at once, the
    /// typed error when failing closed, no lease when failing open.
    fn while_away(&self) -> Result<Option<Box<dyn Lease>>, LlmError> {
        match self.inner.config.fail {
            FailMode::Closed => Err(LlmError::Connection(
                "the fleet's concurrency limit is unreachable (Redis is away); the host fails closed: no model call without a lease".into(),
            )),
            FailMode::Open => Ok(None),
        }
    }

    fn reachable(&self) {
        self.inner.breaker.succeeded();
        if self.inner.stats.degraded.swap(false, Ordering::Relaxed) {
            tracing::warn!("Redis is reachable again: the fleet's limit applies");
        }
    }
}

/// The API's rate-limit headers ask for a pause: every host of the fleet waits it out
/// (`ACQUIRE` answers "rate spent" until it ends), instead of each meeting its own 429s.
impl cf_llm::RateObserver for RedisLimit {
    fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let Ok(mut known) = self.inner.paused_until.lock() else {
                return;
            };
            // Asked already (a response of every call in flight says the same).
            if known.is_some_and(|k| k + Duration::from_millis(50) >= until) {
                return;
            }
            *known = Some(until);
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limit = self.clone();
        self.inner.stats.api_pauses.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            wait_ms = wait.as_millis() as u64,
            "the API asked for a pause (rate-limit headers): the fleet waits"
        );
        rt.spawn(async move {
            let inner = &limit.inner;
            let mut conn = inner.conn.clone();
            let mut invocation = inner.pause.prepare_invoke();
            invocation
                .key(&inner.pause_key)
                .arg(wait.as_millis().max(1) as u64);
            let set = invocation.invoke_async::<i64>(&mut conn);
            if !matches!(
                tokio::time::timeout(inner.config.op_timeout, set).await,
                Ok(Ok(_))
            ) {
                let _ = limit.unreachable("passing the API's pause on failed");
            }
        });
    }
}

impl SharedLimit for RedisLimit {
    fn acquire(
        &self,
        deadline: Option<Instant>,
        estimate: cf_llm::Usage,
    ) -> BoxFuture<'_, Result<Option<Box<dyn Lease>>, LlmError>> {
        Box::pin(async move {
            let slot = random_id();
            let mut wait = Duration::from_millis(1);
            let gate = self.inner.breaker.gate();
            if gate == Gate::Skip {
                return self.while_away();
            }
            let _turn = self.inner.turn.lock().await;
            loop {
                let mut pause_for = None;
                // Queued behind a call that found Redis away: this one need not wait
                // for Redis too (unless it is the probe).
                if gate == Gate::Go && self.inner.breaker.away() {
                    return self.while_away();
                }
                match self.try_acquire(&slot, &estimate).await {
                    Ok(Acquired::Slot(minute)) => {
                        self.reachable();
                        self.inner.stats.leases.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(Box::new(RedisLease::start(
                            self.clone(),
                            slot,
                            minute,
                            estimate,
                        )) as Box<dyn Lease>));
                    }
                    Ok(Acquired::Full) => self.reachable(),
                    Ok(Acquired::RateSpent(until_next_minute)) => {
                        self.reachable();
                        self.inner.stats.rate_waits.fetch_add(1, Ordering::Relaxed);
                        pause_for = Some(until_next_minute);
                    }
                    Err(why) => {
                        return match self.unreachable(&why) {
                            Some(error) => Err(error),
                            None => Ok(None),
                        };
                    }
                }
                // Full: try again soon (jittered, so that waiting hosts do not move
                // in step), never past the deadline.
                let pause = match pause_for {
                    Some(d) => d + Duration::from_millis(1),
                    None => wait.mul_f64(0.5 + fastrand::f64()),
                };
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

/// A connection to `url` that is re-established when it breaks.
pub(crate) async fn connect(url: &str, op_timeout: Duration) -> Result<ConnectionManager, String> {
    connect_with(url, op_timeout, Some(op_timeout)).await
}

/// [`connect`], with the longest wait for one answer (a blocking read waits longer
/// than any other command).
pub(crate) async fn connect_with(
    url: &str,
    op_timeout: Duration,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url)
        .map_err(|e| format!("the Redis URL {}: {e}", without_password(url)))?;
    let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(response_timeout);
    tokio::time::timeout(
        op_timeout.max(Duration::from_secs(2)),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| format!("Redis at {} did not answer", without_password(url)))?
    .map_err(|e| format!("Redis at {}: {e}", without_password(url)))
}

/// 128 random bits in hex: an id no other process has (a fleet slot, a claim, a
/// server's run).
pub fn random_id() -> String {
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

/// How often Redis is asked whether it is back while it is away.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// What [`Breaker::gate`] lets an operation do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Redis is there: ask it.
    Go,
    /// Redis was away: this operation asks whether it is back.
    Probe,
    /// Redis is away: go without it.
    Skip,
}

/// Spares an outage's cost: once a Redis operation failed, the operations of the next
/// [`PROBE_EVERY`] do not ask Redis (they fail at once, as it would have: a
/// connection being re-established answers nothing until its timeout), and one
/// operation per interval probes whether it is back. Without it each call of a host
/// waited the operation timeout during an outage, one after the other.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    next_probe: std::sync::Mutex<Option<Instant>>,
}

impl Breaker {
    /// Whether to go without Redis now: it failed lately and this is not the probe.
    pub(crate) fn skip(&self) -> bool {
        self.gate() == Gate::Skip
    }

    /// Whether this operation asks Redis, as usual or as the probe, or goes without.
    pub(crate) fn gate(&self) -> Gate {
        let Ok(mut next) = self.next_probe.lock() else {
            return Gate::Go;
        };
        match *next {
            Some(at) if Instant::now() < at => Gate::Skip,
            Some(_) => {
                // This operation is the probe; the others go without until its outcome.
                *next = Some(Instant::now() + PROBE_EVERY);
                Gate::Probe
            }
            None => Gate::Go,
        }
    }

    /// Whether Redis failed lately (no probe claimed).
    pub(crate) fn away(&self) -> bool {
        self.next_probe
            .lock()
            .is_ok_and(|next| next.is_some_and(|at| Instant::now() < at))
    }

    /// A Redis operation failed.
    pub(crate) fn failed(&self) {
        if let Ok(mut next) = self.next_probe.lock() {
            *next = Some(Instant::now() + PROBE_EVERY);
        }
    }

    /// A Redis operation succeeded.
    pub(crate) fn succeeded(&self) {
        if let Ok(mut next) = self.next_probe.lock() {
            *next = None;
        }
    }
}

/// What one acquisition attempt found.
enum Acquired {
    /// A slot, in the rate window of this minute.
    Slot(i64),
    /// Every slot taken.
    Full,
    /// A rate is spent until the next minute, in this long.
    RateSpent(Duration),
}

/// A held slot: heartbeats while held, released when dropped.
#[derive(Debug)]
struct RedisLease {
    limit: RedisLimit,
    slot: String,
    heartbeat: tokio::task::JoinHandle<()>,
    /// The rate window the estimate was reserved in, and the estimate.
    minute: i64,
    estimate: cf_llm::Usage,
}

impl Lease for RedisLease {
    fn settle(&self, used: &cf_llm::Usage) {
        let c = &self.limit.inner.config;
        if c.input_tokens_per_minute.is_none() && c.output_tokens_per_minute.is_none() {
            return;
        }
        let diff = |used: u64, reserved: u64| i128::from(used) - i128::from(reserved);
        let (d_in, d_out) = (
            diff(used.total_input(), self.estimate.total_input()),
            diff(used.output_tokens, self.estimate.output_tokens),
        );
        let (limit, minute) = (self.limit.clone(), self.minute);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let inner = &limit.inner;
                let mut conn = inner.conn.clone();
                let mut invocation = inner.settle.prepare_invoke();
                invocation
                    .key(&inner.rate_key)
                    .arg(minute)
                    .arg(d_in.to_string())
                    .arg(d_out.to_string());
                let settled = tokio::time::timeout(
                    inner.config.op_timeout,
                    invocation.invoke_async::<i64>(&mut conn),
                )
                .await;
                if !matches!(settled, Ok(Ok(_))) {
                    let _ = limit.unreachable("settling a rate reservation failed");
                }
            });
        }
    }
}

impl RedisLease {
    fn start(limit: RedisLimit, slot: String, minute: i64, estimate: cf_llm::Usage) -> Self {
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
            minute,
            estimate,
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
