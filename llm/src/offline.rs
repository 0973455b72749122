//! A deterministic provider that answers without a network, for trying agents out and
//! for tests. Its answers say plainly that they are offline.

use crate::content::{Content, ContentBlock, Thinking, ToolChoice};
use crate::provider::{BoxFuture, Provider, ProviderError};
use crate::types::{Request, Response, Role, StopReason, Usage};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Answers every request at once, with a text that summarises what it was sent:
/// `[offline] model=… system=N chars messages=N last user message: "…"`.
///
/// Contract 0.2's shapes, so that a tool loop can be tried without a key:
/// - a request with tools (and a tool choice other than `none`) whose last user turn
///   holds no tool result is answered by calling the first tool (or the one the tool
///   choice names) once, with an input built from its schema ([`minimal_value`]),
///   and stop reason `tool-use`; the next turn, with the results, gets the text
///   answer;
/// - a request with an output schema gets the minimal JSON value of the schema as
///   its text;
/// - a request with thinking on gets a thinking block first, signed `offline`.
///
/// Token counts are estimates (one token per four bytes, rounded up); calls are free.
#[derive(Debug, Default, Clone)]
pub struct OfflineProvider {
    _private: (),
}

/// How much of the last user message the offline answer quotes, in characters.
const QUOTE_CHARS: usize = 200;

impl OfflineProvider {
    /// The offline provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// The answer to `request`, computed without I/O.
    pub fn answer(request: &Request) -> Response {
        let mut content = Vec::new();
        if matches!(
            request.thinking,
            Some(Thinking::Enabled { .. } | Thinking::Adaptive)
        ) {
            content.push(ContentBlock::Thinking {
                thinking: "[offline] no thinking happens offline".into(),
                signature: "offline".into(),
            });
        }
        if let Some(tool_use) = Self::tool_call(request) {
            content.push(tool_use);
            let usage = Usage {
                input_tokens: estimate_tokens(request.text_bytes()),
                output_tokens: 1,
                ..Usage::default()
            };
            return Response {
                id: format!("offline-{:016x}", fnv1a(&format!("{content:?}"))),
                model: request.model.clone(),
                content,
                text: String::new(),
                stop_reason: StopReason::ToolUse,
                usage,
            };
        }
        let mut response = Self::text_answer(request);
        if !content.is_empty() {
            content.push(ContentBlock::text(response.text.clone()));
            response.content = content;
        }
        response
    }

    /// The tool use the offline provider answers `request` with, if any.
    fn tool_call(request: &Request) -> Option<ContentBlock> {
        let tool = match &request.tool_choice {
            Some(ToolChoice::None) => return None,
            Some(ToolChoice::Tool(name)) => request.tools.iter().find(|t| &t.name == name),
            _ => request.tools.first(),
        }?;
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)?;
        let answered = matches!(&last_user.content, Content::Blocks(blocks)
            if blocks.iter().any(|b| matches!(b, ContentBlock::ToolResult { .. })));
        if answered {
            return None;
        }
        let schema: Value = serde_json::from_str(&tool.input_schema).ok()?;
        let input = minimal_value(&schema).to_string();
        Some(ContentBlock::ToolUse {
            id: format!(
                "toolu_offline_{:016x}",
                fnv1a(&format!("{}{input}{}", tool.name, request.messages.len()))
            ),
            name: tool.name.clone(),
            input,
        })
    }

    fn text_answer(request: &Request) -> Response {
        if let Some(schema) = request
            .output_schema
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        {
            let text = minimal_value(&schema).to_string();
            return Response {
                id: format!("offline-{:016x}", fnv1a(&text)),
                model: request.model.clone(),
                content: Vec::new(),
                usage: Usage {
                    input_tokens: estimate_tokens(request.text_bytes()),
                    output_tokens: estimate_tokens(text.len()).min(u64::from(request.max_tokens)),
                    ..Usage::default()
                },
                text,
                stop_reason: StopReason::EndTurn,
            };
        }
        let system_chars = request
            .system
            .as_ref()
            .map_or(0, |s| s.text().chars().count());
        // The last user turn with text: in a tool loop, the turns after the task
        // hold only tool results.
        let last_user = request
            .messages
            .iter()
            .rev()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.text())
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        let quoted: String = last_user.chars().take(QUOTE_CHARS).collect();
        let ellipsis = if last_user.chars().count() > QUOTE_CHARS {
            "…"
        } else {
            ""
        };
        let mut text = String::new();
        let _ = write!(
            text,
            "[offline] model={} system={} chars messages={} max_tokens={} last user message: {:?}{}",
            request.model,
            system_chars,
            request.messages.len(),
            request.max_tokens,
            quoted,
            ellipsis
        );
        let input_bytes = request.text_bytes();
        let usage = Usage {
            input_tokens: estimate_tokens(input_bytes),
            output_tokens: estimate_tokens(text.len()).min(u64::from(request.max_tokens)),
            ..Usage::default()
        };
        Response {
            id: format!("offline-{:016x}", fnv1a(&text)),
            model: request.model.clone(),
            content: Vec::new(),
            text,
            stop_reason: StopReason::EndTurn,
            usage,
        }
    }
}

