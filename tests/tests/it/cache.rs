//! The response cache wired into the `llm` capability: hits, modes, errors,
//! single-flight, tampering, and that a hit needs no concurrency permit.

use crate::support::*;
use cf_host::llm::{LlmError, Provider, ProviderError};
use cf_host::{Agent, Host, Task};
use std::sync::Arc;
use std::time::Duration;

fn cached_host(provider: Arc<dyn Provider>, max_concurrent: usize) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (host_on(dir.path(), provider, max_concurrent), dir)
}

/// A host on the cache directory `dir`; a second one on the same directory is another
/// process's view of it.
fn host_on(dir: &std::path::Path, provider: Arc<dyn Provider>, max_concurrent: usize) -> Host {
    Host::builder()
        .grant("hostile", cf_host::permissions::Grant::unrestricted())
        .data_dir(Some(dir.to_path_buf()))
        .provider(provider)
        .max_concurrent(max_concurrent)
        .build()
        .expect("host")
}

async fn hostile(host: &Host) -> Agent {
    bounded("load", 60, host.load(hostile_wasm().to_path_buf()))
        .await
        .expect("loads")
}

async fn ask(agent: &Agent, task: &str) -> cf_host::RunOutput {
    bounded(task, 60, agent.run(Task::new(task)))
        .await
        .expect("runs")
}

fn cached_flag(out: &cf_host::RunOutput) -> &str {
    out.metadata
        .iter()
        .find(|(k, _)| k == "cached")
        .map(|(_, v)| v.as_str())
        .expect("cached metadata")
}

/// Runs every task on `agent` at once; the results in the tasks' order.
async fn run_all(
    agent: &Agent,
    tasks: impl IntoIterator<Item = String>,
) -> Vec<Result<cf_host::RunOutput, cf_host::RunError>> {
    let runs: Vec<_> = tasks
        .into_iter()
        .map(|t| {
            let agent = agent.clone();
            tokio::spawn(async move { agent.run(Task::new(t)).await })
        })
        .collect();
    let mut results = Vec::with_capacity(runs.len());
    for run in runs {
        results.push(bounded("join", 60, run).await.expect("joined"));
    }
    results
}

/// `n` copies of `task`.
fn copies(task: &str, n: usize) -> Vec<String> {
    vec![task.to_owned(); n]
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_cache_for_free() {
    let spy = Spy::new();
    let (host, _dir) = cached_host(spy.clone(), 10);
    let agent = bounded("load", 60, host.load("python-expert"))
        .await
        .expect("loads");
    let first = bounded("first", 60, agent.run(Task::new("What is a dict?")))
        .await
        .expect("runs");
    let second = bounded("second", 60, agent.run(Task::new("What is a dict?")))
        .await
        .expect("runs");
    assert_eq!(
        spy.requests().len(),
        1,
        "the second run was served from the cache"
    );
    assert_eq!(first.text, second.text);
    assert_eq!((first.stats.cache_hits, second.stats.cache_hits), (0, 1));
    assert_eq!((first.stats.attempts, second.stats.attempts), (1, 0));
    assert!(first.stats.cost.usd > 0.0);
    assert_eq!(second.stats.cost.usd, 0.0, "a hit costs nothing");
    assert!(
        (second.stats.saved_usd - first.stats.cost.usd).abs() < 1e-12,
        "and saves what the call cost"
    );
    // Anything the API would see differently is a different entry.
    bounded("third", 60, agent.run(Task::new("What is a dict? ")))
        .await
        .expect("runs");
    let options = cf_host::RunOptions {
        temperature: Some(0.9),
        ..cf_host::RunOptions::default()
    };
    bounded(
        "fourth",
        60,
        agent.run_with(Task::new("What is a dict?"), &options),
    )
    .await
    .expect("runs");
    assert_eq!(spy.requests().len(), 3);
    host.flush().await;
    let stats = host
        .llm()
        .response_cache()
        .expect("a response cache")
        .stats();
    assert_eq!((stats.hits, stats.entries), (1, 3));
}

#[tokio::test]
async fn the_guest_chooses_the_cache_mode() {
    let spy = Spy::new();
    let (host, _dir) = cached_host(spy.clone(), 10);
    let agent = hostile(&host).await;
    let calls = || spy.requests().len();
    // bypass: neither reads nor writes.
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode bypass alpha").await),
        "false"
    );
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode normal alpha").await),
        "false",
        "bypass stored nothing"
    );
    assert_eq!(calls(), 2);
    // normal: the entry written above is read now.
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode normal alpha").await),
        "true"
    );
    assert_eq!(calls(), 2);
    // refresh: skips the read, calls, writes.
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode refresh alpha").await),
        "false"
    );
    assert_eq!(calls(), 3);
    // read-only: reads a stored entry...
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode read-only alpha").await),
        "true"
    );
    assert_eq!(calls(), 3);
    // ...but on a miss calls without storing.
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode read-only beta").await),
        "false"
    );
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode normal beta").await),
        "false",
        "read-only stored nothing"
    );
    assert_eq!(calls(), 5);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let spy = Spy::failing(
        Duration::ZERO,
        vec![ProviderError::fatal(LlmError::InvalidRequest("no".into()))],
    );
    let (host, _dir) = cached_host(spy.clone(), 10);
    let agent = hostile(&host).await;
    let err = bounded("failing", 60, agent.run(Task::new("llm-mode normal gamma")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, cf_host::Error::Llm(LlmError::InvalidRequest(_))),
        "{:?}",
        err.error
    );
    assert_eq!(
        cached_flag(&ask(&agent, "llm-mode normal gamma").await),
        "false",
        "the error was not stored"
    );
    assert_eq!(spy.requests().len(), 2);
}

