//! The fleet's response cache on Redis ([`RedisCache`]), a tier behind each host's own.
//!
//! An answer is stored under `cf:{<request key>}:answer` (the canonical request key
//! the local cache uses, as a hash tag: an answer and its claim share a Redis Cluster
//! slot) for the cache's TTL, as Redis expiry. Its value is sealed: a version byte,
//! the time it was written (ms since the epoch) and an HMAC-SHA256, under the fleet's
//! secret (`cache.secret`, the same on every host), over the key, that time and the
//! answer. So a value moved to another key, forged without the secret, or restored
//! after it expired by its own stamp is detected: removed (if it is still the one
//! read), counted, and not served.
//!
//! Identical calls in flight on several hosts make one upstream call: the first
//! claims `cf:{<request key>}:claim` (`SET NX PX`), the others wait for the answer,
//! polling, until their deadline; a claimant that dies lets its claim expire, and
//! another host takes over.
//!
//! Redis' memory is the bound: run it with `maxmemory` and `maxmemory-policy
//! volatile-lru` (every answer has a TTL) or `allkeys-lru`. A Redis error is a miss
//! (logged, counted); the call goes on without the shared tier.

use cf_llm::{BoxFuture, FleetFlight, Lease, SharedCache};
use hmac::{Hmac, Mac};
use redis::Script;
use redis::aio::ConnectionManager;
use sha2::Sha256;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 32;

/// Deletes KEYS[1] if it still holds ARGV[1] (a bad value, or this host's claim).
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How the shared cache works.
#[derive(Clone)]
pub struct CacheConfig {
    /// The secret answers are sealed with; the same on every host. At least 16 bytes.
    pub secret: Vec<u8>,
    /// How long an answer is kept.
    pub ttl: Duration,
    /// How long a claim holds other hosts back (a claimant that dies frees the call
    /// after this). Default 5 min.
    pub claim_ttl: Duration,
    /// The longest one Redis operation may take. Default 1 s.
    pub op_timeout: Duration,
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("claim_ttl", &self.claim_ttl)
            .finish_non_exhaustive()
    }
}

impl CacheConfig {
    /// Answers sealed with `secret`, kept for `ttl`.
    pub fn new(secret: Vec<u8>, ttl: Duration) -> Self {
        Self {
            secret,
            ttl,
            claim_ttl: Duration::from_secs(300),
            op_timeout: Duration::from_secs(1),
        }
    }
}

/// What the shared cache has seen.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Answers found.
    pub hits: AtomicU64,
    /// Lookups without an answer.
    pub misses: AtomicU64,
    /// Values that did not verify (removed, not served).
    pub rejected: AtomicU64,
    /// Redis operations that failed or timed out.
    pub redis_errors: AtomicU64,
    /// Calls answered by another host's call in flight.
    pub shared_flights: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    conn: ConnectionManager,
    config: CacheConfig,
    delete_if: Script,
    stats: CacheStats,
    breaker: crate::Breaker,
}

