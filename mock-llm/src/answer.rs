//! The server's default answer and its error bodies, in the Anthropic wire format.

use serde_json::{Value, json};

/// How much of the last user message the answer quotes, in characters.
const QUOTE_CHARS: usize = 200;

/// The documented error body: `{"type":"error","error":{"type":…,"message":…}}`.
pub(crate) fn error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

/// Tokens the mock charges for `bytes` bytes of text: one per four bytes, rounded up.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// The text of a `content` field: a string, or the concatenated `text` of its blocks.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .concat(),
        ),
        _ => None,
    }
}

/// The default answer to a Messages request body, or the message of a 400
/// `invalid_request_error` when the body is not a valid request.
///
/// The answer is deterministic: its text is
/// `[mock] model=M messages=N last user message: "…"` (the first 200 characters,
/// quoted with Rust's `{:?}`); `usage.input_tokens` is
/// [`estimate_tokens`] of the bytes of the system prompt and every message, and
/// `usage.output_tokens` that of the answer's text. When the text is longer than
/// `max_tokens` allows (4 bytes per token) it is cut and `stop_reason` is
/// `max_tokens`; when it contains one of `stop_sequences` it is cut before it and
/// `stop_reason` is `stop_sequence`.
pub fn answer_for(request: &Value, id: &str) -> Result<Value, String> {
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: field required")?;
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or("max_tokens: field required")?;
    if max_tokens == 0 {
        return Err("max_tokens: must be at least 1".into());
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut input_bytes = match request.get("system") {
        None | Some(Value::Null) => 0,
        Some(system) => content_text(system)
            .ok_or("system: must be a string or text blocks")?
            .len(),
    };
    let mut last_user = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or(format!("messages.{i}.role: field required"))?;
        let text = m
            .get("content")
            .and_then(content_text)
            .ok_or(format!("messages.{i}.content: field required"))?;
        input_bytes += text.len();
        match role {
            "user" => last_user = text,
            "assistant" => {}
            other => return Err(format!("messages.{i}.role: unexpected value {other:?}")),
        }
    }
    let quoted: String = last_user.chars().take(QUOTE_CHARS).collect();
    let mut text = format!(
        "[mock] model={model} messages={} last user message: {quoted:?}",
        messages.len()
    );
    let mut stop_reason = "end_turn";
    let mut stop_sequence = Value::Null;
    let stops = request
        .get("stop_sequences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some((at, seq)) = stops
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|s| text.find(s).map(|at| (at, s)))
        .min()
    {
        text.truncate(at);
        stop_reason = "stop_sequence";
        stop_sequence = Value::String(seq.to_owned());
    }
    let byte_limit = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    if text.len() > byte_limit {
        let mut cut = byte_limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        stop_reason = "max_tokens";
        stop_sequence = Value::Null;
    }
    let output_tokens = estimate_tokens(text.len()).min(max_tokens);
    Ok(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": estimate_tokens(input_bytes),
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_echoes_the_request_and_counts_tokens() {
        let req = json!({"model": "m", "max_tokens": 1000, "system": "abcd",
            "messages": [{"role": "user", "content": "12345678"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "why?"}]});
        let a = answer_for(&req, "msg_1").unwrap();
        let text = a["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            text,
            "[mock] model=m messages=3 last user message: \"why?\""
        );
        assert_eq!(
            a["usage"]["input_tokens"], 5,
            "(4 + 8 + 2 + 4) bytes / 4, rounded up"
        );
        assert_eq!(a["usage"]["output_tokens"], estimate_tokens(text.len()));
        assert_eq!(a["stop_reason"], "end_turn");
    }

    #[test]
    fn max_tokens_and_stop_sequences_cut_the_answer() {
        let req =
            json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
        let a = answer_for(&req, "x").unwrap();
        assert_eq!(a["content"][0]["text"], "[mock] m", "2 tokens of 4 bytes");
        assert_eq!(a["stop_reason"], "max_tokens");
        assert_eq!(a["usage"]["output_tokens"], 2);
        let req = json!({"model": "m", "max_tokens": 100, "stop_sequences": ["messages"], "messages": [{"role": "user", "content": "hi"}]});
        let a = answer_for(&req, "x").unwrap();
        assert_eq!(a["content"][0]["text"], "[mock] model=m ");
        assert_eq!(a["stop_reason"], "stop_sequence");
        assert_eq!(a["stop_sequence"], "messages");
    }

    #[test]
    fn invalid_requests_are_refused() {
        assert!(
            answer_for(
                &json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
                "x"
            )
            .is_err()
        );
        assert!(answer_for(&json!({"model": "m", "max_tokens": 1, "messages": []}), "x").is_err());
        assert!(answer_for(&json!({"model": "m", "max_tokens": 1, "messages": [{"role": "bot", "content": "x"}]}), "x").is_err());
    }
}
