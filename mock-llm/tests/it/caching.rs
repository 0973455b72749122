//! Prompt caching: breakpoints counted, prefixes written then read, split by TTL.

use crate::support::{answer, assistant_turn, refusal, request, search_tool, server};
use cf_mock_llm::estimate_tokens;
use serde_json::{Value, json};

/// A text block of `bytes` bytes of `fill`, with a breakpoint of `ttl` when given.
fn text(fill: char, bytes: usize, ttl: Option<&str>) -> Value {
    let mut block = json!({"type": "text", "text": fill.to_string().repeat(bytes)});
    if let Some(ttl) = ttl {
        block["cache_control"] = json!({"type": "ephemeral", "ttl": ttl});
    }
    block
}

#[tokio::test]
async fn five_breakpoints_are_refused_and_four_accepted() {
    let server = server().await;
    let mut tool = search_tool();
    tool["cache_control"] = json!({"type": "ephemeral"});
    let mut body = request(json!([{"role": "user", "content": [
        text('a', 10, Some("5m")), text('b', 10, Some("5m")), text('c', 10, Some("5m"))]}]));
    body["tools"] = json!([tool]);
    body["tool_choice"] = json!({"type": "none"});
    answer(&server, "four breakpoints", &body).await;
    body["system"] = json!([text('s', 10, Some("5m"))]);
    let message = refusal(&server, "five breakpoints", &body).await;
    assert_eq!(
        message,
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    );
}

#[tokio::test]
async fn a_prefix_is_written_then_read_with_its_ttl_split() {
    let server = server().await;
    // System: 4000 bytes to 1 h, then 2000 more to 5 min; the question is not cached.
    let mut body = request(json!([{"role": "user", "content": "What is in the notes?"}]));
    body["system"] = json!([text('a', 4000, Some("1h")), text('b', 2000, Some("5m"))]);
    let question = "What is in the notes?".len() as u64;

    let first = answer(&server, "first sight", &body).await;
    let usage = &first["usage"];
    assert_eq!(usage["cache_creation_input_tokens"], 1500);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(
        usage["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000})
    );
    assert_eq!(
        usage["input_tokens"],
        estimate_tokens(6000 + question as usize) - 1500
    );

    let second = answer(&server, "second sight", &body).await;
    let usage = &second["usage"];
    assert_eq!(usage["cache_read_input_tokens"], 1500);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(
        usage["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0})
    );
    assert_eq!(usage["input_tokens"], 6);

    server.forget_prompt_cache();
    let expired = answer(&server, "after the cache is forgotten", &body).await;
    assert_eq!(expired["usage"]["cache_creation_input_tokens"], 1500);

    let plain = answer(
        &server,
        "no breakpoints",
        &request(json!([{"role": "user", "content": "hi"}])),
    )
    .await;
    assert_eq!(plain["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(plain["usage"]["cache_read_input_tokens"], 0);
    assert!(plain["usage"].get("cache_creation").is_none(), "{plain}");
}

#[tokio::test]
async fn a_tool_loop_moving_its_breakpoint_reads_the_previous_turn() {
    let server = server().await;
    let mut body = request(json!([{"role": "user", "content": [text('q', 4000, Some("5m"))]}]));
    body["tools"] = json!([search_tool()]);
    let tools_bytes = search_tool().to_string().len();
    let first = answer(&server, "turn 1", &body).await;
    let turn_1 = estimate_tokens(tools_bytes + 4000);
    assert_eq!(first["usage"]["cache_creation_input_tokens"], turn_1);

    // The breakpoint moves to the tool result; the earlier one is gone.
    let call_id = first["content"][0]["id"].clone();
    let messages = body["messages"].as_array_mut().expect("messages");
    messages[0]["content"][0]
        .as_object_mut()
        .expect("block")
        .remove("cache_control");
    messages.push(assistant_turn(&first));
    messages.push(
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id,
        "content": "r".repeat(2000), "cache_control": {"type": "ephemeral"}}]}),
    );
    let second = answer(&server, "turn 2", &body).await;
    let usage = &second["usage"];
    assert_eq!(usage["cache_read_input_tokens"], turn_1, "{second}");
    let call_bytes = "search".len() + first["content"][0]["input"].to_string().len();
    let turn_2 = estimate_tokens(tools_bytes + 4000 + call_bytes + 2000);
    assert_eq!(usage["cache_creation_input_tokens"], turn_2 - turn_1);
    assert_eq!(usage["input_tokens"], 0, "nothing after the breakpoint");
}
