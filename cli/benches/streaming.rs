//! Streaming, measured in release mode:
//!
//! ```text
//! cargo bench -p cf-host-cli --bench streaming
//! ```
//!
//! Two `cf-mock-llm` servers in this process (threads of their own): one answers
//! whole after 100 ms; the other streams every answer as server-sent events over
//! 100 ms (six events, one delta per block, 20 ms apart), and notes when it hands each
//! stream's first `content_block_delta` — its first token — to the connection
//! (`Served::first_delta`).
//!
//! 1. **Time to first token added by the host, 200 streams in flight.** 2000 runs of
//!    the `contract2` test guest in `stream` mode (it emits each text delta as soon as
//!    `next` returns it) at a limit of 200, through the real client: for each run, the
//!    time from the server's first token to the run's first emitted output reaching
//!    the caller (`RunOptions::events`): the wire, the SSE parser, the service's
//!    stream, the sandbox, the guest and back. Median and p99 over every run, twice:
//!    with the first token of each answer after a random 0–100 ms (as a model's time
//!    to first token varies: the 200 streams deliver at different moments), and in
//!    lock-step (every stream paced alike and started by the same wave of permits, so
//!    200 first tokens arrive within a millisecond and wait for 2 cores: a burst the
//!    figure then measures too).
//! 2. **The same through the CLI**: `cf-host run python-expert --tasks FILE
//!    --stream-json --max-concurrent 200` with 1000 tasks; the time from the server's
//!    first token to the line of the item's first `delta` arriving on the CLI's stdout
//!    (read by this process, whose clock is the server's).
//! 3. **2000 runs at a limit of 200 against 100 ms answers** (ideal 1.0 s), whole
//!    (`echo-0-2`, one `complete`) and streamed (`contract2` `stream` mode), alternated,
//!    `CF_BENCH_ROUNDS` rounds each (default 3): median wall time and host CPU per run
//!    of each, and their ratio.
//!
//! `CF_BENCH_ONLY=library` or `=cli` runs one part.

use cf_host::llm::{AnthropicConfig, AnthropicProvider, ApiKey};
use cf_host::permissions::Grant;
use cf_host::{Agent, EventSink, Host, RunEvent, RunOptions, Task};
use cf_mock_llm::measure::cpu_seconds_of;
use cf_mock_llm::{MockConfig, MockServer, StreamConfig};
use cf_tests::{contract2_wasm, echo_wasm};
use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOST_THREADS: &str = "cf-bench-host";
const SERVER_THREADS: &str = "cf-bench-mock";
const LATENCY: Duration = Duration::from_millis(100);
/// Six events (start, block start, one delta, block stop, message delta, stop): five
/// pauses make a 100 ms stream.
const PACE: Duration = Duration::from_millis(20);
const RUNS: usize = 2000;
const LIMIT: usize = 200;
const CLI_RUNS: usize = 1000;

fn median(v: &mut [f64]) -> f64 {
    percentile(v, 0.5)
}

/// The `p` quantile (nearest rank) of `v`.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The first-token instant of each request the server streamed, by its last user
/// message.
fn first_deltas(server: &MockServer) -> HashMap<String, Instant> {
    server
        .served()
        .into_iter()
        .filter_map(|s| Some((s.last_user, s.first_delta?)))
        .collect()
}

