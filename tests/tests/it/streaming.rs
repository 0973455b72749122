//! Streaming end to end at the host's level: the `contract2` guest's streaming modes
//! through the host and the real Anthropic client to the loopback server, paced so
//! that streams are still open when the run ends, traps, hits its deadline, is
//! cancelled or is dropped. What is checked each time: the events a caller gets
//! (`Agent::start`, `BatchOptions::events`), and that nothing is left holding a permit
//! of the concurrency limit (`calls_in_flight`) or a connection to the server
//! (`in_flight`), and that an interrupted answer is never cached.

use crate::support::*;
use cf_host::permissions::Grant;
use cf_host::{
    BatchEventSink, BatchItem, BatchOptions, BatchResult, Error, Host, HostBuilder, RunError,
    RunEvent, RunOptions, RunOutput, Task,
};
use cf_mock_llm::{MockConfig, MockServer, StreamConfig};
use cf_tests::contract2_wasm;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-ant-test-streaming-SECRET";

/// How long a condition may take to come true before the test fails.
const WAIT_SECS: u64 = 20;

/// A loopback server streaming deltas of `delta_chars` characters with `pace` between
/// events, noting what it did with each request ([`MockServer::served`]).
async fn server(delta_chars: usize, pace: Duration) -> MockServer {
    MockServer::start(MockConfig {
        log_served: true,
        stream: StreamConfig {
            delta_chars,
            pace,
            ..StreamConfig::default()
        },
        ..MockConfig::default()
    })
    .await
    .expect("mock server binds 127.0.0.1")
}

/// A host whose model calls go to `server` through the real client, granting
/// `contract2` everything, with no response cache unless `build` adds one.
fn host(
    server: &MockServer,
    build: impl FnOnce(HostBuilder) -> HostBuilder,
) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let builder = Host::builder()
        .grant("contract2", Grant::unrestricted())
        .data_dir(Some(dir.path().to_path_buf()))
        .no_response_cache()
        .provider(anthropic_client(server, KEY));
    (build(builder).build().expect("host"), dir)
}

async fn contract2(host: &Host) -> cf_host::Agent {
    let agent = bounded(
        "load contract2",
        60,
        host.load(contract2_wasm().to_path_buf()),
    )
    .await
    .expect("contract2 loads");
    assert_eq!(agent.info().contract, "0.2.0");
    agent
}

fn task(mode: &str, text: &str) -> Task {
    Task::new(text).with_context("mode", mode)
}

fn meta<'a>(out: &'a RunOutput, key: &str) -> &'a str {
    out.metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no metadata {key:?} in {:?}", out.metadata))
}

/// Polls `cond` every 10 ms until it holds; fails the test naming `what` (and what
/// `state` says then) if it does not within [`WAIT_SECS`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool, state: impl Fn() -> String) {
    let end = tokio::time::Instant::now() + Duration::from_secs(WAIT_SECS);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: still not true after {WAIT_SECS} s ({})",
            state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nothing holds a permit of the host's limit now, and the server's streams all end
/// (the host closed its connections) within the wait.
async fn nothing_left_open(what: &str, host: &Host, server: &MockServer) {
    // A run that ends hands its streams' permits back before it returns; a run that is
    // dropped (cancelled) aborts its streams' readers, which the runtime then drops.
    wait_until(
        &format!("{what}: every permit of the concurrency limit is handed back"),
        || host.llm().calls_in_flight() == 0,
        || format!("{} calls in flight", host.llm().calls_in_flight()),
    )
    .await;
    wait_until(
        &format!("{what}: the server's streams end"),
        || server.in_flight() == 0,
        || format!("{} in flight at the server", server.in_flight()),
    )
    .await;
    assert_eq!(host.llm().calls_in_flight(), 0, "{what}");
}

/// The last request the server handled was a stream its client went away from before
/// its end (rather than one read to its end).
fn last_stream_was_abandoned(what: &str, server: &MockServer) {
    let served = server.served();
    let last = served.last().expect("the server served a request");
    assert!(last.left.is_some(), "{what}: {last:?}");
    assert!(
        last.abandoned,
        "{what}: the stream was read to its end, not closed by the host: {last:?}"
    );
}

