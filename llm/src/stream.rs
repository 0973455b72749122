//! Streamed answers of the Messages API: server-sent events, parsed by the
//! `eventsource-stream` crate (partial lines across chunks, CR/LF/CRLF, multi-line
//! `data:`, comments), turned into [`StreamEvent`]s as they arrive and assembled into
//! the same [`Response`] a whole answer gives, through the same checks
//! ([`wire::parse_response`]).
//!
//! The provider reads them ([`crate::EventStream`]); the service holds them under its
//! limits ([`crate::CompletionStream`]).

use crate::anthropic::stream_error;
use crate::content::ContentBlock;
use crate::provider::ProviderError;
use crate::types::{LlmError, Response, StopReason, Usage};
use crate::wire;
use eventsource_stream::Eventsource as _;
use futures_util::{Stream, StreamExt as _};
use serde_json::{Map, Value};
use std::pin::Pin;

/// More of a content block, as it is generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockDelta {
    /// More text of a text block.
    Text(String),
    /// More of a tool use's input JSON (valid only once the block is complete).
    InputJson(String),
    /// More of a thinking block's text.
    Thinking(String),
    /// A thinking block's signature.
    Signature(String),
}

/// One event of a streamed answer, as the API sends them (`ping` and `message_stop`
/// are not passed on: the first only keeps the connection alive, the second is the
/// end of the stream).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer starts.
    MessageStart {
        /// The provider's id of the answer.
        id: String,
        /// The model that answers.
        model: String,
        /// Input (and cache) tokens; output so far.
        usage: Usage,
    },
    /// A content block starts: text and thinking empty, a tool use with an empty input.
    BlockStart {
        /// Its index in the answer's content.
        index: u32,
        /// The block as it starts.
        block: ContentBlock,
    },
    /// More of the block at `index`.
    BlockDelta {
        /// The block's index.
        index: u32,
        /// What is added.
        delta: BlockDelta,
    },
    /// The block at this index is complete.
    BlockStop(u32),
    /// Generation ended: the stop reason and the cumulative usage.
    MessageDelta {
        /// Why generation stopped, when said.
        stop_reason: Option<StopReason>,
        /// Tokens so far.
        usage: Usage,
    },
}

/// The events of an answer that is already whole (from the response cache, or a
/// provider that does not stream): a start, then each block as a start, one delta with
/// all of it and a stop, then the stop reason and usage. Reading them back gives the
/// answer.
pub fn replay(answer: &Response) -> Vec<StreamEvent> {
    let mut events = vec![StreamEvent::MessageStart {
        id: answer.id.clone(),
        model: answer.model.clone(),
        usage: Usage {
            output_tokens: 0,
            ..answer.usage
        },
    }];
    for (index, block) in answer.blocks().iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let (start, deltas) = match block.clone() {
            ContentBlock::Text {
                text,
                cache_control,
            } => (
                ContentBlock::Text {
                    text: String::new(),
                    cache_control,
                },
                vec![BlockDelta::Text(text)],
            ),
            ContentBlock::ToolUse { id, name, input } => (
                ContentBlock::ToolUse {
                    id,
                    name,
                    input: String::new(),
                },
                vec![BlockDelta::InputJson(input)],
            ),
            ContentBlock::Thinking {
                thinking,
                signature,
            } => (
                ContentBlock::Thinking {
                    thinking: String::new(),
                    signature: String::new(),
                },
                vec![
                    BlockDelta::Thinking(thinking),
                    BlockDelta::Signature(signature),
                ],
            ),
            whole => (whole, Vec::new()),
        };
        events.push(StreamEvent::BlockStart {
            index,
            block: start,
        });
        events.extend(
            deltas
                .into_iter()
                .map(|delta| StreamEvent::BlockDelta { index, delta }),
        );
        events.push(StreamEvent::BlockStop(index));
    }
    events.push(StreamEvent::MessageDelta {
        stop_reason: Some(answer.stop_reason.clone()),
        usage: answer.usage,
    });
    events
}

/// A block being assembled: its JSON as it started, its text parts, and for a tool
/// use the pieces of its input.
#[derive(Debug)]
struct Partial {
    start: Map<String, Value>,
    input: Option<String>,
    complete: bool,
}

