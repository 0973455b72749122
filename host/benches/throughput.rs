//! Throughput of whole agent runs through the library API against the loopback
//! Anthropic stand-in (cf-mock-llm) answering after 100 ms:
//!
//! ```text
//! cargo bench -p cf-host --bench throughput
//! ```
//!
//! Agents that make one call per run (`python-expert`, `code-reviewer`), alternating;
//! 200 runs at a concurrency limit of 10 (ideal 2.0 s), 1000 at 50 (ideal 2.0 s) and
//! 2000 at 200 (ideal 1.0 s), where the ideal is (API calls ÷ limit) × latency; then
//! the last two with a provider that only sleeps (no HTTP). Each row runs twice on
//! one host: cold (fresh host: new connections, fresh instance slots) and warm (the
//! same batch again, as a long-lived host serves its next one). `CF_BENCH_ROWS=2000@200,
//! no-http-1000@50` picks rows. `call p50` is the median time inside the model call
//! (permit wait excluded): what the stand-in's 100 ms really take, timer rounding
//! included. `CF_BENCH_SLOW=1` also prints every call over 120 ms and how the first
//! wave's requests arrived at the server: a cold host's first wave opens 200 TCP
//! connections, which on this VM cost 60-140 µs each (200 bare connects: 20-28 ms), so
//! its requests reach the server spread over 20-60 ms. Prints wall time and its ratio
//! to the ideal, the host's CPU time (its runtime's threads, not the mock's) per run,
//! and peak memory.

use cf_host::llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, BoxFuture, OfflineProvider, Provider,
    ProviderError, Request, Response,
};
use cf_host::{Agent, Host, Task};
use cf_mock_llm::measure::{cpu_seconds_of, status_mib};
use cf_mock_llm::{MockConfig, MockServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `CF_BENCH_SLOW` is set: report slow calls and the first wave's arrivals.
fn slow_report() -> bool {
    static SLOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SLOW.get_or_init(|| std::env::var_os("CF_BENCH_SLOW").is_some())
}

const LATENCY: Duration = Duration::from_millis(100);
const HOST_THREADS: &str = "cf-host-bench";
const SERVER_THREADS: &str = "mock-server";

/// Answers like the offline provider after a sleep: the same workload without HTTP,
/// to separate the sandbox's cost from the HTTP client's.
#[derive(Debug)]
struct Sleepy;

impl Provider for Sleepy {
    fn name(&self) -> &str {
        "sleepy"
    }
    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        Box::pin(async move {
            tokio::time::sleep(LATENCY).await;
            Ok(OfflineProvider::answer(request))
        })
    }
}

async fn run_case(
    label: &str,
    provider: Arc<dyn Provider>,
    server: &MockServer,
    runs: usize,
    limit: usize,
    cache: &std::path::Path,
) {
    let host = Host::builder()
        .provider(provider)
        .max_concurrent(limit)
        .max_retries(0)
        .data_dir(Some(cache.to_path_buf()))
        .no_response_cache()
        .build()
        .expect("host");
    let agents = [
        host.load("python-expert").await.expect("load"),
        host.load("code-reviewer").await.expect("load"),
    ];
    // Cold: a fresh host opens its connections and fills its instance slots in the
    // first wave. Warm: the same batch again on the same host, as a long-lived
    // embedding host serves its next batch.
    timed(&format!("{label} cold"), &agents, server, runs, limit).await;
    timed(&format!("{label} warm"), &agents, server, runs, limit).await;
}

