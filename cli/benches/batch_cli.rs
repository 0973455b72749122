//! `cf-host run --tasks` as a user runs it, against the loopback Anthropic stand-in
//! (100 ms per call) in this process: `cargo bench -p cf-host-cli --bench batch_cli`.
//!
//! Workloads (python-expert and code-reviewer alternating, one call each): 200 tasks
//! at `--max-concurrent 10`, 1000 at 50, 2000 at 200; then 2000 at 200 with
//! bug-investigator (two calls) in the mix. For each: wall time of the whole
//! `cf-host` process against the ideal (API calls ÷ limit × latency), the process's
//! CPU time (user + system) and peak RSS (from `wait4`), and the same batch again
//! with the response cache warm. `CF_BENCH_ROWS=200@10,1000@50` picks rows.

use cf_mock_llm::{MockConfig, MockServer};
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(100);

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
    cpu: Duration,
    peak_mib: f64,
    ok: usize,
    results: usize,
    summary: String,
}

/// Waits for `pid` and returns its CPU time and peak RSS.
#[expect(unsafe_code, reason = "std has no wait4: the child's own rusage")]
fn wait_with_usage(pid: u32) -> (Duration, f64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; both pointers are valid.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as libc::pid_t, "wait4");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

#[expect(
    clippy::zombie_processes,
    reason = "waited for by wait_with_usage (wait4), which std cannot do"
)]
fn cf_host(base_url: &str, cache: &Path, limit: usize, args: &[&str]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args(args)
        .args([
            "--base-url",
            base_url,
            "--max-concurrent",
            &limit.to_string(),
        ])
        .arg("--data-dir")
        .arg(cache)
        .env("ANTHROPIC_API_KEY", "bench-key")
        .env("XDG_CONFIG_HOME", cache.join("config-home"))
        .env("XDG_DATA_HOME", cache.join("data-home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cf-host runs");
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).expect("read stderr");
        s
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    let (cpu, peak_mib) = wait_with_usage(child.id());
    let wall = started.elapsed();
    let stderr = stderr.join().expect("stderr reader");
    let ok = stdout.lines().filter(|l| l.contains("\"ok\":true")).count();
    let summary = stderr
        .lines()
        .filter(|l| l.contains("item(s)") || l.contains("latency"))
        .collect::<Vec<_>>()
        .join(" | ");
    Run {
        wall,
        cpu,
        peak_mib,
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
        .block_on(MockServer::start(MockConfig::for_load(LATENCY)))
        .expect("mock");
    let base = server.base_url();
    let dir = tempfile::tempdir().expect("temp dir");
    println!("cf-host run --json --tasks FILE → cf-mock-llm ({base}), latency {LATENCY:?}");
    let one_call: &[&str] = &["python-expert", "code-reviewer"];
    let mixed: &[&str] = &["python-expert", "code-reviewer", "bug-investigator"];
    let cases: [(&str, &[&str], usize, usize); 4] = [
        ("200@10", one_call, 200, 10),
        ("1000@50", one_call, 1000, 50),
        ("2000@200", one_call, 2000, 200),
        ("2000@200+bug", mixed, 2000, 200),
    ];
    let only = std::env::var("CF_BENCH_ROWS").ok();
    for (n, (label, agents, tasks, limit)) in cases.into_iter().enumerate() {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|r| r == label))
        {
            continue;
        }
        let cache = dir.path().join(format!("cache-{n}"));
        // Compile the agents once, as any earlier use would have.
        let warm = Command::new(env!("CARGO_BIN_EXE_cf-host"))
            .args(["agents", "--data-dir"])
            .arg(&cache)
            .env("XDG_CONFIG_HOME", cache.join("config-home"))
            .output()
            .expect("agents");
        assert!(warm.status.success());
        let file = tasks_file(dir.path(), &format!("tasks-{n}.jsonl"), agents, tasks);
        let file = file.to_str().expect("utf-8");
        server.reset_stats();
        let cold = cf_host(&base, &cache, limit, &["run", "--json", "--tasks", file]);
        let calls = server.requests() as f64;
        let ideal = (calls / limit as f64).ceil() * LATENCY.as_secs_f64();
        println!(
            "{label:<13} {tasks:>4} tasks, {calls:>4} API calls at limit {limit:>3}: wall {:.3} s (ideal {ideal:.1} s, ×{:.3}), CPU {:.2} s, peak RSS {:.0} MiB, max in flight {}, {}/{} ok",
            cold.wall.as_secs_f64(),
            cold.wall.as_secs_f64() / ideal,
            cold.cpu.as_secs_f64(),
            cold.peak_mib,
            server.max_in_flight(),
            cold.ok,
            cold.results,
        );
        println!("    {}", cold.summary);
        server.reset_stats();
        let again = cf_host(&base, &cache, limit, &["run", "--json", "--tasks", file]);
        println!(
            "{label:<13} again, response cache warm: wall {:.1} ms for the whole process, CPU {:.1} ms, peak RSS {:.0} MiB, {} API calls, {}/{} ok",
            again.wall.as_secs_f64() * 1000.0,
            again.cpu.as_secs_f64() * 1000.0,
            again.peak_mib,
            server.requests(),
            again.ok,
            again.results,
        );
    }
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
}