/// 2000 runs of `agent` at once under the host's limit: wall seconds, host CPU
/// µs/run, and for a streaming agent each run's time from the server's first token
/// to its first emitted output, in ms.
async fn batch(agent: &Agent, server: &MockServer, streaming: bool) -> (f64, f64, Vec<f64>) {
    server.reset_stats();
    let cpu0 = cpu_seconds_of(HOST_THREADS);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..RUNS {
        let agent = agent.clone();
        set.spawn(async move {
            let text = format!("Task {i}: is `x = x + 1` idiomatic?");
            let first = Arc::new(Mutex::new(None::<Instant>));
            let mut task = Task::new(text.clone());
            let mut options = RunOptions::default();
            if streaming {
                task = task.with_context("mode", "stream");
                let first = first.clone();
                options.events = Some(EventSink::new(move |event| {
                    if matches!(event, RunEvent::Output(_)) {
                        first
                            .lock()
                            .expect("not poisoned")
                            .get_or_insert_with(Instant::now);
                    }
                }));
            }
            let result = agent.run_with(task, &options).await;
            let first = *first.lock().expect("not poisoned");
            (text, result, first)
        });
    }
    let mut outputs = Vec::with_capacity(RUNS);
    let mut failed = 0;
    while let Some(done) = set.join_next().await {
        match done {
            Ok((text, Ok(_), first)) => outputs.push((text, first)),
            _ => failed += 1,
        }
    }
    assert_eq!(failed, 0, "every run succeeds");
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds_of(HOST_THREADS) - cpu0) / RUNS as f64 * 1e6;
    let mut ttft = Vec::new();
    if streaming {
        let sent = first_deltas(server);
        let mut timed = Vec::new();
        for (text, first) in outputs {
            let (Some(first), Some(sent)) = (first, sent.get(&text)) else {
                panic!("run {text:?}: no first output or no first delta noted");
            };
            timed.push(first.saturating_duration_since(*sent).as_secs_f64() * 1e3);
        }
        ttft = timed;
    }
    (wall, cpu, ttft)
}

fn host(cache: &std::path::Path, base_url: &str) -> Host {
    Host::builder()
        .grant("contract2", Grant::unrestricted())
        .grant("echo-0-2", Grant::unrestricted())
        .provider(Arc::new(
            AnthropicProvider::new(AnthropicConfig::new(base_url, ApiKey::new("bench-key")))
                .expect("client"),
        ))
        .max_concurrent(LIMIT)
        .max_retries(0)
        .data_dir(Some(cache.to_path_buf()))
        .no_response_cache()
        .build()
        .expect("host")
}

async fn library(
    cache: &std::path::Path,
    whole: &MockServer,
    streamed: &MockServer,
    staggered: &MockServer,
) {
    let whole_host = host(cache, &whole.base_url());
    let streamed_host = host(cache, &streamed.base_url());
    let staggered_host = host(cache, &staggered.base_url());
    let stagger = staggered_host
        .load(contract2_wasm().to_path_buf())
        .await
        .expect("loads");
    let echo = whole_host
        .load(echo_wasm("0.2.0").to_path_buf())
        .await
        .expect("loads");
    let streamer = streamed_host
        .load(contract2_wasm().to_path_buf())
        .await
        .expect("loads");
    // One batch each first: connections and instance slots as a long-lived host has them.
    batch(&echo, whole, false).await;
    batch(&streamer, streamed, true).await;
    batch(&stagger, staggered, true).await;
    let rounds: usize = std::env::var("CF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (mut walls, mut cpus) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let (mut ttft, mut ttft_staggered) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        ttft_staggered.extend(batch(&stagger, staggered, true).await.2);
        // Alternate which goes first.
        for k in [round % 2, 1 - round % 2] {
            let (wall, cpu, t) = if k == 0 {
                batch(&echo, whole, false).await
            } else {
                batch(&streamer, streamed, true).await
            };
            walls[k].push(wall);
            cpus[k].push(cpu);
            ttft.extend(t);
        }
    }
    let [w0, w1] = walls.map(|mut w| median(&mut w));
    let [c0, c1] = cpus.map(|mut c| median(&mut c));
    for (label, ttft) in [
        ("first tokens 0–100 ms apart", &mut ttft_staggered),
        ("first tokens in lock-step", &mut ttft),
    ] {
        println!(
            "time to first token added by the host, {LIMIT} streams in flight, {label} ({} runs): \
             server's first token → the caller's first emitted output: median {:.3} ms, p99 {:.3} ms, max {:.3} ms \
             (targets ≤ 1 ms, ≤ 5 ms)",
            ttft.len(),
            median(ttft),
            percentile(ttft, 0.99),
            percentile(ttft, 1.0),
        );
    }
    println!(
        "{RUNS} runs @ {LIMIT} against {LATENCY:?} answers (ideal 1.0 s), median of {rounds}: \
         whole wall {w0:.3} s, CPU {c0:.0} µs/run; streamed wall {w1:.3} s (×{:.3}), CPU {c1:.0} µs/run (×{:.3})",
        w1 / w0,
        c1 / c0
    );
}

