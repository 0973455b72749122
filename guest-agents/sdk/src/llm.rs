//! Model calls through the host: a [`Request`] builder for text, images, documents,
//! prompt-cache breakpoints, thinking, [`Tool`]s and structured output.
//!
//! ```no_run
//! # fn main() -> Result<(), cf_agent_sdk::llm::LlmError> {
//! use cf_agent_sdk::llm::{self, CacheTtl, ImageMediaType};
//! # let png = Vec::new();
//! let answer = llm::Request::new()
//!     .system("You describe images in one sentence.")
//!     .cache_breakpoint(CacheTtl::OneHour) // the system prompt is cached for an hour
//!     .user("What is in this picture?")
//!     .image(ImageMediaType::Png, png) // joins the user turn above
//!     .max_tokens(200)
//!     .send()?;
//! println!("{} ({} tokens out)", answer.text, answer.usage.output_tokens);
//! # Ok(())
//! # }
//! ```
//!
//! Everything not set is left to the host: the model (the operator's choice, else the
//! agent's default), `max_tokens` (4096), the temperature (the provider's default),
//! thinking (off).

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

pub use crate::bindings::claude_force::agent::types::{
    BlockDelta, CacheControl, CacheMode, CacheTtl, ContentBlock, DocumentBlock, DocumentSource,
    Effort, Image, ImageBlock, ImageMediaType, IndexedBlock, IndexedDelta, LlmError, LlmRequest,
    LlmResponse, Message, MessageDelta, RateLimitedError, Role, ServerError, StopReason,
    StreamEvent, StreamStart, TextBlock, ThinkingBlock, ThinkingConfig, Tool as ToolDefinition,
    ToolChoice, ToolResultBlock, ToolResultContent, ToolUseBlock, Usage,
};
pub use crate::tools::{Tool, ToolRun, ToolRunError};

/// A model's answer: the contract's [`LlmResponse`], with helpers to read its blocks.
pub type Response = LlmResponse;

/// Sends a request as it is.
pub fn complete(request: &LlmRequest) -> Result<Response, LlmError> {
    crate::bindings::claude_force::agent::llm::complete(request)
}

/// The JSON Schema of `T` as the SDK sends it (for [`Tool::new`] and
/// [`Request::structured`]): JSON Schema 2020-12 without the `$schema` key, every
/// object that lists its properties closed with `"additionalProperties": false` (what
/// providers require for strict tools and structured output).
pub fn json_schema<T: JsonSchema>() -> String {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with_transform(close_objects);
    let mut schema = settings.into_generator().into_root_schema_for::<T>();
    schema.remove("$schema");
    schema.as_value().to_string()
}

/// The JSON Schema of `T` for structured output ([`Request::structured`]): as
/// [`json_schema`], without the constraints the Messages API's structured output does
/// not take (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
/// `multipleOf`, `minLength`, `maxLength`, `maxItems`, and `minItems` above 1, which
/// schemars writes for unsigned integers, ranges and lengths); each one removed is
/// said in the property's `description` instead, so the model still reads it.
pub fn output_schema<T: JsonSchema>() -> String {
    let settings = schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(close_objects)
        .with_transform(describe_constraints);
    let mut schema = settings.into_generator().into_root_schema_for::<T>();
    schema.remove("$schema");
    schema.as_value().to_string()
}

/// Moves the constraints structured output does not take into the description.
fn describe_constraints(schema: &mut schemars::Schema) {
    const MOVED: [&str; 9] = [
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    ];
    if let Some(object) = schema.as_object_mut() {
        let mut said = Vec::new();
        for key in MOVED {
            // `minItems` of 0 or 1 is supported.
            if key == "minItems"
                && object
                    .get(key)
                    .and_then(|v| v.as_u64())
                    .is_some_and(|n| n <= 1)
            {
                continue;
            }
            if let Some(value) = object.remove(key) {
                said.push(format!("{key} {value}"));
            }
        }
        if !said.is_empty() {
            let note = said.join(", ");
            let description = match object.get("description").and_then(|d| d.as_str()) {
                Some(d) => format!("{d} ({note})"),
                None => format!("({note})"),
            };
            object.insert("description".into(), description.into());
        }
    }
    schemars::transform::transform_subschemas(&mut describe_constraints, schema);
}

