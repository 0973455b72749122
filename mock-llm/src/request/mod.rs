//! A Messages request, parsed and checked as the API checks it. Every refusal is the
//! message of a 400 `invalid_request_error`, starting with the path of the field at
//! fault (`messages.2.content.0.source.data: …`).
//!
//! What is checked is listed in the crate docs.

mod blocks;

use crate::prompt_cache::{Item, Ttl};
use blocks::{Block, Kind, Place, Role, Turn, check_thinking_leads, check_tool_pairs, parse_block};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The most `cache_control` breakpoints of one request.
pub(crate) const MAX_BREAKPOINTS: usize = 4;
/// The smallest `thinking.budget_tokens`.
pub(crate) const MIN_THINKING_BUDGET: u64 = 1024;

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToolChoice<'a> {
    Auto,
    Any,
    None,
    Tool(&'a str),
}

/// One tool definition.
#[derive(Debug)]
pub(crate) struct Tool<'a> {
    pub(crate) name: &'a str,
    pub(crate) input_schema: &'a Value,
}

/// The last user message, as the default answer sees it.
#[derive(Debug, Default)]
pub(crate) struct LastUser {
    /// Its text blocks and the text of its tool results, concatenated.
    pub(crate) text: String,
    /// Whether it holds a tool result.
    pub(crate) has_tool_result: bool,
}

/// A checked request.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub(crate) model: &'a str,
    pub(crate) max_tokens: u64,
    pub(crate) messages: usize,
    /// The system prompt's text (blocks concatenated).
    pub(crate) system: String,
    pub(crate) last_user: LastUser,
    pub(crate) tools: Vec<Tool<'a>>,
    pub(crate) tool_choice: ToolChoice<'a>,
    /// Thinking `enabled` or `adaptive`.
    pub(crate) thinking: bool,
    /// `output_config.format.schema`.
    pub(crate) format: Option<&'a Value>,
    pub(crate) stop_sequences: Vec<&'a str>,
    /// Every tool, system block and message block, in the API's order.
    pub(crate) items: Vec<Item<'a>>,
    /// The `data` of every `redacted_thinking` block, with its path.
    pub(crate) redacted: Vec<(String, &'a str)>,
}

impl Parsed<'_> {
    /// The bytes the request counts for in input tokens.
    pub(crate) fn input_bytes(&self) -> usize {
        self.items.iter().map(|i| i.bytes).sum()
    }
}

/// Parses and checks a request body.
pub(crate) fn parse(request: &Value) -> Result<Parsed<'_>, String> {
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
    let mut items = Vec::new();
    let tools = parse_tools(request.get("tools"), &mut items)?;
    let tool_choice = parse_tool_choice(request.get("tool_choice"), &tools)?;
    let system = parse_system(request.get("system"), &mut items)?;
    let thinking = parse_thinking(request.get("thinking"), max_tokens)?;
    let format = parse_output_config(request.get("output_config"))?;
    if thinking {
        if matches!(tool_choice, ToolChoice::Any | ToolChoice::Tool(_)) {
            return Err(
                "tool_choice: thinking may not be enabled when tool_choice forces tool use".into(),
            );
        }
        if request
            .get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t != 1.0)
        {
            return Err("temperature: may only be set to 1 when thinking is enabled".into());
        }
        if request.get("top_k").is_some_and(|k| !k.is_null()) {
            return Err("top_k: may not be set when thinking is enabled".into());
        }
    }

    let mut turns = Vec::with_capacity(messages.len());
    let mut redacted = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages.{i}");
        let m = object(m, &path)?;
        only_keys(m, &["role", "content"], &path)?;
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => return Err(format!("{path}.role: unexpected value {other:?}")),
            None => return Err(format!("{path}.role: field required")),
        };
        let blocks = match m.get("content") {
            Some(content @ Value::String(s)) => {
                items.push(Item {
                    place: role.name(),
                    raw: content,
                    bytes: s.len(),
                    breakpoint: None,
                });
                vec![Block {
                    kind: Kind::Text(s),
                    bytes: s.len(),
                    breakpoint: None,
                }]
            }
            Some(Value::Array(list)) => {
                let mut blocks = Vec::with_capacity(list.len());
                for (j, raw) in list.iter().enumerate() {
                    let path = format!("{path}.content.{j}");
                    let block = parse_block(raw, &path, Place::Message(role))?;
                    if let Kind::RedactedThinking(data) = block.kind {
                        redacted.push((format!("{path}.data"), data));
                    }
                    items.push(Item {
                        place: role.name(),
                        raw,
                        bytes: block.bytes,
                        breakpoint: block.breakpoint,
                    });
                    blocks.push(block);
                }
                blocks
            }
            _ => {
                return Err(format!(
                    "{path}.content: field required (a string or a list of content blocks)"
                ));
            }
        };
        turns.push(Turn { role, blocks });
    }
    check_tool_pairs(&turns, tools.is_empty())?;
    if thinking {
        check_thinking_leads(&turns)?;
    }
    check_breakpoints(&items)?;

    let last_user = turns
        .iter()
        .rev()
        .find(|t| t.role == Role::User)
        .map(|t| {
            let mut last = LastUser::default();
            for b in &t.blocks {
                match &b.kind {
                    Kind::Text(text) => last.text.push_str(text),
                    Kind::ToolResult { text, .. } => {
                        last.text.push_str(text);
                        last.has_tool_result = true;
                    }
                    _ => {}
                }
            }
            last
        })
        .unwrap_or_default();
    let stop_sequences = request
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Ok(Parsed {
        model,
        max_tokens,
        messages: messages.len(),
        system,
        last_user,
        tools,
        tool_choice,
        thinking,
        format,
        stop_sequences,
        items,
        redacted,
    })
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{path}: must be an object"))
}