/// Assembles a streamed answer from its events, one SSE event at a time.
#[derive(Debug, Default)]
pub struct Assembler {
    message: Option<Map<String, Value>>,
    usage: Map<String, Value>,
    blocks: Vec<Partial>,
    stop_reason: Option<Value>,
    stop_sequence: Option<Value>,
    stopped: bool,
}

fn invalid(what: impl Into<String>) -> ProviderError {
    ProviderError::fatal(LlmError::InvalidResponse(what.into()))
}

/// The usage an event reports so far, as a [`Usage`] (counted as a whole answer's
/// is; the assembled answer checks it strictly).
fn usage_of(usage: &Map<String, Value>) -> Usage {
    serde_json::from_value::<wire::WireUsage>(Value::Object(usage.clone()))
        .map(|u| Usage::from(&u))
        .unwrap_or_default()
}

impl Assembler {
    /// An assembler that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `message_stop` has been read.
    pub fn is_complete(&self) -> bool {
        self.stopped
    }

    /// Feeds one event (`event:` name and `data:` text). Returns the event to pass
    /// on, if any. An `error` event is the API's failure, classified as its status
    /// would be; anything out of order or malformed is an invalid response.
    pub fn push(&mut self, name: &str, data: &str) -> Result<Option<StreamEvent>, ProviderError> {
        if self.stopped {
            return Err(invalid(format!("an event ({name}) after message_stop")));
        }
        if name == "ping" {
            return Ok(None);
        }
        if name == "error" {
            return Err(stream_error(data.as_bytes()));
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|e| invalid(format!("a malformed {name} event: {e}")))?;
        let kind = value.get("type").and_then(Value::as_str).unwrap_or(name);
        if kind != name && !name.is_empty() && name != "message" {
            return Err(invalid(format!("an event named {name} carries a {kind}")));
        }
        if self.message.is_none() && kind != "message_start" {
            return Err(invalid(format!("{kind} before message_start")));
        }
        match kind {
            "message_start" => self.start(&value).map(Some),
            "content_block_start" => self.block_start(&value).map(Some),
            "content_block_delta" => self.block_delta(&value),
            "content_block_stop" => self.block_stop(&value).map(Some),
            "message_delta" => self.message_delta(&value).map(Some),
            "message_stop" => {
                if self.blocks.iter().any(|b| !b.complete) {
                    return Err(invalid("message_stop with a content block still open"));
                }
                self.stopped = true;
                Ok(None)
            }
            // Unknown event types are ignored, as the API's SDKs do.
            _ => Ok(None),
        }
    }

    fn start(&mut self, value: &Value) -> Result<StreamEvent, ProviderError> {
        if self.message.is_some() {
            return Err(invalid("a second message_start"));
        }
        let Some(Value::Object(message)) = value.get("message") else {
            return Err(invalid("message_start without a message"));
        };
        let text = |k: &str| {
            message
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (id, model) = (text("id"), text("model"));
        if let Some(Value::Object(usage)) = message.get("usage") {
            self.usage = usage.clone();
        }
        self.message = Some(message.clone());
        Ok(StreamEvent::MessageStart {
            id,
            model,
            usage: usage_of(&self.usage),
        })
    }

    fn index(&self, value: &Value, expect_new: bool) -> Result<usize, ProviderError> {
        let index = value
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("a content block event without an index"))?;
        let index =
            usize::try_from(index).map_err(|_| invalid("a content block index out of range"))?;
        let expected = if expect_new { self.blocks.len() } else { index };
        if index != expected || (!expect_new && self.blocks.get(index).is_none_or(|b| b.complete)) {
            return Err(invalid(format!(
                "a content block event for index {index} out of order"
            )));
        }
        Ok(index)
    }

