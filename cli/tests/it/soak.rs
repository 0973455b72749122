//! Fault soak: many agent runs through the real Anthropic client to the loopback
//! server, which fails about 30% of requests (429s, 529s, 500s, resets, hangs past the
//! attempt timeout) on a deterministic schedule keyed by task, with a global limit of
//! 50 calls in flight and the response cache on.
//!
//! Checked: every run ends, inside its deadline (10% slack), as a success or a typed
//! error; the client never has more than 50 attempts in flight, nor the server more
//! than 50 requests for clients still waiting (the server's raw count can read 51: when
//! an attempt times out, the service frees its permit at once, and the next request
//! may arrive before the server has seen the abandoned connection close — the summary
//! shows both); each run's reported attempts equal the requests the server saw for
//! it, and both equal what the retry rules give for the faults it was served; no
//! result is lost or duplicated; the cache holds exactly the successful answers (a
//! second pass hits for them and goes to the server for the others), and verifies
//! clean through the library and `cf-host cache verify`.
//!
//! `CF_SOAK_RUNS` sets the number of runs (default 300, for CI), `CF_SOAK_SEED` the
//! schedule's seed. `scripts/soak.sh` runs 10,000 in release and prints the summary.

use cf_host::llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, BoxFuture, Provider, ProviderError, Request,
    Response,
};
use cf_host::{BatchItem, BatchOptions, BatchResult, Host, Limits, RunOptions, Task};
use cf_mock_llm::{Fault, MockConfig, MockServer};
use cf_tests::bounded;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs in CI; `CF_SOAK_RUNS` overrides.
const DEFAULT_RUNS: usize = 300;
const DEFAULT_SEED: u64 = 0x50a4_2026;
/// The host's global limit of calls in flight.
const MAX_CONCURRENT: usize = 50;
const MAX_RETRIES: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A hang well past the attempt timeout.
const HANG: Duration = Duration::from_secs(4);
/// The deadline of ordinary runs: longer than any schedule's retries and waits
/// (4 attempts of at most 2 s, waits of at most 0.5 + 1 + 2 s), so that the retry rules
/// alone decide how a run ends.
const DEADLINE: Duration = Duration::from_secs(20);
/// The deadline of runs whose first attempt hangs until the deadline stops it: shorter
/// than the attempt timeout.
const SHORT_DEADLINE: Duration = Duration::from_millis(1500);
/// Probability that an attempt is served a fault.
const P_FAULT: f64 = 0.3;
/// Server latency: long enough that 50 calls are really in flight at once.
const LATENCY: Duration = Duration::from_millis(30);

/// The faults of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// 429 with `retry-after-ms: 20`.
    RateLimited,
    /// 429 with `retry-after: 3600`: longer than the service waits; it gives up at once.
    RateLimitedLong,
    Overloaded,
    ServerError,
    Reset,
    /// Longer than the attempt timeout.
    Hang,
    /// Hangs until the run's (short) deadline.
    HangPastDeadline,
}

impl Kind {
    fn fault(self) -> Fault {
        match self {
            Self::RateLimited => Fault::api_error(
                429,
                "rate_limit_error",
                "slow down (soak)",
                &[("retry-after-ms", "20")],
            ),
            Self::RateLimitedLong => Fault::rate_limited(3600),
            Self::Overloaded => Fault::overloaded(),
            Self::ServerError => Fault::server_error(),
            Self::Reset => Fault::Reset,
            Self::Hang => Fault::Hang(HANG),
            Self::HangPastDeadline => Fault::Hang(Duration::from_secs(30)),
        }
    }

    /// The error kind a run reports when this fault ends it.
    fn error_kind(self) -> &'static str {
        match self {
            Self::RateLimited | Self::RateLimitedLong => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::ServerError => "server_error",
            Self::Reset => "connection",
            Self::Hang | Self::HangPastDeadline => "timeout",
        }
    }
}

/// What the server does to one run's attempts: `faults[k]` for attempt `k`, then
/// answers.
#[derive(Debug, Clone)]
struct Schedule {
    faults: Vec<Kind>,
    /// A deadline of its own (the short-deadline runs).
    deadline: Option<Duration>,
}

