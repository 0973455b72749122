//! Content blocks: each block checked for its place (a user or assistant turn, or a
//! tool result), and the checks across turns (tool calls and their results, thinking
//! leading a tool-use turn).

use super::{cache_control, object, only_keys, optional_bool, string};
use crate::prompt_cache::Ttl;
use crate::thinking::thinking_signature;
use serde_json::Value;
use std::collections::HashSet;

/// The media types of images.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// The role of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    User,
    Assistant,
}

impl Role {
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// What a content block is, as far as the checks across blocks care.
#[derive(Debug)]
pub(super) enum Kind<'a> {
    Text(&'a str),
    Media,
    ToolUse(&'a str),
    ToolResult { tool_use_id: &'a str, text: String },
    Thinking,
    RedactedThinking(&'a str),
}

impl Kind<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Kind::Text(_) => "text",
            Kind::Media => "image or document",
            Kind::ToolUse(_) => "tool_use",
            Kind::ToolResult { .. } => "tool_result",
            Kind::Thinking => "thinking",
            Kind::RedactedThinking(_) => "redacted_thinking",
        }
    }
}

/// A checked content block.
#[derive(Debug)]
pub(super) struct Block<'a> {
    pub(super) kind: Kind<'a>,
    pub(super) bytes: usize,
    pub(super) breakpoint: Option<Ttl>,
}

/// A checked message.
#[derive(Debug)]
pub(super) struct Turn<'a> {
    pub(super) role: Role,
    pub(super) blocks: Vec<Block<'a>>,
}

/// Where a content block is: in a message of some role, or inside a tool result.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    Message(Role),
    ToolResult,
}

fn is_base64(data: &str) -> bool {
    let bytes = data.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return false;
    }
    let body = data.trim_end_matches('=');
    bytes.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Checks a `source` and returns the bytes its data count for.
fn parse_source(source: Option<&Value>, path: &str, image: bool) -> Result<usize, String> {
    let path = format!("{path}.source");
    let source = object(source.ok_or(format!("{path}: field required"))?, &path)?;
    only_keys(source, &["type", "media_type", "data"], &path)?;
    let kind = string(source, "type", &path)?;
    let media_type = string(source, "media_type", &path)?;
    let data = string(source, "data", &path)?;
    match (kind, image) {
        ("base64", true) if !IMAGE_TYPES.contains(&media_type) => Err(format!(
            "{path}.media_type: must be one of {IMAGE_TYPES:?}, not {media_type:?}"
        )),
        ("base64", false) if media_type != "application/pdf" => Err(format!(
            "{path}.media_type: a base64 document must be \"application/pdf\", not {media_type:?}"
        )),
        ("base64", _) if !is_base64(data) => Err(format!("{path}.data: invalid base64 data")),
        ("base64", _) => Ok(data.len()),
        ("text", false) if media_type != "text/plain" => Err(format!(
            "{path}.media_type: a text document must be \"text/plain\", not {media_type:?}"
        )),
        ("text", false) => Ok(data.len()),
        (other, _) => Err(format!(
            "{path}.type: unsupported source type {other:?} (the mock takes base64{})",
            if image { "" } else { " and text" }
        )),
    }
}

