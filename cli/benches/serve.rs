//! `cf-host serve`, measured in release mode:
//!
//! ```text
//! cargo bench -p cf-host-cli --bench serve
//! ```
//!
//! 1. **`serve` alone**: `POST /v1/runs` (`python-expert`, the offline provider, the
//!    response cache off, so that every request runs the agent) driven by `wrk`
//!    (`apt-get install wrk`; the part is skipped without it) with 2 threads and 32
//!    connections for 10 s: requests per second and the latency percentiles wrk
//!    reports. The server and wrk share this machine's cores.
//! 2. **A shared-cache hit from Redis, whole request through `serve`**: a
//!    `redis-server` of its own, a loopback Anthropic server answering after 100 ms,
//!    two `cf-host serve --redis` processes with one cache secret and their own data
//!    directories. Host A answers 500 distinct tasks (50 at a time: the answers reach
//!    Redis); then host B is asked each of them once, one request at a time on one
//!    keep-alive connection: each is a miss in B's own cache and a hit in Redis. The
//!    median and p99 of those requests as the client sees them, beside the same
//!    requests asked of B again (hits in its own cache) and of a new task (a model
//!    call, for scale).

use cf_fleet::testing::RedisServer;
use cf_mock_llm::{MockConfig, MockServer};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TASKS: usize = 500;
const SECRET: &str = "the fleet's secret, the same on every host";

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// `cf-host serve` on a free port with `args`; its address and the child.
fn serve(args: &[&str], env: &[(&str, &str)], data: &std::path::Path) -> (String, Child) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cf-host"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("XDG_CONFIG_HOME", data.join("config-home"))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("cf-host serve starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "cf-host serve ended before saying where it serves"
        );
        if let Some(rest) = line.split("serving on ").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (address, child)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn serve_alone() {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("serve alone: skipped (wrk is not installed: apt-get install wrk)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (address, child) = serve(&["--no-cache", "--provider", "offline"], &[], dir.path());
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        r#"wrk.method = "POST"
wrk.body = '{"agent": "python-expert", "task": "How do I read a CSV file?"}'
wrk.headers["content-type"] = "application/json"
"#,
    )
    .expect("script");
    // Warm up (compiled components, connections), then measure.
    for (seconds, report) in [("2s", false), ("10s", true)] {
        let out = Command::new("wrk")
            .args(["-t2", "-c32", "-d", seconds, "--latency", "-s"])
            .arg(&script)
            .arg(format!("{address}/v1/runs"))
            .output()
            .expect("wrk runs");
        let text = String::from_utf8_lossy(&out.stdout);
        if report {
            let pick = |prefix: &str| {
                text.lines()
                    .find(|l| l.trim_start().starts_with(prefix))
                    .map(|l| l.trim().to_owned())
                    .unwrap_or_default()
            };
            println!(
                "serve alone: POST /v1/runs (python-expert, offline provider, no cache), wrk -t2 -c32 -d10s"
            );
            println!("  {}", pick("Requests/sec"));
            for p in ["50%", "90%", "99%"] {
                println!("  latency {}", pick(p));
            }
            let errors = pick("Non-2xx");
            if !errors.is_empty() {
                println!("  {errors}");
            }
        }
    }
    stop(child);
}

async fn post(client: &reqwest::Client, address: &str, task: &str) -> (f64, serde_json::Value) {
    let started = Instant::now();
    let response = client
        .post(format!("{address}/v1/runs"))
        .json(&serde_json::json!({"agent": "python-expert", "task": task}))
        .send()
        .await
        .expect("POST /v1/runs");
    let value: serde_json::Value = response.json().await.expect("JSON");
    (started.elapsed().as_secs_f64() * 1000.0, value)
}

async fn shared_cache_hits() {
    let Some(redis) = RedisServer::start(None).await else {
        println!("shared-cache hit: skipped (redis-server is not installed)");
        return;
    };
    let server = MockServer::start(MockConfig::for_load(Duration::from_millis(100)))
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("ANTHROPIC_API_KEY", "one-account"),
        ("CF_CACHE_SECRET", SECRET),
    ];
    let base = server.base_url();
    let args = [
        "--redis",
        &redis.url(),
        "--base-url",
        &base,
        "--max-concurrent",
        "50",
    ];
    let (a, host_a) = serve(&args, &env, &dir.path().join("a"));
    let (b, host_b) = serve(&args, &env, &dir.path().join("b"));
    let client = reqwest::Client::new();
    let tasks: Vec<String> = (0..TASKS)
        .map(|i| format!("shared cache benchmark question {i}"))
        .collect();
    // Host A makes the calls; its answers reach Redis.
    for chunk in tasks.chunks(50) {
        let mut calls = tokio::task::JoinSet::new();
        for task in chunk {
            let (client, a, task) = (client.clone(), a.clone(), task.clone());
            calls.spawn(async move { post(&client, &a, &task).await });
        }
        while let Some(done) = calls.join_next().await {
            let (_, v) = done.expect("call");
            assert_eq!(v["ok"], true, "{v}");
        }
    }
    // Host B: each task once (Redis hits), then again (its own cache's hits).
    let mut from_redis = Vec::new();
    for task in &tasks {
        let (ms, v) = post(&client, &b, task).await;
        assert_eq!(v["cached"], true, "answered from the fleet's cache: {v}");
        from_redis.push(ms);
    }
    let mut local = Vec::new();
    for task in &tasks {
        let (ms, v) = post(&client, &b, task).await;
        assert_eq!(v["cached"], true);
        local.push(ms);
    }
    let mut calls = Vec::new();
    for i in 0..20 {
        let (ms, _) = post(&client, &b, &format!("a new question {i}")).await;
        calls.push(ms);
    }
    let upstream = server.requests();
    println!(
        "shared-cache hit through serve ({TASKS} tasks; upstream requests: {upstream}: host A's {TASKS}, host B's 20 new questions)"
    );
    for (name, v) in [
        ("a hit in Redis (B's first ask)", &mut from_redis),
        ("a hit in B's own cache", &mut local),
        ("a model call (100 ms server)", &mut calls),
    ] {
        println!(
            "  {name:32} median {:7.3} ms · p99 {:7.3} ms",
            percentile(v, 0.5),
            percentile(v, 0.99)
        );
    }
    stop(host_a);
    stop(host_b);
}

fn main() {
    let only = std::env::var("CF_BENCH_ONLY").ok();
    if only.as_deref().is_none_or(|o| o == "alone") {
        serve_alone();
    }
    if only.as_deref().is_none_or(|o| o == "cache") {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(shared_cache_hits());
    }
}
