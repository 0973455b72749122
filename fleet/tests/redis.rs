//! The fleet's limit against a real `redis-server` (started on a free loopback port
//! by each test, stopped when it ends) and, through `LlmService`, the loopback
//! Anthropic server.

use cf_fleet::testing::RedisServer as Redis;
use cf_fleet::{FailMode, FleetConfig, RedisLimit};
use cf_llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, CallContext, Ledger, LlmError, LlmService, Message,
    Request, SharedLimit, Usage,
};
use cf_mock_llm::{MockConfig, MockServer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn config(limit: usize) -> FleetConfig {
    FleetConfig {
        op_timeout: Duration::from_millis(500),
        ..FleetConfig::new(limit, "test-account")
    }
}

/// Polls `cond` until it holds, failing with `what` after 20 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < end, "{what}: still not true after 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three hosts (each its own connection) share a limit of 5: 60 holders at once
/// never exceed it, and reach it; every slot is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_share_one_limit_and_give_every_slot_back() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(
            RedisLimit::connect(&redis.url(), config(5))
                .await
                .expect("connects"),
        );
    }
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (host, now, max) = (hosts[i % 3].clone(), now.clone(), max.clone());
        tasks.spawn(async move {
            let lease = host
                .acquire(None, Usage::default())
                .await
                .expect("no Redis error")
                .expect("a lease");
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            // The attempt's work.
            tokio::time::sleep(Duration::from_millis(5)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            drop(lease);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("no panic");
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        5,
        "the limit held, and was reached"
    );
    let host = hosts[0].clone();
    eventually("every slot is given back", || {
        let host = host.clone();
        async move { host.slots_in_use().await == Ok(0) }
    })
    .await;
    assert_eq!(
        hosts
            .iter()
            .map(|h| h.stats().leases.load(Ordering::Relaxed))
            .sum::<u64>(),
        60
    );
}

/// A process that dies holding a slot (its heartbeats stop, it never releases): the
/// slot is free again after one lease, and not before it is pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_slot_is_freed_after_its_lease() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let lease = Duration::from_millis(600);
    let cfg = FleetConfig { lease, ..config(1) };
    let url = redis.url();
    // The "process": a runtime of its own, dropped with its lease forgotten.
    let dead_cfg = cfg.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let limit = RedisLimit::connect(&url, dead_cfg).await.expect("connects");
            let held = limit
                .acquire(None, Usage::default())
                .await
                .expect("ok")
                .expect("a lease");
            std::mem::forget(held);
        });
        drop(rt);
    })
    .join()
    .expect("the dead process ran");
    let survivor = RedisLimit::connect(&redis.url(), cfg)
        .await
        .expect("connects");
    assert_eq!(
        survivor.slots_in_use().await,
        Ok(1),
        "the dead holder's slot is still counted"
    );
    let soon = Instant::now() + Duration::from_millis(100);
    let refused = survivor.acquire(Some(soon), Usage::default()).await;
    assert!(
        matches!(refused, Err(LlmError::Timeout(_))),
        "the limit of 1 is taken until the lease runs out: {refused:?}"
    );
    let started = Instant::now();
    let got = survivor
        .acquire(None, Usage::default())
        .await
        .expect("ok")
        .expect("a lease");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the lease ran out"
    );
    drop(got);
}

/// Redis goes away mid-run: fail-closed refuses calls with a typed error, fail-open
/// lets them go and says so (degraded, errors counted); when Redis is back, the limit
/// applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_closed_or_open_as_configured() {
    let Some(mut redis) = Redis::start(None).await else {
        return;
    };
    let port = redis.port;
    let closed = RedisLimit::connect(&redis.url(), config(2))
        .await
        .expect("connects");
    let open = RedisLimit::connect(
        &redis.url(),
        FleetConfig {
            fail: FailMode::Open,
            ..config(2)
        },
    )
    .await
    .expect("connects");
    drop(
        closed
            .acquire(None, Usage::default())
            .await
            .expect("ok")
            .expect("a lease"),
    );
    redis.stop();
    let e = closed
        .acquire(None, Usage::default())
        .await
        .expect_err("fails closed");
    assert!(
        matches!(e, LlmError::Connection(ref m) if m.contains("fails closed")),
        "{e:?}"
    );
    assert!(closed.stats().degraded.load(Ordering::Relaxed));
    let went = open
        .acquire(None, Usage::default())
        .await
        .expect("fails open");
    assert!(
        went.is_none(),
        "no lease: the call goes under the local limit"
    );
    assert!(open.stats().degraded.load(Ordering::Relaxed));
    assert!(open.stats().redis_errors.load(Ordering::Relaxed) >= 1);
    // During the outage calls do not each wait for Redis: one probe at a time asks.
    let before = open.stats().redis_errors.load(Ordering::Relaxed);
    for _ in 0..100 {
        let went = open
            .acquire(None, Usage::default())
            .await
            .expect("fails open");
        assert!(went.is_none());
    }
    let asked = open.stats().redis_errors.load(Ordering::Relaxed) - before;
    assert!(asked < 50, "{asked} of 100 calls asked the absent Redis");
    // Back on the same port: the connections come back and the limit applies.
    let _again = Redis::start(Some(port)).await.expect("restarts");
    eventually("the fail-closed host gets a lease again", || {
        let closed = closed.clone();
        async move { matches!(closed.acquire(None, Usage::default()).await, Ok(Some(_))) }
    })
    .await;
    assert!(!closed.stats().degraded.load(Ordering::Relaxed));
}