/// How a run must end under the retry rules: attempts, and `None` for success or the
/// error kind.
fn expected(s: &Schedule) -> (u32, Option<&'static str>) {
    for (k, kind) in s.faults.iter().enumerate() {
        let attempt = k as u32 + 1;
        if *kind == Kind::RateLimitedLong || attempt == MAX_RETRIES + 1 {
            return (attempt, Some(kind.error_kind()));
        }
    }
    (s.faults.len() as u32 + 1, None)
}

/// The faults of run `run`: seeded, so schedules depend on nothing but the seed.
fn schedule(seed: u64, run: usize) -> Schedule {
    let mut rng = fastrand::Rng::with_seed(seed ^ (run as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    if rng.f64() < 0.01 {
        return Schedule {
            faults: vec![Kind::HangPastDeadline],
            deadline: Some(SHORT_DEADLINE),
        };
    }
    let mut faults = Vec::new();
    for _ in 0..=MAX_RETRIES {
        if rng.f64() >= P_FAULT {
            break;
        }
        let kind = match rng.u64(0..100) {
            0..=29 => Kind::RateLimited,
            30..=32 => Kind::RateLimitedLong,
            33..=52 => Kind::Overloaded,
            53..=72 => Kind::ServerError,
            73..=92 => Kind::Reset,
            _ => Kind::Hang,
        };
        faults.push(kind);
        if kind == Kind::RateLimitedLong {
            break;
        }
    }
    Schedule {
        faults,
        deadline: None,
    }
}

/// The run a request belongs to: the number in `soak-run-<n>-end` in its message.
fn run_of(text: &str) -> Option<usize> {
    let rest = &text[text.find("soak-run-")? + "soak-run-".len()..];
    rest[..rest.find("-end")?].parse().ok()
}

/// The Anthropic client, counting its attempts in flight and recording when each
/// run's attempts started and ended (an attempt the service gives up on ends when its
/// future is dropped).
#[derive(Debug)]
struct Counting {
    inner: AnthropicProvider,
    now: AtomicUsize,
    max: AtomicUsize,
    /// (run, start, end) of every attempt, in the order they ended.
    attempts: Mutex<Vec<(usize, Instant, Instant)>>,
    /// How each run's attempts ended, as the client saw them: `ok`, an error kind, or
    /// `abandoned` (the service stopped waiting) — for failure messages.
    outcomes: Mutex<HashMap<usize, Vec<String>>>,
}

impl Counting {
    fn outcomes_of(&self, run: usize) -> Vec<String> {
        let outcomes = self.outcomes.lock().expect("not poisoned");
        outcomes.get(&run).cloned().unwrap_or_default()
    }
}

struct Attempt<'a> {
    counting: &'a Counting,
    run: usize,
    start: Instant,
    outcome: &'static str,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.counting.now.fetch_sub(1, Ordering::SeqCst);
        let end = Instant::now();
        self.counting
            .attempts
            .lock()
            .expect("not poisoned")
            .push((self.run, self.start, end));
        self.counting
            .outcomes
            .lock()
            .expect("not poisoned")
            .entry(self.run)
            .or_default()
            .push(self.outcome.to_owned());
    }
}

impl Provider for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }

    fn billable(&self) -> bool {
        self.inner.billable()
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        Box::pin(async move {
            let text = request
                .messages
                .last()
                .map(|m| m.text())
                .unwrap_or_default();
            let text = text.as_ref();
            let run = run_of(text).unwrap_or(usize::MAX);
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            let mut attempt = Attempt {
                counting: self,
                run,
                start: Instant::now(),
                outcome: "abandoned",
            };
            let result = self.inner.send(request).await;
            attempt.outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.error.kind(),
            };
            result
        })
    }
}