/// Closes every object schema that lists its properties and says nothing about others.
fn close_objects(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut()
        && object.contains_key("properties")
        && !object.contains_key("additionalProperties")
    {
        object.insert("additionalProperties".into(), false.into());
    }
    schemars::transform::transform_subschemas(&mut close_objects, schema);
}

impl From<CacheTtl> for CacheControl {
    fn from(ttl: CacheTtl) -> Self {
        CacheControl { ttl }
    }
}

impl ContentBlock {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text(TextBlock {
            text: text.into(),
            cache_control: None,
        })
    }

    /// An image block: the encoded image (not base64).
    pub fn image(media_type: ImageMediaType, data: Vec<u8>) -> Self {
        ContentBlock::Image(ImageBlock {
            image: Image { media_type, data },
            cache_control: None,
        })
    }

    /// A PDF document block; an empty `title` leaves it untitled.
    pub fn pdf(data: Vec<u8>, title: impl Into<String>) -> Self {
        document(DocumentSource::Pdf(data), title.into())
    }

    /// A plain-text document block; an empty `title` leaves it untitled.
    pub fn document_text(text: impl Into<String>, title: impl Into<String>) -> Self {
        document(DocumentSource::PlainText(text.into()), title.into())
    }

    /// A tool's result for the tool use `tool_use_id`, as a [`Tool`]'s handler returns
    /// it: `Ok` is the output (empty: the tool returned nothing), `Err` an error
    /// message the model reads (`is-error`).
    pub fn tool_result(tool_use_id: impl Into<String>, outcome: Result<String, String>) -> Self {
        let (text, is_error) = match outcome {
            Ok(text) => (text, false),
            Err(e) if e.is_empty() => ("the tool failed".to_owned(), true),
            Err(e) => (e, true),
        };
        ContentBlock::ToolResult(ToolResultBlock {
            tool_use_id: tool_use_id.into(),
            content: if text.is_empty() {
                Vec::new()
            } else {
                vec![ToolResultContent::Text(text)]
            },
            is_error,
            cache_control: None,
        })
    }

    /// The block with a prompt-cache breakpoint, when its kind can carry one (text,
    /// image, document, tool result); thinking and tool-use blocks are returned as
    /// they are.
    pub fn with_cache_breakpoint(mut self, ttl: CacheTtl) -> Self {
        self.set_cache_control(Some(ttl.into()));
        self
    }

    /// Sets or clears the block's prompt-cache breakpoint. Returns `false`, changing
    /// nothing, for the kinds that cannot carry one (thinking, tool use).
    pub fn set_cache_control(&mut self, cache_control: Option<CacheControl>) -> bool {
        let slot = match self {
            ContentBlock::Text(b) => &mut b.cache_control,
            ContentBlock::Image(b) => &mut b.cache_control,
            ContentBlock::Document(b) => &mut b.cache_control,
            ContentBlock::ToolResult(b) => &mut b.cache_control,
            ContentBlock::ToolUse(_)
            | ContentBlock::Thinking(_)
            | ContentBlock::RedactedThinking(_) => return false,
        };
        *slot = cache_control;
        true
    }
}

fn document(source: DocumentSource, title: String) -> ContentBlock {
    ContentBlock::Document(DocumentBlock {
        source,
        title: (!title.is_empty()).then_some(title),
        cache_control: None,
    })
}