/// Refuses fields the API does not know, as it does.
fn only_keys(m: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), String> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{path}.{k}: Extra inputs are not permitted")),
        None => Ok(()),
    }
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, String> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{path}.{key}: must be a string")),
        None => Err(format!("{path}.{key}: field required")),
    }
}

fn optional_bool(m: &Map<String, Value>, key: &str, path: &str) -> Result<(), String> {
    match m.get(key) {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(format!("{path}.{key}: must be a boolean")),
    }
}

fn cache_control(m: &Map<String, Value>, path: &str) -> Result<Option<Ttl>, String> {
    let Some(cc) = m.get("cache_control") else {
        return Ok(None);
    };
    if cc.is_null() {
        return Ok(None);
    }
    let path = format!("{path}.cache_control");
    let cc = object(cc, &path)?;
    only_keys(cc, &["type", "ttl"], &path)?;
    if string(cc, "type", &path)? != "ephemeral" {
        return Err(format!("{path}.type: must be \"ephemeral\""));
    }
    match cc.get("ttl") {
        None => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "5m" => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "1h" => Ok(Some(Ttl::OneHour)),
        Some(other) => Err(format!("{path}.ttl: must be \"5m\" or \"1h\", not {other}")),
    }
}

fn parse_tools<'a>(
    tools: Option<&'a Value>,
    items: &mut Vec<Item<'a>>,
) -> Result<Vec<Tool<'a>>, String> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("tools: must be a list".into()),
    };
    let mut names = HashSet::new();
    let mut tools = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let path = format!("tools.{i}");
        let t = object(raw, &path)?;
        only_keys(
            t,
            &[
                "type",
                "name",
                "description",
                "input_schema",
                "strict",
                "cache_control",
            ],
            &path,
        )?;
        if let Some(kind) = t.get("type")
            && kind.as_str() != Some("custom")
        {
            return Err(format!(
                "{path}.type: the mock serves custom tools only, not {kind}"
            ));
        }
        let name = string(t, "name", &path)?;
        let well_formed = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !well_formed {
            return Err(format!(
                "{path}.name: must match ^[a-zA-Z0-9_-]{{1,64}}$, not {name:?}"
            ));
        }
        if !names.insert(name) {
            return Err(format!("{path}.name: tool names must be unique ({name:?})"));
        }
        if t.get("description").is_some_and(|d| !d.is_string()) {
            return Err(format!("{path}.description: must be a string"));
        }
        optional_bool(t, "strict", &path)?;
        let input_schema = t
            .get("input_schema")
            .ok_or(format!("{path}.input_schema: field required"))?;
        let schema = object(input_schema, &format!("{path}.input_schema"))?;
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!("{path}.input_schema.type: must be \"object\""));
        }
        let breakpoint = cache_control(t, &path)?;
        let bytes = if breakpoint.is_some() {
            let mut plain = t.clone();
            plain.remove("cache_control");
            Value::Object(plain).to_string().len()
        } else {
            raw.to_string().len()
        };
        items.push(Item {
            place: "tool",
            raw,
            bytes,
            breakpoint,
        });
        tools.push(Tool { name, input_schema });
    }
    Ok(tools)
}

fn parse_tool_choice<'a>(
    choice: Option<&'a Value>,
    tools: &[Tool<'_>],
) -> Result<ToolChoice<'a>, String> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(ToolChoice::Auto);
    };
    let path = "tool_choice";
    let c = object(choice, path)?;
    only_keys(c, &["type", "name", "disable_parallel_tool_use"], path)?;
    optional_bool(c, "disable_parallel_tool_use", path)?;
    let choice = match string(c, "type", path)? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Any,
        "none" => ToolChoice::None,
        "tool" => {
            let name = string(c, "name", path)?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(format!("{path}.name: no tool named {name:?} in tools"));
            }
            ToolChoice::Tool(name)
        }
        other => {
            return Err(format!(
                "{path}.type: must be auto, any, none or tool, not {other:?}"
            ));
        }
    };
    if tools.is_empty() && choice != ToolChoice::None {
        return Err(format!(
            "{path}: may only be specified while providing tools"
        ));
    }
    Ok(choice)
}

