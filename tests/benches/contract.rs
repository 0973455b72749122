//! What contract 0.2.0 costs in the host, in release mode:
//!
//! ```text
//! cargo bench -p cf-tests --bench contract
//! ```
//!
//! 1. **One tool-loop turn.** The `contract2` guest's tool loop against an in-process
//!    provider that answers at once (a `tool_use` of `add` on four turns, then text:
//!    five model calls per run), runs one at a time. The model is instant, so a run's
//!    time is the host's and the guest's: per turn, the median run ÷ 5. Beside it, the
//!    single call of the same one-call agent built for each version (`echo-0-1`,
//!    `echo-0-2`, one source file) against the same provider.
//! 2. **2000 runs at a limit of 200** (the library benchmark's row), `echo-0-1` against
//!    `echo-0-2` through the real client to `cf-mock-llm` answering after 100 ms,
//!    response cache off, alternating, `CF_BENCH_ROUNDS` rounds each (default 3): the
//!    median wall time and host CPU per run of each version, and their ratio.
//!
//! `CF_BENCH_ONLY=turns` or `=2000@200` runs one part.

use cf_host::llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, BoxFuture, Content, ContentBlock, OfflineProvider,
    Provider, ProviderError, Request, Response, StopReason,
};
use cf_host::permissions::Grant;
use cf_host::{Agent, Host, Task};
use cf_mock_llm::measure::cpu_seconds_of;
use cf_mock_llm::{MockConfig, MockServer};
use cf_tests::{contract2_wasm, echo_wasm};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const HOST_THREADS: &str = "cf-bench-host";
const SERVER_THREADS: &str = "cf-bench-mock";
const LATENCY: Duration = Duration::from_millis(100);
/// Model calls of one tool-loop run: four tool uses, then the answer.
const TURNS: usize = 5;

/// Answers at once: with tools, a use of the first tool until the request holds
/// `TURNS - 1` tool results, then text; without, the offline answer.
#[derive(Debug, Default)]
struct Instant0 {
    ids: AtomicU64,
}

impl Provider for Instant0 {
    fn name(&self) -> &str {
        "instant"
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        let results = request
            .messages
            .iter()
            .filter(|m| matches!(&m.content, Content::Blocks(b) if b.iter().any(|b| matches!(b, ContentBlock::ToolResult { .. }))))
            .count();
        let mut answer = OfflineProvider::answer(request);
        if let Some(tool) = request.tools.first()
            && results < TURNS - 1
        {
            answer.content = vec![ContentBlock::ToolUse {
                id: format!("toolu_{}", self.ids.fetch_add(1, Ordering::Relaxed)),
                name: tool.name.clone(),
                input: r#"{"a":1,"b":2}"#.into(),
            }];
            answer.text.clear();
            answer.stop_reason = StopReason::ToolUse;
        }
        Box::pin(std::future::ready(Ok(answer)))
    }
}

fn grants(builder: cf_host::HostBuilder) -> cf_host::HostBuilder {
    builder
        .grant("contract2", Grant::unrestricted())
        .grant("echo-0-1", Grant::unrestricted())
        .grant("echo-0-2", Grant::unrestricted())
}

async fn load(host: &Host, path: &std::path::Path) -> Agent {
    host.load(path.to_path_buf()).await.expect("loads")
}