/// The most requests the server worked on at once for clients still waiting: a
/// request the client gave up on (a hang cut by the attempt timeout or the deadline)
/// stops counting when the client's attempt ended, not when the server noticed the
/// closed connection a moment later. Also returns how many requests were abandoned.
fn server_in_flight_for_waiting_clients(
    server: &MockServer,
    attempts: &[(usize, Instant, Instant)],
    runs: usize,
) -> (usize, usize) {
    // Each run's attempts in the order they started; the server's `nth` request of a
    // run is the client's `nth` attempt.
    let mut client: Vec<Vec<(Instant, Instant)>> = vec![Vec::new(); runs];
    for &(run, start, end) in attempts {
        client[run].push((start, end));
    }
    for c in &mut client {
        c.sort();
    }
    let mut nth = vec![0usize; runs];
    let mut events = Vec::new();
    let mut abandoned = 0;
    for s in server.served() {
        let run = run_of(&s.last_user).expect("a soak request");
        let left = s.left.expect("every request is finished");
        let end = if s.abandoned {
            abandoned += 1;
            let (_, client_end) = client[run][nth[run]];
            left.min(client_end)
        } else {
            left
        };
        nth[run] += 1;
        events.push((s.arrived, 1i64));
        events.push((end, -1i64));
    }
    // At equal instants, departures first.
    events.sort();
    let (mut now, mut max) = (0i64, 0i64);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    (max as usize, abandoned)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The batch; `faulty`: with the schedules' own deadlines.
fn items(runs: usize, schedules: &[Schedule], faulty: bool) -> Vec<BatchItem> {
    (0..runs)
        .map(|i| {
            let (agent, task) = if i.is_multiple_of(2) {
                (
                    "python-expert",
                    format!("soak-run-{i}-end: what is item {i}?"),
                )
            } else {
                (
                    "code-reviewer",
                    format!("// soak-run-{i}-end\nfn f{i}() {{}}"),
                )
            };
            BatchItem {
                id: Some(format!("run-{i}")),
                agent: agent.to_owned(),
                task: Task::new(task),
                options: RunOptions {
                    deadline: schedules[i].deadline.filter(|_| faulty),
                    ..RunOptions::default()
                },
            }
        })
        .collect()
}

/// Every result of a batch, as it arrives, checking that each index comes once.
async fn collect(host: &Host, items: Vec<BatchItem>, secs: u64) -> Vec<BatchResult> {
    let n = items.len();
    let mut batch = host.start_batch(items, BatchOptions::default());
    let mut slots: Vec<Option<BatchResult>> = (0..n).map(|_| None).collect();
    let mut received = 0;
    bounded("every result of the batch", secs, async {
        while let Some(r) = batch.next().await {
            received += 1;
            let index = r.index;
            assert!(index < n, "index {index} out of range");
            assert!(slots[index].is_none(), "result {index} came twice");
            slots[index] = Some(r);
        }
    })
    .await;
    assert_eq!(received, n, "one result per item");
    slots
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| panic!("result {i} was lost")))
        .collect()
}