#[tokio::test]
async fn identical_requests_in_flight_make_one_upstream_call() {
    let spy = Spy::slow(Duration::from_millis(300));
    let (host, _dir) = cached_host(spy.clone(), 10);
    let agent = hostile(&host).await;
    let mut cached = 0;
    for out in run_all(&agent, copies("llm-mode normal delta", 8)).await {
        cached += usize::from(cached_flag(&out.expect("runs")) == "true");
    }
    assert_eq!(
        spy.requests().len(),
        1,
        "one upstream call for 8 identical requests"
    );
    assert_eq!(cached, 7);
}

#[tokio::test]
async fn a_failed_call_in_flight_fails_every_waiter_with_its_typed_error() {
    let spy = Spy::failing(
        Duration::from_millis(300),
        vec![ProviderError::fatal(LlmError::Permission(
            "not for you".into(),
        ))],
    );
    let (host, _dir) = cached_host(spy.clone(), 10);
    let agent = hostile(&host).await;
    for result in run_all(&agent, copies("llm-mode normal epsilon", 5)).await {
        let err = result.expect_err("the leader's failure");
        assert!(
            matches!(&err.error, cf_host::Error::Llm(LlmError::Permission(m)) if m == "not for you"),
            "{:?}",
            err.error
        );
    }
    assert_eq!(spy.requests().len(), 1);
}

#[tokio::test]
async fn waiters_on_a_call_that_is_retried_share_its_final_answer() {
    // The first two attempts fail with retryable errors; the third succeeds.
    let spy = Spy::failing(
        Duration::from_millis(200),
        vec![
            ProviderError::transient(
                LlmError::Overloaded("busy".into()),
                Some(Duration::from_millis(10)),
            ),
            ProviderError::transient(
                LlmError::Server {
                    status: 500,
                    message: "oops".into(),
                },
                Some(Duration::from_millis(10)),
            ),
        ],
    );
    let (host, _dir) = cached_host(spy.clone(), 10);
    let agent = hostile(&host).await;
    let outs: Vec<_> = run_all(&agent, copies("llm-mode normal theta", 6))
        .await
        .into_iter()
        .map(|r| r.expect("runs"))
        .collect();
    assert_eq!(
        spy.requests().len(),
        3,
        "the leader's three attempts, and nothing for the five others"
    );
    let attempts: Vec<u32> = outs.iter().map(|o| o.stats.attempts).collect();
    assert_eq!(
        attempts.iter().filter(|a| **a == 3).count(),
        1,
        "{attempts:?}"
    );
    assert_eq!(
        attempts.iter().filter(|a| **a == 0).count(),
        5,
        "{attempts:?}"
    );
    assert_eq!(
        outs.iter().filter(|o| cached_flag(o) == "true").count(),
        5,
        "the waiters' answers are free"
    );
    assert!(
        outs.iter().all(|o| o.text == outs[0].text),
        "one answer for all"
    );
}

