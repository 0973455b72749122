//! The server's default answer and its error bodies, in the Anthropic wire format.

use crate::prompt_cache::PromptCache;
use crate::reply::Reply;
use crate::request::{self, Parsed, ToolChoice};
use crate::schema::object_for_schema;
use crate::thinking::{self, REDACT_MARKER, thinking_signature};
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};

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

/// What a server remembers between requests: scripted replies, the counters of tool
/// ids and redacted thinking, the redacted data it issued, and its prompt cache.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    pub(crate) replies: VecDeque<Reply>,
    tool_ids: u64,
    redactions: u64,
    issued: HashSet<String>,
    pub(crate) cache: PromptCache,
}

impl Memory {
    /// A fresh memory whose script holds `replies`.
    pub(crate) fn with_replies(replies: Vec<Reply>) -> Self {
        Self {
            replies: replies.into(),
            ..Self::default()
        }
    }

    /// The next tool id: `toolu_mock_1`, `toolu_mock_2`, …
    fn tool_id(&mut self) -> String {
        self.tool_ids += 1;
        format!("toolu_mock_{}", self.tool_ids)
    }

    /// Fresh redacted thinking data, remembered as issued.
    fn redacted(&mut self) -> String {
        self.redactions += 1;
        let data = thinking::redacted_data(self.redactions);
        self.issued.insert(data.clone());
        data
    }

    /// Fills in what a scripted block left out (tool id, signature, redacted data) and
    /// remembers the redacted data it serves.
    fn complete(&mut self, mut block: Value) -> Value {
        let missing = |b: &Value, key: &str| b.get(key).is_none_or(Value::is_null);
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") if missing(&block, "id") => block["id"] = json!(self.tool_id()),
            Some("thinking") if missing(&block, "signature") => {
                let text = block.get("thinking").and_then(Value::as_str).unwrap_or("");
                block["signature"] = json!(thinking_signature(text));
            }
            Some("redacted_thinking") => match block.get("data").and_then(Value::as_str) {
                Some(data) => {
                    self.issued.insert(data.to_owned());
                }
                None => block["data"] = json!(self.redacted()),
            },
            _ => {}
        }
        block
    }
}

/// The default answer to a Messages request body, as a fresh server (nothing
/// scripted, nothing cached, no redacted thinking issued) answers it, or the message
/// of a 400 `invalid_request_error` when the body is not a valid request (see the
/// crate docs for what is checked).
///
/// The answer is deterministic. Without tools, thinking or structured output its text
/// is `[mock] model=M messages=N last user message: "…"` (the first 200 characters of
/// the last user message's text blocks and tool results' text, quoted with Rust's
/// `{:?}`); `usage.input_tokens` is [`estimate_tokens`] of the bytes of the system
/// prompt and every message (text by its bytes, an image or document by its data,
/// a tool call by its name and input JSON, a tool result by its content, thinking not
/// at all) and of every tool definition's JSON, and `usage.output_tokens` that of the
/// answer's text. When the text is longer than `max_tokens` allows (4 bytes per
/// token) it is cut and `stop_reason` is `max_tokens`; when it contains one of
/// `stop_sequences` it is cut before it and `stop_reason` is `stop_sequence`.
///
/// With tools and `tool_choice` `any` or a named tool, or `auto` (the default) and no
/// tool result in the last user message, the answer is one `tool_use` block calling
/// the first tool (or the one `tool_choice` names) with [`value_for_schema`](crate::value_for_schema) of its
/// `input_schema`, `stop_reason` `tool_use`. With `output_config.format`, the text is
/// the JSON of `value_for_schema` of its schema. With thinking on, a `thinking` block
/// comes first, signed with [`thinking_signature`](crate::thinking_signature), then,
/// when the system prompt or the last user message contains
/// [`REDACT_MARKER`](crate::REDACT_MARKER), a `redacted_thinking` block.
pub fn answer_for(request: &Value, id: &str) -> Result<Value, String> {
    answer(request, id, &mut Memory::default(), false)
}

