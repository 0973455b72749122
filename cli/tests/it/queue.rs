//! The fleet's work queue as an operator runs it: worker processes (`cf-host worker`,
//! `cf-host serve --worker`) on one Redis, a batch submitted with `cf-host run --tasks
//! FILE --queue URL`, a worker SIGKILLed mid-batch, Redis killed and restarted.

use cf_fleet::testing::RedisServer;
use cf_mock_llm::{MockConfig, MockServer};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A process whose stderr is collected by a thread of its own.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

/// A test that fails part-way leaves no worker behind.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("cf-host starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut lines = BufReader::new(pipe);
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().expect("stderr").push_str(&line);
                line.clear();
            }
        });
        Self { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("exits");
        // The stderr thread ends with the pipe; give it the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }
}

/// `cf-host` with the fleet's common settings: `dir/config.toml` (a lease of 1 s),
/// the loopback server, one API account, its own data directory.
fn cf_host(dir: &Path, data: &str, server: &MockServer) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cf-host"));
    cmd.env("XDG_CONFIG_HOME", dir.join("config-home"))
        .env("CF_DATA_DIR", dir.join(data))
        .env("ANTHROPIC_API_KEY", "one-account")
        .env("ANTHROPIC_BASE_URL", server.base_url());
    cmd
}

fn worker(dir: &Path, n: usize, server: &MockServer, redis: &str) -> Proc {
    let mut cmd = cf_host(dir, &format!("worker-{n}"), server);
    cmd.args(["worker", "--redis", redis, "--items", "20", "--no-cache"])
        .args(["--max-concurrent", "30", "--grace", "20"])
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdout(Stdio::null());
    Proc::spawn(cmd)
}

/// `cf-host serve --worker` on a free port.
fn serving_worker(dir: &Path, server: &MockServer, redis: &str) -> Proc {
    let mut cmd = cf_host(dir, "serving-worker", server);
    cmd.args([
        "serve",
        "--worker",
        "--listen",
        "127.0.0.1:0",
        "--redis",
        redis,
    ])
    .args(["--max-concurrent", "30", "--no-cache"])
    .arg("--config")
    .arg(dir.join("config.toml"))
    .stdout(Stdio::null());
    Proc::spawn(cmd)
}

fn tasks(dir: &Path, n: usize) -> std::path::PathBuf {
    let file = dir.join("tasks.jsonl");
    let lines: String = (0..n)
        .map(|i| format!("{{\"id\": \"item-{i}\", \"task\": \"queued item {i}\"}}\n"))
        .collect();
    std::fs::write(&file, lines).expect("tasks");
    file
}

/// The submitter: `cf-host run python-expert --tasks FILE --queue URL --json`; its
/// stdout lines arrive on the channel as they are written.
fn submit(
    dir: &Path,
    server: &MockServer,
    redis: &str,
    n: usize,
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let file = tasks(dir, n);
    let mut cmd = cf_host(dir, "submitter", server);
    cmd.args([
        "run",
        "python-expert",
        "--json",
        "--queue",
        redis,
        "--tasks",
    ])
    .arg(&file)
    .arg("--config")
    .arg(dir.join("config.toml"))
    .stdout(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    let stdout = proc.child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (proc, rx)
}

/// Each index of `lines` (the submitter's `--json` results) once; the workers that
/// ran them.
fn check_results(lines: &[String], n: usize) -> BTreeMap<String, usize> {
    let mut seen = vec![0usize; n];
    let mut by_worker = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON result");
        assert_eq!(v["ok"], true, "{v}");
        let index = v["index"].as_u64().expect("an index") as usize;
        assert_eq!(v["id"], format!("item-{index}"));
        assert!(
            v["output"]
                .as_str()
                .is_some_and(|o| o.contains(&format!("queued item {index}"))),
            "{v}"
        );
        seen[index] += 1;
        *by_worker
            .entry(v["worker"].as_str().expect("a worker").to_owned())
            .or_insert(0) += 1;
    }
    let wrong: Vec<(usize, usize)> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 1)
        .map(|(i, c)| (i, *c))
        .collect();
    assert!(
        wrong.is_empty(),
        "(index, results) not exactly one: {wrong:?}"
    );
    by_worker
}

/// A number before `what` in a worker's last summary line.
fn stat(stderr: &str, what: &str) -> u64 {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("worker stopped:"))
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    let at = line.find(what).expect("the stat");
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