/// The options of a run somebody watches (an event sink): its streams are read from
/// the provider as the model writes them. A run nobody watches asks for its answers
/// whole ([`a_run_nobody_watches_asks_for_its_answers_whole`]).
fn watched() -> RunOptions {
    RunOptions {
        events: Some(cf_host::EventSink::new(|_| {})),
        ..RunOptions::default()
    }
}

fn is_deadline(e: &RunError) -> bool {
    matches!(e.error, Error::Deadline { .. })
}

/// 1. `Agent::start`: each delta the guest emits reaches the handle as one
///    `RunEvent::Output`, in order; together they are the result's text.
#[tokio::test]
async fn a_started_run_yields_its_output_pieces_in_order_then_its_result() {
    let server = server(4, Duration::ZERO).await;
    let (host, _dir) = host(&server, |b| b);
    let agent = contract2(&host).await;
    let mut run = agent.start(task("stream", ""), RunOptions::default());
    let mut pieces = Vec::new();
    let mut others = Vec::new();
    bounded("the run's events", 60, async {
        while let Some(event) = run.next_event().await {
            match event {
                RunEvent::Output(text) => pieces.push(text),
                other => others.push(other),
            }
        }
    })
    .await;
    let out = bounded("the run's result", 60, run.result())
        .await
        .expect("the run succeeds");
    assert!(others.is_empty(), "no tool was asked for: {others:?}");
    assert!(
        pieces.len() > 1,
        "the answer came in several pieces: {pieces:?}"
    );
    assert!(
        pieces
            .iter()
            .all(|p| !p.is_empty() && p.chars().count() <= 4),
        "each piece is one delta of at most 4 characters: {pieces:?}"
    );
    assert_eq!(
        pieces.concat(),
        out.text,
        "the pieces, in order, are the answer"
    );
    assert!(out.text.starts_with("[mock]"), "{}", out.text);
    assert_eq!(meta(&out, "text_matches"), "true");
    let emitted = meta(&out, "events")
        .split(',')
        .filter(|k| *k == "text")
        .count();
    assert_eq!(
        pieces.len(),
        emitted,
        "every text delta the guest emitted reached the handle once"
    );
    assert_eq!(server.requests(), 1);
    assert_eq!(host.llm().calls_in_flight(), 0);
}

/// 2. A guest that forgets a stream it has not read to the end: the run succeeds, and
///    its end closes the stream (permit handed back, connection closed).
#[tokio::test]
async fn a_forgotten_stream_is_closed_at_the_end_of_the_run() {
    // About 65 events 200 ms apart: the stream is open for 13 s unless closed.
    let server = server(4, Duration::from_millis(200)).await;
    let (host, _dir) = host(&server, |b| b);
    let agent = contract2(&host).await;
    let out = bounded(
        "stream-forget",
        60,
        agent.run_with(task("stream-forget", ""), &watched()),
    )
    .await
    .expect("the run succeeds");
    assert_eq!(out.text, "forgotten");
    nothing_left_open("stream-forget", &host, &server).await;
    assert_eq!(server.requests(), 1);
    last_stream_was_abandoned("stream-forget", &server);
}