/// The answer to `body` with the server's memory: checks the request, then serves the
/// next scripted reply (when `scripted` and one is queued) or the default answer.
pub(crate) fn answer(
    body: &Value,
    id: &str,
    memory: &mut Memory,
    scripted: bool,
) -> Result<Value, String> {
    let request = request::parse(body)?;
    if let Some((path, _)) = request
        .redacted
        .iter()
        .find(|(_, data)| !memory.issued.contains(*data))
    {
        return Err(format!(
            "{path}: redacted_thinking data was not issued by this server (redacted thinking blocks must be sent back unchanged)"
        ));
    }
    // Every check passed: from here on the request changes the server's memory.
    let reply = if scripted {
        memory.replies.pop_front()
    } else {
        None
    };
    let cache = memory.cache.account(request.model, &request.items);
    let max_tokens = request.max_tokens;
    let mut content = Vec::new();
    let mut tokens_left = max_tokens;
    if request.thinking && !reply.as_ref().is_some_and(|r| r.exact) {
        let quoted: String = request.last_user.text.chars().take(QUOTE_CHARS).collect();
        let mut thinking = format!(
            "[mock thinking] {} messages; the last user message is {quoted:?}.",
            request.messages
        );
        cut(&mut thinking, byte_limit(max_tokens));
        tokens_left = max_tokens.saturating_sub(estimate_tokens(thinking.len()));
        let signature = thinking_signature(&thinking);
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": signature}));
        if request.system.contains(REDACT_MARKER) || request.last_user.text.contains(REDACT_MARKER)
        {
            content.push(json!({"type": "redacted_thinking", "data": memory.redacted()}));
        }
    }
    let (stop_reason, stop_sequence, usage_override) = match reply {
        Some(reply) => {
            for block in reply.content {
                content.push(memory.complete(block));
            }
            (reply.stop_reason, Value::Null, reply.usage)
        }
        None => {
            let (stop_reason, stop_sequence) =
                default_content(&request, memory, tokens_left, &mut content);
            (stop_reason.to_owned(), stop_sequence, None)
        }
    };
    let output_bytes: usize = content.iter().map(output_bytes).sum();
    let has_breakpoints = cache.is_some();
    let cache = cache.unwrap_or_default();
    let input_tokens =
        estimate_tokens(request.input_bytes()).saturating_sub(cache.read + cache.written());
    let mut usage = json!({
        "input_tokens": input_tokens,
        "output_tokens": estimate_tokens(output_bytes).min(max_tokens),
        "cache_creation_input_tokens": cache.written(),
        "cache_read_input_tokens": cache.read,
    });
    if has_breakpoints {
        usage["cache_creation"] = json!({
            "ephemeral_5m_input_tokens": cache.written_5m,
            "ephemeral_1h_input_tokens": cache.written_1h,
        });
    }
    if let Some(Value::Object(fields)) = usage_override {
        for (k, v) in fields {
            usage[k] = v;
        }
    }
    Ok(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }))
}

/// The default content after any thinking: a tool call, or text (JSON with structured
/// output) cut by `stop_sequences` and `tokens_left`. Returns the stop reason and
/// sequence.
fn default_content(
    request: &Parsed<'_>,
    memory: &mut Memory,
    tokens_left: u64,
    content: &mut Vec<Value>,
) -> (&'static str, Value) {
    // `auto` uses a tool once, then answers; `any` and a named tool force a tool use
    // on every turn, as the API does.
    let tool = match &request.tool_choice {
        ToolChoice::None => None,
        ToolChoice::Auto if request.last_user.has_tool_result => None,
        ToolChoice::Tool(name) => request.tools.iter().find(|t| t.name == *name),
        ToolChoice::Auto | ToolChoice::Any => request.tools.first(),
    };
    if let Some(tool) = tool {
        content.push(
            json!({"type": "tool_use", "id": memory.tool_id(), "name": tool.name,
            "input": object_for_schema(tool.input_schema)}),
        );
        return ("tool_use", Value::Null);
    }
    let mut text = match request.format {
        Some(schema) => object_for_schema(schema).to_string(),
        None => {
            let quoted: String = request.last_user.text.chars().take(QUOTE_CHARS).collect();
            format!(
                "[mock] model={} messages={} last user message: {quoted:?}",
                request.model, request.messages
            )
        }
    };
    let mut stop_reason = "end_turn";
    let mut stop_sequence = Value::Null;
    if let Some((at, seq)) = request
        .stop_sequences
        .iter()
        .filter_map(|s| text.find(s).map(|at| (at, *s)))
        .min()
    {
        text.truncate(at);
        stop_reason = "stop_sequence";
        stop_sequence = Value::String(seq.to_owned());
    }
    if cut(&mut text, byte_limit(tokens_left)) {
        stop_reason = "max_tokens";
        stop_sequence = Value::Null;
    }
    content.push(json!({"type": "text", "text": text}));
    (stop_reason, stop_sequence)
}

/// The bytes `tokens` output tokens hold (4 per token).
fn byte_limit(tokens: u64) -> usize {
    usize::try_from(tokens.saturating_mul(4)).unwrap_or(usize::MAX)
}

/// Cuts `text` to at most `limit` bytes (on a character boundary); whether it did.
fn cut(text: &mut String, limit: usize) -> bool {
    if text.len() <= limit {
        return false;
    }
    let mut at = limit;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    true
}

/// The bytes an answer's block counts for in output tokens.
fn output_bytes(block: &Value) -> usize {
    let str_len = |key: &str| block.get(key).and_then(Value::as_str).map_or(0, str::len);
    match block.get("type").and_then(Value::as_str) {
        Some("text") => str_len("text"),
        Some("thinking") => str_len("thinking"),
        Some("tool_use") => str_len("name") + block.get("input").map_or(0, |i| i.to_string().len()),
        _ => 0,
    }
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