fn parse_system<'a>(
    system: Option<&'a Value>,
    items: &mut Vec<Item<'a>>,
) -> Result<String, String> {
    match system {
        None | Some(Value::Null) => Ok(String::new()),
        Some(raw @ Value::String(s)) => {
            items.push(Item {
                place: "system",
                raw,
                bytes: s.len(),
                breakpoint: None,
            });
            Ok(s.clone())
        }
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (i, raw) in blocks.iter().enumerate() {
                let path = format!("system.{i}");
                let b = object(raw, &path)?;
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(format!("{path}.type: system blocks must be text blocks"));
                }
                only_keys(b, &["type", "text", "cache_control", "citations"], &path)?;
                let t = string(b, "text", &path)?;
                if t.trim().is_empty() {
                    return Err(format!(
                        "{path}.text: text content blocks must contain non-whitespace text"
                    ));
                }
                text.push_str(t);
                items.push(Item {
                    place: "system",
                    raw,
                    bytes: t.len(),
                    breakpoint: cache_control(b, &path)?,
                });
            }
            Ok(text)
        }
        Some(_) => Err("system: must be a string or a list of text blocks".into()),
    }
}

/// Whether thinking is on.
fn parse_thinking(thinking: Option<&Value>, max_tokens: u64) -> Result<bool, String> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else {
        return Ok(false);
    };
    let path = "thinking";
    let t = object(thinking, path)?;
    match string(t, "type", path)? {
        "enabled" => {
            only_keys(t, &["type", "budget_tokens"], path)?;
            let budget = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or("thinking.budget_tokens: field required (an integer)")?;
            if budget < MIN_THINKING_BUDGET {
                return Err(format!(
                    "thinking.budget_tokens: must be at least {MIN_THINKING_BUDGET}, not {budget}"
                ));
            }
            if budget >= max_tokens {
                return Err(format!(
                    "thinking.budget_tokens: must be less than max_tokens ({budget} >= {max_tokens})"
                ));
            }
            Ok(true)
        }
        "adaptive" => {
            only_keys(t, &["type"], path)?;
            Ok(true)
        }
        "disabled" => {
            only_keys(t, &["type"], path)?;
            Ok(false)
        }
        other => Err(format!(
            "thinking.type: must be enabled, adaptive or disabled, not {other:?}"
        )),
    }
}

/// The schema of structured output, if asked for.
fn parse_output_config(config: Option<&Value>) -> Result<Option<&Value>, String> {
    let Some(config) = config.filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let path = "output_config";
    let c = object(config, path)?;
    only_keys(c, &["effort", "format"], path)?;
    if let Some(effort) = c.get("effort")
        && !matches!(effort.as_str(), Some("low" | "medium" | "high" | "max"))
    {
        return Err(format!(
            "output_config.effort: must be low, medium, high or max, not {effort}"
        ));
    }
    let Some(format) = c.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let path = "output_config.format";
    let f = object(format, path)?;
    only_keys(f, &["type", "schema"], path)?;
    let kind = string(f, "type", path)?;
    if kind != "json_schema" {
        return Err(format!(
            "{path}.type: must be \"json_schema\", not {kind:?}"
        ));
    }
    let schema = f
        .get("schema")
        .filter(|s| s.is_object())
        .ok_or(format!("{path}.schema: must be an object"))?;
    Ok(Some(schema))
}

fn check_breakpoints(items: &[Item<'_>]) -> Result<(), String> {
    let ttls: Vec<Ttl> = items.iter().filter_map(|i| i.breakpoint).collect();
    if ttls.len() > MAX_BREAKPOINTS {
        return Err(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {}.",
            ttls.len()
        ));
    }
    if ttls
        .windows(2)
        .any(|w| w[0] == Ttl::FiveMinutes && w[1] == Ttl::OneHour)
    {
        return Err(
            "cache_control: a ttl=\"1h\" breakpoint may not come after a ttl=\"5m\" one".into(),
        );
    }
    Ok(())
}