    fn block_start(&mut self, value: &Value) -> Result<StreamEvent, ProviderError> {
        let index = self.index(value, true)?;
        let Some(Value::Object(block)) = value.get("content_block") else {
            return Err(invalid("content_block_start without a block"));
        };
        let mut block = block.clone();
        // A block starts empty; the API leaves out what has no value yet (a thinking
        // block's signature arrives as a delta).
        let fields: &[&str] = match block.get("type").and_then(Value::as_str) {
            Some("text") => &["text"],
            Some("thinking") => &["thinking", "signature"],
            _ => &[],
        };
        for field in fields {
            block
                .entry(*field)
                .or_insert_with(|| Value::String(String::new()));
        }
        let block = &block;
        let is_tool = block.get("type").and_then(Value::as_str) == Some("tool_use");
        let mut started: ContentBlock = serde_json::from_value(Value::Object(block.clone()))
            .map_err(|e| invalid(format!("content block {index}: {e}")))?;
        if let ContentBlock::ToolUse { input, .. } = &mut started {
            input.clear();
        }
        self.blocks.push(Partial {
            start: block.clone(),
            input: is_tool.then(String::new),
            complete: false,
        });
        Ok(StreamEvent::BlockStart {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            block: started,
        })
    }

    fn block_delta(&mut self, value: &Value) -> Result<Option<StreamEvent>, ProviderError> {
        let index = self.index(value, false)?;
        let delta = value
            .get("delta")
            .ok_or_else(|| invalid("content_block_delta without a delta"))?;
        let piece = |k: &str| {
            delta
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("a delta without {k}")))
        };
        let block = &mut self.blocks[index];
        let kind = block
            .start
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        // In place: a long answer arrives in thousands of deltas.
        let append = |block: &mut Partial, field: &str, text: &str| match block.start.get_mut(field)
        {
            Some(Value::String(now)) => now.push_str(text),
            _ => {
                block
                    .start
                    .insert(field.to_owned(), Value::String(text.to_owned()));
            }
        };
        let out = match (delta.get("type").and_then(Value::as_str), kind.as_str()) {
            (Some("text_delta"), "text") => {
                let text = piece("text")?;
                append(block, "text", &text);
                BlockDelta::Text(text)
            }
            (Some("thinking_delta"), "thinking") => {
                let text = piece("thinking")?;
                append(block, "thinking", &text);
                BlockDelta::Thinking(text)
            }
            (Some("signature_delta"), "thinking") => {
                let signature = piece("signature")?;
                block
                    .start
                    .insert("signature".into(), Value::String(signature.clone()));
                BlockDelta::Signature(signature)
            }
            (Some("input_json_delta"), "tool_use") => {
                let json = piece("partial_json")?;
                if let Some(input) = &mut block.input {
                    input.push_str(&json);
                }
                BlockDelta::InputJson(json)
            }
            (Some(other), _)
                if !matches!(
                    other,
                    "text_delta" | "thinking_delta" | "signature_delta" | "input_json_delta"
                ) =>
            {
                // A delta type this client does not know: skipped, as the SDKs do.
                return Ok(None);
            }
            (other, _) => {
                return Err(invalid(format!(
                    "a {} delta for a {kind} block",
                    other.unwrap_or("typeless")
                )));
            }
        };
        Ok(Some(StreamEvent::BlockDelta {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            delta: out,
        }))
    }

    fn block_stop(&mut self, value: &Value) -> Result<StreamEvent, ProviderError> {
        let index = self.index(value, false)?;
        let block = &mut self.blocks[index];
        if let Some(input) = &block.input {
            let input = if input.trim().is_empty() {
                "{}"
            } else {
                input.as_str()
            };
            if !matches!(serde_json::from_str::<Value>(input), Ok(Value::Object(_))) {
                return Err(invalid(format!(
                    "the input of tool use {index} is not a JSON object"
                )));
            }
        }
        block.complete = true;
        Ok(StreamEvent::BlockStop(
            u32::try_from(index).unwrap_or(u32::MAX),
        ))
    }

    fn message_delta(&mut self, value: &Value) -> Result<StreamEvent, ProviderError> {
        if let Some(delta) = value.get("delta") {
            if let Some(reason) = delta.get("stop_reason").filter(|v| !v.is_null()) {
                self.stop_reason = Some(reason.clone());
            }
            if let Some(sequence) = delta.get("stop_sequence").filter(|v| !v.is_null()) {
                self.stop_sequence = Some(sequence.clone());
            }
        }
        // Usage is cumulative: what is said replaces what was known.
        if let Some(Value::Object(usage)) = value.get("usage") {
            for (k, v) in usage {
                if !v.is_null() {
                    self.usage.insert(k.clone(), v.clone());
                }
            }
        }
        let stop_reason =
            self.stop_reason.as_ref().and_then(Value::as_str).map(|r| {
                StopReason::from_wire(r, self.stop_sequence.as_ref().and_then(Value::as_str))
            });
        Ok(StreamEvent::MessageDelta {
            stop_reason,
            usage: usage_of(&self.usage),
        })
    }

    /// The whole answer, through the same checks as a whole answer's body. A stream
    /// that ended before `message_stop` is an invalid response.
    pub fn finish(self) -> Result<Response, ProviderError> {
        if !self.stopped {
            return Err(invalid("the stream ended before message_stop"));
        }
        let mut message = self.message.unwrap_or_default();
        message.insert("usage".into(), Value::Object(self.usage));
        message.insert(
            "stop_reason".into(),
            self.stop_reason.unwrap_or(Value::Null),
        );
        message.insert(
            "stop_sequence".into(),
            self.stop_sequence.unwrap_or(Value::Null),
        );
        message.insert("content".into(), Value::Array(Vec::new()));
        // The blocks are spliced in as text, so that a tool's input keeps the bytes the
        // model produced.
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for mut block in self.blocks {
            match block.input.take() {
                Some(input) => {
                    let input = if input.trim().is_empty() {
                        "{}".to_owned()
                    } else {
                        input
                    };
                    block.start.remove("input");
                    let mut text = Value::Object(block.start).to_string();
                    text.pop();
                    let sep = if text.ends_with('{') { "" } else { "," };
                    blocks.push(format!("{text}{sep}\"input\":{input}}}"));
                }
                None => blocks.push(Value::Object(block.start).to_string()),
            }
        }
        let mut body = Value::Object(message).to_string();
        let empty = "\"content\":[]";
        let at = body
            .find(empty)
            .ok_or_else(|| invalid("could not assemble the answer"))?;
        body.replace_range(
            at..at + empty.len(),
            &format!("\"content\":[{}]", blocks.join(",")),
        );
        wire::parse_response(body.as_bytes()).map_err(ProviderError::fatal)
    }
}