/// 3. A stream left open while the guest makes another call, under a limit of one
///    call at a time: the host reads the open stream ahead (handing its permit on)
///    instead of waiting for ever, and the guest still reads all of it.
#[tokio::test]
async fn a_call_while_a_stream_is_open_does_not_deadlock_under_a_limit_of_one() {
    let server = server(4, Duration::from_millis(5)).await;
    // The host's limit of one call, then the plugin's granted share of one.
    let one_share = Grant {
        concurrency: Some(1),
        ..Grant::unrestricted()
    };
    let hosts = [
        ("max_concurrent 1", host(&server, |b| b.max_concurrent(1))),
        (
            "a share of 1",
            host(&server, |b| b.grant("contract2", one_share)),
        ),
    ];
    for (n, (what, (host, _dir))) in hosts.iter().enumerate() {
        let agent = contract2(host).await;
        let out = bounded(
            &format!("stream-then-call under {what}"),
            60,
            agent.run(task("stream-then-call", "")),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(meta(&out, "text_matches"), "true", "{what}");
        assert!(out.text.starts_with("[mock]"), "{what}: {}", out.text);
        assert!(
            meta(&out, "second").contains("And again."),
            "{what}: the second call was answered: {}",
            meta(&out, "second")
        );
        assert_eq!(server.requests(), 2 * (n as u64 + 1), "{what}");
        assert_eq!(out.stats.llm_calls, 2, "{what}");
        nothing_left_open(what, host, &server).await;
    }
}

/// 4. A guest that traps in the middle of a stream: a trap; the stream is closed; the
///    interrupted answer is not cached (the same request reaches the server again),
///    though a complete one is.
#[tokio::test]
async fn a_trap_mid_stream_closes_the_stream_and_caches_nothing() {
    let server = server(4, Duration::from_millis(200)).await;
    // The host's response cache in its data directory (the default).
    let dir = tempfile::tempdir().expect("temp dir");
    let host = Host::builder()
        .grant("contract2", Grant::unrestricted())
        .data_dir(Some(dir.path().to_path_buf()))
        .provider(anthropic_client(&server, KEY))
        .build()
        .expect("host");
    let cache = host.llm().response_cache().expect("a response cache");
    let agent = contract2(&host).await;
    // A short prompt: the whole answer streams in about 4 s.
    let failed = bounded(
        "stream-trap",
        60,
        agent.run_with(task("stream-trap", "hi"), &watched()),
    )
    .await
    .expect_err("the guest traps");
    assert!(
        matches!(failed.error, Error::Trap { .. }),
        "a trap: {failed:?}"
    );
    assert_eq!(failed.error.kind(), "trap");
    nothing_left_open("stream-trap", &host, &server).await;
    last_stream_was_abandoned("stream-trap", &server);
    host.flush().await;
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.memory_entries),
        (0, 0),
        "an interrupted answer is not cached: {stats:?}"
    );

    // The same request again reaches the server, and is read to its end this time.
    let out = bounded("stream after the trap", 60, agent.run(task("stream", "hi")))
        .await
        .expect("the run succeeds");
    assert_eq!(server.requests(), 2, "the trapped answer was not cached");
    assert_eq!(out.stats.cache_hits, 0);
    assert_eq!(meta(&out, "text_matches"), "true");
    host.flush().await;
    assert_eq!(cache.stats().entries, 1, "a complete answer is cached");
    // The cache is really in front of the server: a third run is a hit.
    let again = bounded("stream, cached", 60, agent.run(task("stream", "hi")))
        .await
        .expect("the run succeeds");
    assert_eq!(server.requests(), 2, "answered from the cache");
    assert_eq!(again.stats.cache_hits, 1);
    assert_eq!(again.text, out.text);
    assert_eq!(host.llm().calls_in_flight(), 0);
}

/// 5. A guest that computes for ever with a stream open: the deadline stops it, and
///    the stream is closed.
#[tokio::test]
async fn a_guest_spinning_with_a_stream_open_is_stopped_by_the_deadline() {
    let server = server(4, Duration::from_millis(200)).await;
    let (host, _dir) = host(&server, |b| b);
    let agent = contract2(&host).await;
    let options = RunOptions {
        deadline: Some(Duration::from_secs(2)),
        ..watched()
    };
    let failed = bounded(
        "stream-spin",
        60,
        agent.run_with(task("stream-spin", ""), &options),
    )
    .await
    .expect_err("the deadline stops the guest");
    assert!(is_deadline(&failed), "a deadline: {failed:?}");
    assert_eq!(failed.error.kind(), "deadline");
    nothing_left_open("stream-spin", &host, &server).await;
    assert_eq!(server.requests(), 1);
    last_stream_was_abandoned("stream-spin", &server);
}

