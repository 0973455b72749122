//! Images and documents: accepted, counted by their data, refused when malformed.

use crate::support::{answer, refusal, request, server};
use cf_mock_llm::estimate_tokens;
use serde_json::json;

/// "hello world!" in base64: 16 bytes.
const DATA: &str = "aGVsbG8gd29ybGQh";

#[tokio::test]
async fn images_and_documents_count_by_their_data() {
    let server = server().await;
    let body = request(json!([{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": DATA}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": DATA},
            "title": "a pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}},
        {"type": "text", "text": "What are these?"}]}]));
    let answered = answer(&server, "media", &body).await;
    let bytes = DATA.len() * 2 + "plain notes".len() + "What are these?".len();
    assert_eq!(answered["usage"]["input_tokens"], estimate_tokens(bytes));
    assert!(
        answered["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.ends_with("\"What are these?\"")),
        "{answered}"
    );
    // A tool result may hold an image too, counted the same way.
    let mut in_result = request(json!([{"role": "user", "content": "Screenshot?"}]));
    in_result["tools"] = json!([{"name": "screenshot", "input_schema": {"type": "object"}}]);
    let call = answer(&server, "the call", &in_result).await;
    let messages = in_result["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": call["content"].clone()}));
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["content"][0]["id"],
        "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": DATA}}]}]}));
    answer(&server, "an image in a tool result", &in_result).await;
}

#[tokio::test]
async fn malformed_media_are_refused() {
    let server = server().await;
    let cases = [
        (
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGVsbG8=!"}}),
            "messages.0.content.0.source.data: invalid base64 data",
        ),
        (
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": DATA}}),
            "messages.0.content.0.source.media_type",
        ),
        (
            json!({"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": DATA}}),
            "messages.0.content.0.source.media_type",
        ),
        (
            json!({"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}}),
            "messages.0.content.0.source",
        ),
        (
            json!({"type": "image"}),
            "messages.0.content.0.source: field required",
        ),
    ];
    for (block, expected) in cases {
        let body = request(json!([{"role": "user", "content": [block]}]));
        let message = refusal(&server, expected, &body).await;
        assert!(
            message.starts_with(expected),
            "{message} (expected {expected})"
        );
    }
}
