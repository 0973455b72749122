//! Streaming through the `cf-host` binary against the loopback server: `--stream-json`
//! for one run and for a batch, its conflict with `--json`, and a real terminal (tmux)
//! showing the answer while the server is still sending it.

use crate::terminal::{Tmux, tmux_available};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "sk-ant-cli-streaming-test";

/// A loopback server streaming deltas of `delta_chars` characters, `pace` apart.
async fn server(delta_chars: usize, pace: Duration) -> cf_mock_llm::MockServer {
    cf_mock_llm::MockServer::start(cf_mock_llm::MockConfig {
        stream: cf_mock_llm::StreamConfig {
            delta_chars,
            pace,
            ..cf_mock_llm::StreamConfig::default()
        },
        ..cf_mock_llm::MockConfig::default()
    })
    .await
    .expect("mock server binds 127.0.0.1")
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `cf-host ARGS` with its own data directory and no user configuration, the API key
/// set, stdout and stderr piped (so not a terminal); run on a blocking thread while the
/// server serves on the test's runtime.
async fn cf_host(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(env!("CARGO_BIN_EXE_cf-host"))
            .args(&args)
            .env("CF_DATA_DIR", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config-home"))
            .env("XDG_DATA_HOME", dir.path().join("data-home"))
            .env("ANTHROPIC_API_KEY", KEY)
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("cf-host runs");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    })
    .await
    .expect("joined")
}

/// Every line of stdout as JSON.
fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", run.stdout))
        })
        .collect()
}

fn kind(v: &Value) -> &str {
    v["type"].as_str().unwrap_or_else(|| panic!("no type: {v}"))
}