/// What one read of a stream gives.
#[derive(Debug)]
pub(crate) enum Read {
    /// An event to pass on.
    Event(StreamEvent),
    /// Something that is not passed on (a `ping`): the connection is alive.
    KeepAlive,
    /// The answer is complete.
    End,
}

/// Reads a streamed answer from its body's bytes: [`next`](Self::next) gives the
/// events as they arrive, [`finish`](Self::finish) the assembled answer.
pub struct SseReader {
    events: Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>,
    assembler: Assembler,
    scrub: Option<Scrub>,
}

/// What is done to each event's data before it is read (removing a secret an upstream
/// echoed).
type Scrub = Box<dyn FnMut(&mut Vec<u8>) + Send>;

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("assembler", &self.assembler)
            .finish_non_exhaustive()
    }
}

impl SseReader {
    /// Reads `bytes` (a body's chunks), refusing more than `max_bytes` in all.
    pub fn new<S, B, E>(bytes: S, max_bytes: usize) -> Self
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
        E: std::fmt::Display + Send,
    {
        let mut seen = 0usize;
        let capped = bytes.map(move |chunk| {
            let chunk = chunk.map_err(|e| format!("the connection failed mid-answer: {e}"))?;
            seen = seen.saturating_add(chunk.as_ref().len());
            if seen > max_bytes {
                return Err(format!("the streamed answer passed {max_bytes} bytes"));
            }
            Ok(chunk)
        });
        let events = capped.eventsource().map(|e| e.map_err(|e| e.to_string()));
        Self {
            events: Box::pin(events),
            assembler: Assembler::new(),
            scrub: None,
        }
    }

    /// Applies `scrub` to every event's data before reading it.
    pub fn scrubbing(mut self, scrub: impl FnMut(&mut Vec<u8>) + Send + 'static) -> Self {
        self.scrub = Some(Box::new(scrub));
        self
    }

