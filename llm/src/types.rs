//! Request, response and error types of a model call, independent of any wire format.

use crate::content::{CacheTtl, Content, ContentBlock, Effort, System, Thinking, Tool, ToolChoice};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Who spoke a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The human side: the task and instructions.
    User,
    /// The model's side; a final assistant message is a prefill.
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Who spoke.
    pub role: Role,
    /// The turn's content: text, or blocks (contract 0.2).
    pub content: Content,
}

impl Message {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: Content::Text(content.into()),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: Content::Text(content.into()),
        }
    }

    /// Every text of the turn (text blocks only), concatenated.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        self.content.text()
    }
}

/// Token counts. `input_tokens` excludes cache tokens (the Anthropic convention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the full price.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Of `cache_creation_input_tokens`, those written with the 1-hour TTL (the rest
    /// had the 5-minute TTL).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_creation_1h_input_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// All input tokens, cache tokens included. Counts come from the provider's
    /// answer, so sums saturate at `u64::MAX` rather than overflow.
    pub fn total_input(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    /// All tokens, input and output (saturating).
    pub fn total(&self) -> u64 {
        self.total_input().saturating_add(self.output_tokens)
    }

    /// Adds another call's usage to this one (saturating).
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
        self.cache_creation_1h_input_tokens = self
            .cache_creation_1h_input_tokens
            .saturating_add(other.cache_creation_1h_input_tokens);
    }

    /// Cache writes with the 5-minute TTL: the writes that are not 1-hour writes.
    pub fn cache_creation_5m_input_tokens(&self) -> u64 {
        self.cache_creation_input_tokens
            .saturating_sub(self.cache_creation_1h_input_tokens)
    }
}

/// How one request uses the host's response cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Read; on a miss call and store a successful answer.
    #[default]
    Normal,
    /// Neither read nor write.
    Bypass,
    /// Skip the read, call, store.
    Refresh,
    /// Read; on a miss call but store nothing.
    ReadOnly,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Finished its turn.
    EndTurn,
    /// Reached `max_tokens`: the answer is cut off.
    MaxTokens,
    /// Produced a stop sequence (the sequence, empty when unknown).
    StopSequence(String),
    /// Asked to use a tool.
    ToolUse,
    /// Paused a long turn.
    PauseTurn,
    /// Declined to answer.
    Refusal,
    /// The conversation no longer fits the context window.
    ModelContextWindowExceeded,
    /// Any other reason, as sent.
    Other(String),
}

impl StopReason {
    /// Maps the wire value of `stop_reason` (and `stop_sequence`) to a reason.
    pub fn from_wire(reason: &str, stop_sequence: Option<&str>) -> Self {
        match reason {
            "end_turn" => Self::EndTurn,
            "max_tokens" => Self::MaxTokens,
            "stop_sequence" => Self::StopSequence(stop_sequence.unwrap_or_default().to_owned()),
            "tool_use" => Self::ToolUse,
            "pause_turn" => Self::PauseTurn,
            "refusal" => Self::Refusal,
            "model_context_window_exceeded" => Self::ModelContextWindowExceeded,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire value of this reason.
    pub fn as_wire(&self) -> &str {
        match self {
            Self::EndTurn => "end_turn",
            Self::MaxTokens => "max_tokens",
            Self::StopSequence(_) => "stop_sequence",
            Self::ToolUse => "tool_use",
            Self::PauseTurn => "pause_turn",
            Self::Refusal => "refusal",
            Self::ModelContextWindowExceeded => "model_context_window_exceeded",
            Self::Other(other) => other,
        }
    }
}

/// A fully resolved request: every default has been applied by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The model id.
    pub model: String,
    /// The most tokens the answer may have (≥ 1).
    pub max_tokens: u32,
    /// The system prompt; `None` sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Sampling temperature in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-K sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    /// `metadata.user_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Tools the model may ask to use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// Which tool the model must use; `None`: the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// At most one tool use per turn.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_parallel_tool_use: bool,
    /// Extended thinking; `None`: not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
    /// Effort; `None`: not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    /// Structured output: a JSON Schema (a JSON object, as text) the answer matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<String>,
}

/// The images and PDFs of a request ([`Request::media`]): what the host's caps and the
/// budget's worst case count apart from text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Media {
    /// Images, in messages and tool results.
    pub images: usize,
    /// Their bytes (encoded, not base64).
    pub image_bytes: usize,
    /// The bytes of the largest one.
    pub largest_image: usize,
    /// Bytes of PDF documents.
    pub pdf_bytes: usize,
}

