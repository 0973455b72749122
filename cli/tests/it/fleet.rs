//! Several `cf-host` processes sharing one Redis: `--max-concurrent` is the limit of
//! the whole fleet, what the API sees.

use cf_fleet::testing::RedisServer;
use cf_mock_llm::{MockConfig, MockServer};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Three hosts, each a `cf-host run --tasks` process with `--max-concurrent 50`,
/// sharing one Redis, 3 × 300 items against a server answering after 100 ms: the
/// server never sees more than 50 requests at once (not 150), and sees 50; every item
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_host_processes_share_one_limit() {
    let Some(redis) = RedisServer::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(100),
        record: false,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hosts = Vec::new();
    for host in 0..3 {
        let tasks = dir.path().join(format!("tasks-{host}.jsonl"));
        let lines: String = (0..300)
            .map(|i| format!("{{\"task\": \"host {host} item {i}\"}}\n"))
            .collect();
        std::fs::write(&tasks, lines).expect("tasks");
        let data = dir.path().join(format!("data-{host}"));
        let child = Command::new(env!("CARGO_BIN_EXE_cf-host"))
            .args(["run", "python-expert", "--json", "--no-cache", "--tasks"])
            .arg(&tasks)
            .args(["--max-concurrent", "50", "--base-url", &server.base_url()])
            .args(["--redis", &redis.url()])
            .arg("--data-dir")
            .arg(&data)
            .env("ANTHROPIC_API_KEY", "one-account")
            .env("XDG_CONFIG_HOME", dir.path().join("config-home"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cf-host starts");
        hosts.push(child);
    }
    let outputs: Vec<_> = tokio::task::spawn_blocking(move || {
        hosts
            .into_iter()
            .map(|h| h.wait_with_output().expect("exits"))
            .collect()
    })
    .await
    .expect("waited");
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"ok\":true"))
            .count();
        assert_eq!(ok, 300);
    }
    assert_eq!(server.requests(), 900);
    assert_eq!(
        server.max_in_flight(),
        50,
        "the fleet's limit of 50, not 3 × 50"
    );
}

/// Two hosts (two `cf-host run` processes, each its own data directory) with one
/// Redis and one cache secret: the second is answered by the first's call, from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_is_answered_from_the_fleets_cache() {
    let Some(redis) = RedisServer::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |host: usize| {
        Command::new(env!("CARGO_BIN_EXE_cf-host"))
            .args(["run", "python-expert", "What is a generator?", "--json"])
            .args(["--base-url", &server.base_url(), "--redis", &redis.url()])
            .arg("--data-dir")
            .arg(dir.path().join(format!("data-{host}")))
            .env("ANTHROPIC_API_KEY", "one-account")
            .env(
                "CF_CACHE_SECRET",
                "the fleet's secret, the same on every host",
            )
            .env("XDG_CONFIG_HOME", dir.path().join("config-home"))
            .env_remove("RUST_LOG")
            .output()
            .expect("cf-host runs")
    };
    let first = run(0);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = run(1);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    };
    let (a, b) = (json(&first), json(&second));
    assert_eq!(a["cached"], false);
    assert_eq!(b["cached"], true, "{b}");
    assert_eq!(a["output"], b["output"]);
    assert_eq!(server.requests(), 1, "one upstream call for two hosts");
}
