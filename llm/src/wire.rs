//! The Anthropic Messages API wire format (`anthropic-version: 2023-06-01`): the
//! request body built from a [`Request`], and the parsing of a response body into a
//! [`Response`].

use crate::content::{ContentBlock, Effort, System, Thinking, Tool, ToolChoice, raw_json};
use crate::types::{LlmError, Message, Request, Response, StopReason, Usage};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// The request body of `POST /v1/messages`.
#[derive(Debug, Serialize)]
pub(crate) struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a System>,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata<'a>>,
    #[serde(skip_serializing_if = "<[Tool]>::is_empty")]
    tools: &'a [Tool],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<WireOutputConfig<'a>>,
    /// Ask for server-sent events.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) stream: bool,
}

#[derive(Debug, Serialize)]
struct WireMetadata<'a> {
    user_id: &'a str,
}

/// `tool_choice`: `{"type": …, "name"?: …, "disable_parallel_tool_use"?: true}`.
#[derive(Debug, Serialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

/// `output_config`: effort and structured output.
#[derive(Debug, Serialize)]
struct WireOutputConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    effort: Option<Effort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<WireFormat<'a>>,
}

#[derive(Debug)]
struct WireFormat<'a> {
    schema: &'a str,
}

impl Serialize for WireFormat<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct F<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            schema: &'a RawValue,
        }
        F {
            kind: "json_schema",
            schema: raw_json(self.schema)?,
        }
        .serialize(s)
    }
}

fn wire_tool_choice(request: &Request) -> Option<WireToolChoice<'_>> {
    let disable = request.disable_parallel_tool_use;
    let (kind, name) = match &request.tool_choice {
        None if disable => ("auto", None),
        None => return None,
        Some(ToolChoice::Auto) => ("auto", None),
        Some(ToolChoice::Any) => ("any", None),
        Some(ToolChoice::Tool(name)) => ("tool", Some(name.as_str())),
        // `none` takes no `disable_parallel_tool_use`.
        Some(ToolChoice::None) => {
            return Some(WireToolChoice {
                kind: "none",
                name: None,
                disable_parallel_tool_use: false,
            });
        }
    };
    Some(WireToolChoice {
        kind,
        name,
        disable_parallel_tool_use: disable,
    })
}

impl<'a> WireRequest<'a> {
    /// The wire form of `request`. `Message` already serializes as
    /// `{"role": "user"|"assistant", "content": "…"}`.
    pub(crate) fn from_request(request: &'a Request) -> Self {
        Self {
            model: &request.model,
            max_tokens: request.max_tokens,
            system: request.system.as_ref(),
            messages: &request.messages,
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.top_k,
            stop_sequences: &request.stop_sequences,
            metadata: request
                .user_id
                .as_deref()
                .map(|user_id| WireMetadata { user_id }),
            tools: &request.tools,
            tool_choice: wire_tool_choice(request),
            thinking: request.thinking,
            output_config: (request.effort.is_some() || request.output_schema.is_some()).then(
                || WireOutputConfig {
                    effort: request.effort,
                    format: request
                        .output_schema
                        .as_deref()
                        .map(|schema| WireFormat { schema }),
                },
            ),
            stream: false,
        }
    }

    /// The JSON body.
    pub(crate) fn to_body(&self) -> Result<Vec<u8>, LlmError> {
        serde_json::to_vec(self)
            .map_err(|e| LlmError::InvalidRequest(format!("cannot encode the request: {e}")))
    }
}

/// A successful response body.
#[derive(Debug, Deserialize)]
struct WireResponse {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    model: String,
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    usage: WireUsage,
}

/// Usage; the cache counters may be absent or `null`.
#[derive(Debug, Deserialize)]
pub(crate) struct WireUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    /// The split of the cache writes by TTL, when the provider reports it.
    #[serde(default)]
    cache_creation: Option<WireCacheCreation>,
}

#[derive(Debug, Deserialize)]
struct WireCacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

impl From<&WireUsage> for Usage {
    /// The usage the API reports, whole answer or streamed event alike. Cache writes
    /// are split by TTL when the provider says so; a provider that splits without a
    /// total gets the split's sum as the total.
    fn from(wire: &WireUsage) -> Self {
        let split = |ttl: fn(&WireCacheCreation) -> Option<u64>| {
            wire.cache_creation.as_ref().and_then(ttl).unwrap_or(0)
        };
        let one_hour = split(|c| c.ephemeral_1h_input_tokens);
        let five_minutes = split(|c| c.ephemeral_5m_input_tokens);
        let created = wire
            .cache_creation_input_tokens
            .unwrap_or(0)
            .max(one_hour.saturating_add(five_minutes));
        Usage {
            input_tokens: wire.input_tokens,
            output_tokens: wire.output_tokens,
            cache_creation_input_tokens: created,
            cache_read_input_tokens: wire.cache_read_input_tokens.unwrap_or(0),
            cache_creation_1h_input_tokens: one_hour.min(created),
        }
    }
}

/// The documented error body: `{"type":"error","error":{"type":…,"message":…}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WireErrorBody {
    #[serde(rename = "type")]
    kind: String,
    error: WireError,
}

/// The `error` object of an error body.
#[derive(Debug, Deserialize)]
pub(crate) struct WireError {
    /// The error's type, e.g. `overloaded_error`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The human-readable explanation.
    pub(crate) message: String,
}

/// The most characters of an API error message kept in an [`LlmError`].
pub(crate) const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// `text` cut to at most `max` characters, with `…` when cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The `error` object of `body` when it is the documented error JSON.
pub(crate) fn parse_error_body(body: &[u8]) -> Option<WireError> {
    let parsed: WireErrorBody = serde_json::from_slice(body).ok()?;
    (parsed.kind == "error").then_some(parsed.error)
}

