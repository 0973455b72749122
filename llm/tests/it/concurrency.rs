//! The global concurrency limit is obeyed and reached, and so is the per-agent share.

use crate::support::{builder, request, server, step};
use cf_llm::{CallContext, Ledger, LlmService};
use std::time::Duration;

async fn run_calls(service: &LlmService, agents: &[&'static str], per_agent: usize) -> usize {
    let ledger = Ledger::unlimited();
    let mut tasks = tokio::task::JoinSet::new();
    for &agent in agents {
        for i in 0..per_agent {
            let service = service.clone();
            let ledger = ledger.clone();
            tasks.spawn(async move {
                service
                    .complete(
                        &CallContext::new(agent, &ledger),
                        request(&format!("{agent} {i}")),
                    )
                    .await
            });
        }
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("call");
        ok += 1;
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_calls_with_a_limit_of_five_never_exceed_it() {
    let server = server(Duration::from_millis(30)).await;
    let service = builder(&server).max_concurrent(5).build();
    let ok = step(
        "50 calls at limit 5",
        Duration::from_secs(20),
        run_calls(&service, &["a"], 50),
    )
    .await;
    assert_eq!(ok, 50);
    assert_eq!(server.requests(), 50);
    assert_eq!(server.max_in_flight(), 5, "the limit is obeyed and reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_cannot_take_more_than_its_share() {
    let server = server(Duration::from_millis(30)).await;
    let service = builder(&server).max_concurrent(8).max_per_agent(3).build();
    assert_eq!(service.max_per_agent(), Some(3));
    step(
        "20 calls of one agent",
        Duration::from_secs(20),
        run_calls(&service, &["greedy"], 20),
    )
    .await;
    assert_eq!(server.max_in_flight(), 3, "one agent is held to its share");

    server.reset_stats();
    step(
        "3 agents × 12 calls",
        Duration::from_secs(20),
        run_calls(&service, &["a", "b", "c"], 12),
    )
    .await;
    assert_eq!(
        server.max_in_flight(),
        8,
        "three agents' shares (9) are capped by the global limit (8)"
    );
}