/// The server's refusal of `request`, for the tests of its checks; a request it
/// accepts fails the test.
#[cfg(test)]
pub(crate) fn refusal(request: Value) -> String {
    match parse(&request) {
        Ok(_) => panic!("accepted: {request}"),
        Err(message) => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thinking_settings_are_checked() {
        let base = |thinking: Value, extra: Value| {
            let mut r = json!({"model": "m", "max_tokens": 2000, "thinking": thinking,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "t", "input_schema": {"type": "object"}}]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            r
        };
        let enabled = |budget: u64| json!({"type": "enabled", "budget_tokens": budget});
        assert!(parse(&base(enabled(1024), json!({}))).unwrap().thinking);
        assert!(
            parse(&base(json!({"type": "adaptive"}), json!({})))
                .unwrap()
                .thinking
        );
        assert!(
            !parse(&base(json!({"type": "disabled"}), json!({})))
                .unwrap()
                .thinking
        );
        assert!(refusal(base(enabled(1023), json!({}))).contains("at least 1024"));
        assert!(refusal(base(enabled(2000), json!({}))).contains("less than max_tokens"));
        assert!(
            refusal(base(enabled(1024), json!({"tool_choice": {"type": "any"}})))
                .contains("forces tool use")
        );
        assert!(
            refusal(base(enabled(1024), json!({"temperature": 0.5}))).starts_with("temperature")
        );
        assert!(parse(&base(enabled(1024), json!({"temperature": 1.0}))).is_ok());
        assert!(
            refusal(base(json!({"type": "sometimes"}), json!({}))).starts_with("thinking.type")
        );
    }

    #[test]
    fn tools_tool_choice_and_output_config_are_checked() {
        let r = |extra: Value| {
            let mut r = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            r
        };
        let tool = |name: &str| json!({"name": name, "input_schema": {"type": "object"}});
        assert!(refusal(r(json!({"tools": [tool("a b")]}))).contains("must match"));
        assert!(refusal(r(json!({"tools": [tool("a"), tool("a")]}))).contains("unique"));
        assert!(
            refusal(r(json!({"tools": [{"name": "a"}]}))).contains("input_schema: field required")
        );
        assert!(
            refusal(r(
                json!({"tools": [{"name": "a", "input_schema": {"type": "string"}}]})
            ))
            .contains("\"object\"")
        );
        assert!(
            refusal(r(
                json!({"tools": [{"name": "a", "input_schema": {"type": "object"}, "color": 1}]})
            ))
            .contains("tools.0.color: Extra inputs")
        );
        assert!(
            refusal(r(
                json!({"tools": [tool("a")], "tool_choice": {"type": "tool", "name": "b"}})
            ))
            .contains("no tool named")
        );
        assert!(refusal(r(json!({"tool_choice": {"type": "auto"}}))).contains("providing tools"));
        assert_eq!(
            parse(&r(json!({"tools": [tool("a"), tool("b")], "tool_choice": {"type": "tool", "name": "b", "disable_parallel_tool_use": true}}))).unwrap().tool_choice,
            ToolChoice::Tool("b")
        );
        assert!(refusal(r(json!({"output_config": {"effort": "extreme"}}))).contains("effort"));
        assert!(
            refusal(r(
                json!({"output_config": {"format": {"type": "json_schema"}}})
            ))
            .contains("schema: must be an object")
        );
        let schema = json!({"type": "object"});
        let ok = r(
            json!({"output_config": {"effort": "max", "format": {"type": "json_schema", "schema": schema}}}),
        );
        assert_eq!(parse(&ok).unwrap().format, Some(&schema));
    }

    #[test]
    fn breakpoints_are_counted_and_ordered_and_media_counted_by_their_data() {
        let cc = |ttl: &str| json!({"type": "ephemeral", "ttl": ttl});
        let text = |ttl: &str| json!({"type": "text", "text": "t", "cache_control": cc(ttl)});
        let four = json!({"model": "m", "max_tokens": 10, "system": [text("1h")],
            "messages": [{"role": "user", "content": [text("1h"), text("5m"), text("5m")]}]});
        assert_eq!(
            parse(&four)
                .unwrap()
                .items
                .iter()
                .filter(|i| i.breakpoint.is_some())
                .count(),
            4
        );
        let mut five = four.clone();
        five["messages"][0]["content"]
            .as_array_mut()
            .unwrap()
            .push(text("5m"));
        assert!(
            refusal(five)
                .contains("A maximum of 4 blocks with cache_control may be provided. Found 5.")
        );
        let disordered = json!({"model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": [text("5m"), text("1h")]}]});
        assert!(refusal(disordered).contains("may not come after"));

        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGVsbG8h"}});
        let pdf = json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="}});
        let plain = json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}});
        let ok = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [image, pdf, plain]}]});
        assert_eq!(parse(&ok).unwrap().input_bytes(), 8 + 12 + 5);
        let bad = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}]}]});
        assert_eq!(
            refusal(bad),
            "messages.0.content.0.source.data: invalid base64 data"
        );
    }
}
