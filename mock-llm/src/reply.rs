//! Scripted replies: the content a test wants the next requests answered with.

use serde_json::{Value, json};

/// The answer to one request, scripted by a test with
/// [`MockServer::push_reply`](crate::MockServer::push_reply) or
/// [`MockConfig::replies`](crate::MockConfig::replies).
///
/// The server still checks the request first (a refused request does not consume the
/// reply) and still computes the usage (input and cache counters as for any answer,
/// output tokens from the reply's content, unless [`with_usage`](Reply::with_usage)
/// overrides them). In the content, a `tool_use` block without an `id` gets the next
/// `toolu_mock_<n>` id, a `thinking` block without a `signature` gets
/// [`thinking_signature`](crate::thinking_signature) of its text, a `redacted_thinking`
/// block without `data` gets fresh data, and the data of every `redacted_thinking`
/// block served is accepted back later.
///
/// With thinking on, the server puts its own thinking block before the content of
/// [`text`](Reply::text) and [`tool_use`](Reply::tool_use) replies, as before a
/// default answer; a [`blocks`](Reply::blocks) reply is served as it is.
///
/// ```
/// use cf_mock_llm::Reply;
/// use serde_json::json;
/// let call = Reply::tool_use("search", json!({"q": "rust"}));
/// assert_eq!(call.stop_reason(), "tool_use");
/// assert_eq!(call.content()[0]["name"], "search");
/// let done = Reply::text("All done.").with_usage(json!({"output_tokens": 3}));
/// assert_eq!(done.stop_reason(), "end_turn");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub(crate) content: Vec<Value>,
    pub(crate) stop_reason: String,
    pub(crate) usage: Option<Value>,
    /// Served as given: the server adds no thinking block.
    pub(crate) exact: bool,
}

impl Reply {
    /// One text block (not cut by `max_tokens` or `stop_sequences`; with structured
    /// output on it replaces the JSON answer, so it may be any text), stop reason
    /// `end_turn`.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content: vec![json!({"type": "text", "text": text.into()})],
            stop_reason: "end_turn".into(),
            usage: None,
            exact: false,
        }
    }

    /// One `tool_use` block calling `name` with `input` (normally a JSON object), with
    /// a generated id, stop reason `tool_use`.
    pub fn tool_use(name: &str, input: Value) -> Self {
        Self {
            content: vec![json!({"type": "tool_use", "name": name, "input": input})],
            stop_reason: "tool_use".into(),
            usage: None,
            exact: false,
        }
    }

    /// These content blocks (any JSON, served as they are but for the ids, signatures
    /// and data filled in) with this stop reason: parallel tool calls, text before a
    /// call, a `refusal`, thinking blocks of the test's own.
    pub fn blocks(content: Vec<Value>, stop_reason: &str) -> Self {
        Self {
            content,
            stop_reason: stop_reason.into(),
            usage: None,
            exact: true,
        }
    }

    /// The same reply with another stop reason.
    #[must_use]
    pub fn with_stop_reason(mut self, stop_reason: &str) -> Self {
        self.stop_reason = stop_reason.into();
        self
    }

    /// The same reply whose usage takes every field of `usage` (a JSON object, e.g.
    /// `{"output_tokens": 5}`) over the computed one; other fields stay computed.
    #[must_use]
    pub fn with_usage(mut self, usage: Value) -> Self {
        self.usage = Some(usage);
        self
    }

    /// The content blocks as scripted (before ids and signatures are filled in).
    pub fn content(&self) -> &[Value] {
        &self.content
    }

    /// The stop reason.
    pub fn stop_reason(&self) -> &str {
        &self.stop_reason
    }
}