#[tokio::test]
async fn a_hit_needs_no_concurrency_permit() {
    // One permit, held by a call that takes 2 s; a cached answer still comes at once.
    let spy = Spy::slow(Duration::from_secs(2));
    let (host, _dir) = cached_host(spy.clone(), 1);
    let agent = hostile(&host).await;
    ask(&agent, "llm-mode normal zeta").await;
    let blocker = {
        let agent = agent.clone();
        tokio::spawn(async move {
            agent
                .run(Task::new("llm-mode normal something else entirely"))
                .await
        })
    };
    // Wait until the blocker holds the only permit.
    bounded("blocker in flight", 30, async {
        while spy.requests().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let out = ask(&agent, "llm-mode normal zeta").await;
    assert_eq!(cached_flag(&out), "true");
    // The hit did not wait for the permit: the blocker still holds it.
    assert!(
        !blocker.is_finished(),
        "the permit was still held during the hit"
    );
    bounded("blocker", 30, blocker)
        .await
        .expect("joined")
        .expect("runs");
}

#[tokio::test]
async fn an_entry_tampered_on_disk_is_a_miss_and_counted() {
    let spy = Spy::new();
    let (host, dir) = cached_host(spy.clone(), 10);
    let agent = hostile(&host).await;
    ask(&agent, "llm-mode normal eta").await;
    host.flush().await;
    let db = rusqlite::Connection::open(dir.path().join("responses/responses.sqlite"))
        .expect("the cache's database");
    let changed = db
        .execute("UPDATE bodies SET payload = payload || x'20'", [])
        .expect("tamper");
    assert_eq!(changed, 1);
    drop(db);
    // A new host (a new process) so the memory layer does not answer.
    let host2 = host_on(dir.path(), spy.clone(), 10);
    let agent2 = hostile(&host2).await;
    assert_eq!(
        cached_flag(&ask(&agent2, "llm-mode normal eta").await),
        "false",
        "the tampered entry was not served"
    );
    assert_eq!(spy.requests().len(), 2);
    assert_eq!(
        host2
            .llm()
            .response_cache()
            .expect("cache")
            .stats()
            .integrity_failures,
        1
    );
}

async fn run_many(agent: &Agent, tasks: &[String]) {
    for result in run_all(agent, tasks.iter().cloned()).await {
        result.expect("runs");
    }
}

#[tokio::test]
async fn answers_are_written_behind_and_reach_the_disk_on_flush_or_drop() {
    let tasks: Vec<String> = (0..40).map(|i| format!("Question {i}?")).collect();
    for flush in [true, false] {
        let spy = Spy::new();
        let (host, dir) = cached_host(spy.clone(), 10);
        let agent = bounded("load", 60, host.load("python-expert"))
            .await
            .expect("loads");
        run_many(&agent, &tasks).await;
        // Repeats in this process are hits at once, written or not.
        run_many(&agent, &tasks[..10]).await;
        assert_eq!(spy.requests().len(), 40, "flush {flush}: repeats were hits");
        if flush {
            host.flush().await;
            let stats = host.llm().response_cache().expect("cache").stats();
            assert_eq!((stats.entries, stats.hits), (40, 10), "after flush");
        } else {
            // The last handles go: what was queued is written before the drop returns.
            drop(agent);
            drop(host);
        }
        let other = host_on(dir.path(), Spy::new(), 10);
        let cache = other.llm().response_cache().expect("cache");
        let report = cache.verify(false).expect("verify");
        assert!(report.is_clean(), "flush {flush}: {report:?}");
        assert_eq!(report.valid, 40, "flush {flush}: every answer is on disk");
        assert_eq!(
            cache.stats().hits,
            10,
            "flush {flush}: every hit was counted"
        );
    }
}
