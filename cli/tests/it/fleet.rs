//! Several `cf-host` processes sharing one Redis: `--max-concurrent` is the limit of
//! the whole fleet, what the API sees.

use cf_fleet::testing::RedisServer;
use cf_mock_llm::{MockConfig, MockServer};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A host of the fleet: `cf-host run python-expert --json --no-cache --tasks TASKS`
/// at `--max-concurrent limit` against `server`, sharing `redis`, its data in `data`
/// and its configuration home in `dir` (the same API key for every host: one account),
/// its output piped.
fn fleet_batch(
    tasks: &Path,
    limit: usize,
    server: &MockServer,
    redis: &str,
    dir: &Path,
    data: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cf-host"));
    cmd.args(["run", "python-expert", "--json", "--no-cache", "--tasks"])
        .arg(tasks)
        .args(["--max-concurrent", &limit.to_string()])
        .args(["--base-url", &server.base_url(), "--redis", redis])
        .arg("--data-dir")
        .arg(data)
        .env("ANTHROPIC_API_KEY", "one-account")
        .env("XDG_CONFIG_HOME", dir.join("config-home"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Three hosts, each a `cf-host run --tasks` process with `--max-concurrent 50`,
/// sharing one Redis, 3 × 1000 items against a server answering after 100 ms: the
/// server never sees more than 50 requests at once (not 150), and sees 50; every item
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_host_processes_share_one_limit() {
    let Some(redis) = RedisServer::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig::for_load(Duration::from_millis(100)))
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hosts = Vec::new();
    for host in 0..3 {
        let tasks = dir.path().join(format!("tasks-{host}.jsonl"));
        let lines: String = (0..1000)
            .map(|i| format!("{{\"task\": \"host {host} item {i}\"}}\n"))
            .collect();
        std::fs::write(&tasks, lines).expect("tasks");
        let data = dir.path().join(format!("data-{host}"));
        let child = fleet_batch(&tasks, 50, &server, &redis.url(), dir.path(), &data)
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
        assert_eq!(ok, 1000);
    }
    assert_eq!(server.requests(), 3000);
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

/// Items a batch through an outage may be fed before the test gives up on the host
/// getting past the outage (a step is 40 items; Redis is probed every 200 ms).
const OUTAGE_MAX_ITEMS: usize = 20_000;

/// A host's batch (`cf-host run --tasks -`, `--max-concurrent 20` on the fleet's Redis)
/// fed on stdin in steps, each written once every result of the previous one is read:
/// 100 items, then Redis is killed; steps of 40 until `restart_after` says so of a
/// result, then Redis starts again on the same port (empty); steps of 40 until an item
/// succeeds after that. In lock-step, nothing depends on how fast the batch runs (fed
/// from a file, an outage's instant failures could finish the batch before Redis was
/// back). Returns the exit code, the `--json` lines, stderr, the API's most requests
/// at once, and the number of items written.
async fn batch_through_an_outage(
    fail: &str,
    restart_after: impl Fn(&serde_json::Value) -> bool + Send + 'static,
) -> (Option<i32>, Vec<serde_json::Value>, String, usize, usize) {
    use std::io::{BufRead as _, Write as _};
    let mut redis = RedisServer::start(None).await.expect("redis");
    let port = redis.port;
    let server = MockServer::start(MockConfig::for_load(Duration::from_millis(50)))
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut child = fleet_batch(Path::new("-"), 20, &server, &redis.url(), dir.path(), &data)
        .env("CF_REDIS_FAIL", fail)
        .stdin(Stdio::piped())
        .spawn()
        .expect("cf-host starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let results = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut written = 0;
        // Writes `n` more items and reads their `n` results.
        let mut step = |n: usize| -> Vec<serde_json::Value> {
            let tasks: String = (written..written + n)
                .map(|i| format!("{{\"task\": \"outage item {i}\"}}\n"))
                .collect();
            stdin.write_all(tasks.as_bytes()).expect("tasks written");
            stdin.flush().expect("tasks flushed");
            written += n;
            (0..n)
                .map(|_| {
                    let line = lines.next().expect("a result per item").expect("read");
                    serde_json::from_str(&line).expect("JSON")
                })
                .collect()
        };
        let mut all = step(100);
        redis.stop();
        let mut again = None;
        while again.is_none() {
            let results = step(40);
            if results.iter().any(&restart_after) {
                // Back, empty, on the same port: the connections come back by themselves.
                again = Some(
                    tokio::runtime::Handle::current()
                        .block_on(RedisServer::start(Some(port)))
                        .expect("restarts"),
                );
            }
            all.extend(results);
            assert!(
                all.len() < OUTAGE_MAX_ITEMS,
                "the restart's condition was never met"
            );
        }
        loop {
            let results = step(40);
            let succeeded = results.iter().any(|v| v["ok"] == true);
            all.extend(results);
            if succeeded {
                break;
            }
            assert!(
                all.len() < OUTAGE_MAX_ITEMS,
                "items succeed again once Redis is back"
            );
        }
        // End of input: the batch ends; nothing is left to come.
        drop(stdin);
        for line in lines.map_while(Result::ok) {
            all.push(serde_json::from_str(&line).expect("JSON"));
        }
        (all, again, written)
    })
    .await
    .expect("read");
    let status = child.wait().expect("exits");
    let stderr = errors.join().expect("stderr");
    let (lines, _redis, written) = results;
    (
        status.code(),
        lines,
        stderr,
        server.max_in_flight(),
        written,
    )
}

/// Each item's index exactly once in `lines`.
fn each_index_once(lines: &[serde_json::Value], n: usize) {
    let mut seen = vec![0; n];
    for v in lines {
        seen[v["index"].as_u64().expect("index") as usize] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1), "an item missing or twice");
}

/// Fail-closed: while Redis is away, items fail with a typed error saying so (no
/// model call without a lease); once it is back, items succeed again; every item has
/// one result, the limit is never passed, and the exit code says items failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_batch_fails_closed() {
    if RedisServer::start(None).await.is_none() {
        return;
    }
    let (code, lines, stderr, max, written) =
        batch_through_an_outage("closed", |v| v["ok"] == false).await;
    assert_eq!(code, Some(1), "{stderr}");
    each_index_once(&lines, written);
    let first_failure = lines
        .iter()
        .position(|v| v["ok"] == false)
        .expect("items failed while Redis was away");
    let failure = &lines[first_failure];
    assert!(
        failure["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("fails closed")),
        "{failure}"
    );
    assert!(
        lines[first_failure..].iter().any(|v| v["ok"] == true),
        "items succeed again once Redis is back"
    );
    assert!(lines.iter().filter(|v| v["ok"] == true).count() > 100);
    assert!(max <= 20, "the limit held: {max}");
}

/// Fail-open: while Redis is away, items go on under the host's own limit, loudly (a
/// warning on stderr); every item succeeds, once; the limit of this host holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_batch_fails_open_loudly() {
    if RedisServer::start(None).await.is_none() {
        return;
    }
    let (code, lines, stderr, max, written) = batch_through_an_outage("open", {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        move |_| seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 50
    })
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    each_index_once(&lines, written);
    assert!(lines.iter().all(|v| v["ok"] == true));
    assert!(
        stderr.contains("fail-open"),
        "the outage is reported: {stderr}"
    );
    assert!(max <= 20, "this host's own limit held: {max}");
}