pub(super) fn parse_block<'a>(
    raw: &'a Value,
    path: &str,
    place: Place,
) -> Result<Block<'a>, String> {
    let b = object(raw, path)?;
    let kind = string(b, "type", path)?;
    let allowed_here = match place {
        Place::ToolResult => matches!(kind, "text" | "image"),
        Place::Message(Role::User) => {
            !matches!(kind, "tool_use" | "thinking" | "redacted_thinking")
        }
        Place::Message(Role::Assistant) => kind != "tool_result",
    };
    let known = matches!(
        kind,
        "text"
            | "image"
            | "document"
            | "tool_use"
            | "tool_result"
            | "thinking"
            | "redacted_thinking"
    );
    if !known {
        return Err(format!("{path}.type: unknown content block type {kind:?}"));
    }
    if !allowed_here {
        let here = match place {
            Place::ToolResult => "tool_result content".to_owned(),
            Place::Message(role) => format!("a {} message", role.name()),
        };
        return Err(format!(
            "{path}.type: a {kind} block is not allowed in {here}"
        ));
    }
    let (kind, bytes) = match kind {
        "text" => {
            only_keys(b, &["type", "text", "cache_control", "citations"], path)?;
            let text = string(b, "text", path)?;
            if text.trim().is_empty() {
                return Err(format!(
                    "{path}.text: text content blocks must contain non-whitespace text"
                ));
            }
            (Kind::Text(text), text.len())
        }
        "image" => {
            only_keys(b, &["type", "source", "cache_control"], path)?;
            (Kind::Media, parse_source(b.get("source"), path, true)?)
        }
        "document" => {
            only_keys(
                b,
                &[
                    "type",
                    "source",
                    "title",
                    "context",
                    "citations",
                    "cache_control",
                ],
                path,
            )?;
            (Kind::Media, parse_source(b.get("source"), path, false)?)
        }
        "tool_use" => {
            only_keys(b, &["type", "id", "name", "input", "cache_control"], path)?;
            let id = string(b, "id", path)?;
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                return Err(format!("{path}.id: must match ^[a-zA-Z0-9_-]+$"));
            }
            let name = string(b, "name", path)?;
            let input = b
                .get("input")
                .filter(|i| i.is_object())
                .ok_or(format!("{path}.input: must be an object"))?;
            (Kind::ToolUse(id), name.len() + input.to_string().len())
        }
        "tool_result" => {
            only_keys(
                b,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ],
                path,
            )?;
            let tool_use_id = string(b, "tool_use_id", path)?;
            optional_bool(b, "is_error", path)?;
            let (text, bytes) = match b.get("content") {
                None => (String::new(), 0),
                Some(Value::String(s)) => (s.clone(), s.len()),
                Some(Value::Array(list)) => {
                    let (mut text, mut bytes) = (String::new(), 0);
                    for (k, inner) in list.iter().enumerate() {
                        let inner_path = format!("{path}.content.{k}");
                        let block = parse_block(inner, &inner_path, Place::ToolResult)?;
                        if block.breakpoint.is_some() {
                            return Err(format!(
                                "{inner_path}.cache_control: put the breakpoint on the tool_result block"
                            ));
                        }
                        if let Kind::Text(t) = block.kind {
                            text.push_str(t);
                        }
                        bytes += block.bytes;
                    }
                    (text, bytes)
                }
                Some(_) => {
                    return Err(format!(
                        "{path}.content: must be a string or a list of text and image blocks"
                    ));
                }
            };
            (Kind::ToolResult { tool_use_id, text }, bytes)
        }
        "thinking" => {
            only_keys(b, &["type", "thinking", "signature"], path)?;
            let thinking = string(b, "thinking", path)?;
            let signature = string(b, "signature", path)?;
            if signature != thinking_signature(thinking) {
                return Err(format!(
                    "{path}.signature: thinking block signature does not match (thinking blocks must be sent back unchanged)"
                ));
            }
            // The API strips thinking of earlier turns from the context: no tokens.
            (Kind::Thinking, 0)
        }
        _ => {
            only_keys(b, &["type", "data"], path)?;
            (Kind::RedactedThinking(string(b, "data", path)?), 0)
        }
    };
    Ok(Block {
        kind,
        bytes,
        breakpoint: cache_control(b, path)?,
    })
}

/// Tool results answer the calls of the assistant turn just before them, all of them.
pub(super) fn check_tool_pairs(turns: &[Turn<'_>], no_tools: bool) -> Result<(), String> {
    let mut ids = HashSet::new();
    let mut calls: Vec<&str> = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        let mut answered: Vec<&str> = Vec::new();
        let mut other_before = false;
        for (j, block) in turn.blocks.iter().enumerate() {
            match &block.kind {
                Kind::ToolUse(id) => {
                    if no_tools {
                        return Err(format!(
                            "messages.{i}.content.{j}: requests which include tool_use or tool_result blocks must define tools"
                        ));
                    }
                    if !ids.insert(*id) {
                        return Err(format!(
                            "messages.{i}.content.{j}.id: tool_use ids must be unique ({id:?})"
                        ));
                    }
                }
                Kind::ToolResult { tool_use_id, .. } => {
                    if no_tools {
                        return Err(format!(
                            "messages.{i}.content.{j}: requests which include tool_use or tool_result blocks must define tools"
                        ));
                    }
                    if !calls.contains(tool_use_id) {
                        return Err(format!(
                            "messages.{i}.content.{j}: unexpected tool_use_id found in tool_result blocks: {tool_use_id}. Each tool_result block must have a corresponding tool_use block in the previous message."
                        ));
                    }
                    if answered.contains(tool_use_id) {
                        return Err(format!(
                            "messages.{i}.content.{j}: more than one tool_result for tool_use_id {tool_use_id}"
                        ));
                    }
                    if other_before {
                        return Err(format!(
                            "messages.{i}.content.{j}: tool_result blocks must come before any other content of their message"
                        ));
                    }
                    answered.push(tool_use_id);
                }
                _ => other_before = true,
            }
        }
        if turn.role == Role::User && i > 0 {
            let missing: Vec<&str> = calls
                .iter()
                .filter(|id| !answered.contains(id))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "messages.{i}: tool_use ids were found without tool_result blocks immediately after: {}. Each tool_use block must have a corresponding tool_result block in the next message.",
                    missing.join(", ")
                ));
            }
        }
        calls = match turn.role {
            Role::Assistant => turn
                .blocks
                .iter()
                .filter_map(|b| match b.kind {
                    Kind::ToolUse(id) => Some(id),
                    _ => None,
                })
                .collect(),
            Role::User => Vec::new(),
        };
    }
    Ok(())
}