impl LlmResponse {
    /// The tool uses the model asks for, in order (empty unless `stop_reason` is
    /// [`StopReason::ToolUse`]).
    pub fn tool_uses(&self) -> impl Iterator<Item = &ToolUseBlock> {
        self.content.iter().filter_map(|b| match b {
            ContentBlock::ToolUse(u) => Some(u),
            _ => None,
        })
    }

    /// The model's reasoning, block by block (empty unless thinking was on; redacted
    /// thinking is not included).
    pub fn thinking(&self) -> impl Iterator<Item = &str> {
        self.content.iter().filter_map(|b| match b {
            ContentBlock::Thinking(t) => Some(t.thinking.as_str()),
            _ => None,
        })
    }

    /// Whether the model stopped to use tools.
    pub fn wants_tools(&self) -> bool {
        matches!(self.stop_reason, StopReason::ToolUse)
    }

    /// The answer as the assistant turn of a next request: every block as received,
    /// thinking signatures included.
    pub fn to_message(&self) -> Message {
        Message {
            role: Role::Assistant,
            content: self.content.clone(),
        }
    }
}

impl Usage {
    /// All input tokens: full price, cache writes and cache reads.
    pub fn total_input_tokens(&self) -> u64 {
        self.input_tokens
            + self.cache_write_5m_input_tokens
            + self.cache_write_1h_input_tokens
            + self.cache_read_input_tokens
    }
}

/// No tokens.
impl Default for Usage {
    fn default() -> Self {
        Usage {
            input_tokens: 0,
            output_tokens: 0,
            cache_write_5m_input_tokens: 0,
            cache_write_1h_input_tokens: 0,
            cache_read_input_tokens: 0,
        }
    }
}

/// Adds the counts of another call (saturating).
impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_write_5m_input_tokens = self
            .cache_write_5m_input_tokens
            .saturating_add(other.cache_write_5m_input_tokens);
        self.cache_write_1h_input_tokens = self
            .cache_write_1h_input_tokens
            .saturating_add(other.cache_write_1h_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
    }
}

/// The sum of the counts (saturating).
impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Self {
        iter.fold(Usage::default(), |mut total, u| {
            total += u;
            total
        })
    }
}

/// What the last builder call added, for [`Request::cache_breakpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Nothing,
    System,
    Tool,
    Message,
}