/// 9. One run with `--stream-json`: the answer's deltas as they come, then exactly one
///    result, last; the deltas are the answer (python-expert trims its result).
#[tokio::test(flavor = "multi_thread")]
async fn stream_json_prints_the_deltas_then_one_result() {
    let server = server(3, Duration::ZERO).await;
    let url = server.base_url();
    let run = cf_host(&[
        "run",
        "--base-url",
        &url,
        "python-expert",
        "What is a set?",
        "--stream-json",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = json_lines(&run);
    let (last, events) = lines.split_last().expect("some lines");
    assert_eq!(
        kind(last),
        "result",
        "the result comes last: {}",
        run.stdout
    );
    assert!(
        events.iter().all(|v| kind(v) == "delta"),
        "only deltas before the result (no tool is asked for): {}",
        run.stdout
    );
    assert!(
        events.len() > 1,
        "the answer came in several deltas: {}",
        run.stdout
    );
    assert!(
        lines.iter().all(|v| v.get("index").is_none()),
        "one run's events have no index: {}",
        run.stdout
    );
    let streamed: String = events
        .iter()
        .map(|v| v["text"].as_str().expect("a delta's text"))
        .collect();
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["agent"], "python-expert");
    assert!(last["error"].is_null(), "{last}");
    let output = last["output"].as_str().expect("the output");
    assert_eq!(streamed.trim(), output, "the deltas are the answer");
    assert!(output.starts_with("[mock]"), "{output}");
    assert!(output.contains("What is a set?"), "{output}");
    // The fields of --json.
    for field in ["metadata", "cached", "llm_calls", "usage", "latency_ms"] {
        assert!(last.get(field).is_some(), "{field} missing: {last}");
    }
    assert_eq!(last["llm_calls"], 1);
    assert_eq!(server.requests(), 1);
    assert_eq!(
        server.received_body(0).expect("sent")["stream"],
        true,
        "the answer was streamed from the server"
    );
}

/// 10. `--json` and `--stream-json` together are a usage error, before any work.
#[tokio::test(flavor = "multi_thread")]
async fn json_and_stream_json_conflict() {
    let server = server(3, Duration::ZERO).await;
    let url = server.base_url();
    for args in [
        &[
            "run",
            "--base-url",
            &url,
            "--json",
            "--stream-json",
            "python-expert",
            "q",
        ][..],
        &[
            "run",
            "--base-url",
            &url,
            "--stream-json",
            "--json",
            "python-expert",
            "q",
        ][..],
        &[
            "run",
            "--base-url",
            &url,
            "--json",
            "--stream-json",
            "python-expert",
            "--task",
            "a",
            "--task",
            "b",
        ][..],
    ] {
        let run = cf_host(args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?} printed {}", run.stdout);
        assert!(
            run.stderr.contains("--json") && run.stderr.contains("--stream-json"),
            "{args:?}: the message names both flags: {}",
            run.stderr
        );
    }
    assert_eq!(server.requests(), 0, "nothing ran");
}

/// 11. A batch with `--stream-json`: every event carries its item's index, and each
///     item's events end with its result.
#[tokio::test(flavor = "multi_thread")]
async fn stream_json_in_a_batch_tags_every_event_with_its_index() {
    let server = server(3, Duration::ZERO).await;
    let url = server.base_url();
    let run = cf_host(&[
        "run",
        "--base-url",
        &url,
        "--stream-json",
        "python-expert",
        "--task",
        "What is a tuple?",
        "--task",
        "What is a frozenset?",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = json_lines(&run);
    let mut per_item: [Vec<&Value>; 2] = [Vec::new(), Vec::new()];
    for v in &lines {
        let index = v["index"]
            .as_u64()
            .unwrap_or_else(|| panic!("an event without an index: {v}"));
        assert!(index < 2, "index {index} out of range: {v}");
        per_item[index as usize].push(v);
    }
    for (index, (events, question)) in per_item
        .iter()
        .zip(["What is a tuple?", "What is a frozenset?"])
        .enumerate()
    {
        let (last, before) = events
            .split_last()
            .unwrap_or_else(|| panic!("item {index} has no events: {}", run.stdout));
        assert_eq!(
            kind(last),
            "result",
            "item {index} ends with its result: {}",
            run.stdout
        );
        assert!(
            before.iter().all(|v| kind(v) == "delta"),
            "item {index}: one result, after its deltas: {}",
            run.stdout
        );
        assert!(
            before.len() > 1,
            "item {index} streamed several deltas: {}",
            run.stdout
        );
        assert_eq!(last["ok"], true, "{last}");
        assert_eq!(last["id"], (index + 1).to_string(), "{last}");
        let output = last["output"].as_str().expect("the output");
        assert!(output.contains(question), "item {index}: {output}");
        let streamed: String = before
            .iter()
            .map(|v| v["text"].as_str().expect("a delta's text"))
            .collect();
        assert_eq!(
            streamed.trim(),
            output,
            "item {index}: the deltas are its answer"
        );
    }
    assert!(
        run.stderr.contains("2 item(s): 2 ok"),
        "the batch's summary: {}",
        run.stderr
    );
    assert_eq!(server.requests(), 2);
}

/// 12. On a terminal the answer shows as it arrives: part of it is on screen while
///     the server is still sending the rest; then the summary line.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_shows_the_answer_while_it_streams() {
    if !tmux_available("streaming terminal test") {
        return;
    }
    // About 50 events 200 ms apart: the answer takes some 10 s to arrive.
    let server = server(2, Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let script = format!(
        "env -u ANTHROPIC_BASE_URL -u RUST_LOG CF_DATA_DIR={d} XDG_CONFIG_HOME={d}/config XDG_DATA_HOME={d}/data ANTHROPIC_API_KEY={KEY} {exe} run --base-url {url} python-expert 'What is a set?'; echo CF-EXIT-$?; read _",
        d = path(dir.path()),
        exe = env!("CARGO_BIN_EXE_cf-host"),
        url = server.base_url(),
    );
    let tmux = Tmux::start("cf-streaming", &script);

    // Poll the pane until the answer's first words show.
    let guard = Instant::now() + Duration::from_secs(120);
    let (early, in_flight) = loop {
        let pane = tmux.capture();
        let in_flight = server.in_flight();
        if pane.contains("[mock]") {
            break (pane, in_flight);
        }
        assert!(
            !pane.contains("CF-EXIT-"),
            "cf-host ended before any of the answer showed: {pane}"
        );
        assert!(Instant::now() < guard, "no answer showed: {pane}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        in_flight, 1,
        "when the answer's first words showed, the server was still sending it: {early}"
    );
    assert!(
        !early.contains("What is a set?"),
        "the whole answer was not on screen yet: {early}"
    );
    assert!(
        !early.contains("python-expert ·"),
        "no summary line yet: {early}"
    );

    let final_pane = loop {
        let pane = tmux.capture();
        if pane.contains("CF-EXIT-") {
            break pane;
        }
        assert!(Instant::now() < guard, "cf-host never ended: {pane}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(final_pane.contains("CF-EXIT-0"), "{final_pane}");
    assert!(
        final_pane.contains("What is a set?"),
        "the whole answer: {final_pane}"
    );
    assert!(
        final_pane.contains("— python-expert · claude-sonnet-4-5 · 1 call(s)"),
        "the summary line: {final_pane}"
    );
    assert_eq!(
        final_pane.matches("[mock]").count(),
        1,
        "the answer shows once (the result adds nothing to what streamed): {final_pane}"
    );
    assert_eq!(server.requests(), 1);
    assert_eq!(server.in_flight(), 0);
}

/// A stream that breaks after some deltas: they were printed, and the result line
/// still comes last, saying what failed; the exit code is a failed task's.
#[tokio::test(flavor = "multi_thread")]
async fn stream_json_ends_with_the_failure_when_the_stream_breaks() {
    let server = server(3, Duration::ZERO).await;
    // message_start, content_block_start, then 4 deltas, then an error event.
    server.push_fault(cf_mock_llm::Fault::Stream(
        cf_mock_llm::StreamFault::overloaded_after(6),
    ));
    let url = server.base_url();
    let run = cf_host(&[
        "run",
        "--base-url",
        &url,
        "--stream-json",
        "python-expert",
        "What is a set?",
    ])
    .await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let lines = json_lines(&run);
    let (last, events) = lines.split_last().expect("some lines");
    assert_eq!(kind(last), "result", "{}", run.stdout);
    assert_eq!(last["ok"], false, "{last}");
    assert!(last["output"].is_null(), "{last}");
    assert_eq!(last["error"]["kind"], "overloaded", "{last}");
    assert!(events.iter().all(|v| kind(v) == "delta"), "{}", run.stdout);
    let streamed: String = events
        .iter()
        .map(|v| v["text"].as_str().expect("a delta's text"))
        .collect();
    assert_eq!(
        streamed, "[mock] model",
        "the 4 deltas sent before the error"
    );
    assert_eq!(server.requests(), 1, "no retry once the answer has started");
}
