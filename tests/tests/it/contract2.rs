//! Contract 0.2.0 end to end: the `contract2` guest through the host and the real
//! Anthropic client to the loopback server. Tool loops, thinking, prompt caching,
//! structured output, images, the grants for thinking and media, every refusal the
//! host makes before sending (nothing reaches the server), hostile guests (a loop that
//! never ends, 10,000 tools, a 50 MiB image), and 0.1.0 and 0.2.0 agents in one batch.

use crate::support::*;
use cf_host::llm::{LlmError, OfflineProvider, Provider};
use cf_host::permissions::Grant;
use cf_host::{BatchItem, BatchOptions};
use cf_host::{Error, Host, HostBuilder, Limits, RunError, RunOptions, RunOutput, Task};
use cf_mock_llm::{MockConfig, MockServer, Reply};
use cf_tests::{contract2_wasm, echo_wasm};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-ant-test-contract2-SECRET";

async fn server() -> MockServer {
    MockServer::start(MockConfig::default())
        .await
        .expect("mock server binds 127.0.0.1")
}

/// Everything contract 0.2.0 may ask for.
fn full_grant() -> Grant {
    Grant::unrestricted()
}

/// Every model and the store, but neither thinking nor images and documents.
fn text_grant() -> Grant {
    Grant {
        thinking: false,
        media: false,
        ..Grant::unrestricted()
    }
}

/// A host whose model calls go to `provider`, granting `contract2` what `grant` says,
/// with no response cache (every call reaches the provider).
fn host_with(
    provider: Arc<dyn Provider>,
    grant: Grant,
    build: impl FnOnce(HostBuilder) -> HostBuilder,
) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let builder = Host::builder()
        .grant("contract2", grant)
        .data_dir(Some(dir.path().to_path_buf()))
        .no_response_cache()
        .provider(provider);
    (build(builder).build().expect("host"), dir)
}

fn host_for(server: &MockServer, grant: Grant) -> (Host, tempfile::TempDir) {
    host_with(anthropic_client(server, KEY), grant, |b| b)
}

async fn run(host: &Host, mode: &str, extra: &[(&str, &str)]) -> Result<RunOutput, RunError> {
    let agent = bounded(
        "load contract2",
        60,
        host.load(contract2_wasm().to_path_buf()),
    )
    .await
    .expect("loads");
    assert_eq!(agent.info().contract, "0.2.0");
    let mut task = Task::new("").with_context("mode", mode);
    for (k, v) in extra {
        task = task.with_context(*k, *v);
    }
    // The streaming modes run watched (an event sink), so that their streams are read
    // from the provider as the model writes them: a run nobody watches asks for its
    // answers whole.
    let options = if mode.starts_with("stream") {
        cf_host::RunOptions {
            events: Some(cf_host::EventSink::new(|_| {})),
            ..cf_host::RunOptions::default()
        }
    } else {
        cf_host::RunOptions::default()
    };
    bounded(mode, 60, agent.run_with(task, &options)).await
}

fn meta<'a>(out: &'a RunOutput, key: &str) -> &'a str {
    out.metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no metadata {key:?} in {:?}", out.metadata))
}

fn llm_error(result: Result<RunOutput, RunError>) -> LlmError {
    match result {
        Err(RunError {
            error: Error::Llm(e),
            ..
        }) => e,
        other => panic!("expected a model-call error, got {other:?}"),
    }
}

/// Three turns through the real client: `add`, then `remember` (which writes the
/// agent's store), then the answer. Each turn sent the conversation so far, with the
/// tool results matched to their uses.
#[tokio::test]
async fn a_tool_loop_of_several_turns_through_the_real_client() {
    let server = server().await;
    server.push_replies([
        Reply::tool_use("add", json!({"a": 2, "b": 40})),
        Reply::tool_use("remember", json!({"key": "answer", "value": "42"})),
        Reply::text("The sum is 42."),
    ]);
    let (host, _dir) = host_for(&server, full_grant());
    let out = run(&host, "tools", &[]).await.expect("runs");
    assert_eq!(out.text, "The sum is 42.");
    assert_eq!(meta(&out, "turns"), "3");
    assert_eq!(meta(&out, "tool_calls"), "2");
    assert_eq!(meta(&out, "stop_reason"), "end_turn");
    assert_eq!(out.stats.llm_calls, 3);
    let bodies: Vec<Value> = (0..3)
        .map(|i| server.received_body(i).expect("sent"))
        .collect();
    let names: Vec<&str> = bodies[0]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["add", "remember"]);
    assert_eq!(bodies[0]["tools"][0]["input_schema"]["type"], "object");
    let second = bodies[1]["messages"].as_array().expect("messages");
    assert_eq!(second.len(), 3);
    let use_id = second[1]["content"][0]["id"]
        .as_str()
        .expect("a tool use id");
    assert_eq!(second[2]["content"][0]["tool_use_id"], use_id);
    assert_eq!(second[2]["content"][0]["content"][0]["text"], "42");
    let third = bodies[2]["messages"].as_array().expect("messages");
    assert_eq!(third.len(), 5);
    assert_eq!(third[4]["content"][0]["content"][0]["text"], "ok");
    assert_eq!(server.pending_replies(), 0);
}