/// A guest that computes with a stream open, never reading it, holds nothing once
/// the answer is complete: the host reads the answer as it arrives, so its permit is
/// handed back, its connection ends and its answer is cached while the guest still
/// runs (and identical calls waiting for it get it then, not at the guest's deadline).
#[tokio::test]
async fn a_stream_the_guest_does_not_read_lets_go_when_its_answer_is_complete() {
    let server = server(4, Duration::ZERO).await;
    let (host, _dir) = host(&server, |b| b);
    let agent = contract2(&host).await;
    let options = RunOptions {
        deadline: Some(Duration::from_secs(3)),
        ..RunOptions::default()
    };
    let run = agent.start(task("stream-spin", ""), options);
    wait_until(
        "the answer is read while the guest computes",
        || server.requests() == 1 && server.in_flight() == 0 && host.llm().calls_in_flight() == 0,
        || {
            format!(
                "{} requests, {} in flight at the server, {} calls in flight",
                server.requests(),
                server.in_flight(),
                host.llm().calls_in_flight()
            )
        },
    )
    .await;
    // The guest was still computing: only its deadline ends the run.
    let failed = bounded("stream-spin", 60, run.result())
        .await
        .expect_err("the deadline stops the guest");
    assert!(is_deadline(&failed), "{failed:?}");
    let served = server.served();
    assert!(
        served.iter().all(|s| !s.abandoned),
        "the answer was read to its end: {served:?}"
    );
    assert_eq!(
        failed.stats.llm_calls, 1,
        "the completed call is in the run's stats: {:?}",
        failed.stats
    );
}

/// Starts a `stream` run and waits for its first output; the stream is then open
/// (about 13 s of answer left) and holds a permit.
async fn started_mid_stream(agent: &cf_host::Agent, host: &Host) -> cf_host::RunHandle {
    let mut run = agent.start(task("stream", ""), RunOptions::default());
    let first = bounded("the first output", 60, async {
        loop {
            match run.next_event().await {
                Some(RunEvent::Output(text)) => break text,
                Some(_) => continue,
                None => panic!("the run ended before any output"),
            }
        }
    })
    .await;
    assert!("[mock]".starts_with(&first), "{first:?}");
    assert_eq!(
        host.llm().calls_in_flight(),
        1,
        "the open stream holds a permit while the answer comes"
    );
    run
}

/// 6. Dropping a `RunHandle` while the answer streams cancels the run and closes the
///    stream; so does `RunHandle::cancel`, after which the result says so.
#[tokio::test]
async fn dropping_a_run_handle_mid_stream_closes_the_stream() {
    let server = server(4, Duration::from_millis(200)).await;
    let (host, _dir) = host(&server, |b| b);
    let agent = contract2(&host).await;
    let run = started_mid_stream(&agent, &host).await;
    assert_eq!(server.in_flight(), 1);
    drop(run);
    wait_until(
        "the dropped run's permit is handed back",
        || host.llm().calls_in_flight() == 0,
        || format!("{} calls in flight", host.llm().calls_in_flight()),
    )
    .await;
    nothing_left_open("a dropped run handle", &host, &server).await;
    assert_eq!(server.requests(), 1);
    last_stream_was_abandoned("a dropped run handle", &server);

    let run = started_mid_stream(&agent, &host).await;
    run.cancel();
    let cancelled = bounded("the cancelled run's result", 60, run.result())
        .await
        .expect_err("cancelled");
    assert!(
        matches!(cancelled.error, Error::Cancelled { started: true }),
        "{cancelled:?}"
    );
    nothing_left_open("a cancelled run", &host, &server).await;
    assert_eq!(server.requests(), 2);
    last_stream_was_abandoned("a cancelled run", &server);
}

/// Every event of a batch, with its item's index.
type Collected = Arc<Mutex<Vec<(usize, RunEvent)>>>;

fn collecting() -> (Collected, BatchEventSink) {
    let events: Collected = Arc::default();
    let sink = {
        let events = events.clone();
        BatchEventSink::new(move |index, event| {
            events.lock().expect("not poisoned").push((index, event));
        })
    };
    (events, sink)
}

fn stream_items(n: usize, text: impl Fn(usize) -> String) -> Vec<BatchItem> {
    let plugin = contract2_wasm().to_str().expect("utf-8 path").to_owned();
    (0..n)
        .map(|i| BatchItem {
            id: Some(i.to_string()),
            agent: plugin.clone(),
            task: task("stream", &text(i)),
            options: RunOptions::default(),
        })
        .collect()
}

fn failures(results: &[BatchResult]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {e:?}", r.index))
        })
        .collect()
}