fn service(server: &MockServer, limit: RedisLimit, local: usize) -> LlmService {
    let provider =
        AnthropicProvider::new(AnthropicConfig::new(server.base_url(), ApiKey::new("k")))
            .expect("client");
    LlmService::builder(Arc::new(provider))
        .max_concurrent(local)
        .max_retries(0)
        .shared_limit(Arc::new(limit))
        .build()
}

/// Three services (three hosts) with a local limit of 50 each and a fleet limit of 20:
/// the loopback server never sees more than 20 calls at once, and sees 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_limit_bounds_what_the_api_sees() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig::for_load(Duration::from_millis(20)))
        .await
        .expect("mock");
    let mut services = Vec::new();
    for _ in 0..3 {
        let limit = RedisLimit::connect(&redis.url(), config(20))
            .await
            .expect("connects");
        services.push(service(&server, limit, 50));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let svc = services[i % 3].clone();
        tasks.spawn(async move {
            let ledger = Ledger::unlimited();
            let request =
                Request::new("claude-haiku-4-5", 16, vec![Message::user(format!("q{i}"))]);
            svc.complete(&CallContext::new("a", &ledger), request).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("no panic").expect("answered");
    }
    assert_eq!(server.requests(), 300);
    assert_eq!(server.max_in_flight(), 20, "the fleet's limit, not 3 × 50");
}

/// A call whose deadline comes mid-attempt gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_mid_attempt_gives_the_slot_back() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig {
        latency: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let limit = RedisLimit::connect(&redis.url(), config(3))
        .await
        .expect("connects");
    let svc = service(&server, limit.clone(), 10);
    let ledger = Ledger::unlimited();
    let call =
        CallContext::new("a", &ledger).with_deadline(Instant::now() + Duration::from_millis(300));
    let request = Request::new("claude-haiku-4-5", 16, vec![Message::user("slow")]);
    let e = svc
        .complete(&call, request)
        .await
        .expect_err("the deadline");
    assert!(matches!(e, LlmError::Timeout(_)), "{e:?}");
    eventually("the slot is given back", || {
        let limit = limit.clone();
        async move { limit.slots_in_use().await == Ok(0) }
    })
    .await;
}

// ---- the shared response cache -------------------------------------------------------

const SECRET: &[u8] = b"a secret of the whole fleet, 32+ bytes";

/// A host: its own response cache in `dir`, the fleet's on `redis`.
async fn cached_host(
    server: &MockServer,
    redis: &Redis,
    dir: &std::path::Path,
) -> (LlmService, cf_fleet::RedisCache) {
    let local = cf_cache::ResponseCache::open(cf_cache::CacheConfig::new(dir.join("responses")))
        .expect("local cache");
    let shared = cf_fleet::RedisCache::connect(
        &redis.url(),
        cf_fleet::CacheConfig::new(SECRET.to_vec(), Duration::from_secs(3600)),
    )
    .await
    .expect("connects");
    let provider =
        AnthropicProvider::new(AnthropicConfig::new(server.base_url(), ApiKey::new("k")))
            .expect("client");
    let svc = LlmService::builder(Arc::new(provider))
        .max_retries(0)
        .response_cache(local, None)
        .shared_cache(Arc::new(shared.clone()))
        .build();
    (svc, shared)
}

async fn ask(svc: &LlmService, text: &str) -> cf_llm::Completion {
    let ledger = Ledger::unlimited();
    let request = Request::new("claude-haiku-4-5", 16, vec![Message::user(text)]);
    svc.complete(&CallContext::new("agent", &ledger), request)
        .await
        .expect("answered")
}

async fn redis_conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