/// What the server served each run, in order.
fn served_by_run(server: &MockServer, runs: usize) -> Vec<Vec<Option<Fault>>> {
    let mut by_run = vec![Vec::new(); runs];
    for s in server.served() {
        let run = run_of(&s.last_user)
            .unwrap_or_else(|| panic!("a request of no run: {:?}", s.last_user));
        by_run[run].push(s.fault);
    }
    by_run
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_under_a_fault_mix_end_as_the_retry_rules_say_and_the_cache_keeps_only_successes() {
    let runs: usize = env_or("CF_SOAK_RUNS", DEFAULT_RUNS);
    let seed: u64 = env_or("CF_SOAK_SEED", DEFAULT_SEED);
    let schedules: Arc<Vec<Schedule>> = Arc::new((0..runs).map(|i| schedule(seed, i)).collect());
    let server = MockServer::start(MockConfig {
        latency: LATENCY,
        record: false,
        log_served: true,
        ..MockConfig::default()
    })
    .await
    .expect("mock server binds 127.0.0.1");
    let second_pass = Arc::new(AtomicBool::new(false));
    server.set_fault_plan({
        let (schedules, second_pass) = (Arc::clone(&schedules), Arc::clone(&second_pass));
        Arc::new(move |text: &str, nth: u32| {
            if second_pass.load(Ordering::SeqCst) {
                return None;
            }
            let run = run_of(text)?;
            schedules
                .get(run)?
                .faults
                .get(nth as usize)
                .map(|k| k.fault())
        })
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let provider = Arc::new(Counting {
        inner: AnthropicProvider::new(AnthropicConfig::new(
            server.base_url(),
            ApiKey::new("sk-soak-test"),
        ))
        .expect("client"),
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
        attempts: Mutex::new(Vec::new()),
        outcomes: Mutex::new(HashMap::new()),
    });
    let host = Host::builder()
        .data_dir(Some(dir.path().to_path_buf()))
        .provider(Arc::clone(&provider) as Arc<dyn Provider>)
        .max_concurrent(MAX_CONCURRENT)
        .max_retries(MAX_RETRIES)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .limits(Limits {
            deadline: DEADLINE,
            ..Limits::default()
        })
        .build()
        .expect("host");
    let batch_secs = 120 + runs as u64 / 10;

    // Pass 1: the fault mix.
    let started = Instant::now();
    let results = collect(&host, items(runs, &schedules, true), batch_secs).await;
    let wall = started.elapsed();
    let served = served_by_run(&server, runs);
    let raw_max_in_flight = server.max_in_flight();
    let client_max_in_flight = provider.max.load(Ordering::SeqCst);
    let (max_in_flight, abandoned) = {
        let attempts = provider.attempts.lock().expect("not poisoned");
        server_in_flight_for_waiting_clients(&server, &attempts, runs)
    };

    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut attempts_histogram: BTreeMap<u32, usize> = BTreeMap::new();
    let mut served_faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut max_overrun = Duration::ZERO;
    let mut succeeded = vec![false; runs];
    let mut answers: HashMap<usize, String> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        let s = &schedules[i];
        assert_eq!(r.id.as_deref(), Some(format!("run-{i}").as_str()));
        let (stats, kind) = match &r.result {
            Ok(out) => (&out.stats, None),
            Err(e) => (&e.stats, Some(e.error.kind())),
        };
        let deadline = s.deadline.unwrap_or(DEADLINE);
        max_overrun = max_overrun.max(stats.timings.total.saturating_sub(deadline));
        assert!(
            stats.timings.total <= deadline + deadline / 10,
            "run {i} took {:?}, past its deadline of {deadline:?} by more than 10%",
            stats.timings.total
        );
        let seen = &served[i];
        for f in seen {
            let label = f.as_ref().map_or("answer".to_owned(), |f| match f {
                Fault::Status { status, .. } => status.to_string(),
                other => format!("{other:?}")
                    .split('(')
                    .next()
                    .unwrap_or("?")
                    .to_owned(),
            });
            *served_faults.entry(label).or_default() += 1;
        }
        assert_eq!(
            stats.attempts as usize,
            seen.len(),
            "run {i}: reported attempts vs requests the server saw ({seen:?}), {:?}; the client saw {:?}",
            r.result.as_ref().err(),
            provider.outcomes_of(i)
        );
        for (k, f) in seen.iter().enumerate() {
            assert_eq!(
                f.as_ref(),
                s.faults.get(k).map(|kind| kind.fault()).as_ref(),
                "run {i}: attempt {k} was served something else than its schedule"
            );
        }
        if s.deadline.is_some() {
            assert!(
                matches!(kind, Some("timeout" | "deadline")),
                "run {i} hung past its deadline yet ended as {kind:?}"
            );
            assert!(seen.len() <= 1, "run {i}: no retry after the deadline");
        } else {
            let (attempts, error) = expected(s);
            assert_eq!(
                (stats.attempts, kind),
                (attempts, error),
                "run {i}: schedule {:?}: {:?}; the client saw {:?}",
                s.faults,
                r.result.as_ref().err(),
                provider.outcomes_of(i)
            );
        }
        *outcomes.entry(kind.unwrap_or("ok")).or_default() += 1;
        *attempts_histogram.entry(stats.attempts).or_default() += 1;
        if let Ok(out) = &r.result {
            assert_eq!(stats.cache_hits, 0, "run {i}: every task is new");
            succeeded[i] = true;
            answers.insert(i, out.text.clone());
        }
    }
    assert!(
        client_max_in_flight <= MAX_CONCURRENT,
        "the client had {client_max_in_flight} attempts in flight; the limit is {MAX_CONCURRENT}"
    );
    assert!(
        max_in_flight <= MAX_CONCURRENT,
        "the server worked on {max_in_flight} requests at once for waiting clients; the limit is {MAX_CONCURRENT}"
    );
    let successes = succeeded.iter().filter(|s| **s).count();

    // The cache holds the successful answers and nothing else, and verifies clean.
    host.flush().await;
    let cache = host
        .llm()
        .response_cache()
        .expect("the response cache is on");
    let report = cache.verify(false).expect("verify");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.valid as usize, successes, "{report:?}");
    assert_eq!(cache.stats().entries as usize, successes);
    let cli = cli_verify(dir.path()).await;
    assert_eq!(cli["bad"], serde_json::json!([]), "{cli}");
    assert_eq!(cli["valid"], successes, "{cli}");

    // Pass 2: the same tasks, no faults. Successes are hits that reach no server;
    // failures were not cached and go to the server once.
    second_pass.store(true, Ordering::SeqCst);
    server.reset_stats();
    provider.outcomes.lock().expect("not poisoned").clear();
    let started = Instant::now();
    let again = collect(&host, items(runs, &schedules, false), batch_secs).await;
    let wall_again = started.elapsed();
    let served_again = served_by_run(&server, runs);
    for (i, r) in again.iter().enumerate() {
        let out = r
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("run {i} failed without faults: {e:?}"));
        if succeeded[i] {
            assert_eq!(
                (
                    out.stats.cache_hits,
                    out.stats.attempts,
                    served_again[i].len()
                ),
                (1, 0, 0),
                "run {i} succeeded before: a hit"
            );
            assert_eq!(
                Some(&out.text),
                answers.get(&i),
                "run {i}: the cached answer"
            );
        } else {
            assert_eq!(
                (
                    out.stats.cache_hits,
                    out.stats.attempts,
                    served_again[i].len()
                ),
                (0, 1, 1),
                "run {i} failed before: nothing was cached ({:?}, served {:?}, the client saw {:?}, before: {:?})",
                out.stats,
                served_again[i],
                provider.outcomes_of(i),
                results[i].result.as_ref().err()
            );
        }
    }
    host.flush().await;
    assert!(cache.verify(false).expect("verify").is_clean());
    assert_eq!(cache.stats().entries as usize, runs);

    let errors: usize = outcomes
        .iter()
        .filter(|(k, _)| **k != "ok")
        .map(|(_, n)| n)
        .sum();
    println!(
        "soak: {runs} runs (seed {seed:#x}) in {:.2} s: {successes} succeeded, {errors} failed",
        wall.as_secs_f64()
    );
    println!(
        "soak: second pass (successes from the cache, failures again) in {:.2} s",
        wall_again.as_secs_f64()
    );
    println!("soak: outcomes {outcomes:?}");
    println!("soak: attempts per run {attempts_histogram:?}");
    println!("soak: served {served_faults:?}");
    println!(
        "soak: max in flight (limit {MAX_CONCURRENT}): {client_max_in_flight} attempts at the client, {max_in_flight} requests at the server for waiting clients, {raw_max_in_flight} counting {abandoned} abandoned requests until the server noticed"
    );
    println!(
        "soak: max overrun of a deadline {:.1} ms",
        max_overrun.as_secs_f64() * 1000.0
    );
    // The checks above mean little unless the limit was under pressure and faults
    // were really served.
    if runs >= 200 {
        assert!(
            max_in_flight >= MAX_CONCURRENT / 2,
            "only {max_in_flight} in flight: the limit was never tested"
        );
        assert!(errors > 0 && successes > runs / 2, "{outcomes:?}");
    }
}

/// `cf-host cache verify --json` on the host's data directory.
async fn cli_verify(cache_dir: &std::path::Path) -> serde_json::Value {
    let dir = cache_dir.to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cf-host"))
            .args(["cache", "verify", "--json", "--data-dir"])
            .arg(&dir)
            .env("XDG_CONFIG_HOME", dir.join("config-home"))
            .env("XDG_DATA_HOME", dir.join("data-home"))
            .env_remove("CF_CACHE_SECRET")
            .env_remove("CF_DATA_DIR")
            .output()
            .expect("cf-host runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "cf-host cache verify: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("JSON")
}