/// Parses a successful response body.
pub(crate) fn parse_response(body: &[u8]) -> Result<Response, LlmError> {
    let invalid = |m: String| LlmError::InvalidResponse(m);
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a Messages response: {e}")))?;
    if wire.kind != "message" {
        return Err(invalid(format!(
            "unexpected response type {:?}",
            truncate_chars(&wire.kind, 40)
        )));
    }
    if wire.content.is_empty() {
        return Err(invalid("the response has no content".into()));
    }
    let stop_reason = match wire.stop_reason.as_deref() {
        Some(reason) => StopReason::from_wire(reason, wire.stop_sequence.as_deref()),
        None => return Err(invalid("the response has no stop_reason".into())),
    };
    let mut text = String::new();
    let mut uses = 0usize;
    for block in &wire.content {
        match block {
            ContentBlock::Text { text: t, .. } => text.push_str(t),
            ContentBlock::ToolUse { .. } => uses += 1,
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
            other => {
                return Err(invalid(format!(
                    "the response has a {} block, which answers do not carry",
                    other.kind()
                )));
            }
        }
    }
    let has_text = wire
        .content
        .iter()
        .any(|b| matches!(b, ContentBlock::Text { .. }));
    if !has_text && uses == 0 {
        return Err(invalid("the response has no text and no tool use".into()));
    }
    if stop_reason == StopReason::ToolUse && uses == 0 {
        return Err(invalid(
            "the response stopped for tool use but has no tool_use block".into(),
        ));
    }
    // An answer of one text block (nearly every answer without tools or thinking) is
    // kept as its text alone, as before contract 0.2: the cache and cassettes do not
    // store it twice, and `Response::blocks` gives the block back.
    let content = if matches!(wire.content.as_slice(), [ContentBlock::Text { .. }]) {
        Vec::new()
    } else {
        wire.content
    };
    Ok(Response {
        id: wire.id,
        model: wire.model,
        content,
        text,
        stop_reason,
        usage: Usage::from(&wire.usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn every_request_field_is_encoded() {
        let mut r = Request::new(
            "m",
            64,
            vec![
                Message::user("a"),
                Message::assistant("b"),
                Message::user("c"),
            ],
        );
        r.system = Some("sys".into());
        r.temperature = Some(0.25);
        r.top_p = Some(0.5);
        r.top_k = Some(7);
        r.stop_sequences = vec!["END".into()];
        r.user_id = Some("u-1".into());
        let v: Value =
            serde_json::from_slice(&WireRequest::from_request(&r).to_body().unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "max_tokens": 64, "system": "sys",
                "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
                "temperature": 0.25, "top_p": 0.5, "top_k": 7, "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}})
        );
        let bare: Value = serde_json::from_slice(
            &WireRequest::from_request(&Request::new("m", 1, vec![Message::user("x")]))
                .to_body()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            bare,
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]})
        );
    }

    #[test]
    fn responses_are_parsed_whole() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m-1",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}],
            "stop_reason": "stop_sequence", "stop_sequence": "END",
            "usage": {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 5, "cache_read_input_tokens": null}});
        let r = parse_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.id, "msg_1");
        assert_eq!(r.model, "m-1");
        assert_eq!(r.text, "Hello, world");
        assert_eq!(r.content.len(), 3, "every block is kept");
        assert_eq!(
            r.content[0],
            ContentBlock::Thinking {
                thinking: "hmm".into(),
                signature: "sig".into()
            }
        );
        assert_eq!(r.stop_reason, StopReason::StopSequence("END".into()));
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 3,
                output_tokens: 4,
                cache_creation_input_tokens: 5,
                cache_read_input_tokens: 0,
                cache_creation_1h_input_tokens: 0,
            }
        );
    }

    #[test]
    fn bad_bodies_are_invalid_responses_not_panics() {
        let ok = json!({"id": "x", "type": "message", "model": "m", "content": [{"type": "text", "text": "t"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}});
        assert!(parse_response(ok.to_string().as_bytes()).is_ok());
        let mut cases = vec![
            b"{not json".to_vec(),
            b"".to_vec(),
            b"[]".to_vec(),
            b"null".to_vec(),
        ];
        for (field, value) in [
            ("type", json!("error")),
            ("content", json!([])),
            (
                "content",
                json!([{"type": "server_tool_use", "id": "t", "name": "n", "input": {}}]),
            ),
            (
                "content",
                json!([{"type": "tool_result", "tool_use_id": "t", "content": "x"}]),
            ),
            (
                "content",
                json!([{"type": "thinking", "thinking": "x", "signature": "s"}]),
            ),
            ("content", json!([{"type": "text"}])),
            ("content", json!("text")),
            ("stop_reason", Value::Null),
            ("usage", json!({"input_tokens": -1, "output_tokens": 1})),
        ] {
            let mut bad = ok.clone();
            bad[field] = value;
            cases.push(bad.to_string().into_bytes());
        }
        // Stopped for tool use without asking for a tool.
        let mut no_use = ok.clone();
        no_use["stop_reason"] = json!("tool_use");
        cases.push(no_use.to_string().into_bytes());
        for case in cases {
            let e = parse_response(&case).unwrap_err();
            assert!(
                matches!(e, LlmError::InvalidResponse(_)),
                "{e:?} for {}",
                String::from_utf8_lossy(&case)
            );
        }
    }

    #[test]
    fn error_bodies_and_truncation() {
        let e = parse_error_body(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"r"}"#).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.message.as_str()),
            ("overloaded_error", "Overloaded")
        );
        assert!(parse_error_body(b"<html>502</html>").is_none());
        assert!(
            parse_error_body(br#"{"type":"message","error":{"type":"x","message":"y"}}"#).is_none()
        );
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("hé", 2), "hé");
    }
}
