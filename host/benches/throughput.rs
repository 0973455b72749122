//! Throughput of whole agent runs through the library API against the loopback
//! Anthropic stand-in (cf-mock-llm) answering after 100 ms:
//!
//! ```text
//! cargo bench -p cf-host --bench throughput
//! ```
//!
//! Agents that make one call per run (`python-expert`, `code-reviewer`), alternating;
//! 2000 runs at a concurrency limit of 200 (ideal 1.0 s) and 1000 at 50 (ideal 2.0 s),
//! where the ideal is (API calls ÷ limit) × latency. Each case runs on a fresh host
//! (new connections: "cold"). Prints wall time and its ratio to the ideal, the host's
//! CPU time (its runtime's threads, not the mock's) per run, and peak memory.

use cf_host::llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, BoxFuture, OfflineProvider, Provider,
    ProviderError, Request, Response,
};
use cf_host::{Host, Task};
use cf_mock_llm::measure::{cpu_seconds_of, status_mib};
use cf_mock_llm::{MockConfig, MockServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        .cache_dir(Some(cache.to_path_buf()))
        .no_response_cache()
        .build()
        .expect("host");
    let agents = [
        host.load("python-expert").await.expect("load"),
        host.load("code-reviewer").await.expect("load"),
    ];
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
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(out)) => {
                ok += 1;
                calls += u64::from(out.stats.llm_calls);
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
    let host_cpu = cpu_seconds_of(HOST_THREADS) - host0;
    let server_cpu = cpu_seconds_of(SERVER_THREADS) - server0;
    let ideal = (calls as f64 / limit as f64).ceil() * LATENCY.as_secs_f64();
    println!(
        "{label:<10} {runs:>5} runs at limit {limit:>3}: wall {wall:6.3} s (ideal {ideal:.1} s, ×{:.3}), host CPU {host_cpu:5.2} s ({:.0} µs/run), \
         mock CPU {server_cpu:5.2} s, server peak in flight {}, ok {ok}, failed {failed}",
        wall / ideal,
        host_cpu / runs as f64 * 1e6,
        server.max_in_flight(),
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
        run_case("http", http(), &server, 2000, 200, cache.path()).await;
        run_case("http", http(), &server, 1000, 50, cache.path()).await;
        run_case(
            "no-http",
            Arc::new(Sleepy),
            &server,
            2000,
            200,
            cache.path(),
        )
        .await;
        run_case("no-http", Arc::new(Sleepy), &server, 1000, 50, cache.path()).await;
    });
    println!(
        "peak RSS of the process (host + mock): {:.0} MiB",
        status_mib("VmHWM:")
    );
    drop(server);
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