impl Media {
    /// Bytes of images and PDFs together.
    pub fn bytes(&self) -> usize {
        self.image_bytes + self.pdf_bytes
    }

    fn add_image(&mut self, image: &crate::content::Image) {
        self.images += 1;
        self.image_bytes += image.data.len();
        self.largest_image = self.largest_image.max(image.data.len());
    }
}

/// The most prompt-cache breakpoints one request may carry (the API's limit).
pub const MAX_CACHE_BREAKPOINTS: usize = 4;

/// The smallest thinking budget the API accepts.
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// Whether `name` is a valid tool name: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `text` is a JSON object.
fn is_json_object(text: &str) -> bool {
    // Checked on every call (a schema, a tool's input) without building the value: the
    // kind by the first character (JSON's own whitespace is a subset of what
    // `trim_start` skips, and anything else before it fails the parse), the syntax
    // through `IgnoredAny`.
    text.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

impl Request {
    /// A request with the given model, token limit and messages, and nothing else set.
    pub fn new(model: impl Into<String>, max_tokens: u32, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            max_tokens,
            system: None,
            messages,
            temperature: None,
            top_p: None,
            top_k: None,
            stop_sequences: Vec::new(),
            user_id: None,
            tools: Vec::new(),
            tool_choice: None,
            disable_parallel_tool_use: false,
            thinking: None,
            effort: None,
            output_schema: None,
        }
    }

    /// The system prompt's text (every block's, concatenated), if there is one.
    pub fn system_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.system.as_ref().map(System::text)
    }

    /// The request's size in bytes of content (system, messages, tools, stop
    /// sequences, schemas; media as their decoded bytes), used by the host's payload
    /// caps and token estimates.
    pub fn text_bytes(&self) -> usize {
        self.system.as_ref().map_or(0, System::bytes)
            + self
                .messages
                .iter()
                .map(|m| m.content.bytes())
                .sum::<usize>()
            + self.stop_sequences.iter().map(String::len).sum::<usize>()
            + self.user_id.as_ref().map_or(0, String::len)
            + self.model.len()
            + self
                .tools
                .iter()
                .map(|t| {
                    t.name.len()
                        + t.description.as_ref().map_or(0, String::len)
                        + t.input_schema.len()
                })
                .sum::<usize>()
            + self.output_schema.as_ref().map_or(0, String::len)
    }

    /// The request's images (tool results' included) and PDFs, counted in one pass.
    pub fn media(&self) -> Media {
        let mut media = Media::default();
        let blocks = self.messages.iter().filter_map(|m| match &m.content {
            Content::Blocks(blocks) => Some(blocks),
            Content::Text(_) => None,
        });
        for block in blocks.flatten() {
            match block {
                ContentBlock::Image { image, .. } => media.add_image(image),
                ContentBlock::Document {
                    source: crate::content::DocumentSource::Pdf(bytes),
                    ..
                } => media.pdf_bytes += bytes.len(),
                ContentBlock::ToolResult { content, .. } => {
                    for c in content {
                        if let crate::content::ToolResultContent::Image(image) = c {
                            media.add_image(image);
                        }
                    }
                }
                _ => {}
            }
        }
        media
    }

    /// The request's prompt-cache breakpoints, in the API's order (tools, system,
    /// messages), as TTLs.
    pub fn cache_breakpoints(&self) -> Vec<CacheTtl> {
        let tools = self.tools.iter().filter_map(|t| t.cache_control);
        let system = match &self.system {
            Some(System::Blocks(blocks)) => blocks.iter().filter_map(|b| b.cache_control).collect(),
            _ => Vec::new(),
        };
        let messages = self.messages.iter().flat_map(|m| match &m.content {
            Content::Blocks(blocks) => blocks
                .iter()
                .filter_map(ContentBlock::cache_control)
                .collect(),
            Content::Text(_) => Vec::new(),
        });
        tools.chain(system).chain(messages).map(|c| c.ttl).collect()
    }

    /// Checks what the API would refuse anyway, so that a bad request never leaves
    /// the host.
    pub fn validate(&self) -> Result<(), LlmError> {
        let invalid = |m: &str| Err(LlmError::InvalidRequest(m.to_owned()));
        if self.model.is_empty() {
            return invalid("model must not be empty");
        }
        if self.max_tokens == 0 {
            return invalid("max_tokens must be at least 1");
        }
        match self.messages.first() {
            None => return invalid("messages must not be empty"),
            Some(first) if first.role != Role::User => {
                return invalid("the first message must be from the user");
            }
            Some(_) => {}
        }
        if self.messages.iter().any(|m| m.content.is_empty()) {
            return invalid("a message's content must not be empty");
        }
        self.validate_blocks()?;
        self.validate_tools()?;
        let breakpoints = self.cache_breakpoints();
        if breakpoints.len() > MAX_CACHE_BREAKPOINTS {
            return invalid(&format!(
                "the request has {} cache breakpoints; at most {MAX_CACHE_BREAKPOINTS} are allowed",
                breakpoints.len()
            ));
        }
        if breakpoints
            .iter()
            .skip_while(|t| **t == CacheTtl::OneHour)
            .any(|t| *t == CacheTtl::OneHour)
        {
            return invalid(
                "a 1-hour cache breakpoint must not follow a 5-minute one (tools, system, messages order)",
            );
        }
        if matches!(
            self.thinking,
            Some(Thinking::Enabled { .. } | Thinking::Adaptive)
        ) {
            if matches!(
                self.tool_choice,
                Some(ToolChoice::Any | ToolChoice::Tool(_))
            ) {
                return invalid("with thinking on, the tool choice may only be auto or none");
            }
            if self.temperature.is_some_and(|t| t != 1.0) {
                return invalid("with thinking on, temperature must be 1 or unset");
            }
            if self.top_k.is_some() {
                return invalid("with thinking on, top_k must be unset");
            }
        }
        if let Some(Thinking::Enabled { budget_tokens }) = self.thinking {
            if budget_tokens < MIN_THINKING_BUDGET {
                return invalid(&format!(
                    "the thinking budget {budget_tokens} is below the minimum of {MIN_THINKING_BUDGET} tokens"
                ));
            }
            if budget_tokens >= self.max_tokens {
                return invalid(&format!(
                    "the thinking budget {budget_tokens} must be below max_tokens ({})",
                    self.max_tokens
                ));
            }
        }
        if let Some(schema) = &self.output_schema
            && !is_json_object(schema)
        {
            return invalid("the output schema must be a JSON object");
        }
        if let Some(t) = self.temperature
            && !(0.0..=1.0).contains(&t)
        {
            return invalid(&format!("temperature {t} is outside [0, 1]"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return invalid(&format!("top_p {p} is outside (0, 1]"));
        }
        Ok(())
    }
}

impl Request {
    /// Blocks the API would refuse: empty texts, tool uses whose input is not a JSON
    /// object, tool results that answer no tool use of the previous assistant turn.
    fn validate_blocks(&self) -> Result<(), LlmError> {
        let invalid = |m: String| Err(LlmError::InvalidRequest(m));
        if let Some(System::Blocks(blocks)) = &self.system
            && blocks.iter().any(|b| b.text.is_empty())
        {
            return invalid("a system text block must not be empty".into());
        }
        let mut previous_uses: Vec<&str> = Vec::new();
        for (i, message) in self.messages.iter().enumerate() {
            let Content::Blocks(blocks) = &message.content else {
                if !previous_uses.is_empty() {
                    return invalid(format!(
                        "message {i}: the tool uses of the previous assistant turn have no results"
                    ));
                }
                continue;
            };
            // The API wants every tool use answered in the next turn, results first.
            let answered: Vec<&str> = blocks
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolResult { tool_use_id, .. } => Some(tool_use_id.as_str()),
                    _ => None,
                })
                .collect();
            if let Some(missing) = previous_uses.iter().find(|id| !answered.contains(id)) {
                return invalid(format!(
                    "message {i}: tool use {missing:?} of the previous assistant turn has no result"
                ));
            }
            if blocks
                .iter()
                .skip_while(|b| matches!(b, ContentBlock::ToolResult { .. }))
                .any(|b| matches!(b, ContentBlock::ToolResult { .. }))
            {
                return invalid(format!(
                    "message {i}: tool results must come before any other block of the turn"
                ));
            }
            let mut uses = Vec::new();
            for block in blocks {
                match block {
                    ContentBlock::Text { text, .. } if text.trim().is_empty() => {
                        return invalid(format!(
                            "message {i}: a text block must not be empty or only whitespace"
                        ));
                    }
                    ContentBlock::ToolUse { id, name, input } => {
                        if message.role != Role::Assistant {
                            return invalid(format!(
                                "message {i}: tool_use blocks belong to assistant turns"
                            ));
                        }
                        if !is_json_object(input) {
                            return invalid(format!(
                                "message {i}: the input of tool use {id:?} ({name}) is not a JSON object"
                            ));
                        }
                        if uses.contains(&id.as_str()) {
                            return invalid(format!(
                                "message {i}: the tool use id {id:?} is used twice"
                            ));
                        }
                        uses.push(id.as_str());
                    }
                    ContentBlock::ToolResult {
                        tool_use_id,
                        content,
                        ..
                    } => {
                        if content.iter().any(|c| {
                            matches!(c, crate::content::ToolResultContent::Text(t) if t.trim().is_empty())
                        }) {
                            return invalid(format!(
                                "message {i}: a tool result's text must not be empty or only whitespace (send no content instead)"
                            ));
                        }
                        if message.role != Role::User {
                            return invalid(format!(
                                "message {i}: tool_result blocks belong to user turns"
                            ));
                        }
                        if !previous_uses.contains(&tool_use_id.as_str()) {
                            return invalid(format!(
                                "message {i}: the tool result for {tool_use_id:?} answers no tool use of the previous assistant turn"
                            ));
                        }
                    }
                    ContentBlock::Document {
                        source: crate::content::DocumentSource::PlainText(t),
                        ..
                    } if t.is_empty() => {
                        return invalid(format!("message {i}: a text document must not be empty"));
                    }
                    _ => {}
                }
            }
            previous_uses = uses;
        }
        Ok(())
    }

    /// Tool names, schemas and the tool choice.
    fn validate_tools(&self) -> Result<(), LlmError> {
        let invalid = |m: String| Err(LlmError::InvalidRequest(m));
        let mut names = std::collections::HashSet::new();
        for tool in &self.tools {
            if !valid_tool_name(&tool.name) {
                return invalid(format!(
                    "the tool name {:?} does not match ^[a-zA-Z0-9_-]{{1,64}}$",
                    crate::wire::truncate_chars(&tool.name, 80)
                ));
            }
            if !names.insert(tool.name.as_str()) {
                return invalid(format!("the tool name {:?} is used twice", tool.name));
            }
            if !is_json_object(&tool.input_schema) {
                return invalid(format!(
                    "the input schema of tool {:?} is not a JSON object",
                    tool.name
                ));
            }
        }
        match &self.tool_choice {
            Some(ToolChoice::Auto | ToolChoice::Any) if self.tools.is_empty() => {
                invalid("a tool choice other than `none` needs at least one tool".into())
            }
            Some(ToolChoice::Tool(name)) if !names.contains(name.as_str()) => invalid(format!(
                "tool choice names {:?}, which is not one of the request's tools",
                crate::wire::truncate_chars(name, 80)
            )),
            _ if self.disable_parallel_tool_use && self.tools.is_empty() => {
                invalid("disable_parallel_tool_use needs tools".into())
            }
            _ => Ok(()),
        }
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The provider's id of the answer.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// The answer's blocks, in order; empty when the answer is one text block (then
    /// [`text`](Self::text) is all of it), as for answers cached before blocks were
    /// kept. Read them through [`Response::blocks`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentBlock>,
    /// All text blocks, concatenated.
    pub text: String,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// Tokens of this call.
    pub usage: Usage,
}

impl Response {
    /// The answer's blocks; for an answer stored with its text only, one text block.
    pub fn blocks(&self) -> std::borrow::Cow<'_, [ContentBlock]> {
        if self.content.is_empty() && !self.text.is_empty() {
            std::borrow::Cow::Owned(vec![ContentBlock::text(self.text.clone())])
        } else {
            std::borrow::Cow::Borrowed(&self.content)
        }
    }
}