/// The fleet's response cache on Redis (see the module's docs).
#[derive(Debug, Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RedisCache {
    /// Connects to `url`; fails on a secret shorter than 16 bytes.
    pub async fn connect(url: &str, config: CacheConfig) -> Result<Self, String> {
        if config.secret.len() < 16 {
            return Err(
                "the shared cache's secret (cache.secret) must be at least 16 bytes".into(),
            );
        }
        let conn = crate::connect(url, config.op_timeout).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                config,
                delete_if: Script::new(DELETE_IF),
                stats: CacheStats::default(),
                breaker: crate::Breaker::default(),
            }),
        })
    }

    /// What the cache has seen.
    pub fn stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// The Redis key of an answer.
    pub fn answer_key(key: &str) -> String {
        format!("cf:{{{key}}}:answer")
    }

    fn claim_key(key: &str) -> String {
        format!("cf:{{{key}}}:claim")
    }

    fn mac(&self, key: &str, written: u64, answer: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.inner.config.secret)
            .expect("HMAC takes a key of any length");
        mac.update(b"cf-fleet answer v1\0");
        mac.update(key.as_bytes());
        mac.update(b"\0");
        mac.update(&written.to_be_bytes());
        mac.update(answer);
        mac
    }

    /// `answer` sealed for `key`, written now.
    fn seal(&self, key: &str, answer: &[u8]) -> Vec<u8> {
        let written = now_ms();
        let tag = self.mac(key, written, answer).finalize().into_bytes();
        let mut out = Vec::with_capacity(HEADER + answer.len());
        out.push(VERSION);
        out.extend_from_slice(&written.to_be_bytes());
        out.extend_from_slice(&tag);
        out.extend_from_slice(answer);
        out
    }

    /// The answer in `value` if it was sealed for `key` with the secret and has not
    /// outlived the TTL by its own stamp.
    fn open<'v>(&self, key: &str, value: &'v [u8]) -> Result<&'v [u8], &'static str> {
        if value.len() < HEADER || value[0] != VERSION {
            return Err("not a sealed answer");
        }
        let written = u64::from_be_bytes(value[1..9].try_into().map_err(|_| "short")?);
        let answer = &value[HEADER..];
        self.mac(key, written, answer)
            .verify_slice(&value[9..HEADER])
            .map_err(
                |_| "its seal does not verify (tampered, moved from another key, or forged)",
            )?;
        let ttl = self.inner.config.ttl.as_millis() as u64;
        if written.saturating_add(ttl) < now_ms() {
            return Err("it outlived its TTL (an old value restored?)");
        }
        Ok(answer)
    }

    fn failed(&self, what: &str, error: &str) {
        self.inner.breaker.failed();
        self.inner
            .stats
            .redis_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %error, "the shared response cache: {what} failed; going on without it");
    }

    async fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let redis_key = Self::answer_key(key);
        if inner.breaker.skip() {
            return None;
        }
        let cmd = redis::Cmd::get(&redis_key);
        let value: Option<Vec<u8>> =
            match tokio::time::timeout(inner.config.op_timeout, cmd.query_async(&mut conn)).await {
                Ok(Ok(v)) => {
                    inner.breaker.succeeded();
                    v
                }
                Ok(Err(e)) => {
                    self.failed("a lookup", &e.to_string());
                    return None;
                }
                Err(_) => {
                    self.failed("a lookup", "no answer in time");
                    return None;
                }
            };
        let value = value?;
        match self.open(key, &value) {
            Ok(answer) => Some(answer.to_vec()),
            Err(why) => {
                inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %key, why, "a shared cached answer was rejected and removed");
                let mut invocation = inner.delete_if.prepare_invoke();
                invocation.key(&redis_key).arg(value);
                let _ = tokio::time::timeout(
                    inner.config.op_timeout,
                    invocation.invoke_async::<i64>(&mut conn),
                )
                .await;
                None
            }
        }
    }

    /// Tries to claim `key` for this host.
    async fn claim(&self, key: &str) -> Result<Option<Box<dyn Lease>>, ()> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let token = crate::random_id();
        let claim_key = Self::claim_key(key);
        if inner.breaker.skip() {
            return Err(());
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(&claim_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(inner.config.claim_ttl.as_millis() as u64);
        match tokio::time::timeout(
            inner.config.op_timeout,
            cmd.query_async::<Option<String>>(&mut conn),
        )
        .await
        {
            Ok(Ok(Some(_))) => Ok(Some(Box::new(Claim {
                cache: self.clone(),
                key: claim_key,
                token,
            }))),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => {
                self.failed("a claim", &e.to_string());
                Err(())
            }
            Err(_) => {
                self.failed("a claim", "no answer in time");
                Err(())
            }
        }
    }
}

/// This host's claim on a call; released (only if still its own) when dropped.
#[derive(Debug)]
struct Claim {
    cache: RedisCache,
    key: String,
    token: String,
}

impl Lease for Claim {}

impl Drop for Claim {
    fn drop(&mut self) {
        let (cache, key, token) = (
            self.cache.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let inner = &cache.inner;
                let mut conn = inner.conn.clone();
                let mut invocation = inner.delete_if.prepare_invoke();
                invocation.key(&key).arg(&token);
                let _ = tokio::time::timeout(
                    inner.config.op_timeout,
                    invocation.invoke_async::<i64>(&mut conn),
                )
                .await;
            });
        }
    }
}

impl SharedCache for RedisCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let found = self.get_raw(key).await;
            let counter = if found.is_some() {
                &self.inner.stats.hits
            } else {
                &self.inner.stats.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
            found
        })
    }

    fn put<'a>(&'a self, key: &'a str, answer: Vec<u8>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn.clone();
            if inner.breaker.skip() {
                return;
            }
            let sealed = self.seal(key, &answer);
            let mut cmd = redis::cmd("SET");
            cmd.arg(Self::answer_key(key))
                .arg(sealed)
                .arg("PX")
                .arg((inner.config.ttl.as_millis() as u64).max(1));
            match tokio::time::timeout(inner.config.op_timeout, cmd.query_async::<()>(&mut conn))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.failed("storing an answer", &e.to_string()),
                Err(_) => self.failed("storing an answer", "no answer in time"),
            }
        })
    }

    fn flight<'a>(&'a self, key: &'a str, deadline: Option<Instant>) -> BoxFuture<'a, FleetFlight> {
        Box::pin(async move {
            let mut waited = false;
            let mut pause = Duration::from_millis(2);
            loop {
                if let Some(answer) = self.get_raw(key).await {
                    self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
                    if waited {
                        self.inner
                            .stats
                            .shared_flights
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return FleetFlight::Answer(answer);
                }
                match self.claim(key).await {
                    Ok(Some(claim)) => {
                        self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
                        return FleetFlight::Lead(Some(claim));
                    }
                    // Redis is away: this host makes the call on its own.
                    Err(()) => return FleetFlight::Lead(None),
                    Ok(None) => {}
                }
                // Another host makes the call: wait for its answer, never past the
                // deadline (then this host makes its own).
                waited = true;
                let until = Instant::now() + pause;
                pause = (pause * 2).min(Duration::from_millis(20));
                match deadline {
                    Some(d) if d <= until => return FleetFlight::Lead(None),
                    _ => tokio::time::sleep_until(until).await,
                }
            }
        })
    }
}
