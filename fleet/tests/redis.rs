//! The fleet's limit against a real `redis-server` (started on a free loopback port
//! by each test, stopped when it ends) and, through `LlmService`, the loopback
//! Anthropic server.

use cf_fleet::testing::RedisServer as Redis;
use cf_fleet::{FailMode, FleetConfig, RedisLimit};
use cf_llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, CallContext, Ledger, LlmError, LlmService, Message,
    Request, SharedLimit,
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
                .acquire(None)
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
            let held = limit.acquire(None).await.expect("ok").expect("a lease");
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
    let refused = survivor.acquire(Some(soon)).await;
    assert!(
        matches!(refused, Err(LlmError::Timeout(_))),
        "the limit of 1 is taken until the lease runs out: {refused:?}"
    );
    let started = Instant::now();
    let got = survivor.acquire(None).await.expect("ok").expect("a lease");
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
    drop(closed.acquire(None).await.expect("ok").expect("a lease"));
    redis.stop();
    let e = closed.acquire(None).await.expect_err("fails closed");
    assert!(
        matches!(e, LlmError::Connection(ref m) if m.contains("fails closed")),
        "{e:?}"
    );
    assert!(closed.stats().degraded.load(Ordering::Relaxed));
    let went = open.acquire(None).await.expect("fails open");
    assert!(
        went.is_none(),
        "no lease: the call goes under the local limit"
    );
    assert!(open.stats().degraded.load(Ordering::Relaxed));
    assert!(open.stats().redis_errors.load(Ordering::Relaxed) >= 1);
    // Back on the same port: the connections come back and the limit applies.
    let _again = Redis::start(Some(port)).await.expect("restarts");
    eventually("the fail-closed host gets a lease again", || {
        let closed = closed.clone();
        async move { matches!(closed.acquire(None).await, Ok(Some(_))) }
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
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(20),
        record: false,
        ..MockConfig::default()
    })
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