/// Why a model call failed. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LlmError {
    /// Malformed request or invalid parameters (400, 422).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Credentials refused (401).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// Not permitted (403).
    #[error("permission denied: {0}")]
    Permission(String),
    /// No such model or endpoint (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// Too large (413 or a host cap).
    #[error("request too large: {0}")]
    TooLarge(String),
    /// Rate limited (429).
    #[error("rate limited: {message}")]
    RateLimited {
        /// How long the provider asked to wait.
        retry_after: Option<Duration>,
        /// Explanation.
        message: String,
    },
    /// Overloaded (529).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// Other server failures (5xx other than 529), and 409 conflicts.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Explanation.
        message: String,
    },
    /// Out of time: per-attempt timeout or run deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Could not reach the provider.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The budget is spent; the call was not sent.
    #[error("budget exceeded: {0}")]
    BudgetExceeded(String),
    /// Not granted by the operator; the call was not sent.
    #[error("denied: {0}")]
    Denied(String),
    /// The provider's answer could not be understood.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
}

impl LlmError {
    /// A short stable name of the error's kind, for JSON output and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Authentication(_) => "authentication",
            Self::Permission(_) => "permission",
            Self::NotFound(_) => "not_found",
            Self::TooLarge(_) => "too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded(_) => "overloaded",
            Self::Server { .. } => "server_error",
            Self::Timeout(_) => "timeout",
            Self::Connection(_) => "connection",
            Self::BudgetExceeded(_) => "budget_exceeded",
            Self::Denied(_) => "denied",
            Self::InvalidResponse(_) => "invalid_response",
        }
    }

    /// True for a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_told_from_everything_else() {
        for yes in [
            "{}",
            " \n\t{\"a\": [1, {\"b\": null}]} \r\n",
            r#"{"type":"object","properties":{"x":{"type":"string"}}}"#,
        ] {
            assert!(is_json_object(yes), "{yes:?}");
        }
        for no in [
            "",
            "   ",
            "[]",
            "[{}]",
            "\"{}\"",
            "null",
            "42",
            "{",
            "{\"a\": }",
            "{} {}",
            "{}x",
            "\u{a0}{}",
            "{\"a\": 1,}",
        ] {
            assert!(!is_json_object(no), "{no:?}");
        }
    }

    #[test]
    fn total_input_includes_cache_tokens() {
        let u = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_creation_input_tokens: 100,
            cache_read_input_tokens: 1000,
            cache_creation_1h_input_tokens: 0,
        };
        assert_eq!(u.total_input(), 1110);
        assert_eq!(u.total(), 1115);
    }

    /// Regression (fuzz/regressions/anthropic_response/usage-overflow): an answer
    /// claiming `u64::MAX` input tokens overflowed `total()` — a panic in debug builds,
    /// a wrapped (tiny) token count against the budget in release builds.
    #[test]
    fn token_sums_saturate_instead_of_overflowing() {
        let huge = Usage {
            input_tokens: u64::MAX,
            output_tokens: 1,
            cache_creation_input_tokens: 1,
            cache_read_input_tokens: 1,
            cache_creation_1h_input_tokens: 0,
        };
        assert_eq!(huge.total_input(), u64::MAX);
        assert_eq!(huge.total(), u64::MAX);
        let mut running = huge;
        running.add(&huge);
        assert_eq!((running.input_tokens, running.output_tokens), (u64::MAX, 2));
    }

    #[test]
    fn validate_refuses_what_the_api_would() {
        let ok = Request::new("m", 10, vec![Message::user("hi")]);
        assert!(ok.validate().is_ok());
        let mut r = ok.clone();
        r.messages.clear();
        assert!(matches!(r.validate(), Err(LlmError::InvalidRequest(_))));
        let mut r = ok.clone();
        r.max_tokens = 0;
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.messages = vec![Message::assistant("x")];
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.temperature = Some(1.5);
        assert!(r.validate().is_err());
        let mut r = ok;
        r.top_p = Some(0.0);
        assert!(r.validate().is_err());
    }

    /// Contract 0.2's shapes the API refuses, each refused here, and the valid
    /// neighbour of each accepted.
    #[test]
    fn tool_loops_must_be_well_formed() {
        use crate::content::{CacheControl, ToolResultContent};
        let tool = Tool {
            name: "add".into(),
            description: None,
            input_schema: r#"{"type":"object"}"#.into(),
            strict: false,
            cache_control: None,
        };
        let use_block = |id: &str| ContentBlock::ToolUse {
            id: id.into(),
            name: "add".into(),
            input: "{}".into(),
        };
        let result = |id: &str| ContentBlock::ToolResult {
            tool_use_id: id.into(),
            content: vec![ToolResultContent::Text("2".into())],
            is_error: false,
            cache_control: None,
        };
        let turns = |assistant: Vec<ContentBlock>, user: Vec<ContentBlock>| {
            let mut r = Request::new(
                "m",
                2048,
                vec![
                    Message::user("add"),
                    Message {
                        role: Role::Assistant,
                        content: Content::Blocks(assistant),
                    },
                    Message {
                        role: Role::User,
                        content: Content::Blocks(user),
                    },
                ],
            );
            r.tools = vec![tool.clone()];
            r
        };
        let ok = turns(
            vec![use_block("a"), use_block("b")],
            vec![result("a"), result("b"), ContentBlock::text("go on")],
        );
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
        let bad = [
            (
                "no result",
                turns(vec![use_block("a"), use_block("b")], vec![result("a")]),
            ),
            (
                "answers no tool use",
                turns(vec![use_block("a")], vec![result("a"), result("z")]),
            ),
            (
                "before any other block",
                turns(
                    vec![use_block("a")],
                    vec![ContentBlock::text("x"), result("a")],
                ),
            ),
            (
                "used twice",
                turns(vec![use_block("a"), use_block("a")], vec![result("a")]),
            ),
            (
                "only whitespace",
                turns(
                    vec![use_block("a")],
                    vec![result("a"), ContentBlock::text(" ")],
                ),
            ),
            (
                "a tool result's text",
                turns(
                    vec![use_block("a")],
                    vec![ContentBlock::ToolResult {
                        tool_use_id: "a".into(),
                        content: vec![ToolResultContent::Text(String::new())],
                        is_error: false,
                        cache_control: None,
                    }],
                ),
            ),
        ];
        for (expected, request) in bad {
            let e = request.validate().expect_err(expected);
            assert!(e.to_string().contains(expected), "{expected}: {e}");
        }
        // Thinking rules out forced tools, a temperature other than 1 and top_k.
        let mut r = Request::new("m", 4096, vec![Message::user("x")]);
        r.tools = vec![tool];
        r.thinking = Some(Thinking::Enabled {
            budget_tokens: 1024,
        });
        assert!(r.validate().is_ok());
        for change in [
            (|r: &mut Request| r.tool_choice = Some(ToolChoice::Any)) as fn(&mut Request),
            |r| r.temperature = Some(0.5),
            |r| r.top_k = Some(5),
            |r| {
                r.thinking = Some(Thinking::Enabled {
                    budget_tokens: 1023,
                })
            },
        ] {
            let mut bad = r.clone();
            change(&mut bad);
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        // 1-hour breakpoints come first.
        let with = |ttls: &[CacheTtl]| {
            let mut r = Request::new("m", 10, vec![Message::user("x")]);
            r.system = Some(System::Blocks(
                ttls.iter()
                    .map(|t| crate::content::TextBlock {
                        text: "s".into(),
                        cache_control: Some(CacheControl::new(*t)),
                    })
                    .collect(),
            ));
            r
        };
        assert!(
            with(&[CacheTtl::OneHour, CacheTtl::FiveMinutes])
                .validate()
                .is_ok()
        );
        assert!(
            with(&[CacheTtl::FiveMinutes, CacheTtl::OneHour])
                .validate()
                .is_err()
        );
    }

    #[test]
    fn stop_reason_round_trips_wire_names() {
        for wire in [
            "end_turn",
            "max_tokens",
            "tool_use",
            "pause_turn",
            "refusal",
            "model_context_window_exceeded",
            "novel",
        ] {
            assert_eq!(StopReason::from_wire(wire, None).as_wire(), wire);
        }
        assert_eq!(
            StopReason::from_wire("stop_sequence", Some("END")),
            StopReason::StopSequence("END".into())
        );
    }
}
