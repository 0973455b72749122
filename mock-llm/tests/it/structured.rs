//! Structured output: the answer is JSON matching the schema, unless a test scripts
//! other text.

use crate::support::{answer, refusal, request, server};
use cf_mock_llm::Reply;
use serde_json::{Value, json};

fn schema() -> Value {
    json!({"type": "object", "additionalProperties": false,
        "required": ["title", "year", "rating", "tags", "author", "genre"],
        "properties": {
            "title": {"type": "string"}, "year": {"type": "integer", "minimum": 1900},
            "rating": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}},
            "author": {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "born": {"type": "integer"}}},
            "genre": {"enum": ["novel", "essay"]},
            "subtitle": {"type": "string"}}})
}

#[tokio::test]
async fn the_answer_is_json_matching_the_schema() {
    let server = server().await;
    let mut body = request(json!([{"role": "user", "content": "Describe a book."}]));
    body["output_config"] = json!({"format": {"type": "json_schema", "schema": schema()}});
    let answered = answer(&server, "structured answer", &body).await;
    assert_eq!(answered["stop_reason"], "end_turn");
    let blocks = answered["content"].as_array().expect("content");
    assert_eq!(blocks.len(), 1, "{answered}");
    let text = blocks[0]["text"].as_str().expect("text");
    let document: Value = serde_json::from_str(text).expect("the text is JSON");
    assert_eq!(
        document,
        json!({"title": "x", "year": 1900, "rating": 1.0, "tags": [],
            "author": {"name": "x"}, "genre": "novel"})
    );
    let object = document.as_object().expect("an object");
    for required in schema()["required"].as_array().expect("required") {
        assert!(
            object.contains_key(required.as_str().expect("name")),
            "{required} missing"
        );
    }
    assert!(
        !object.contains_key("subtitle"),
        "optional fields are left out"
    );
}

#[tokio::test]
async fn scripted_text_overrides_the_json_and_a_bad_format_is_refused() {
    let server = server().await;
    server.push_reply(Reply::text("{\"title\": "));
    let mut body = request(json!([{"role": "user", "content": "Describe a book."}]));
    body["output_config"] = json!({"format": {"type": "json_schema", "schema": schema()}});
    let broken = answer(&server, "scripted invalid JSON", &body).await;
    assert_eq!(broken["content"][0]["text"], "{\"title\": ");
    assert!(serde_json::from_str::<Value>("{\"title\": ").is_err());

    body["output_config"] = json!({"format": {"type": "json_object", "schema": schema()}});
    let message = refusal(&server, "an unknown format", &body).await;
    assert!(
        message.starts_with("output_config.format.type"),
        "{message}"
    );
}