/// The median of `runs` sequential runs of `agent` on `task`, in µs, after 20 to warm.
async fn median_run_us(agent: &Agent, task: &Task, runs: usize) -> f64 {
    for _ in 0..20 {
        agent.run(task.clone()).await.expect("runs");
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = agent.run(task.clone()).await.expect("runs");
        times.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(out);
    }
    median(&mut times)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn turns(cache: &std::path::Path) {
    let host = grants(Host::builder())
        .provider(Arc::new(Instant0::default()))
        .data_dir(Some(cache.to_path_buf()))
        .no_response_cache()
        .build()
        .expect("host");
    let tool_loop = load(&host, contract2_wasm()).await;
    let task = Task::new("Add 1 and 2, four times.").with_context("mode", "tools");
    let probe = tool_loop.run(task.clone()).await.expect("runs");
    assert_eq!(probe.stats.llm_calls as usize, TURNS, "a {TURNS}-turn loop");
    let v1 = load(&host, echo_wasm("0.1.0")).await;
    let v2 = load(&host, echo_wasm("0.2.0")).await;
    assert_eq!(
        (v1.info().contract.as_str(), v2.info().contract.as_str()),
        ("0.1.0", "0.2.0")
    );
    let echo_task = Task::new("Is `x = x + 1` idiomatic?");
    const RUNS: usize = 300;
    // Interleaved rounds, so that drift on a noisy machine hits all three alike.
    let (mut loops, mut ones, mut twos) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        loops.push(median_run_us(&tool_loop, &task, RUNS).await);
        ones.push(median_run_us(&v1, &echo_task, RUNS).await);
        twos.push(median_run_us(&v2, &echo_task, RUNS).await);
    }
    let (run, one, two) = (median(&mut loops), median(&mut ones), median(&mut twos));
    println!(
        "tool loop, model instant: {TURNS}-turn run {run:.0} µs median, {:.1} µs per turn \
         (target ≤ 100); single call: 0.1.0 {one:.1} µs, 0.2.0 {two:.1} µs per run (×{:.3})",
        run / TURNS as f64,
        two / one
    );
}

/// 2000 runs of `agent` at once under `host`'s limit: wall seconds, host CPU µs/run.
async fn batch(agent: &Agent, server: &MockServer) -> (f64, f64) {
    server.reset_stats();
    let cpu0 = cpu_seconds_of(HOST_THREADS);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let agent = agent.clone();
        set.spawn(async move {
            agent
                .run(Task::new(format!("Task {i}: is `x = x + 1` idiomatic?")))
                .await
        });
    }
    let mut failed = 0;
    while let Some(done) = set.join_next().await {
        if !matches!(done, Ok(Ok(_))) {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "every run succeeds");
    let wall = start.elapsed().as_secs_f64();
    (wall, (cpu_seconds_of(HOST_THREADS) - cpu0) / 2000.0 * 1e6)
}

async fn batches(cache: &std::path::Path, base_url: &str, server: &MockServer) {
    let host = grants(Host::builder())
        .provider(Arc::new(
            AnthropicProvider::new(AnthropicConfig::new(base_url, ApiKey::new("bench-key")))
                .expect("client"),
        ))
        .max_concurrent(200)
        .max_retries(0)
        .data_dir(Some(cache.to_path_buf()))
        .no_response_cache()
        .build()
        .expect("host");
    let agents = [
        load(&host, echo_wasm("0.1.0")).await,
        load(&host, echo_wasm("0.2.0")).await,
    ];
    // One batch each first: connections and instance slots as a long-lived host has them.
    for agent in &agents {
        batch(agent, server).await;
    }
    let rounds: usize = std::env::var("CF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut walls = [Vec::new(), Vec::new()];
    let mut cpus = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate which version goes first.
        for k in [round % 2, 1 - round % 2] {
            let (wall, cpu) = batch(&agents[k], server).await;
            walls[k].push(wall);
            cpus[k].push(cpu);
        }
    }
    let [w1, w2] = walls.map(|mut w| median(&mut w));
    let [c1, c2] = cpus.map(|mut c| median(&mut c));
    println!(
        "2000 runs @ 200 against {LATENCY:?} (ideal 1.0 s), median of {rounds}: 0.1.0 wall {w1:.3} s, CPU {c1:.0} µs/run; \
         0.2.0 wall {w2:.3} s (×{:.3}), CPU {c2:.0} µs/run (×{:.3})",
        w2 / w1,
        c2 / c1
    );
}

fn main() {
    let only = std::env::var("CF_BENCH_ONLY").ok();
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
    if only.as_deref().is_none_or(|o| o == "turns") {
        host_rt.block_on(turns(cache.path()));
    }
    if only.as_deref().is_none_or(|o| o == "2000@200") {
        let server = server_rt
            .block_on(MockServer::start(MockConfig::for_load(LATENCY)))
            .expect("mock server");
        let base_url = server.base_url();
        host_rt.block_on(batches(cache.path(), &base_url, &server));
    }
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