/// Thinking: the signed block comes back unchanged on the next turn (the server
/// refuses a changed one), when granted; without the grant nothing is sent.
#[tokio::test]
async fn thinking_round_trips_when_granted_and_is_denied_otherwise() {
    let server = server().await;
    let (host, _dir) = host_for(&server, full_grant());
    let out = run(&host, "thinking", &[("budget", "2048")])
        .await
        .expect("runs");
    assert_eq!(meta(&out, "turns"), "2", "a tool use, then the answer");
    assert!(!meta(&out, "thinking").is_empty());
    let first = server.received_body(0).expect("sent");
    assert_eq!(
        first["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    let second = server.received_body(1).expect("sent");
    let assistant = &second["messages"][1]["content"];
    assert_eq!(assistant[0]["type"], "thinking");
    assert_eq!(
        assistant[0]["signature"],
        json!(cf_mock_llm::thinking_signature(
            assistant[0]["thinking"].as_str().expect("text")
        ))
    );

    let quiet = MockServer::start(MockConfig::default())
        .await
        .expect("binds");
    let (host, _dir) = host_for(&quiet, text_grant());
    let e = llm_error(run(&host, "thinking", &[]).await);
    assert!(
        matches!(&e, LlmError::Denied(m) if m.contains("llm.thinking")),
        "{e:?}"
    );
    // A budget over the grant's cap.
    let capped = Grant {
        max_thinking_budget: Some(1500),
        ..full_grant()
    };
    let (host, _dir) = host_for(&quiet, capped);
    let e = llm_error(run(&host, "thinking", &[("budget", "2048")]).await);
    assert!(
        matches!(&e, LlmError::Denied(m) if m.contains("at most 1500")),
        "{e:?}"
    );
    let out = run(&host, "thinking", &[("budget", "1500")])
        .await
        .expect("within the cap");
    assert_eq!(meta(&out, "turns"), "2");
    assert_eq!(
        quiet.requests(),
        2,
        "only the run within the cap reached the server"
    );
}

/// Breakpoints reach the wire; the first run writes the prefix (1 hour for the tool,
/// 5 minutes for the system prompt), the second reads it, and the costs follow.
#[tokio::test]
async fn prompt_cache_writes_then_reads_and_costs_less() {
    let server = server().await;
    let (host, _dir) = host_for(&server, full_grant());
    let first = run(&host, "cache", &[]).await.expect("runs");
    let sent = server.received_body(0).expect("sent");
    assert_eq!(
        sent["tools"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    assert_eq!(
        sent["system"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "5m"})
    );
    let n = |out: &RunOutput, k: &str| meta(out, k).parse::<u64>().expect("a count");
    assert!(n(&first, "cache_write_1h_input_tokens") > 0);
    assert!(n(&first, "cache_write_5m_input_tokens") > 0);
    assert_eq!(n(&first, "cache_read_input_tokens"), 0);
    let second = run(&host, "cache", &[]).await.expect("runs");
    assert_eq!(n(&second, "cache_write_1h_input_tokens"), 0);
    assert_eq!(
        n(&second, "cache_read_input_tokens"),
        n(&first, "cache_write_1h_input_tokens") + n(&first, "cache_write_5m_input_tokens")
    );
    let (c1, c2) = (first.stats.cost.usd, second.stats.cost.usd);
    assert!(c2 < c1, "a read ({c2}) costs less than a write ({c1})");
    // The run's usage keeps the split: 1-hour writes are part of the writes.
    assert_eq!(
        first.stats.usage.cache_creation_1h_input_tokens,
        n(&first, "cache_write_1h_input_tokens")
    );
}

/// Structured output: the server's answer matches the schema and parses; a scripted
/// answer that is not JSON is the agent's typed failure.
#[tokio::test]
async fn structured_output_valid_and_invalid() {
    let server = server().await;
    let (host, _dir) = host_for(&server, full_grant());
    let out = run(&host, "structured", &[]).await.expect("runs");
    let findings: Value = serde_json::from_str(meta(&out, "findings")).expect("JSON");
    assert!(findings.is_array(), "{findings}");
    let sent = server.received_body(0).expect("sent");
    assert_eq!(sent["output_config"]["format"]["type"], "json_schema");
    assert_eq!(sent["output_config"]["format"]["schema"]["type"], "object");
    server.push_reply(Reply::text("certainly! here are the findings"));
    let failed = run(&host, "structured", &[]).await.expect_err("not JSON");
    assert!(matches!(failed.error, Error::AgentFailed(_)), "{failed:?}");
}

/// Images: sent as base64 when media are granted; denied (nothing sent) when not.
#[tokio::test]
async fn images_need_the_media_grant() {
    let server = server().await;
    let (host, _dir) = host_for(&server, full_grant());
    run(&host, "image", &[("size", "300")]).await.expect("runs");
    let sent = server.received_body(0).expect("sent");
    let image = sent["messages"][0]["content"]
        .as_array()
        .expect("blocks")
        .iter()
        .find(|b| b["type"] == "image")
        .cloned()
        .expect("an image block");
    assert_eq!(image["source"]["media_type"], "image/png");
    assert_eq!(
        image["source"]["data"].as_str().map(str::len),
        Some(400),
        "300 bytes in base64"
    );
    run(&host, "pdf", &[]).await.expect("a PDF too");

    let quiet = MockServer::start(MockConfig::default())
        .await
        .expect("binds");
    let (host, _dir) = host_for(&quiet, text_grant());
    let e = llm_error(run(&host, "image", &[]).await);
    assert!(
        matches!(&e, LlmError::Denied(m) if m.contains("llm.media")),
        "{e:?}"
    );
    assert_eq!(quiet.requests(), 0);
}

/// Every refusal the host makes before sending, each with nothing sent.
#[tokio::test]
async fn malformed_requests_are_refused_before_sending() {
    let server = server().await;
    let (host, _dir) = host_with(anthropic_client(&server, KEY), full_grant(), |b| {
        b.limits(Limits {
            memory_bytes: 160 * 1024 * 1024,
            ..Limits::default()
        })
    });
    for (mode, kind, says) in [
        ("bad-tool-name", "invalid_request", "does not match"),
        ("bad-schema", "invalid_request", "not a JSON object"),
        ("dangling-result", "invalid_request", "answers no tool use"),
        ("five-breakpoints", "invalid_request", "5 cache breakpoints"),
        ("budget-too-big", "invalid_request", "below max_tokens"),
        ("many-tools", "too_large", "10000 tools"),
        ("huge-image", "too_large", "image"),
    ] {
        let e = llm_error(run(&host, mode, &[]).await);
        assert_eq!(e.kind(), kind, "{mode}: {e:?}");
        assert!(e.to_string().contains(says), "{mode}: {e}");
    }
    assert_eq!(server.requests(), 0, "nothing reached the server");
}

/// A tool loop that never ends is stopped by the run's model-call cap, and by the
/// deadline when the cap is out of reach.
#[tokio::test]
async fn an_endless_tool_loop_is_stopped() {
    let server = server().await;
    let (host, _dir) = host_with(anthropic_client(&server, KEY), full_grant(), |b| {
        b.limits(Limits {
            max_llm_calls: 7,
            ..Limits::default()
        })
    });
    let e = llm_error(run(&host, "endless", &[]).await);
    assert!(
        matches!(&e, LlmError::Denied(m) if m.contains("limit of 7")),
        "{e:?}"
    );
    assert_eq!(server.requests(), 7);

    // No call cap in reach: the deadline ends it.
    let slow = MockServer::start(MockConfig {
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await
    .expect("binds");
    let (host, _dir) = host_with(anthropic_client(&slow, KEY), full_grant(), |b| {
        b.limits(Limits {
            max_llm_calls: 1_000_000,
            deadline: Duration::from_millis(800),
            ..Limits::default()
        })
    });
    let stopped = run(&host, "endless", &[]).await.expect_err("stopped");
    assert!(
        matches!(
            stopped.error,
            Error::Deadline { .. } | Error::Llm(LlmError::Timeout(_))
        ),
        "{stopped:?}"
    );
    assert!(slow.requests() >= 1 && slow.requests() < 1_000_000);
}

/// The offline provider runs a tool loop without a key: one tool use built from the
/// schema, then the text answer.
#[tokio::test]
async fn the_offline_provider_runs_a_tool_loop() {
    let (host, _dir) = host_with(Arc::new(OfflineProvider::new()), full_grant(), |b| b);
    let out = run(&host, "tools", &[]).await.expect("runs");
    assert_eq!(meta(&out, "turns"), "2");
    assert_eq!(meta(&out, "tool_calls"), "1");
    assert!(out.text.starts_with("[offline]"), "{}", out.text);
}

/// 0.1.0 and 0.2.0 components side by side in one batch on one host.
#[tokio::test]
async fn both_contract_versions_in_one_batch() {
    let server = server().await;
    let (host, _dir) = host_with(anthropic_client(&server, KEY), full_grant(), |b| {
        b.grant("echo-0-1", Grant::unrestricted())
    });
    let plugin = contract2_wasm().to_str().expect("utf-8").to_owned();
    let old = echo_wasm("0.1.0").to_str().expect("utf-8").to_owned();
    let item = |agent: &str, text: &str| BatchItem {
        id: None,
        agent: agent.to_owned(),
        task: Task::new(text),
        options: RunOptions::default(),
    };
    let items = vec![
        item(&old, "How do I read a CSV file?"),
        item(&plugin, "Add 2 and 40."),
        item("code-reviewer", "def f(): return 1"),
        item(&plugin, "Add 1 and 1."),
    ];
    let results = bounded(
        "the batch",
        120,
        host.run_batch(items, BatchOptions::default()),
    )
    .await;
    assert_eq!(results.len(), 4);
    for r in &results {
        assert!(r.result.is_ok(), "{}: {:?}", r.agent, r.result);
    }
    let contracts: Vec<String> = {
        let mut v = Vec::new();
        for name in [old.as_str(), "code-reviewer"] {
            v.push(
                host.load(cf_host::Source::from(name))
                    .await
                    .expect("loads")
                    .info()
                    .contract
                    .clone(),
            );
        }
        v
    };
    assert_eq!(contracts, ["0.1.0", "0.2.0"]);
}

/// A streamed answer through the 0.2.0 interface: the events in the API's order, the
/// deltas assembling to the finished answer (text, and a tool use's input), and the
/// same answer `complete` would give.
#[tokio::test]
async fn a_streamed_answer_assembles_to_the_whole_answer() {
    let server = server().await;
    let (host, _dir) = host_for(&server, full_grant());
    let out = run(&host, "stream", &[]).await.expect("runs");
    assert_eq!(kinds(&out), "start,block-start,text,block-stop,delta");
    assert!(
        meta(&out, "events").matches("text").count() > 1,
        "the answer came in several deltas: {}",
        meta(&out, "events")
    );
    assert_eq!(meta(&out, "text_matches"), "true");
    assert_eq!(meta(&out, "stop_reason"), "end_turn");
    assert!(out.text.starts_with("[mock]"), "{}", out.text);
    assert_eq!(server.requests(), 1);

    // With tools the mock's first answer is a tool use: its input streams as JSON.
    let out = run(&host, "stream", &[("tools", "1")]).await.expect("runs");
    assert_eq!(kinds(&out), "start,block-start,input-json,block-stop,delta");
    assert_eq!(meta(&out, "inputs_match"), "true");
    assert_eq!(meta(&out, "stop_reason"), "tool_use");
    let sent = server.received_body(1).expect("sent");
    assert_eq!(sent["stream"], true, "the provider asks for a stream");
}

/// The kinds of events a `stream` run saw, runs of one kind (a block's deltas) as one.
fn kinds(out: &cf_host::RunOutput) -> String {
    let events = meta(out, "events");
    let mut kinds: Vec<&str> = events.split(',').collect();
    kinds.dedup();
    kinds.join(",")
}

/// Thinking streams as thinking and signature deltas before the text, and the
/// signature is the one the server gave (the next turn would send it back).
#[tokio::test]
async fn a_streamed_answer_with_thinking() {
    let server = server().await;
    let (host, _dir) = host_for(&server, full_grant());
    let out = run(&host, "stream", &[("thinking", "1")])
        .await
        .expect("runs");
    assert_eq!(
        kinds(&out),
        "start,block-start,thinking,signature,block-stop,block-start,text,block-stop,delta"
    );
    assert_eq!(meta(&out, "text_matches"), "true");
    assert_eq!(
        server.received_body(0).expect("sent")["thinking"]["type"],
        "enabled"
    );
}
