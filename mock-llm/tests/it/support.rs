//! Shared helpers: a server, a client that posts a body and returns the status and
//! the JSON answer, and a timeout that names the step it bounds.

use cf_mock_llm::{MockConfig, MockServer};
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;

/// The model of every request.
pub const MODEL: &str = "claude-sonnet-4-5";

/// How long one request may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `fut`, failing the test with the step's name if it takes longer than `limit`.
pub async fn step<F: Future>(name: &str, limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("step `{name}` took longer than {limit:?}"),
    }
}

/// A server with the default configuration.
pub async fn server() -> MockServer {
    server_with(MockConfig::default()).await
}

/// A server with `config`.
pub async fn server_with(config: MockConfig) -> MockServer {
    step("start the mock server", LIMIT, MockServer::start(config))
        .await
        .expect("bind 127.0.0.1")
}

/// Posts `body` to the server's Messages endpoint; returns the status and the JSON
/// answer.
pub async fn post(server: &MockServer, name: &str, body: &Value) -> (u16, Value) {
    let client = reqwest::Client::new();
    let send = async {
        let response = client
            .post(server.url())
            .header("x-api-key", "sk-test")
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a whole body");
        let value = serde_json::from_slice(&bytes).expect("a JSON body");
        (status, value)
    };
    step(name, LIMIT, send).await
}

/// Posts `body` and returns the answer, failing unless it is a 200.
pub async fn answer(server: &MockServer, name: &str, body: &Value) -> Value {
    let (status, value) = post(server, name, body).await;
    assert_eq!(status, 200, "{name}: {value}");
    value
}

/// Posts `body` and returns the message of its refusal, failing unless it is a 400
/// `invalid_request_error`.
pub async fn refusal(server: &MockServer, name: &str, body: &Value) -> String {
    let (status, value) = post(server, name, body).await;
    assert_eq!(status, 400, "{name}: {value}");
    assert_eq!(value["type"], "error", "{name}: {value}");
    assert_eq!(
        value["error"]["type"], "invalid_request_error",
        "{name}: {value}"
    );
    value["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}

/// A request body with these messages and `max_tokens` 4096.
pub fn request(messages: Value) -> Value {
    json!({"model": MODEL, "max_tokens": 4096, "messages": messages})
}

/// A tool definition with an input schema requiring `query` (a string) and `limit`
/// (an integer).
pub fn search_tool() -> Value {
    json!({"name": "search", "description": "Searches the web.",
        "input_schema": {"type": "object", "required": ["query", "limit"],
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"},
                "lang": {"type": "string"}}}})
}

/// The assistant turn of an answer: its content sent back unchanged.
pub fn assistant_turn(answer: &Value) -> Value {
    json!({"role": "assistant", "content": answer["content"].clone()})
}

/// The `tool_use` blocks of an answer.
pub fn tool_uses(answer: &Value) -> Vec<Value> {
    answer["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .cloned()
        .collect()
}

/// A user turn answering every tool call of `answer` with `result`.
pub fn results_for(answer: &Value, result: &str) -> Value {
    let results: Vec<Value> = tool_uses(answer)
        .iter()
        .map(|call| json!({"type": "tool_result", "tool_use_id": call["id"], "content": result}))
        .collect();
    json!({"role": "user", "content": results})
}