/// A request under construction; send it with [`send`](Self::send), let it call its
/// tools with [`run_tools`](Self::run_tools), or ask for a typed answer with
/// [`structured`](Self::structured).
///
/// The lifetime is that of the tools' handlers, which may borrow the agent's state.
/// A clone shares the handlers (and whatever they captured) with the original.
#[derive(Clone)]
pub struct Request<'a> {
    pub(crate) wire: LlmRequest,
    pub(crate) tools: Vec<Tool<'a>>,
    last: Last,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("request", &self.wire)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Default for Request<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Request<'a> {
    /// An empty request.
    pub fn new() -> Self {
        Self {
            wire: LlmRequest {
                model: None,
                max_tokens: None,
                system: Vec::new(),
                messages: Vec::new(),
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
                cache: CacheMode::Normal,
            },
            tools: Vec::new(),
            last: Last::Nothing,
        }
    }

    /// Sets the system prompt, replacing any; an empty text sends none.
    pub fn system(mut self, text: impl Into<String>) -> Self {
        let text = text.into();
        self.wire.system.clear();
        if !text.is_empty() {
            self.wire.system.push(TextBlock {
                text,
                cache_control: None,
            });
            self.last = Last::System;
        }
        self
    }

    /// Appends a block to the system prompt (to put a cache breakpoint between a
    /// stable part and a varying one).
    pub fn system_block(mut self, text: impl Into<String>) -> Self {
        self.wire.system.push(TextBlock {
            text: text.into(),
            cache_control: None,
        });
        self.last = Last::System;
        self
    }

    /// Appends a user turn of one text block.
    pub fn user(self, text: impl Into<String>) -> Self {
        self.user_blocks(vec![ContentBlock::text(text)])
    }

    /// Appends a user turn of these blocks (text, images, documents, tool results).
    pub fn user_blocks(self, blocks: Vec<ContentBlock>) -> Self {
        self.message(Message {
            role: Role::User,
            content: blocks,
        })
    }

    /// Appends an assistant turn of one text block (a final one is a prefill the model
    /// continues).
    pub fn assistant(self, text: impl Into<String>) -> Self {
        self.assistant_blocks(vec![ContentBlock::text(text)])
    }

    /// Appends an assistant turn of these blocks (for example a [`Response`]'s
    /// `content`, unchanged).
    pub fn assistant_blocks(self, blocks: Vec<ContentBlock>) -> Self {
        self.message(Message {
            role: Role::Assistant,
            content: blocks,
        })
    }

    /// Appends a turn.
    pub fn message(mut self, message: Message) -> Self {
        self.wire.messages.push(message);
        self.last = Last::Message;
        self
    }

    /// Appends turns, for example a [`ToolRun`]'s `messages` to go on with a
    /// conversation.
    pub fn messages(mut self, messages: impl IntoIterator<Item = Message>) -> Self {
        let before = self.wire.messages.len();
        self.wire.messages.extend(messages);
        if self.wire.messages.len() > before {
            self.last = Last::Message;
        }
        self
    }

    /// Adds an image to the current user turn (the last turn, when it is the user's;
    /// else a new one). `data` is the encoded image, not base64; the operator must
    /// grant images, and caps their size (5 MiB by default).
    pub fn image(self, media_type: ImageMediaType, data: Vec<u8>) -> Self {
        self.push_user_block(ContentBlock::image(media_type, data))
    }

    /// Adds a PDF to the current user turn (see [`image`](Self::image)); an empty
    /// `title` leaves it untitled. Same grant and cap as images.
    pub fn document_pdf(self, data: Vec<u8>, title: impl Into<String>) -> Self {
        self.push_user_block(ContentBlock::pdf(data, title))
    }

    /// Adds a plain-text document to the current user turn (see
    /// [`image`](Self::image)); an empty `title` leaves it untitled.
    pub fn document_text(self, text: impl Into<String>, title: impl Into<String>) -> Self {
        self.push_user_block(ContentBlock::document_text(text, title))
    }

    fn push_user_block(mut self, block: ContentBlock) -> Self {
        match self.wire.messages.last_mut() {
            Some(m) if matches!(m.role, Role::User) => m.content.push(block),
            _ => self.wire.messages.push(Message {
                role: Role::User,
                content: vec![block],
            }),
        }
        self.last = Last::Message;
        self
    }

    /// Puts a prompt-cache breakpoint on what the previous call added: the last system
    /// block, the last tool, or the last block of the last turn (when that block is a
    /// thinking or tool-use block, which cannot carry one, the last earlier block of
    /// the turn that can). The provider caches the prompt up to there for `ttl`.
    ///
    /// At most 4 breakpoints per request; the host refuses a fifth with
    /// `invalid-request`. Called first, before anything is added, it does nothing.
    pub fn cache_breakpoint(mut self, ttl: CacheTtl) -> Self {
        let control = Some(CacheControl::from(ttl));
        match self.last {
            Last::Nothing => {}
            Last::System => {
                if let Some(b) = self.wire.system.last_mut() {
                    b.cache_control = control;
                }
            }
            Last::Tool => {
                if let Some(t) = self.wire.tools.last_mut() {
                    t.cache_control = control;
                }
            }
            Last::Message => {
                if let Some(m) = self.wire.messages.last_mut() {
                    for block in m.content.iter_mut().rev() {
                        if block.set_cache_control(control) {
                            break;
                        }
                    }
                }
            }
        }
        self
    }

    /// Names the model (empty: the host chooses).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.wire.model = Some(model.into());
        self
    }

    /// Limits the answer's length in tokens, thinking included (the host's default is
    /// 4096).
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.wire.max_tokens = Some(n);
        self
    }

    /// Sets the temperature, in [0, 1].
    pub fn temperature(mut self, t: f32) -> Self {
        self.wire.temperature = Some(t);
        self
    }

    /// Sets nucleus sampling.
    pub fn top_p(mut self, p: f32) -> Self {
        self.wire.top_p = Some(p);
        self
    }

    /// Sets top-K sampling.
    pub fn top_k(mut self, k: u32) -> Self {
        self.wire.top_k = Some(k);
        self
    }

    /// Adds a stop sequence.
    pub fn stop(mut self, sequence: impl Into<String>) -> Self {
        self.wire.stop_sequences.push(sequence.into());
        self
    }

    /// Sets the opaque end-user id sent for abuse monitoring (never personal data).
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.wire.user_id = Some(id.into());
        self
    }

    /// Chooses how the host's response cache is used (default: [`CacheMode::Normal`]).
    pub fn cache(mut self, mode: CacheMode) -> Self {
        self.wire.cache = mode;
        self
    }

    /// Offers a tool to the model.
    pub fn tool(mut self, tool: Tool<'a>) -> Self {
        self.wire.tools.push(tool.definition.clone());
        self.tools.push(tool);
        self.last = Last::Tool;
        self
    }

    /// Offers tools to the model, in order. Names must be unique within a request.
    pub fn tools(self, tools: Vec<Tool<'a>>) -> Self {
        tools.into_iter().fold(self, Self::tool)
    }

    /// Says which tool, if any, the model must use (default: the model decides).
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.wire.tool_choice = Some(choice);
        self
    }

    /// Lets the model ask for at most one tool per turn.
    pub fn disable_parallel_tool_use(mut self) -> Self {
        self.wire.disable_parallel_tool_use = true;
        self
    }

    /// Turns extended thinking on with a budget of `budget_tokens` output tokens: at
    /// least 1024 and below `max_tokens` (the host refuses anything else with
    /// `invalid-request`), and only when the operator grants thinking.
    pub fn thinking(mut self, budget_tokens: u32) -> Self {
        self.wire.thinking = Some(ThinkingConfig::Enabled(budget_tokens));
        self
    }

    /// Lets the model decide how much to think (newer models), steered by
    /// [`effort`](Self::effort). Needs the operator's grant of thinking.
    pub fn adaptive_thinking(mut self) -> Self {
        self.wire.thinking = Some(ThinkingConfig::Adaptive);
        self
    }

    /// Sets how much effort the model spends (default: the provider's, `high`).
    pub fn effort(mut self, effort: Effort) -> Self {
        self.wire.effort = Some(effort);
        self
    }

    /// Asks for an answer whose text matches a hand-written JSON Schema (a JSON object,
    /// as text); [`structured`](Self::structured) derives it from a type instead.
    pub fn output_schema(mut self, schema: impl Into<String>) -> Self {
        self.wire.output_schema = Some(schema.into());
        self
    }

    /// The request as the contract defines it.
    pub fn as_wit(&self) -> &LlmRequest {
        &self.wire
    }

    /// The request as the contract defines it, without the tools' handlers.
    pub fn into_wit(self) -> LlmRequest {
        self.wire
    }

    /// Sends the request and waits for the answer. Tools are offered but not run: the
    /// answer may ask for them ([`Response::tool_uses`]); see
    /// [`run_tools`](Self::run_tools).
    pub fn send(&self) -> Result<Response, LlmError> {
        complete(&self.wire)
    }

    /// Sends the request and streams the answer: iterate the [`Stream`] for the text
    /// as it arrives, then [`Stream::finish`] for the whole answer. Tools are not run
    /// (see [`run_tools`](Self::run_tools)).
    pub fn stream(&self) -> Result<Stream, LlmError> {
        crate::bindings::claude_force::agent::llm::open_stream(&self.wire).map(|inner| Stream {
            inner,
            ended: false,
        })
    }

    /// Streams the answer, hands its text to whoever runs the agent as it arrives
    /// ([`crate::output::emit`]), and returns the whole answer: what an agent whose
    /// output is the model's text does to show it live.
    ///
    /// ```no_run
    /// let answer = cf_agent_sdk::llm::Request::new().user("Tell a story.").stream_to_output()?;
    /// # Ok::<(), cf_agent_sdk::llm::LlmError>(())
    /// ```
    pub fn stream_to_output(&self) -> Result<Response, LlmError> {
        let mut stream = self.stream()?;
        for piece in &mut stream {
            crate::output::emit(&piece?);
        }
        stream.finish()
    }

    /// Asks for an answer of type `T`: sets `output-schema` to `T`'s schema
    /// ([`json_schema`]), sends the request and parses the answer's text.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), cf_agent_sdk::llm::StructuredError> {
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Verdict { guilty: bool, reason: String }
    /// let v: Verdict = cf_agent_sdk::llm::Request::new().user("Did the butler do it?").structured()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn structured<T: DeserializeOwned + JsonSchema>(self) -> Result<T, StructuredError> {
        self.structured_response().map(|(value, _)| value)
    }

    /// As [`structured`](Self::structured), and the answer too (its model, usage,
    /// stop reason).
    pub fn structured_response<T: DeserializeOwned + JsonSchema>(
        self,
    ) -> Result<(T, Response), StructuredError> {
        self.structured_with_schema(output_schema::<T>())
    }

    /// As [`structured_response`](Self::structured_response), with `T`'s schema
    /// given as text instead of derived on every call. Every run of an agent is a
    /// fresh instance, so a derived schema is derived again by each run (about 30 µs
    /// of a guest's time for a struct of three fields with descriptions): an agent
    /// can write [`output_schema::<T>()`](output_schema) out once, as a constant, and
    /// keep it equal to the type with a test:
    ///
    /// ```ignore
    /// // The derived schema, byte for byte (then the requests are the same too).
    /// const SCHEMA: &str = include_str!("verdict.schema.json").trim_ascii_end();
    ///
    /// #[test]
    /// fn the_schema_is_the_types() {
    ///     assert_eq!(SCHEMA, cf_agent_sdk::llm::output_schema::<Verdict>());
    /// }
    /// ```
    pub fn structured_with_schema<T: DeserializeOwned>(
        self,
        schema: impl Into<String>,
    ) -> Result<(T, Response), StructuredError> {
        let answer = self
            .output_schema(schema)
            .send()
            .map_err(StructuredError::Llm)?;
        let value = parse_structured(answer.clone())?;
        Ok((value, answer))
    }
}