/// `cf-host run python-expert --tasks … --stream-json` against `server`: each item's
/// time from the server's first token to its first `delta` line on stdout, in ms.
fn cli(cache: &std::path::Path, server: &MockServer) -> Vec<f64> {
    server.reset_stats();
    let tasks = cache.join("tasks.jsonl");
    let mut file = std::fs::File::create(&tasks).expect("tasks file");
    for i in 0..CLI_RUNS {
        writeln!(file, r#"{{"task": "Task {i}: how do I read a CSV file?"}}"#).expect("write");
    }
    drop(file);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args(["run", "python-expert", "--stream-json", "--no-cache"])
        .arg("--tasks")
        .arg(&tasks)
        .args(["--base-url", &server.base_url()])
        .args(["--max-concurrent", &LIMIT.to_string()])
        .arg("--data-dir")
        .arg(cache)
        .env("ANTHROPIC_API_KEY", "bench-key")
        .env("XDG_CONFIG_HOME", cache.join("config-home"))
        .env("XDG_DATA_HOME", cache.join("data-home"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(cache.join("cli-stderr.txt")).expect("stderr file"))
        .spawn()
        .expect("cf-host runs");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first_line: HashMap<usize, Instant> = HashMap::new();
    let mut results = 0;
    for line in stdout.lines() {
        let at = Instant::now();
        let line = line.expect("stdout");
        let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        let index = value["index"].as_u64().expect("an index") as usize;
        match value["type"].as_str() {
            Some("delta") => {
                first_line.entry(index).or_insert(at);
            }
            Some("result") => {
                assert_eq!(value["ok"], true, "{line}");
                results += 1;
            }
            _ => {}
        }
    }
    let status = child.wait().expect("waits");
    assert!(
        status.success(),
        "cf-host: {status}\n{}",
        std::fs::read_to_string(cache.join("cli-stderr.txt")).unwrap_or_default()
    );
    assert_eq!(results, CLI_RUNS, "a result per task");
    let sent = first_deltas(server);
    let mut ttft = Vec::with_capacity(CLI_RUNS);
    for (user, at) in sent {
        // python-expert sends the task inside a <task> block.
        let index = user
            .split("Task ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .expect("the task's number");
        let line = first_line.get(&index).expect("a delta line per task");
        ttft.push(line.saturating_duration_since(at).as_secs_f64() * 1e3);
    }
    ttft
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
    let whole = server_rt
        .block_on(MockServer::start(MockConfig::for_load(LATENCY)))
        .expect("mock server");
    let streaming = |first_token_jitter| {
        server_rt
            .block_on(MockServer::start(MockConfig {
                record: false,
                log_served: true,
                stream: StreamConfig {
                    delta_chars: 0,
                    pace: PACE,
                    first_token_jitter,
                    ..StreamConfig::default()
                },
                ..MockConfig::default()
            }))
            .expect("mock server")
    };
    let streamed = streaming(Duration::ZERO);
    let staggered = streaming(Duration::from_millis(100));
    if only.as_deref().is_none_or(|o| o == "library") {
        host_rt.block_on(library(cache.path(), &whole, &streamed, &staggered));
    }
    if only.as_deref().is_none_or(|o| o == "cli") {
        for (label, server) in [
            ("first tokens 0–100 ms apart", &staggered),
            ("first tokens in lock-step", &streamed),
        ] {
            let mut ttft = cli(cache.path(), server);
            println!(
                "time to first token through the CLI, {LIMIT} streams in flight, {label} ({} runs of python-expert, --stream-json): \
                 server's first token → the first delta line on stdout: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                ttft.len(),
                median(&mut ttft),
                percentile(&mut ttft, 0.99),
                percentile(&mut ttft, 1.0),
            );
        }
    }
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