/// 7a. A batch's events carry their item's index: each item's output pieces, in
///     order, are that item's answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_hands_each_items_pieces_to_the_sink_under_its_index() {
    let server = server(4, Duration::from_millis(2)).await;
    let (host, _dir) = host(&server, |b| b);
    let (events, sink) = collecting();
    let items = stream_items(20, |i| format!("question number {i}"));
    let results = bounded(
        "a batch of 20 streams",
        120,
        host.run_batch(
            items,
            BatchOptions {
                events: Some(sink),
                ..BatchOptions::default()
            },
        ),
    )
    .await;
    assert_eq!(results.len(), 20);
    assert!(failures(&results).is_empty(), "{:?}", failures(&results));
    let mut pieces: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (index, event) in events.lock().expect("not poisoned").iter() {
        match event {
            RunEvent::Output(text) => pieces.entry(*index).or_default().push(text.clone()),
            other => panic!("item {index}: an event that is not output: {other:?}"),
        }
    }
    for r in &results {
        let out = r.result.as_ref().expect("checked above");
        let mine = pieces.get(&r.index).map(Vec::as_slice).unwrap_or_default();
        assert!(mine.len() > 1, "item {}: {mine:?}", r.index);
        assert_eq!(
            mine.concat(),
            out.text,
            "item {}: its pieces, in order, are its answer",
            r.index
        );
        assert!(
            out.text.contains(&format!("question number {}\"", r.index)),
            "item {}: {}",
            r.index,
            out.text
        );
    }
    assert_eq!(
        pieces.len(),
        20,
        "every item's events arrived under its index"
    );
    assert_eq!(server.requests(), 20);
    assert_eq!(host.llm().calls_in_flight(), 0);
}

/// 7b. A batch cancelled while its items stream: once it has finished, no permit is
///     held and every stream is closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_cancelled_mid_stream_closes_its_streams() {
    let server = server(4, Duration::from_millis(200)).await;
    let (host, _dir) = host(&server, |b| b);
    let (events, sink) = collecting();
    let items = stream_items(20, |i| format!("question number {i}"));
    let batch = host.start_batch(
        items,
        BatchOptions {
            events: Some(sink),
            grace: Duration::from_millis(100),
            ..BatchOptions::default()
        },
    );
    wait_until(
        "an item's output arrives",
        || {
            events
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|(_, e)| matches!(e, RunEvent::Output(_)))
        },
        || format!("{} requests at the server", server.requests()),
    )
    .await;
    assert!(host.llm().calls_in_flight() > 0, "streams are open");
    batch.cancel();
    let results = bounded("the cancelled batch", 60, batch.finish()).await;
    assert_eq!(results.len(), 20);
    let cancelled = results
        .iter()
        .filter(|r| {
            matches!(
                r.result,
                Err(RunError {
                    error: Error::Cancelled { started: true },
                    ..
                })
            )
        })
        .count();
    for r in &results {
        assert!(
            matches!(
                r.result,
                Ok(_)
                    | Err(RunError {
                        error: Error::Cancelled { .. },
                        ..
                    })
            ),
            "item {}: {:?}",
            r.index,
            r.result
        );
    }
    assert!(cancelled > 0, "items were stopped mid-stream");
    nothing_left_open("a cancelled batch", &host, &server).await;
    let served = server.served();
    assert!(
        served.iter().any(|s| s.abandoned),
        "streams were closed by the host: {served:?}"
    );
}

/// 8. 200 streaming runs at once under a limit of 50 calls: all succeed, and the
///    server never sees more than 50 at a time (a stream holds its permit until its
///    last event is read).
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_streams_at_once_stay_within_the_limit() {
    let server = server(8, Duration::from_millis(10)).await;
    let (host, _dir) = host(&server, |b| b.max_concurrent(50));
    // Compile once before the batch loads it 200 times over.
    contract2(&host).await;
    let items = stream_items(200, |i| format!("streaming question {i}"));
    let results = bounded(
        "200 streams",
        300,
        host.run_batch(items, BatchOptions::default()),
    )
    .await;
    assert_eq!(results.len(), 200);
    assert!(failures(&results).is_empty(), "{:?}", failures(&results));
    for r in &results {
        let out = r.result.as_ref().expect("checked above");
        assert_eq!(meta(out, "text_matches"), "true", "item {}", r.index);
        assert!(
            out.text
                .contains(&format!("streaming question {}\"", r.index)),
            "item {}: {}",
            r.index,
            out.text
        );
    }
    assert_eq!(server.requests(), 200);
    let most = server.max_in_flight();
    assert!(most <= 50, "{most} streams at once under a limit of 50");
    assert!(
        most > 1,
        "the streams ran concurrently (at most {most} at once)"
    );
    assert_eq!(host.llm().calls_in_flight(), 0);
    wait_until(
        "the server's streams end",
        || server.in_flight() == 0,
        || format!("{} in flight", server.in_flight()),
    )
    .await;
}

