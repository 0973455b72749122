//! Scripted replies: served in order, after faults, never consumed by a refused request.

use crate::support::{answer, post, refusal, request, search_tool, server, server_with};
use cf_mock_llm::{Fault, MockConfig, Reply};
use serde_json::json;

fn hello() -> serde_json::Value {
    request(json!([{"role": "user", "content": "Hello"}]))
}

#[tokio::test]
async fn replies_are_served_in_order_then_the_default_answer() {
    let server = server_with(MockConfig {
        replies: vec![Reply::text("from the config")],
        ..MockConfig::default()
    })
    .await;
    server.push_replies([
        Reply::text("second").with_usage(json!({"output_tokens": 99, "input_tokens": 7})),
        Reply::blocks(
            vec![json!({"type": "text", "text": "Let me look."}),
                 json!({"type": "tool_use", "name": "search", "input": {"query": "a"}}),
                 json!({"type": "tool_use", "id": "toolu_given", "name": "search", "input": {"query": "b"}})],
            "tool_use",
        ),
        Reply::text("cut short").with_stop_reason("max_tokens"),
    ]);
    assert_eq!(server.pending_replies(), 4);
    let mut texts = Vec::new();
    for i in 0..5 {
        let a = answer(&server, &format!("request {i}"), &hello()).await;
        texts.push(a);
    }
    assert_eq!(texts[0]["content"][0]["text"], "from the config");
    assert_eq!(texts[1]["content"][0]["text"], "second");
    assert_eq!(texts[1]["usage"]["output_tokens"], 99);
    assert_eq!(texts[1]["usage"]["input_tokens"], 7);
    assert_eq!(
        texts[1]["usage"]["cache_read_input_tokens"], 0,
        "other fields stay computed"
    );
    assert_eq!(texts[2]["stop_reason"], "tool_use");
    assert_eq!(texts[2]["content"][1]["id"], "toolu_mock_1");
    assert_eq!(texts[2]["content"][2]["id"], "toolu_given");
    assert_eq!(texts[3]["stop_reason"], "max_tokens");
    assert_eq!(texts[3]["content"][0]["text"], "cut short");
    assert!(
        texts[4]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[mock] ")),
        "the script is used up: {}",
        texts[4]
    );
    assert_eq!(server.pending_replies(), 0);
}

#[tokio::test]
async fn faults_come_before_replies_and_refusals_consume_nothing() {
    let server = server().await;
    server.push_reply(Reply::text("the reply"));
    server.push_fault(Fault::overloaded());
    let (status, _) = post(&server, "the fault", &hello()).await;
    assert_eq!(status, 529);
    assert_eq!(server.pending_replies(), 1, "a fault consumes no reply");

    let mut bad = hello();
    bad["tools"] = json!([{"name": "bad name", "input_schema": {"type": "object"}}]);
    let message = refusal(&server, "a bad request", &bad).await;
    assert!(message.starts_with("tools.0.name"), "{message}");
    assert_eq!(
        server.pending_replies(),
        1,
        "a refused request consumes no reply"
    );

    let served = answer(&server, "the reply", &hello()).await;
    assert_eq!(served["content"][0]["text"], "the reply");
    assert_eq!(server.last_body(), Some(hello()));
    assert_eq!(server.received_body(1), Some(bad));
    assert_eq!(server.received_body(3), None);
}

#[tokio::test]
async fn a_scripted_call_gets_the_servers_thinking_and_tool_ids_stay_unique() {
    let server = server().await;
    server.push_reply(Reply::tool_use("search", json!({"query": "scripted"})));
    let mut body = hello();
    body["tools"] = json!([search_tool()]);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let scripted = answer(&server, "scripted call", &body).await;
    assert_eq!(scripted["content"][0]["type"], "thinking");
    assert_eq!(
        scripted["content"][1]["input"],
        json!({"query": "scripted"})
    );
    let default = answer(&server, "default call", &body).await;
    assert_eq!(scripted["content"][1]["id"], "toolu_mock_1");
    assert_eq!(default["content"][1]["id"], "toolu_mock_2");
}
