//! Tool loops: default calls built from the input schema, tool results answered with
//! text, scripted calls in between, and tool results that answer nothing refused.

use crate::support::{
    answer, assistant_turn, refusal, request, results_for, search_tool, server, tool_uses,
};
use cf_mock_llm::Reply;
use serde_json::json;

#[tokio::test]
async fn a_three_turn_tool_loop_runs_by_hand() {
    let server = server().await;
    let fetch = json!({"name": "fetch", "input_schema": {"type": "object",
        "required": ["url"], "properties": {"url": {"type": "string"}}}});
    let tools = json!([search_tool(), fetch]);
    let mut body = request(json!([{"role": "user", "content": "Find the Rust book."}]));
    body["tools"] = tools;

    // Turn 1: the default answer calls the first tool with the schema's minimal input.
    let first = answer(&server, "turn 1", &body).await;
    assert_eq!(first["stop_reason"], "tool_use");
    let calls = tool_uses(&first);
    assert_eq!(calls.len(), 1, "{first}");
    assert_eq!(calls[0]["name"], "search");
    assert_eq!(calls[0]["input"], json!({"query": "x", "limit": 1}));
    assert_eq!(calls[0]["id"], "toolu_mock_1");

    // Turn 2: the test scripts a second call; the result of the first goes back.
    server.push_reply(Reply::tool_use(
        "fetch",
        json!({"url": "https://doc.rust-lang.org/book/"}),
    ));
    let messages = body["messages"].as_array_mut().expect("messages");
    messages.push(assistant_turn(&first));
    messages.push(results_for(&first, "result: doc.rust-lang.org/book"));
    let second = answer(&server, "turn 2", &body).await;
    assert_eq!(second["stop_reason"], "tool_use");
    let calls = tool_uses(&second);
    assert_eq!(calls[0]["name"], "fetch");
    assert_eq!(calls[0]["id"], "toolu_mock_2", "scripted calls get ids too");

    // Turn 3: with the second result back, the default answer is text quoting it.
    let messages = body["messages"].as_array_mut().expect("messages");
    messages.push(assistant_turn(&second));
    messages.push(results_for(&second, "The Rust Programming Language"));
    let third = answer(&server, "turn 3", &body).await;
    assert_eq!(third["stop_reason"], "end_turn");
    assert_eq!(
        third["content"],
        json!([{"type": "text",
            "text": "[mock] model=claude-sonnet-4-5 messages=5 last user message: \"The Rust Programming Language\""}])
    );
    assert_eq!(server.received().len(), 3);
    assert_eq!(server.pending_replies(), 0);
    assert_eq!(
        server.received_body(1).expect("the second request")["messages"][2]["content"][0]["tool_use_id"],
        "toolu_mock_1"
    );
}

#[tokio::test]
async fn tool_choice_picks_the_tool_or_none() {
    let server = server().await;
    let other = json!({"name": "clock", "input_schema": {"type": "object",
        "required": ["zone"], "properties": {"zone": {"enum": ["UTC", "CET"]}}}});
    let mut body = request(json!([{"role": "user", "content": "What time is it?"}]));
    body["tools"] = json!([search_tool(), other]);
    body["tool_choice"] = json!({"type": "tool", "name": "clock"});
    let called = answer(&server, "forced tool", &body).await;
    assert_eq!(
        tool_uses(&called),
        [
            json!({"type": "tool_use", "id": "toolu_mock_1", "name": "clock", "input": {"zone": "UTC"}})
        ]
    );
    body["tool_choice"] = json!({"type": "none"});
    let text = answer(&server, "no tools", &body).await;
    assert_eq!(text["stop_reason"], "end_turn");
    assert!(tool_uses(&text).is_empty(), "{text}");
}

#[tokio::test]
async fn a_tool_result_without_its_call_is_refused() {
    let server = server().await;
    let mut body = request(json!([{"role": "user", "content": "Search."}]));
    body["tools"] = json!([search_tool()]);
    let first = answer(&server, "the call", &body).await;

    let mut dangling = body.clone();
    let messages = dangling["messages"].as_array_mut().expect("messages");
    messages.push(assistant_turn(&first));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_someone_else", "content": "r"}]}));
    let message = refusal(&server, "a result for another call", &dangling).await;
    assert!(
        message.contains("unexpected tool_use_id found in tool_result blocks: toolu_someone_else"),
        "{message}"
    );

    let mut skipped = body.clone();
    let messages = skipped["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "r"}]}));
    let message = refusal(&server, "a result after a user turn", &skipped).await;
    assert!(message.starts_with("messages.1.content.0"), "{message}");

    let mut unanswered = body;
    let messages = unanswered["messages"].as_array_mut().expect("messages");
    messages.push(assistant_turn(&first));
    messages.push(json!({"role": "user", "content": "never mind"}));
    let message = refusal(&server, "a call left unanswered", &unanswered).await;
    assert!(
        message.contains(
            "tool_use ids were found without tool_result blocks immediately after: toolu_mock_1"
        ),
        "{message}"
    );
}