/// The value of type `T` in an answer's text.
fn parse_structured<T: DeserializeOwned>(answer: Response) -> Result<T, StructuredError> {
    serde_json::from_str(&answer.text).map_err(|e| StructuredError::Mismatch {
        error: e.to_string(),
        response: Box::new(answer),
    })
}

/// An answer as it arrives ([`Request::stream`]). As an iterator it yields the text
/// of the answer's text blocks as it comes, piece by piece; [`next_event`]
/// (Self::next_event) gives every event instead. [`finish`](Self::finish) reads the
/// rest and returns the whole answer. Dropping a stream gives its permit of the
/// host's concurrency limit back at once.
#[derive(Debug)]
pub struct Stream {
    inner: crate::bindings::claude_force::agent::llm::ResponseStream,
    ended: bool,
}

impl Stream {
    /// The next event of the answer; `None` once it is complete. An error ends the
    /// stream.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, LlmError> {
        if self.ended {
            return Ok(None);
        }
        let event = self.inner.next();
        if !matches!(event, Ok(Some(_))) {
            self.ended = true;
        }
        event
    }

    /// Reads what is left and returns the whole answer.
    pub fn finish(self) -> Result<Response, LlmError> {
        self.inner.finish()
    }
}

impl Iterator for Stream {
    type Item = Result<String, LlmError>;