/// With thinking on, the last assistant turn that calls tools starts with thinking.
pub(super) fn check_thinking_leads(turns: &[Turn<'_>]) -> Result<(), String> {
    let Some((i, turn)) = turns
        .iter()
        .enumerate()
        .rev()
        .find(|(_, t)| t.role == Role::Assistant)
    else {
        return Ok(());
    };
    let calls_tools = turn
        .blocks
        .iter()
        .any(|b| matches!(b.kind, Kind::ToolUse(_)));
    let first = turn.blocks.first().map(|b| &b.kind);
    if calls_tools && !matches!(first, Some(Kind::Thinking | Kind::RedactedThinking(_))) {
        let found = first.map_or("nothing", Kind::type_name);
        return Err(format!(
            "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (the thinking blocks of a tool loop must be sent back unchanged)."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse, refusal};
    use serde_json::json;

    fn with_messages(messages: Value) -> Value {
        json!({"model": "m", "max_tokens": 2048, "messages": messages,
            "tools": [{"name": "t", "input_schema": {"type": "object"}}]})
    }

    #[test]
    fn base64_is_checked() {
        assert!(is_base64("aGk="));
        assert!(is_base64("aGVsbG8h"));
        assert!(!is_base64(""));
        assert!(!is_base64("aGk"), "length not a multiple of 4");
        assert!(!is_base64("a===") && is_base64("aa=="));
        assert!(!is_base64("aG!="));
        assert!(!is_base64("a=Gk"), "padding inside");
    }

    #[test]
    fn blocks_of_the_wrong_role_are_refused() {
        let m = refusal(with_messages(json!([{"role": "user", "content": [
            {"type": "tool_use", "id": "a", "name": "t", "input": {}}]}])));
        assert!(m.contains("not allowed in a user message"), "{m}");
        let m = refusal(with_messages(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]}])));
        assert!(m.starts_with("messages.1.content.0.type"), "{m}");
    }

    #[test]
    fn tool_results_must_answer_every_call_of_the_previous_turn_first() {
        let call = |ids: &[&str]| {
            json!({"role": "assistant", "content": ids.iter()
                .map(|id| json!({"type": "tool_use", "id": id, "name": "t", "input": {}}))
                .collect::<Vec<_>>()})
        };
        let result = |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "r"});
        let ok = with_messages(json!([{"role": "user", "content": "go"}, call(&["a", "b"]),
            {"role": "user", "content": [result("a"), result("b"), {"type": "text", "text": "and?"}]}]));
        assert!(parse(&ok).is_ok());
        let m = refusal(with_messages(
            json!([{"role": "user", "content": "go"}, call(&["a", "b"]),
            {"role": "user", "content": [result("a")]}]),
        ));
        assert!(
            m.contains("without tool_result blocks immediately after: b"),
            "{m}"
        );
        let m = refusal(with_messages(
            json!([{"role": "user", "content": "go"}, call(&["a"]),
            {"role": "user", "content": [{"type": "text", "text": "first"}, result("a")]}]),
        ));
        assert!(m.contains("must come before"), "{m}");
        let m = refusal(with_messages(
            json!([{"role": "user", "content": "go"}, call(&["a"]),
            {"role": "user", "content": [result("a")]}, call(&["a"]),
            {"role": "user", "content": [result("a")]}]),
        ));
        assert!(m.contains("unique"), "{m}");
        let mut no_tools = with_messages(json!([{"role": "user", "content": "go"}, call(&["a"]),
            {"role": "user", "content": [result("a")]}]));
        no_tools.as_object_mut().unwrap().remove("tools");
        assert!(refusal(no_tools).contains("must define tools"));
    }
}
