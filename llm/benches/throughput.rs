//! Throughput of the model-call path (`LlmService` + `AnthropicProvider`, no WASM)
//! against cf-mock-llm answering after 100 ms, on loopback.
//!
//! ```text
//! cargo bench -p cf-llm --bench throughput
//! ```
//!
//! For each case it prints the wall time, its ratio to the ideal
//! (`ceil(calls / limit) × latency`), the CPU time of the client threads (the code
//! under test) and of the mock server's threads, and the server's peak of requests in
//! flight; at the end, the process's peak RSS. CPU times come from
//! `/proc/self/task/*/stat` (clock ticks of 10 ms), RSS from `/proc/self/status`.

use cf_llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, CallContext, Ledger, LlmService, Message, Request,
};
use cf_mock_llm::measure::{cpu_seconds_of, status_mib};
use cf_mock_llm::{MockConfig, MockServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(100);
const CLIENT_THREADS: &str = "bench-client";
const SERVER_THREADS: &str = "mock-server";

/// A service with its own connection pool, limited to `limit` attempts in flight.
fn service(base_url: &str, limit: usize) -> LlmService {
    let provider = AnthropicProvider::new(AnthropicConfig::new(base_url, ApiKey::new("bench-key")))
        .expect("valid config");
    LlmService::builder(Arc::new(provider))
        .max_concurrent(limit)
        .max_retries(0)
        .build()
}

async fn run_case(label: &str, service: &LlmService, server: &MockServer, calls: usize) {
    let limit = service.max_concurrent();
    let ledger = Ledger::unlimited();
    server.reset_stats();
    let (client0, server0) = (
        cpu_seconds_of(CLIENT_THREADS),
        cpu_seconds_of(SERVER_THREADS),
    );
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..calls {
        let service = service.clone();
        let ledger = ledger.clone();
        tasks.spawn(async move {
            let request = Request::new(
                "claude-sonnet-4-5",
                256,
                vec![Message::user(format!(
                    "Task {i}: summarise the design in one line."
                ))],
            );
            service
                .complete(&CallContext::new("bench", &ledger), request)
                .await
        });
    }
    let mut failures = 0usize;
    while let Some(done) = tasks.join_next().await {
        if !matches!(done, Ok(Ok(_))) {
            failures += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let client_cpu = cpu_seconds_of(CLIENT_THREADS) - client0;
    let server_cpu = cpu_seconds_of(SERVER_THREADS) - server0;
    let ideal = calls.div_ceil(limit) as f64 * LATENCY.as_secs_f64();
    println!(
        "{label:<5} {calls:>5} calls at limit {limit:>4}: wall {wall:6.3} s (ideal {ideal:.1} s, ×{:.2}), client CPU {client_cpu:5.2} s ({:.0} µs/call), \
         mock CPU {server_cpu:5.2} s, server peak in flight {}, connections {}, failures {failures}, RSS now {:.0} MiB",
        wall / ideal,
        client_cpu / calls as f64 * 1e6,
        server.max_in_flight(),
        server.connections(),
        status_mib("VmRSS:"),
    );
}

fn main() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .expect("client runtime");
    let server = server_rt
        .block_on(MockServer::start(MockConfig::for_load(LATENCY)))
        .expect("start the mock server");
    let base_url = server.base_url();
    println!(
        "cf-llm throughput: LlmService + AnthropicProvider → cf-mock-llm at {base_url}, latency {LATENCY:?}"
    );
    // The server's tasks run on its own runtime's workers while the client runs here.
    client_rt.block_on(async {
        // "cold": a new client, so every connection is opened during the run;
        // "warm": the same client again, reusing its pooled connections.
        let s200 = service(&base_url, 200);
        run_case("cold", &s200, &server, 2000).await;
        run_case("warm", &s200, &server, 2000).await;
        let s50 = service(&base_url, 50);
        run_case("cold", &s50, &server, 1000).await;
        run_case("warm", &s50, &server, 1000).await;
        // The mock's own goal: 2000 connections at once.
        let s2000 = service(&base_url, 2000);
        run_case("cold", &s2000, &server, 2000).await;
        run_case("warm", &s2000, &server, 2000).await;
    });
    println!(
        "peak RSS of the process (client + server): {:.0} MiB",
        status_mib("VmHWM:")
    );
    drop(server);
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
