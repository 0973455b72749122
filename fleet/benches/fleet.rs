//! The fleet's limit on Redis, in release mode:
//!
//! ```text
//! cargo bench -p cf-fleet --bench fleet
//! ```
//!
//! 1. **What a lease adds to a model call**: one call at a time through `LlmService`
//!    against a provider that answers at once, with and without the Redis limit
//!    (acquire before the attempt, release after it): the median difference, from
//!    2000 calls each, interleaved in rounds.
//! 2. **Three hosts sharing a limit of 200 on 6000 runs** against the loopback
//!    server answering after 100 ms (ideal 6000 ÷ 200 × 100 ms = 3.0 s): wall time,
//!    and the most requests the server saw at once.
//!
//! Needs `redis-server` (a private one is started on a free port).

use cf_fleet::testing::RedisServer;
use cf_fleet::{FleetConfig, RedisLimit};
use cf_llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, CallContext, Ledger, LlmService, Message,
    OfflineProvider, Request,
};
use cf_mock_llm::{MockConfig, MockServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn per_call_us(svc: &LlmService, n: usize) -> Vec<f64> {
    let ledger = Ledger::unlimited();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let request = Request::new("claude-haiku-4-5", 16, vec![Message::user(format!("q{i}"))]);
        let start = Instant::now();
        svc.complete(&CallContext::new("a", &ledger), request)
            .await
            .expect("answered");
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times
}

async fn lease_cost(redis: &RedisServer) {
    let limit = RedisLimit::connect(&redis.url(), FleetConfig::new(200, "bench"))
        .await
        .expect("connects");
    let plain = LlmService::builder(Arc::new(OfflineProvider::new())).build();
    let leased = LlmService::builder(Arc::new(OfflineProvider::new()))
        .shared_limit(Arc::new(limit))
        .build();
    per_call_us(&plain, 200).await;
    per_call_us(&leased, 200).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        a.extend(per_call_us(&plain, 500).await);
        b.extend(per_call_us(&leased, 500).await);
    }
    let (a, b) = (median(&mut a), median(&mut b));
    println!(
        "a model call, one at a time, provider instant: without the fleet's limit {a:.1} µs, with it {b:.1} µs median: the lease adds {:.3} ms (target ≤ 0.5 ms)",
        (b - a) / 1000.0
    );
}

async fn three_hosts(redis: &RedisServer, server: &MockServer) {
    let mut services = Vec::new();
    for _ in 0..3 {
        let limit = RedisLimit::connect(&redis.url(), FleetConfig::new(200, "bench3"))
            .await
            .expect("connects");
        let provider = AnthropicProvider::new(AnthropicConfig::new(
            server.base_url(),
            ApiKey::new("bench-key"),
        ))
        .expect("client");
        services.push(
            LlmService::builder(Arc::new(provider))
                .max_concurrent(200)
                .max_retries(0)
                .shared_limit(Arc::new(limit))
                .build(),
        );
    }
    for round in 0..2 {
        server.reset_stats();
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..6000 {
            let svc = services[i % 3].clone();
            set.spawn(async move {
                let ledger = Ledger::unlimited();
                let r = Request::new(
                    "claude-haiku-4-5",
                    16,
                    vec![Message::user(format!("r{round} q{i}"))],
                );
                svc.complete(&CallContext::new("a", &ledger), r).await
            });
        }
        while let Some(done) = set.join_next().await {
            done.expect("no panic").expect("answered");
        }
        let wall = start.elapsed().as_secs_f64();
        if round == 1 {
            println!(
                "three hosts sharing a limit of 200, 6000 calls against 100 ms (ideal 3.0 s): {wall:.3} s (×{:.3}; target within 15 %), at most {} in flight at the server (limit 200)",
                wall / 3.0,
                server.max_in_flight()
            );
        }
    }
}

fn main() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cf-bench-mock")
        .enable_all()
        .build()
        .expect("runtime");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(redis) = rt.block_on(RedisServer::start(None)) else {
        return;
    };
    let server = server_rt
        .block_on(MockServer::start(MockConfig::for_load(
            Duration::from_millis(100),
        )))
        .expect("mock");
    rt.block_on(lease_cost(&redis));
    rt.block_on(three_hosts(&redis, &server));
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
