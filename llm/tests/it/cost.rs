//! The cost of a call with known token counts matches the price table exactly.

use crate::support::{builder, request, server, step};
use cf_llm::{CallContext, Ledger, PriceTable, Usage};
use cf_mock_llm::Fault;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn cost_of_known_token_counts_matches_the_price_table() {
    let server = server(Duration::ZERO).await;
    server.push_fault(Fault::Response(json!({
        "id": "msg_cost", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1_000_000, "output_tokens": 100_000, "cache_creation_input_tokens": 200_000, "cache_read_input_tokens": 2_000_000},
    })));
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let done = step(
        "a priced call",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect("answered");
    let usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 100_000,
        cache_creation_input_tokens: 200_000,
        cache_read_input_tokens: 2_000_000,
        cache_creation_1h_input_tokens: 0,
    };
    assert_eq!(done.response.usage, usage);
    // Sonnet 4.5: $3 input, $3.75 cache write, $0.30 cache read, $15 output per million.
    let expected = PriceTable::built_in().cost("claude-sonnet-4-5", &usage);
    assert_eq!(done.cost, expected);
    assert!(
        (done.cost.usd - (3.0 + 0.75 + 0.60 + 1.5)).abs() < 1e-9,
        "{}",
        done.cost.usd
    );
    assert_eq!(done.cost.known_usd(), Some(done.cost.usd));
    assert_eq!(ledger.totals().cost, expected);
    assert_eq!(ledger.totals().usage, usage);
}

#[tokio::test]
async fn an_unknown_model_is_unpriced_not_free() {
    let server = server(Duration::ZERO).await;
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let mut r = request("hi");
    r.model = "some-local-model".into();
    let done = step(
        "an unpriced call",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), r),
    )
    .await
    .expect("answered");
    assert_eq!(done.cost.unpriced_calls, 1);
    assert_eq!(done.cost.known_usd(), None);
}
