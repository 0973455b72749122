//! The agents through the real Anthropic client against the loopback server: what
//! reaches the wire, what reaches the guest, retries, timeouts, and the key.

use crate::support::*;
use cf_host::llm::Provider;
use cf_host::{Error, Host, Limits, RunOptions, Task};
use cf_mock_llm::{Fault, MockConfig, MockServer};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-ant-test-0123456789-SECRET-KEY-abcdef";

async fn server() -> MockServer {
    MockServer::start(MockConfig::default())
        .await
        .expect("mock server binds 127.0.0.1")
}

fn anthropic(server: &MockServer) -> Arc<dyn Provider> {
    anthropic_client(server, KEY)
}

fn host_for(
    server: &MockServer,
    build: impl FnOnce(cf_host::HostBuilder) -> cf_host::HostBuilder,
) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let builder = Host::builder()
        .grant("hostile", cf_host::permissions::Grant::unrestricted())
        .data_dir(Some(dir.path().to_path_buf()))
        .provider(anthropic(server));
    (build(builder).build().expect("host"), dir)
}

#[tokio::test]
async fn each_agent_reaches_the_wire_and_gets_the_answer_back() {
    let server = server().await;
    let (host, _dir) = host_for(&server, |b| b);
    // bug-investigator thinks (the shipped agents are unrestricted), so it sends no
    // temperature, and its tool loop makes two calls against the server's default
    // answers: a tool use, then the plan.
    for (name, temperature, max_tokens, calls) in [
        ("python-expert", Some(0.3), 2048, 1),
        ("code-reviewer", Some(0.2), 3000, 1),
        ("bug-investigator", None, 4096, 2),
    ] {
        let before = server.received().len();
        let agent = bounded("load", 60, host.load(name)).await.expect("loads");
        let out = bounded(
            name,
            60,
            agent.run(Task::new("def add(a, b): return a - b")),
        )
        .await
        .expect("runs");
        let received = server.received();
        let mine = &received[before..];
        assert_eq!(mine.len(), calls, "{name}");
        let last = mine.last().expect("a request");
        assert_eq!(last.method, "POST");
        assert_eq!(last.path, "/v1/messages");
        assert_eq!(last.header("x-api-key"), Some(KEY));
        assert_eq!(last.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(last.body["model"], "claude-sonnet-4-5");
        assert_eq!(last.body["max_tokens"], max_tokens);
        match temperature {
            Some(t) => assert!(
                (last.body["temperature"].as_f64().expect("temperature") - t).abs() < 1e-6,
                "{name}"
            ),
            None => {
                assert!(last.body.get("temperature").is_none(), "{name}");
                assert_eq!(last.body["thinking"]["type"], "enabled", "{name}");
            }
        }
        assert!(
            last.body["system"].as_str().is_some_and(|s| s.len() > 100),
            "{name}: a system prompt"
        );
        assert!(
            last.body["messages"][0]["content"]
                .as_str()
                .expect("content")
                .contains("def add(a, b)")
        );
        // The mock's answer reaches the agent and comes back out.
        assert!(!out.text.is_empty());
        assert_eq!(out.stats.attempts as usize, mine.len());
        assert!(out.stats.cost.usd > 0.0, "priced through the table");
    }
}

#[tokio::test]
async fn retries_are_reported_and_a_guest_timeout_lets_it_go_on() {
    let server = server().await;
    let (host, _dir) = host_for(&server, |b| {
        b.attempt_timeout(Duration::from_millis(300)).max_retries(0)
    });
    let agent = bounded("load", 60, host.load(hostile_wasm().to_path_buf()))
        .await
        .expect("loads");
    // The first call hangs past the per-attempt timeout; the guest sees `timeout` and
    // makes its second call, which succeeds.
    server.push_fault(Fault::Hang(Duration::from_secs(5)));
    let out = bounded("llm-loop", 30, agent.run(Task::new("llm-loop 2")))
        .await
        .expect("the run goes on");
    // The hang was cut by the attempt timeout (a 5 s hang that ran its course would
    // have been answered, not a timeout).
    assert!(
        out.text.starts_with("ok=1 last_error=LlmError::Timeout("),
        "{}",
        out.text
    );

    let (host, _dir) = host_for(&server, |b| b);
    let agent = bounded("load", 60, host.load("python-expert"))
        .await
        .expect("loads");
    server.push_faults([Fault::overloaded(), Fault::server_error()]);
    let out = bounded("retried run", 60, agent.run(Task::new("What is a tuple?")))
        .await
        .expect("succeeds on the 3rd attempt");
    assert_eq!((out.stats.llm_calls, out.stats.attempts), (1, 3));
}

#[tokio::test]
async fn exhausted_retries_reach_the_agent_as_typed_errors() {
    let server = server().await;
    let (host, _dir) = host_for(&server, |b| b.max_retries(1));
    let agent = bounded("load", 60, host.load("python-expert"))
        .await
        .expect("loads");
    server.push_faults([Fault::rate_limited(0), Fault::rate_limited(0)]);
    let err = bounded("run", 60, agent.run(Task::new("x")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::Llm(e) if e.kind() == "rate_limited"),
        "{:?}",
        err.error
    );
    assert_eq!(
        err.stats.attempts, 2,
        "attempts are reported on failure too"
    );
    server.push_fault(Fault::unauthorized());
    let err = bounded("run", 60, agent.run(Task::new("x")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::Llm(e) if e.kind() == "authentication"),
        "{:?}",
        err.error
    );
    assert_eq!(err.stats.attempts, 1, "401 is never retried");
}

#[tokio::test]
async fn the_run_deadline_bounds_retry_waits() {
    let server = server().await;
    let (host, _dir) = host_for(&server, |b| b);
    let agent = bounded("load", 60, host.load("python-expert"))
        .await
        .expect("loads");
    server.push_fault(Fault::rate_limited(30));
    let options = RunOptions {
        deadline: Some(Duration::from_secs(2)),
        ..RunOptions::default()
    };
    // No wait past the deadline: a run that waited out the 30 s would end as a
    // deadline, not with the upstream's rate limit.
    let err = bounded("run", 30, agent.run_with(Task::new("x"), &options))
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::Llm(e) if e.kind() == "rate_limited"),
        "{:?}",
        err.error
    );
}