    /// The next piece of text of the answer's text blocks; other events are read and
    /// passed over.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_event() {
                Ok(Some(StreamEvent::BlockDelta(IndexedDelta {
                    delta: BlockDelta::Text(text),
                    ..
                }))) => return Some(Ok(text)),
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Why [`Request::structured`] gave no value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StructuredError {
    /// The model call failed.
    Llm(LlmError),
    /// The model answered, but its text is not a value of the type: cut off by
    /// `max_tokens`, a refusal, or not matching the schema.
    Mismatch {
        /// Why the text did not parse (serde's message, with line and column).
        error: String,
        /// The answer, as received.
        response: Box<Response>,
    },
}

impl StructuredError {
    /// Whether the model call itself failed (rather than its answer not matching).
    pub fn is_llm(&self) -> bool {
        matches!(self, StructuredError::Llm(_))
    }

    /// The answer that did not match, if the call succeeded.
    pub fn response(&self) -> Option<&Response> {
        match self {
            StructuredError::Llm(_) => None,
            StructuredError::Mismatch { response, .. } => Some(response),
        }
    }
}

impl std::fmt::Display for StructuredError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StructuredError::Llm(e) => write!(f, "the model call failed: {e}"),
            StructuredError::Mismatch { error, response } => {
                write!(f, "the answer does not match the schema: {error}")?;
                if !matches!(response.stop_reason, StopReason::EndTurn) {
                    write!(f, " (the model stopped: {:?})", response.stop_reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for StructuredError {}

/// A failed call becomes [`AgentError::Llm`](crate::AgentError::Llm), an answer that
/// does not match [`AgentError::Failed`](crate::AgentError::Failed) with the message.
impl From<StructuredError> for crate::AgentError {
    fn from(e: StructuredError) -> Self {
        match e {
            StructuredError::Llm(e) => crate::AgentError::Llm(e),
            mismatch => crate::AgentError::Failed(mismatch.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(block: &ContentBlock) -> Option<CacheTtl> {
        match block {
            ContentBlock::Text(b) => b.cache_control.map(|c| c.ttl),
            ContentBlock::Image(b) => b.cache_control.map(|c| c.ttl),
            ContentBlock::Document(b) => b.cache_control.map(|c| c.ttl),
            ContentBlock::ToolResult(b) => b.cache_control.map(|c| c.ttl),
            _ => None,
        }
    }

    fn noop(_: serde_json::Value) -> Result<String, String> {
        Ok(String::new())
    }

    #[test]
    fn a_breakpoint_marks_what_was_added_last() {
        let r = Request::new()
            .system("stable")
            .cache_breakpoint(CacheTtl::OneHour)
            .system_block("varying")
            .tool(Tool::raw("a", "", "{}", noop))
            .cache_breakpoint(CacheTtl::FiveMinutes)
            .tool(Tool::raw("b", "", "{}", noop))
            .user("look")
            .image(ImageMediaType::Png, vec![1, 2])
            .cache_breakpoint(CacheTtl::FiveMinutes);
        let w = r.as_wit();
        let system: Vec<_> = w
            .system
            .iter()
            .map(|b| b.cache_control.map(|c| c.ttl))
            .collect();
        assert!(matches!(system[..], [Some(CacheTtl::OneHour), None]));
        assert!(matches!(
            w.tools[0].cache_control,
            Some(CacheControl {
                ttl: CacheTtl::FiveMinutes
            })
        ));
        assert!(w.tools[1].cache_control.is_none());
        assert_eq!(w.messages.len(), 1, "the image joins the user turn");
        assert!(ttl(&w.messages[0].content[0]).is_none());
        assert!(matches!(
            ttl(&w.messages[0].content[1]),
            Some(CacheTtl::FiveMinutes)
        ));
    }

    #[test]
    fn a_breakpoint_skips_blocks_that_cannot_carry_one() {
        let r = Request::new()
            .user("q")
            .assistant_blocks(vec![
                ContentBlock::text("thinking out loud"),
                ContentBlock::RedactedThinking("opaque".into()),
            ])
            .cache_breakpoint(CacheTtl::FiveMinutes);
        let turn = &r.as_wit().messages[1];
        assert!(matches!(ttl(&turn.content[0]), Some(CacheTtl::FiveMinutes)));
        // Before anything is added it does nothing.
        let r = Request::new().cache_breakpoint(CacheTtl::OneHour).user("q");
        assert!(ttl(&r.as_wit().messages[0].content[0]).is_none());
    }

    #[test]
    fn documents_and_images_after_an_assistant_turn_start_a_user_turn() {
        let r = Request::new()
            .user("q")
            .assistant("a")
            .document_pdf(b"%PDF".to_vec(), "")
            .document_text("notes", "Notes");
        let w = r.as_wit();
        assert_eq!(w.messages.len(), 3);
        match &w.messages[2].content[..] {
            [ContentBlock::Document(pdf), ContentBlock::Document(text)] => {
                assert!(pdf.title.is_none(), "an empty title is untitled");
                assert_eq!(text.title.as_deref(), Some("Notes"));
            }
            other => panic!("two documents, got {other:?}"),
        }
    }

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[expect(dead_code, reason = "only the schema and the parse are tested")]
    struct Finding {
        /// How bad.
        severity: String,
        line: u32,
    }

    #[test]
    fn schemas_are_closed_objects_without_a_schema_key() {
        let schema: serde_json::Value =
            serde_json::from_str(&json_schema::<Vec<Finding>>()).expect("JSON");
        assert!(schema.get("$schema").is_none());
        assert_eq!(schema["type"], "array");
        let finding = &schema["$defs"]["Finding"];
        assert_eq!(finding["additionalProperties"], false);
        assert_eq!(finding["properties"]["severity"]["description"], "How bad.");
    }

    /// Structured output's schema says the constraints the API does not take (an
    /// unsigned integer's `minimum 0`) in the description instead; the tool schema
    /// keeps them.
    #[test]
    fn output_schemas_describe_unsupported_constraints() {
        let tool: serde_json::Value =
            serde_json::from_str(&json_schema::<Finding>()).expect("JSON");
        assert_eq!(tool["properties"]["line"]["minimum"], 0);
        let output: serde_json::Value =
            serde_json::from_str(&output_schema::<Finding>()).expect("JSON");
        let line = &output["properties"]["line"];
        assert!(line.get("minimum").is_none(), "{line}");
        assert_eq!(line["description"], "(minimum 0)");
        assert_eq!(output["properties"]["severity"]["description"], "How bad.");
        assert_eq!(output["additionalProperties"], false);
    }

    fn answer(text: &str, stop_reason: StopReason) -> Response {
        Response {
            id: "msg".into(),
            model: "m".into(),
            content: vec![ContentBlock::text(text)],
            text: text.into(),
            stop_reason,
            usage: Usage::default(),
            cached: false,
        }
    }

    #[test]
    fn a_structured_answer_parses_or_says_why_not() {
        let ok: Vec<Finding> = parse_structured(answer(
            r#"[{"severity":"minor","line":3}]"#,
            StopReason::EndTurn,
        ))
        .expect("parses");
        assert_eq!(ok.len(), 1);
        let err =
            parse_structured::<Vec<Finding>>(answer(r#"[{"severity":"#, StopReason::MaxTokens))
                .unwrap_err();
        assert!(!err.is_llm());
        assert!(err.response().is_some());
        let message = err.to_string();
        assert!(
            message.contains("does not match") && message.contains("MaxTokens"),
            "{message}"
        );
        assert!(matches!(
            crate::AgentError::from(err),
            crate::AgentError::Failed(_)
        ));
    }
}
