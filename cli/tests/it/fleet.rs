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
