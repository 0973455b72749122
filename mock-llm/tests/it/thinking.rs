//! Thinking: signed thinking blocks come back unchanged or are refused, redacted
//! thinking comes back as issued, and a tool loop with thinking keeps its thinking.

use crate::support::{answer, assistant_turn, refusal, request, results_for, search_tool, server};
use cf_mock_llm::{REDACT_MARKER, Reply, thinking_signature};
use serde_json::{Value, json};

/// A request with thinking on and one tool.
fn thinking_request(text: &str) -> Value {
    let mut body = request(json!([{"role": "user", "content": text}]));
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    body["tools"] = json!([search_tool()]);
    body
}

#[tokio::test]
async fn a_signed_thinking_block_round_trips_and_a_tampered_one_is_refused() {
    let server = server().await;
    let body = thinking_request("Look it up.");
    let first = answer(&server, "the call with thinking", &body).await;
    let blocks = first["content"].as_array().expect("content");
    assert_eq!(blocks[0]["type"], "thinking", "{first}");
    assert_eq!(blocks[1]["type"], "tool_use", "{first}");
    let text = blocks[0]["thinking"].as_str().expect("thinking text");
    assert_eq!(blocks[0]["signature"], thinking_signature(text));

    let mut next = body.clone();
    let messages = next["messages"].as_array_mut().expect("messages");
    messages.push(assistant_turn(&first));
    messages.push(results_for(&first, "found it"));
    let done = answer(&server, "the results with the thinking unchanged", &next).await;
    assert_eq!(done["stop_reason"], "end_turn");

    for (field, value) in [
        ("thinking", json!(format!("{text} (edited)"))),
        ("signature", json!("0".repeat(64))),
    ] {
        let mut tampered = next.clone();
        tampered["messages"][1]["content"][0][field] = value;
        let message = refusal(&server, &format!("a changed {field}"), &tampered).await;
        assert!(
            message.contains("thinking block signature does not match"),
            "{message}"
        );
        assert!(
            message.starts_with("messages.1.content.0.signature"),
            "{message}"
        );
    }

    let mut dropped = next;
    dropped["messages"][1]["content"]
        .as_array_mut()
        .expect("content")
        .remove(0);
    let message = refusal(&server, "the thinking left out", &dropped).await;
    assert!(
        message.contains("must start with a thinking block"),
        "{message}"
    );
}

#[tokio::test]
async fn redacted_thinking_round_trips_only_as_issued() {
    let server = server().await;
    let mut body = thinking_request(&format!("A sensitive question {REDACT_MARKER}"));
    body["tools"] = json!([]);
    body.as_object_mut().expect("object").remove("tools");
    let first = answer(&server, "redacted answer", &body).await;
    let blocks = first["content"].as_array().expect("content");
    let kinds: Vec<&str> = blocks
        .iter()
        .map(|b| b["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["thinking", "redacted_thinking", "text"]);
    let data = blocks[1]["data"].as_str().expect("data");
    assert!(!data.is_empty());

    let mut next = body.clone();
    let messages = next["messages"].as_array_mut().expect("messages");
    messages.push(assistant_turn(&first));
    messages.push(json!({"role": "user", "content": "Go on."}));
    let again = answer(&server, "redacted data sent back", &next).await;
    assert_eq!(again["content"][0]["type"], "thinking");
    assert_eq!(
        again["content"][1]["type"], "text",
        "no marker in the new question"
    );

    let mut forged = next.clone();
    forged["messages"][1]["content"][1]["data"] = json!(format!("{data}00"));
    let message = refusal(&server, "changed redacted data", &forged).await;
    assert!(
        message.starts_with("messages.1.content.1.data"),
        "{message}"
    );
    assert!(message.contains("not issued by this server"), "{message}");

    let other = cf_mock_llm::MockServer::start(cf_mock_llm::MockConfig::default())
        .await
        .expect("bind");
    let message = refusal(&other, "data another server issued", &next).await;
    assert!(message.contains("not issued by this server"), "{message}");
}

#[tokio::test]
async fn scripted_thinking_is_signed_and_adaptive_thinking_answers_too() {
    let server = server().await;
    server.push_reply(Reply::blocks(
        vec![
            json!({"type": "thinking", "thinking": "my own thoughts"}),
            json!({"type": "text", "text": "hi"}),
        ],
        "end_turn",
    ));
    let mut body = request(json!([{"role": "user", "content": "Hello"}]));
    body["thinking"] = json!({"type": "adaptive"});
    body["output_config"] = json!({"effort": "low"});
    let scripted = answer(&server, "scripted thinking", &body).await;
    assert_eq!(
        scripted["content"],
        json!([{"type": "thinking", "thinking": "my own thoughts", "signature": thinking_signature("my own thoughts")},
            {"type": "text", "text": "hi"}]),
        "a blocks reply is served as it is, with its signature filled in"
    );
    let default = answer(&server, "adaptive thinking", &body).await;
    assert_eq!(default["content"][0]["type"], "thinking");
    let bad = json!({"type": "enabled", "budget_tokens": 4096});
    body["thinking"] = bad;
    let message = refusal(&server, "a budget over max_tokens", &body).await;
    assert!(
        message.contains("budget_tokens: must be less than max_tokens"),
        "{message}"
    );
}