/// The tools a run's model asks for reach the handle once each, whether the answer
/// streamed (`stream` with tools) or came whole (a tool loop of `complete` calls).
#[tokio::test]
async fn tool_uses_reach_the_handle_once_each() {
    let server = server(4, Duration::ZERO).await;
    let (host, _dir) = host(&server, |b| b);
    let agent = contract2(&host).await;
    for (what, task) in [
        ("streamed", task("stream", "").with_context("tools", "1")),
        ("whole", task("tools", "")),
    ] {
        let mut run = agent.start(task, RunOptions::default());
        let mut tools = Vec::new();
        bounded(what, 60, async {
            while let Some(event) = run.next_event().await {
                if let RunEvent::ToolUse { id, name } = event {
                    tools.push((id, name));
                }
            }
        })
        .await;
        let out = bounded(what, 60, run.result())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(tools.len(), 1, "{what}: {tools:?}");
        let (id, name) = &tools[0];
        assert_eq!(name, "add", "{what}");
        assert!(id.starts_with("toolu_mock_"), "{what}: {id}");
        if what == "whole" {
            assert_eq!(meta(&out, "tool_calls"), "1", "{what}");
        } else {
            assert_eq!(meta(&out, "stop_reason"), "tool_use", "{what}");
        }
    }
    assert_eq!(host.llm().calls_in_flight(), 0);
}

/// Giving up on `RunHandle::result` (a timeout around it) drops the handle, which
/// cancels the run: its stream is closed.
#[tokio::test]
async fn giving_up_on_a_runs_result_cancels_it() {
    let server = server(1, Duration::from_millis(300)).await;
    let (host, _dir) = host(&server, |b| b);
    let agent = contract2(&host).await;
    let mut run = agent.start(task("stream", ""), RunOptions::default());
    bounded("the first output", 60, async {
        while !matches!(run.next_event().await, Some(RunEvent::Output(_))) {}
    })
    .await;
    assert_eq!(host.llm().calls_in_flight(), 1);
    let gave_up = tokio::time::timeout(Duration::from_millis(100), run.result()).await;
    assert!(
        gave_up.is_err(),
        "the answer takes over a minute: {gave_up:?}"
    );
    wait_until(
        "the run given up on hands its permit back",
        || host.llm().calls_in_flight() == 0,
        || format!("{} calls in flight", host.llm().calls_in_flight()),
    )
    .await;
    nothing_left_open("a result given up on", &host, &server).await;
    last_stream_was_abandoned("a result given up on", &server);
}

/// A run nobody watches (no event sink: a batch printing results, a piped CLI) asks the
/// provider for its streams' answers whole and replays them to the guest, which reads
/// the same text; a watched run's are streamed as the model writes them.
#[tokio::test]
async fn a_run_nobody_watches_asks_for_its_answers_whole() {
    let server = server(1, Duration::ZERO).await;
    let (host, _dir) = host(&server, |b| b.no_response_cache());
    let agent = contract2(&host).await;
    let alone = agent
        .run(task("stream", "the same question"))
        .await
        .expect("runs");
    let watched = agent
        .run_with(task("stream", "the same question"), &watched())
        .await
        .expect("runs");
    assert_eq!(alone.text, watched.text, "the same answer either way");
    assert!(!alone.text.is_empty());
    let streamed: Vec<bool> = server
        .received()
        .iter()
        .map(|r| r.body.get("stream") == Some(&serde_json::Value::Bool(true)))
        .collect();
    assert_eq!(
        streamed,
        [false, true],
        "whole when unwatched, streamed when watched"
    );
}