async fn timed(label: &str, agents: &[Agent; 2], server: &MockServer, runs: usize, limit: usize) {
    server.reset_stats();
    let (host0, server0) = (cpu_seconds_of(HOST_THREADS), cpu_seconds_of(SERVER_THREADS));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..runs {
        let agent = agents[i % 2].clone();
        set.spawn(async move {
            agent
                .run(Task::new(format!("Task {i}: is `x = x + 1` idiomatic?")))
                .await
        });
    }
    let (mut ok, mut failed, mut calls) = (0usize, 0usize, 0u64);
    let mut attempt_ms: Vec<f64> = Vec::with_capacity(runs);
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(out)) => {
                ok += 1;
                calls += u64::from(out.stats.llm_calls);
                let t = &out.stats.timings;
                attempt_ms.push((t.llm - t.queue_wait).as_secs_f64() * 1e3);
                if slow_report() && (t.llm - t.queue_wait).as_millis() > 120 {
                    eprintln!(
                        "slow call {:.1} ms, run total {:.1} ms, queue {:.1} ms, instantiate {:.2} ms",
                        (t.llm - t.queue_wait).as_secs_f64() * 1e3,
                        t.total.as_secs_f64() * 1e3,
                        t.queue_wait.as_secs_f64() * 1e3,
                        t.instantiate.as_secs_f64() * 1e3
                    );
                }
            }
            Ok(Err(e)) => {
                if failed == 0 {
                    eprintln!("first failure: {} ({})", e.error, e.error.kind());
                }
                failed += 1;
            }
            Err(e) => {
                eprintln!("a run panicked: {e}");
                failed += 1;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    if slow_report() {
        let served = server.served();
        let first = served.iter().map(|s| s.arrived).min();
        if let Some(first) = first {
            let mut offs: Vec<f64> = served
                .iter()
                .map(|s| (s.arrived - first).as_secs_f64() * 1e3)
                .collect();
            offs.sort_by(f64::total_cmp);
            eprintln!(
                "first arrival {:.1} ms after start; arrivals of the first 200: 0 .. {:.1} ms; 100th {:.1}",
                (first - start).as_secs_f64() * 1e3,
                offs.get(199).copied().unwrap_or(0.0),
                offs.get(99).copied().unwrap_or(0.0)
            );
            let mut stay: Vec<f64> = served
                .iter()
                .filter_map(|s| s.left.map(|l| (l - s.arrived).as_secs_f64() * 1e3))
                .collect();
            stay.sort_by(f64::total_cmp);
            eprintln!(
                "threads now: {}",
                std::fs::read_dir("/proc/self/task")
                    .map(|d| d.count())
                    .unwrap_or(0)
            );
            eprintln!(
                "server time per request: p50 {:.2} p99 {:.2} max {:.2}",
                stay[stay.len() / 2],
                stay[stay.len() * 99 / 100],
                stay[stay.len() - 1]
            );
        }
    }
    let host_cpu = cpu_seconds_of(HOST_THREADS) - host0;
    let server_cpu = cpu_seconds_of(SERVER_THREADS) - server0;
    let ideal = (calls as f64 / limit as f64).ceil() * LATENCY.as_secs_f64();
    attempt_ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        attempt_ms
            .get(((attempt_ms.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let (attempt_p50, attempt_p99, attempt_max) = (at(0.5), at(0.99), at(1.0));
    println!(
        "{label:<13} {runs:>5} runs at limit {limit:>3}: wall {wall:6.3} s (ideal {ideal:.1} s, ×{:.3}), host CPU {host_cpu:5.2} s ({:.0} µs/run), \
         mock CPU {server_cpu:5.2} s, server peak in flight {}, ok {ok}, failed {failed}, call p50 {attempt_p50:.2} ms p99 {attempt_p99:.1} max {attempt_max:.1}, connections {}",
        wall / ideal,
        host_cpu / runs as f64 * 1e6,
        server.max_in_flight(),
        server.connections(),
    );
}

fn main() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .expect("server runtime");
    let host_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(HOST_THREADS)
        .enable_all()
        .build()
        .expect("host runtime");
    let server = server_rt
        .block_on(MockServer::start(MockConfig {
            latency: LATENCY,
            record: false,
            log_served: slow_report(),
            ..MockConfig::default()
        }))
        .expect("mock server");
    let base_url = server.base_url();
    println!(
        "cf-host throughput: agents → AnthropicProvider → cf-mock-llm at {base_url}, latency {LATENCY:?}, response cache off"
    );
    host_rt.block_on(async {
        let http = || -> Arc<dyn Provider> {
            Arc::new(
                AnthropicProvider::new(AnthropicConfig::new(&base_url, ApiKey::new("bench-key")))
                    .expect("client"),
            )
        };
        let only = std::env::var("CF_BENCH_ROWS").ok();
        let wanted = |row: &str| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|r| r == row))
        };
        for (runs, limit) in [(200, 10), (1000, 50), (2000, 200)] {
            if wanted(&format!("{runs}@{limit}")) {
                run_case("http", http(), &server, runs, limit, cache.path()).await;
            }
        }
        for (runs, limit) in [(1000, 50), (2000, 200)] {
            if wanted(&format!("no-http-{runs}@{limit}")) {
                let sleepy: Arc<dyn Provider> = Arc::new(Sleepy);
                run_case("no-http", sleepy, &server, runs, limit, cache.path()).await;
            }
        }
    });
    println!(
        "peak RSS of the process (host + mock): {:.0} MiB",
        status_mib("VmHWM:")
    );
    drop(server);
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