    /// The next event passed on; `None` at `message_stop`. The stream's end before
    /// it, a transport failure, the byte cap, an `error` event: errors.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ProviderError> {
        loop {
            match self.step().await? {
                Read::Event(event) => return Ok(Some(event)),
                Read::KeepAlive => {}
                Read::End => return Ok(None),
            }
        }
    }

    /// Reads one server-sent event: an event passed on, or one that is not (a `ping`,
    /// an event type this client ignores), which still shows the connection is alive.
    pub(crate) async fn step(&mut self) -> Result<Read, ProviderError> {
        {
            if self.assembler.is_complete() {
                return Ok(Read::End);
            }
            let Some(event) = self.events.next().await else {
                return Err(invalid("the stream ended before message_stop"));
            };
            let event =
                event.map_err(|e| ProviderError::transient(LlmError::Connection(e), None))?;
            let data = match &mut self.scrub {
                Some(scrub) => {
                    let mut bytes = event.data.into_bytes();
                    scrub(&mut bytes);
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                None => event.data,
            };
            Ok(match self.assembler.push(&event.event, &data)? {
                Some(passed) => Read::Event(passed),
                None if self.assembler.is_complete() => Read::End,
                None => Read::KeepAlive,
            })
        }
    }

    /// Reads what is left and returns the whole answer.
    pub async fn finish(mut self) -> Result<Response, ProviderError> {
        while self.next().await?.is_some() {}
        self.assembler.finish()
    }

    /// The whole answer, once [`next`](Self::next) has returned `None`; an invalid
    /// response before.
    pub fn into_answer(self) -> Result<Response, ProviderError> {
        self.assembler.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An SSE body of `events` (name, data), `crlf` line ends.
    fn body(events: &[(&str, Value)], crlf: bool) -> String {
        let nl = if crlf { "\r\n" } else { "\n" };
        events
            .iter()
            .map(|(name, data)| format!("event: {name}{nl}data: {data}{nl}{nl}"))
            .collect()
    }

    fn tool_answer() -> Vec<(&'static str, Value)> {
        vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4}}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "add."}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Adding — "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "now."}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"b\": 2, "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"a\": 1}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]
    }

    /// Reads `text` cut into chunks of `size` bytes.
    async fn read(text: &str, size: usize) -> (Vec<StreamEvent>, Result<Response, ProviderError>) {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = text
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let mut reader = SseReader::new(futures_util::stream::iter(chunks), 1 << 20);
        let mut events = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => return (events, Err(e)),
            }
        }
        (events, reader.finish().await)
    }

    /// Every block kind assembles to the answer a whole body gives, whatever the
    /// chunking (one byte at a time included) and line ends.
    #[tokio::test]
    async fn a_streamed_answer_assembles_like_a_whole_one() {
        for (size, crlf) in [(1, false), (7, true), (4096, false)] {
            let (events, answer) = read(&body(&tool_answer(), crlf), size).await;
            let answer = answer.expect("assembled");
            assert_eq!(answer.id, "msg_1");
            assert_eq!(answer.text, "Adding — now.");
            assert_eq!(answer.stop_reason, StopReason::ToolUse);
            assert_eq!(answer.usage.input_tokens, 10);
            assert_eq!(answer.usage.output_tokens, 42, "the cumulative count wins");
            assert_eq!(answer.usage.cache_read_input_tokens, 4);
            assert_eq!(
                answer.content[0],
                ContentBlock::Thinking {
                    thinking: "Let me add.".into(),
                    signature: "c2ln".into()
                }
            );
            assert_eq!(
                answer.content[2],
                ContentBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "add".into(),
                    input: "{\"b\": 2, \"a\": 1}".into()
                },
                "the input keeps the model's bytes"
            );
            // Ping and message_stop are not passed on; the rest are, in order.
            assert_eq!(events.len(), 15, "{size} {crlf}");
            assert!(matches!(&events[0], StreamEvent::MessageStart { id, .. } if id == "msg_1"));
            assert!(matches!(
                &events[11],
                StreamEvent::BlockDelta { index: 2, delta: BlockDelta::InputJson(j) } if j == "{\"b\": 2, "
            ));
            assert!(matches!(
                &events[10],
                StreamEvent::BlockStart { index: 2, block: ContentBlock::ToolUse { input, .. } } if input.is_empty()
            ));
        }
    }

    /// What goes wrong mid-stream is typed: the API's error event as its status
    /// would be, an early end and malformed events as invalid responses, a broken
    /// connection as a connection error.
    #[tokio::test]
    async fn failures_mid_stream_are_typed() {
        let all = tool_answer();
        let mut overloaded = all[..5].to_vec();
        overloaded.push(("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
        let (_, r) = read(&body(&overloaded, false), 64).await;
        assert!(
            matches!(
                r,
                Err(ProviderError {
                    error: LlmError::Overloaded(_),
                    ..
                })
            ),
            "{r:?}"
        );

        let truncated = all[..all.len() - 1].to_vec();
        let (events, r) = read(&body(&truncated, false), 64).await;
        assert_eq!(events.len(), 15, "every event before the end was passed on");
        assert!(
            matches!(r, Err(ProviderError { error: LlmError::InvalidResponse(ref m), .. }) if m.contains("before message_stop")),
            "{r:?}"
        );

        let mut malformed = body(&all[..3], false);
        malformed.push_str("event: content_block_delta\ndata: {not json\n\n");
        let (_, r) = read(&malformed, 64).await;
        assert!(
            matches!(r, Err(ProviderError { error: LlmError::InvalidResponse(ref m), .. }) if m.contains("malformed")),
            "{r:?}"
        );

        let mut out_of_order = all[..1].to_vec();
        out_of_order.push(all[3].clone());
        let (_, r) = read(&body(&out_of_order, false), 64).await;
        assert!(
            matches!(
                r,
                Err(ProviderError {
                    error: LlmError::InvalidResponse(_),
                    ..
                })
            ),
            "{r:?}"
        );

        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(body(&all[..2], false).into_bytes()),
            Err(std::io::Error::other("connection reset")),
        ];
        let mut reader = SseReader::new(futures_util::stream::iter(chunks), 1 << 20);
        assert!(reader.next().await.expect("the start").is_some());
        let e = loop {
            match reader.next().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("not complete"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e.error, LlmError::Connection(_)), "{e:?}");
    }

    /// A whole answer replayed as events folds back into its blocks, the events in the
    /// order a stream has them.
    #[tokio::test]
    async fn a_replayed_answer_reads_back_whole() {
        let (_, answer) = read(&body(&tool_answer(), false), 4096).await;
        let answer = answer.expect("assembled");
        let events = replay(&answer);
        let mut blocks: Vec<ContentBlock> = Vec::new();
        for event in &events {
            match event {
                StreamEvent::BlockStart { block, .. } => blocks.push(block.clone()),
                StreamEvent::BlockDelta { index, delta } => {
                    match (&mut blocks[*index as usize], delta) {
                        (ContentBlock::Text { text, .. }, BlockDelta::Text(t)) => text.push_str(t),
                        (ContentBlock::Thinking { thinking, .. }, BlockDelta::Thinking(t)) => {
                            thinking.push_str(t)
                        }
                        (ContentBlock::Thinking { signature, .. }, BlockDelta::Signature(t)) => {
                            *signature = t.clone()
                        }
                        (ContentBlock::ToolUse { input, .. }, BlockDelta::InputJson(t)) => {
                            input.push_str(t)
                        }
                        other => panic!("a delta of the wrong kind: {other:?}"),
                    }
                }
                _ => {}
            }
        }
        assert_eq!(blocks, answer.content);
        assert!(
            matches!(events.first(), Some(StreamEvent::MessageStart { usage, .. }) if usage.output_tokens == 0)
        );
        assert!(
            matches!(events.last(), Some(StreamEvent::MessageDelta { stop_reason: Some(StopReason::ToolUse), usage }) if *usage == answer.usage)
        );
        // A one-text-block answer (kept as its text) replays its block too.
        let mut plain = answer.clone();
        plain.content.clear();
        plain.text = "hi".into();
        assert_eq!(replay(&plain).len(), 5);
    }

    /// The byte cap: an answer at it is read, one byte over it is refused.
    #[tokio::test]
    async fn the_byte_cap_bounds_a_stream() {
        let text = body(&tool_answer(), false);
        let at = SseReader::new(
            futures_util::stream::iter([Ok::<_, std::io::Error>(text.clone().into_bytes())]),
            text.len(),
        );
        assert!(at.finish().await.is_ok());
        let over = SseReader::new(
            futures_util::stream::iter([Ok::<_, std::io::Error>(text.clone().into_bytes())]),
            text.len() - 1,
        );
        assert!(over.finish().await.is_err());
    }
}