/// An answer one host got is served to another from Redis (one upstream call); a
/// value tampered with in Redis, or moved to another key, is rejected, removed and
/// never served: the next host calls upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_share_answers_and_reject_tampered_ones() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, _) = cached_host(&server, &redis, dirs[0].path()).await;
    let (b, b_cache) = cached_host(&server, &redis, dirs[1].path()).await;
    let first = ask(&a, "shared question").await;
    assert!(!first.cached);
    let second = ask(&b, "shared question").await;
    assert!(second.cached, "host b got host a's answer from Redis");
    assert_eq!(second.response, first.response);
    assert_eq!(server.requests(), 1, "one upstream call for two hosts");
    assert_eq!(b_cache.stats().hits.load(Ordering::Relaxed), 1);

    // Tamper with the stored answer: flip a byte of its text.
    let mut conn = redis_conn(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("cf:{*}:answer")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("get");
    let last = value.len() - 3;
    value[last] ^= 0x01;
    let () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(&value)
        .query_async(&mut conn)
        .await
        .expect("set");
    let (c, c_cache) = cached_host(&server, &redis, dirs[2].path()).await;
    let third = ask(&c, "shared question").await;
    assert!(!third.cached, "a tampered answer is never served");
    assert_eq!(third.response.text, first.response.text);
    assert_eq!(server.requests(), 2);
    assert_eq!(c_cache.stats().rejected.load(Ordering::Relaxed), 1);

    // Move the (fresh, valid) answer to the key of another question.
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("get");
    // Another question's key: ask it on host d (which stores its answer), then put the
    // first question's valid value there and ask it on a fresh host.
    let (d, d_cache) = cached_host(&server, &redis, dirs[3].path()).await;
    ask(&d, "another question").await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("cf:{*}:answer")
        .query_async(&mut conn)
        .await
        .expect("keys");
    let holder = keys_first(&keys, &value, &mut conn).await;
    let other = keys
        .iter()
        .find(|k| **k != holder)
        .cloned()
        .expect("the other question's key");
    let () = redis::cmd("SET")
        .arg(&other)
        .arg(&value)
        .query_async(&mut conn)
        .await
        .expect("set");
    let fresh = tempfile::tempdir().expect("dir");
    let (e, e_cache) = cached_host(&server, &redis, fresh.path()).await;
    let before = server.requests();
    let moved = ask(&e, "another question").await;
    assert!(
        !moved.cached,
        "an answer moved to another key is never served"
    );
    assert_ne!(moved.response.text, first.response.text);
    assert_eq!(server.requests(), before + 1);
    assert_eq!(e_cache.stats().rejected.load(Ordering::Relaxed), 1);
    drop(d_cache);
}

/// The key that holds `value`.
async fn keys_first(
    keys: &[String],
    value: &[u8],
    conn: &mut redis::aio::MultiplexedConnection,
) -> String {
    for k in keys {
        let v: Vec<u8> = redis::cmd("GET")
            .arg(k)
            .query_async(conn)
            .await
            .expect("get");
        if v == value {
            return k.clone();
        }
    }
    panic!("no key holds the value");
}

/// Two hosts asking the same question at once make one upstream call: the second
/// waits for the first's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_calls_on_two_hosts_make_one_upstream_call() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _) = cached_host(&server, &redis, da.path()).await;
    let (b, b_cache) = cached_host(&server, &redis, db.path()).await;
    let (x, y) = tokio::join!(ask(&a, "at once"), ask(&b, "at once"));
    assert_eq!(x.response.text, y.response.text);
    assert_eq!(server.requests(), 1, "one upstream call");
    assert!(
        x.cached != y.cached,
        "one made the call, the other got its answer"
    );
    let _ = b_cache;
}

