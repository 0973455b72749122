//! Batches through the library: per-item results in input order, one bad item never
//! loses the others, cancellation reports everything, and the batch budget.

use crate::support::*;
use cf_host::llm::{AnthropicConfig, AnthropicProvider, ApiKey, Budget};
use cf_host::{BatchItem, BatchOptions, Error, Host, Limits, RunOptions, Task};
use cf_mock_llm::{Fault, MockConfig, MockServer};
use std::sync::Arc;
use std::time::Duration;

fn item(agent: &str, task: &str) -> BatchItem {
    BatchItem {
        id: None,
        agent: agent.to_owned(),
        task: Task::new(task),
        options: RunOptions::default(),
    }
}

#[tokio::test]
async fn two_hundred_mixed_items_come_back_in_order_with_the_right_kinds() {
    let server = MockServer::start(MockConfig::default())
        .await
        .expect("mock server");
    let provider = AnthropicProvider::new(AnthropicConfig::new(
        server.base_url(),
        ApiKey::new("test-key"),
    ))
    .expect("client");
    let dir = tempfile::tempdir().expect("temp dir");
    let host = Host::builder()
        .grant("hostile", cf_host::permissions::Grant::unrestricted())
        .data_dir(Some(dir.path().to_path_buf()))
        .no_response_cache()
        .provider(Arc::new(provider))
        .max_retries(0)
        .limits(Limits {
            max_task_chars: 5_000,
            deadline: Duration::from_secs(30),
            ..Limits::default()
        })
        .build()
        .expect("host");
    let hostile = hostile_wasm().display().to_string();
    // Faults keyed by text in the last user message; `-end` keeps one key from being
    // a prefix of another (item 15's key inside item 155's message).
    for i in 0..200 {
        if i % 10 == 5 {
            server.push_fault_for(&format!("auth-fault-{i}-end"), Fault::unauthorized());
        }
        if i % 10 == 6 {
            server.push_fault_for(
                &format!("bad-request-{i}-end"),
                Fault::invalid_request("nope"),
            );
        }
    }
    let mut items = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let (it, kind) = match i % 10 {
            0 | 1 => (item("python-expert", &format!("question {i}")), "ok"),
            2 => (item("nosuch-agent", "x"), "unknown_agent"),
            3 => (item("python-expert", &"x".repeat(5_001)), "task_too_large"),
            4 => (item(&hostile, "panic"), "trap"),
            5 => (
                item(&hostile, &format!("echo auth-fault-{i}-end")),
                "authentication",
            ),
            6 => (
                item(&hostile, &format!("echo bad-request-{i}-end")),
                "invalid_request",
            ),
            7 => (item("bad name!", "x"), "invalid_agent_name"),
            8 => (item(&hostile, "echo fine"), "ok"),
            _ => (item("code-reviewer", &format!("fn f{i}() {{}}")), "ok"),
        };
        items.push(BatchItem {
            id: Some(format!("item-{i}")),
            ..it
        });
        expected.push(kind);
    }
    let results = bounded(
        "batch of 200",
        120,
        host.run_batch(items, BatchOptions::default()),
    )
    .await;
    assert_eq!(results.len(), 200);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i, "input order");
        assert_eq!(r.id.as_deref(), Some(format!("item-{i}").as_str()));
        let kind = match &r.result {
            Ok(_) => "ok",
            Err(e) => e.error.kind(),
        };
        assert_eq!(kind, expected[i], "item {i}: {:?}", r.result.as_ref().err());
    }
}

#[tokio::test]
async fn results_arrive_as_they_finish_and_a_cancelled_batch_reports_every_item() {
    let (host, _dir) = host();
    let hostile = hostile_wasm().display().to_string();
    let items: Vec<BatchItem> = (0..20)
        .map(|i| BatchItem {
            id: Some(i.to_string()),
            ..item(&hostile, "spin 100")
        })
        .collect();
    let options = BatchOptions {
        max_in_flight: Some(2),
        grace: Duration::from_millis(10),
        ..BatchOptions::default()
    };
    let mut batch = host.start_batch(items, options);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = bounded("an early result", 60, batch.next())
            .await
            .expect("a result");
        assert!(r.result.is_ok(), "{:?}", r.result.as_ref().err());
        seen.push(r);
    }
    batch.cancel();
    while let Some(r) = bounded("the rest", 60, batch.next()).await {
        seen.push(r);
    }
    assert_eq!(seen.len(), 20, "every item reports exactly once");
    let mut indexes: Vec<usize> = seen.iter().map(|r| r.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..20).collect::<Vec<_>>());
    let finished = seen.iter().filter(|r| r.result.is_ok()).count();
    let cancelled = seen
        .iter()
        .filter(|r| matches!(&r.result, Err(e) if matches!(e.error, Error::Cancelled { .. })))
        .count();
    assert!(finished >= 4, "what finished before the cancel is kept");
    assert_eq!(
        finished + cancelled,
        20,
        "nothing else happened to any item"
    );
    assert!(cancelled >= 10, "most items never started: {cancelled}");
}

#[tokio::test]
async fn running_items_finish_within_the_grace_period() {
    let (host, _dir) = host();
    let hostile = hostile_wasm().display().to_string();
    let items: Vec<BatchItem> = (0..4).map(|_| item(&hostile, "spin 300")).collect();
    let options = BatchOptions {
        max_in_flight: Some(2),
        grace: Duration::from_secs(20),
        ..BatchOptions::default()
    };
    let mut batch = host.start_batch(items, options);
    // Once the first two run, cancel: they finish (grace is long), the others never start.
    bounded("two items running", 60, async {
        while batch.in_flight() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    batch.cancel();
    let mut results = Vec::new();
    while let Some(r) = bounded("results", 60, batch.next()).await {
        results.push(r);
    }
    let ok = results.iter().filter(|r| r.result.is_ok()).count();
    assert_eq!(results.len(), 4);
    assert_eq!(
        ok, 2,
        "the two running items finished within the grace period"
    );
    assert!(
        results
            .iter()
            .filter(|r| r.result.is_err())
            .all(|r| matches!(&r.result, Err(e) if e.error.kind() == "cancelled"))
    );
}

#[tokio::test]
async fn the_batch_budget_applies_across_items() {
    let spy = Spy::new();
    let (host, _dir) = host_with(Some(spy.clone()), Limits::default());
    let items: Vec<BatchItem> = (0..10)
        .map(|i| item("python-expert", &format!("question {i}")))
        .collect();
    let options = BatchOptions {
        budget: Budget {
            usd: None,
            tokens: Some(300),
            ..Default::default()
        },
        max_in_flight: Some(1),
        ..BatchOptions::default()
    };
    let results = bounded("budgeted batch", 60, host.run_batch(items, options)).await;
    let ok = results.iter().filter(|r| r.result.is_ok()).count();
    let over: Vec<_> = results
        .iter()
        .filter(|r| matches!(&r.result, Err(e) if e.error.kind() == "budget_exceeded"))
        .collect();
    assert!(
        (1..10).contains(&ok),
        "{ok} items ran before the batch budget was spent"
    );
    assert_eq!(ok + over.len(), 10);
    assert_eq!(spy.requests().len(), ok, "refused calls were not sent");
}
