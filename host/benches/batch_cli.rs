//! `cf-host run --tasks` as a user runs it, against the loopback Anthropic stand-in
//! (100 ms per call) in this process: `cargo bench -p cf-host --bench batch_cli`.
//!
//! For each batch: wall time of the whole `cf-host` process against the ideal
//! (API calls ÷ limit × latency), its peak memory (from its own summary), and the
//! same batch again with the response cache warm.

use cf_mock_llm::{MockConfig, MockServer};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(100);
const LIMIT: usize = 200;

fn tasks_file(dir: &Path, name: &str, agents: &[&str], n: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    let lines: String = (0..n)
        .map(|i| format!("{{\"agent\":\"{}\",\"task\":\"Item {i}: is `x = x + 1` idiomatic?\",\"id\":\"{i}\"}}\n", agents[i % agents.len()]))
        .collect();
    std::fs::write(&path, lines).expect("write tasks");
    path
}

struct Run {
    wall: Duration,
    ok: usize,
    results: usize,
    summary: String,
}

fn cf_host(base_url: &str, cache: &Path, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args(args)
        .args([
            "--base-url",
            base_url,
            "--max-concurrent",
            &LIMIT.to_string(),
            "--cache-dir",
        ])
        .arg(cache)
        .env("ANTHROPIC_API_KEY", "bench-key")
        .env("XDG_CONFIG_HOME", cache.join("config-home"))
        .env("XDG_DATA_HOME", cache.join("data-home"))
        .output()
        .expect("cf-host runs");
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok = stdout.lines().filter(|l| l.contains("\"ok\":true")).count();
    let summary = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("item(s)") || l.contains("peak"))
        .collect::<Vec<_>>()
        .join(" | ");
    Run {
        wall,
        ok,
        results: stdout.lines().count(),
        summary,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mock-server")
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt
        .block_on(MockServer::start(MockConfig {
            latency: LATENCY,
            record: false,
            ..MockConfig::default()
        }))
        .expect("mock");
    let base = server.base_url();
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "cf-host run --tasks → cf-mock-llm ({base}), latency {LATENCY:?}, --max-concurrent {LIMIT}"
    );
    let cases: [(&str, &[&str], usize); 2] = [
        (
            "python-expert + code-reviewer",
            &["python-expert", "code-reviewer"],
            1,
        ),
        (
            "python-expert + code-reviewer + bug-investigator",
            &["python-expert", "code-reviewer", "bug-investigator"],
            0,
        ),
    ];
    for (n, (label, agents, _)) in cases.iter().enumerate() {
        let cache = dir.path().join(format!("cache-{n}"));
        // Compile the agents once, as any earlier use would have.
        let warm = Command::new(env!("CARGO_BIN_EXE_cf-host"))
            .args(["agents", "--cache-dir"])
            .arg(&cache)
            .env("XDG_CONFIG_HOME", cache.join("config-home"))
            .output()
            .expect("agents");
        assert!(warm.status.success());
        let file = tasks_file(dir.path(), &format!("tasks-{n}.jsonl"), agents, 2000);
        server.reset_stats();
        let cold = cf_host(
            &base,
            &cache,
            &["run", "--json", "--tasks", file.to_str().expect("utf-8")],
        );
        let calls = server.requests() as f64;
        let ideal = (calls / LIMIT as f64).ceil() * LATENCY.as_secs_f64();
        println!(
            "{label:<50} 2000 items, {calls} API calls: wall {:.3} s (ideal {ideal:.1} s, ×{:.3}), {}/{} ok\n    {}",
            cold.wall.as_secs_f64(),
            cold.wall.as_secs_f64() / ideal,
            cold.ok,
            cold.results,
            cold.summary
        );
        server.reset_stats();
        let again = cf_host(
            &base,
            &cache,
            &["run", "--json", "--tasks", file.to_str().expect("utf-8")],
        );
        println!(
            "{label:<50} again, response cache warm: wall {:.1} ms for the whole process, {} API calls, {}/{} ok\n    {}",
            again.wall.as_secs_f64() * 1000.0,
            server.requests(),
            again.ok,
            again.results,
            again.summary
        );
    }
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
}