/// Rates across the fleet: requests per window are counted, and each attempt's token
/// estimate is reserved before it goes and settled with what it used after (so a
/// generous `max_tokens` holds the window only until the answer says what it used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_reserve_the_estimate_and_settle_the_use() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    // A day's window: no test crosses it.
    let day = Duration::from_secs(86_400);
    let requests = FleetConfig {
        requests_per_minute: Some(3),
        rate_window: day,
        ..config(10)
    };
    let a = RedisLimit::connect(&redis.url(), requests.clone())
        .await
        .expect("connects");
    let b = RedisLimit::connect(&redis.url(), requests)
        .await
        .expect("connects");
    for host in [&a, &b, &a] {
        drop(
            host.acquire(None, Usage::default())
                .await
                .expect("ok")
                .expect("a lease"),
        );
    }
    let soon = Instant::now() + Duration::from_millis(200);
    let fourth = b.acquire(Some(soon), Usage::default()).await;
    assert!(
        matches!(fourth, Err(LlmError::Timeout(_))),
        "the window's 3 requests are spent: {fourth:?}"
    );
    assert!(
        b.stats().rate_waits.load(Ordering::Relaxed) >= 1,
        "it waited for the window"
    );

    // Output tokens: a limit of 1000, attempts reserving 600 (their max_tokens).
    let tokens = FleetConfig {
        output_tokens_per_minute: Some(1000),
        rate_window: day,
        account: "tokens".into(),
        ..config(10)
    };
    let host = RedisLimit::connect(&redis.url(), tokens)
        .await
        .expect("connects");
    let estimate = Usage {
        input_tokens: 10,
        output_tokens: 600,
        ..Usage::default()
    };
    let first = host
        .acquire(None, estimate)
        .await
        .expect("ok")
        .expect("a lease");
    let soon = Instant::now() + Duration::from_millis(200);
    let refused = host.acquire(Some(soon), estimate).await;
    assert!(
        matches!(refused, Err(LlmError::Timeout(_))),
        "600 + 600 > 1000 while reserved: {refused:?}"
    );
    // The first used 50: settled, the window holds 50, and another 600 fits.
    first.settle(&Usage {
        input_tokens: 10,
        output_tokens: 50,
        ..Usage::default()
    });
    drop(first);
    eventually("the settled window admits another attempt", || {
        let host = host.clone();
        async move {
            let soon = Instant::now() + Duration::from_millis(50);
            matches!(host.acquire(Some(soon), estimate).await, Ok(Some(_)))
        }
    })
    .await;
}

/// Two hosts under the API's own request rate (the loopback server: 20 requests per
/// 300 ms window, with its `anthropic-ratelimit-*` headers and 429s): 120 calls with
/// `observe` (the hosts pass the API's pauses to the fleet) or without. Returns the
/// calls that succeeded, the 429s the API sent, and the pauses passed on.
async fn under_the_apis_rate(redis: &Redis, observe: bool) -> (usize, u64, u64) {
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(10),
        record: false,
        rate_limit: Some(cf_mock_llm::RateLimit {
            requests: 20,
            window: Duration::from_millis(300),
        }),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let account = format!("rate-{}", cf_fleet::random_id());
    let mut hosts = Vec::new();
    let mut limits = Vec::new();
    for _ in 0..2 {
        let limit = RedisLimit::connect(&redis.url(), FleetConfig::new(10, account.clone()))
            .await
            .expect("connects");
        let mut config = AnthropicConfig::new(server.base_url(), ApiKey::new("k"));
        if observe {
            config.rate_observer = Some(Arc::new(limit.clone()));
        }
        let provider = AnthropicProvider::new(config).expect("client");
        let svc = LlmService::builder(Arc::new(provider))
            .max_concurrent(10)
            .max_retries(2)
            .shared_limit(Arc::new(limit.clone()))
            .build();
        hosts.push(svc);
        limits.push(limit);
    }
    let ok = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for (h, svc) in hosts.iter().enumerate() {
        for i in 0..60 {
            let (svc, ok) = (svc.clone(), ok.clone());
            calls.push(tokio::spawn(async move {
                let ledger = Ledger::unlimited();
                let request = Request::new(
                    "claude-haiku-4-5",
                    16,
                    vec![Message::user(format!("host {h} call {i}"))],
                );
                if svc
                    .complete(&CallContext::new("a", &ledger), request)
                    .await
                    .is_ok()
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for c in calls {
        c.await.expect("call");
    }
    let pauses = limits
        .iter()
        .map(|l| l.stats().api_pauses.load(Ordering::Relaxed))
        .sum();
    (ok.load(Ordering::Relaxed), server.rate_limited(), pauses)
}

/// When the API says a rate is spent (`-remaining: 0` until `-reset`), the host that
/// hears it pauses the whole fleet until the reset: far fewer 429s than hosts that
/// each find out for themselves, and every call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_rate_headers_pause_the_whole_fleet() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let (ok, refused, pauses) = under_the_apis_rate(&redis, true).await;
    let (ok_alone, refused_alone, _) = under_the_apis_rate(&redis, false).await;
    eprintln!(
        "observed: ok {ok}, 429s {refused}, pauses {pauses}; alone: ok {ok_alone}, 429s {refused_alone}"
    );
    assert_eq!(ok, 120, "every call succeeds");
    assert!(pauses >= 1, "the API's pauses were passed on");
    assert!(
        refused < refused_alone,
        "{refused} 429s with the fleet pausing, {refused_alone} without"
    );
}