/// Three workers (one of them `cf-host serve --worker`), a fleet limit of 30, 600
/// items: one worker is SIGKILLed mid-batch. Its items are taken over after the
/// lease; every item has exactly one result, the API never sees more than 30 at once,
/// and the others stop gracefully on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_no_item_and_doubles_none() {
    let Some(redis) = RedisServer::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig::for_load(Duration::from_millis(50)))
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    std::fs::write(dir.join("config.toml"), "[redis]\nlease_secs = 1\n").expect("config");
    let url = redis.url();
    let mut doomed = Some(worker(dir, 0, &server, &url));
    let survivor = worker(dir, 1, &server, &url);
    let serving = serving_worker(dir, &server, &url);
    let n = 600;
    let (mut submitter, lines) = submit(dir, &server, &url, n);
    let collected = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for line in lines {
            all.push(line);
            if all.len() == 150 {
                let mut victim = doomed.take().expect("the doomed worker");
                victim.child.kill().expect("SIGKILL");
                victim.child.wait().expect("reaped");
            }
        }
        all
    })
    .await
    .expect("collected");
    let status = tokio::task::spawn_blocking(move || {
        let status = submitter.child.wait().expect("exits");
        (status, submitter)
    })
    .await
    .expect("waited");
    let (status, submitter) = status;
    assert!(status.success(), "{}", submitter.stderr());
    let by_worker = check_results(&collected, n);
    assert_eq!(collected.len(), n);
    assert!(by_worker.len() >= 2, "{by_worker:?}");
    assert!(
        server.max_in_flight() <= 30,
        "the fleet's limit: {}",
        server.max_in_flight()
    );
    // The serving worker reports the queue on /readyz and /metrics.
    let address = serving
        .stderr()
        .lines()
        .find_map(|l| l.split("serving on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the server's address")
        .to_owned();
    let ready: serde_json::Value = reqwest::get(format!("{address}/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("JSON");
    assert_eq!(ready["queue"], "ok", "{ready}");
    let metrics = reqwest::get(format!("{address}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(metric("cf_queue_depth"), 0.0, "every item acknowledged");
    assert!(metric("cf_worker_items{outcome=\"stored\"}") >= 1.0);
    let (mut survivor, mut serving) = (survivor, serving);
    let (s1, e1) = survivor.terminate();
    let (s2, e2) = serving.terminate();
    assert!(s1.success() && s2.success(), "{e1}\n{e2}");
    let taken_over = stat(&e1, "taken over") + stat(&e2, "taken over");
    assert!(
        taken_over >= 1,
        "the killed worker's items were taken over: {e1}\n{e2}"
    );
    assert!(
        server.requests() as usize >= n,
        "{} requests",
        server.requests()
    );
}

/// Redis (writing every change to its append-only file) killed mid-batch and started
/// again on its files: the workers and the submitter wait it out, and every item has
/// exactly one result. (The workers fail open, so that model calls during the outage
/// go on: the queue is what is tested here; the limit's behaviour has its own tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_survives_redis_killed_and_restarted() {
    let files = tempfile::tempdir().expect("temp dir");
    let Some(redis) = RedisServer::start_persistent(None, files.path()).await else {
        return;
    };
    let server = MockServer::start(MockConfig::for_load(Duration::from_millis(20)))
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    std::fs::write(
        dir.join("config.toml"),
        "[redis]\nlease_secs = 1\nfail = \"open\"\n",
    )
    .expect("config");
    let url = redis.url();
    let workers = [worker(dir, 0, &server, &url), worker(dir, 1, &server, &url)];
    let n = 400;
    let (mut submitter, lines) = submit(dir, &server, &url, n);
    let port = redis.port;
    let files_dir = files.path().to_owned();
    let (collected, restarted) = tokio::task::spawn_blocking(move || {
        let mut redis = Some(redis);
        let mut again = None;
        let mut all = Vec::new();
        for line in lines {
            all.push(line);
            if all.len() == 100 {
                // Killed (nothing flushed beyond what each write already was), then
                // started on the same files and port.
                drop(redis.take());
                again = tokio::runtime::Handle::current()
                    .block_on(RedisServer::start_persistent(Some(port), &files_dir));
            }
        }
        (all, again)
    })
    .await
    .expect("collected");
    assert!(restarted.is_some(), "Redis was restarted mid-batch");
    let status = tokio::task::spawn_blocking(move || {
        let status = submitter.child.wait().expect("exits");
        (status, submitter)
    })
    .await
    .expect("waited");
    assert!(status.0.success(), "{}", status.1.stderr());
    check_results(&collected, n);
    let mut errors = 0;
    for w in workers {
        let (s, e) = {
            let mut w = w;
            w.terminate()
        };
        assert!(s.success(), "{e}");
        errors += stat(&e, "Redis error");
    }
    assert!(errors >= 1, "the workers met the outage");
}

/// Ctrl-C in the submitter cancels the batch: it exits 130 after the grace period, and
/// the items no worker started are handed to the next worker as cancelled, not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_the_submitter_cancels_the_batch() {
    let Some(redis) = RedisServer::start(None).await else {
        return;
    };
    let server = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let url = redis.url();
    let file = tasks(dir, 50);
    let mut cmd = cf_host(dir, "submitter", &server);
    cmd.args([
        "run",
        "python-expert",
        "--json",
        "--grace",
        "0.5",
        "--queue",
        &url,
    ])
    .arg("--tasks")
    .arg(&file)
    .stdout(Stdio::null());
    let mut submitter = Proc::spawn(cmd);
    // No worker runs: once the batch is submitted, interrupt.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !submitter.stderr().contains("submitted to queue") {
        assert!(std::time::Instant::now() < end, "{}", submitter.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queue = cf_fleet::WorkQueue::connect(&url, cf_fleet::QueueConfig::default())
        .await
        .expect("connects");
    let pending = loop {
        let depth = queue.depth().await.expect("depth");
        if depth == 50 {
            break depth;
        }
        assert!(std::time::Instant::now() < end, "{depth} items submitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending, 50);
    let _ = Command::new("kill")
        .args(["-INT", &submitter.child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || {
        let status = submitter.child.wait().expect("exits");
        (status, submitter.stderr())
    })
    .await
    .expect("waited");
    assert_eq!(status.0.code(), Some(130), "{}", status.1);
    assert!(status.1.contains("cancelled"), "{}", status.1);
    let taken = queue.take("probe", 100).await.expect("takes");
    assert!(taken.run.is_empty(), "{:?}", taken.run);
    assert_eq!(taken.cancelled.len(), 50);
    assert_eq!(server.requests(), 0, "nothing ran");
}