#[tokio::test]
async fn a_guest_cannot_obtain_the_api_key() {
    let server = server().await;
    let (host, _dir) = host_for(&server, |b| b.max_retries(0));
    let agent = bounded("load", 60, host.load(hostile_wasm().to_path_buf()))
        .await
        .expect("loads");
    let mut seen = Vec::new();
    // Everything a guest can get back from the host: answers, every kind of error,
    // its environment, files and network.
    let faults = [
        None,
        Some(Fault::unauthorized()),
        Some(Fault::server_error()),
        Some(Fault::Malformed),
        Some(Fault::Reset),
        Some(Fault::invalid_request("bad")),
    ];
    for fault in faults {
        if let Some(f) = fault {
            server.push_fault(f);
        }
        let out = bounded(
            "llm-debug",
            30,
            agent.run(Task::new(format!("llm-debug tell me the {KEY} key"))),
        )
        .await;
        seen.push(format!("{out:?}"));
    }
    let escape = bounded("escape", 30, agent.run(Task::new("escape 127.0.0.1:9")))
        .await
        .expect("runs");
    seen.push(escape.text);
    let keys = bounded("cache", 30, agent.run(Task::new("cache-keys")))
        .await
        .expect("runs");
    seen.push(keys.text);
    for text in &seen {
        // The task itself quotes the key text; what matters is that nothing the host
        // returns adds it. The only occurrence allowed is the guest's own prompt echo.
        let occurrences = text.matches(KEY).count();
        let echoed = text.matches(&format!("tell me the {KEY} key")).count();
        assert_eq!(occurrences, echoed, "the key leaked to the guest: {text}");
    }
}

/// The hostile guest calling the model up to 50 times under `options` (with a budget)
/// against the loopback API: its output, what it used, and the calls the API received.
async fn loop_under_a_budget(options: RunOptions) -> (cf_host::RunOutput, u32) {
    let server = server().await;
    let (host, _dir) = host_for(&server, |b| b.limits(Limits::default()));
    let agent = bounded("load", 60, host.load(hostile_wasm().to_path_buf()))
        .await
        .expect("loads");
    let out = bounded(
        "llm-loop",
        60,
        agent.run_with(Task::new("llm-loop 50"), &options),
    )
    .await
    .expect("runs");
    assert!(out.text.contains("BudgetExceeded"), "{}", out.text);
    let sent = server.received().len() as u32;
    assert_eq!(sent, out.stats.llm_calls, "refused calls were not sent");
    (out, sent)
}

#[tokio::test]
async fn a_dollar_budget_stops_calls_before_they_are_sent() {
    let options = RunOptions {
        budget: cf_host::llm::Budget {
            usd: Some(0.0005),
            tokens: None,
            ..Default::default()
        },
        ..RunOptions::default()
    };
    let (out, sent) = loop_under_a_budget(options).await;
    assert!(
        out.stats.cost.usd >= 0.0005 && sent < 50,
        "spent {} in {sent} calls",
        out.stats.cost.usd
    );
}

/// Under the worst-case rule the same budget is never crossed: each call is sent only
/// if its input estimate plus `max_tokens` at the output price fits what is left, so
/// the spend stays under the budget (the until-spent rule above ends above it).
#[tokio::test]
async fn the_worst_case_rule_keeps_spending_under_the_budget() {
    let budget = 0.0005;
    let options = RunOptions {
        budget: cf_host::Budget {
            usd: Some(budget),
            tokens: None,
            rule: cf_host::BudgetRule::WorstCase,
        },
        max_tokens: Some(16),
        ..RunOptions::default()
    };
    let (out, sent) = loop_under_a_budget(options).await;
    assert!(sent > 0, "calls that fit were sent");
    assert!(
        out.stats.cost.usd <= budget,
        "spent {} of {budget} in {sent} calls",
        out.stats.cost.usd
    );
}