/// The smallest JSON value a JSON Schema accepts, built the simple way: an object
/// with every `required` property (and its `properties` in order), strings `"x"`,
/// numbers `1`, booleans `true`, empty arrays (or `minItems` items), the first
/// `enum` or `const` value, the first branch of `anyOf`/`oneOf`. Good enough for
/// the schemas agents give their tools; not a schema validator.
pub fn minimal_value(schema: &Value) -> Value {
    minimal_at(schema, schema, 0)
}

fn minimal_at(root: &Value, schema: &Value, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    // Local references (`#/$defs/X`, `#/definitions/X`), as schema generators write
    // nested types.
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        return minimal_at(root, target, depth + 1);
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return minimal_at(root, first, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // `["string", "null"]`: the first type.
        Some(Value::Array(types)) => types.first().and_then(Value::as_str).unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "null",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (name, property) in properties {
                    if required.contains(&name.as_str()) {
                        object.insert(name.clone(), minimal_at(root, property, depth + 1));
                    }
                }
            }
            Value::Object(object)
        }
        "array" => {
            let n = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(16);
            let item = schema
                .get("items")
                .map_or(Value::Null, |i| minimal_at(root, i, depth + 1));
            Value::Array((0..n).map(|_| item.clone()).collect())
        }
        "string" => Value::String("x".into()),
        "integer" => Value::from(schema.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "number" => Value::from(schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.0)),
        "boolean" => Value::Bool(true),
        _ => Value::Null,
    }
}

fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// A small stable hash for the offline answer's id (not security relevant).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Provider for OfflineProvider {
    fn name(&self) -> &str {
        "offline"
    }

    fn billable(&self) -> bool {
        false
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        Box::pin(std::future::ready(Ok(Self::answer(request))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    #[test]
    fn answer_is_labelled_deterministic_and_summarises_the_request() {
        let mut req = Request::new(
            "claude-x",
            100,
            vec![
                Message::user("first"),
                Message::assistant("a"),
                Message::user("why?"),
            ],
        );
        req.system = Some("You are helpful.".into());
        let a = OfflineProvider::answer(&req);
        let b = OfflineProvider::answer(&req);
        assert_eq!(a, b);
        assert!(
            a.text
                .starts_with("[offline] model=claude-x system=16 chars messages=3"),
            "{}",
            a.text
        );
        assert!(
            a.text.ends_with("last user message: \"why?\""),
            "{}",
            a.text
        );
        assert!(a.usage.input_tokens > 0 && a.usage.output_tokens > 0);
    }

    #[test]
    fn long_messages_are_quoted_in_part() {
        let req = Request::new("m", 10, vec![Message::user("x".repeat(1000))]);
        let a = OfflineProvider::answer(&req);
        assert!(a.text.ends_with('…'));
        assert!(a.text.len() < 400);
        assert_eq!(
            a.usage.output_tokens, 10,
            "output tokens never exceed max_tokens"
        );
    }
}
