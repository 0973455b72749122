//! The `llm` interface: converts the guest's requests, applies the run's settings
//! and limits, and sends them through the host's [`LlmService`].

use super::Caller;
use crate::bindings::v0_1::claude_force::agent::llm::Host;
use crate::bindings::v0_1::types as wit;
use crate::bindings::v0_2::types as wit2;
use crate::events::{EventSink, RunEvent};
use crate::limits::{LIST_ITEM_BYTES, RunOptions};
use cf_llm::{
    CacheControl, CacheMode, CacheTtl, CallContext, Completion, CompletionStream, Content,
    ContentBlock, DocumentSource, Effort, Image, ImageMediaType, Ledger, LlmError, LlmService,
    Media, Message, Request, Role, StopReason, System, TextBlock, Thinking, Tool, ToolChoice,
    ToolResultContent,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;
use wasmtime::component::{Resource, ResourceTable};

/// What a run's model calls are completed with besides the guest's own values.
#[derive(Debug, Clone)]
pub(crate) struct CallSettings {
    /// The operator's options for the run: they win over the guest's values.
    pub options: RunOptions,
    /// The agent's `default-model`, empty for none.
    pub agent_model: String,
    /// The host's default model.
    pub host_model: String,
    /// `max_tokens` when nobody sets it.
    pub default_max_tokens: u32,
    /// The largest request a guest may send, in bytes (media apart).
    pub max_request_bytes: usize,
    /// The largest image, in bytes.
    pub max_image_bytes: usize,
    /// The most bytes of images and documents in one request.
    pub max_media_bytes: usize,
    /// The most tools in one request.
    pub max_tools: usize,
    /// Model calls the run may make; 0 in `describe()`.
    pub max_calls: u32,
}

/// The `llm` capability of one run.
#[derive(Debug)]
pub(crate) struct LlmCtx {
    service: LlmService,
    caller: Arc<Caller>,
    ledger: Ledger,
    deadline: Instant,
    settings: CallSettings,
    /// Calls still allowed in this run.
    calls_left: u32,
    /// Time spent inside model calls.
    busy: Duration,
    queue_wait: Duration,
    /// The model of the last answer.
    last_model: Option<String>,
    /// The run's open response streams (contract 0.2.0).
    streams: ResourceTable,
    /// The table numbers of the open streams, in the order they were opened.
    open_streams: Vec<u32>,
}

impl LlmCtx {
    /// The capability for one run of `caller`: calls go through `service`, are charged
    /// to `ledger` and end by `deadline`.
    pub(crate) fn new(
        service: LlmService,
        caller: Arc<Caller>,
        ledger: Ledger,
        deadline: Instant,
        settings: CallSettings,
    ) -> Self {
        Self {
            service,
            caller,
            ledger,
            deadline,
            calls_left: settings.max_calls,
            settings,
            busy: Duration::ZERO,
            queue_wait: Duration::ZERO,
            last_model: None,
            streams: ResourceTable::new(),
            open_streams: Vec::new(),
        }
    }

    /// Time spent inside model calls (permits, attempts, backoff).
    pub(crate) fn busy(&self) -> Duration {
        self.busy
    }

    /// Time spent waiting for a permit of the global limit.
    pub(crate) fn queue_wait(&self) -> Duration {
        self.queue_wait
    }

    /// The model of the last answer.
    pub(crate) fn last_model(&self) -> Option<&str> {
        self.last_model.as_deref()
    }
}

/// A request as a guest of any contract version asked for it, before the run's
/// settings complete it: `request.model` and `request.max_tokens` are placeholders
/// (empty, 0) until [`LlmCtx::resolve`].
#[derive(Debug)]
pub(crate) struct Asked {
    request: Request,
    model: Option<String>,
    max_tokens: Option<u32>,
    cache: CacheMode,
}

impl Asked {
    /// The request's size as the request cap counts it: its content (media apart),
    /// and [`LIST_ITEM_BYTES`] for each message, content block, tool and stop
    /// sequence.
    fn bytes(&self, media: &Media) -> usize {
        let r = &self.request;
        let blocks: usize = r
            .messages
            .iter()
            .map(|m| match &m.content {
                Content::Blocks(b) => b.len(),
                Content::Text(_) => 0,
            })
            .sum();
        let system_blocks = match &r.system {
            Some(System::Blocks(b)) => b.len(),
            _ => 0,
        };
        r.text_bytes() - media.bytes()
            + self.model.as_ref().map_or(0, String::len)
            + LIST_ITEM_BYTES
                * (r.messages.len()
                    + blocks
                    + system_blocks
                    + r.tools.len()
                    + r.stop_sequences.len())
    }
}

impl LlmCtx {
    /// The request the guest asked for, completed with the run's settings: the
    /// operator's options win, then the guest's values, then the agent's and the
    /// host's defaults.
    fn resolve(&self, asked: Asked) -> (Request, CacheMode) {
        let s = &self.settings;
        let mut request = asked.request;
        request.model = s
            .options
            .model
            .clone()
            .or(asked.model.filter(|m| !m.is_empty()))
            .or_else(|| (!s.agent_model.is_empty()).then(|| s.agent_model.clone()))
            .unwrap_or_else(|| s.host_model.clone());
        request.max_tokens = s
            .options
            .max_tokens
            .or(asked.max_tokens)
            .unwrap_or(s.default_max_tokens);
        request.temperature = s.options.temperature.or(request.temperature);
        (request, asked.cache)
    }

    /// Who calls, for the service: this run's agent, account and deadline.
    fn call_context(&self, cache_mode: CacheMode) -> CallContext<'_> {
        CallContext::new(&self.caller.name, &self.ledger)
            .with_component(self.caller.component.as_deref())
            .with_deadline(self.deadline)
            .with_cache_mode(cache_mode)
            // Nobody waits for the run's events: its streams are asked for whole.
            .with_live(self.settings.options.events.is_some())
    }

    /// One model call of any contract version, whole.
    async fn call(&mut self, asked: Asked) -> Result<Completion, LlmError> {
        let (request, cache_mode, _share) = self.admit(asked).await?;
        let call = self.call_context(cache_mode);
        let started = Instant::now();
        let result = self.service.complete(&call, request).await;
        self.busy += started.elapsed();
        let done = result?;
        self.queue_wait += done.queue_wait;
        self.last_model = Some(done.response.model.clone());
        Ok(done)
    }

    /// One model call of any contract version, streamed: the stream, and the
    /// plugin's share permit it holds while open.
    async fn open(
        &mut self,
        asked: Asked,
    ) -> Result<(CompletionStream, Option<OwnedSemaphorePermit>), LlmError> {
        let (request, cache_mode, share) = self.admit(asked).await?;
        let call = self.call_context(cache_mode);
        let started = Instant::now();
        let result = self.service.stream(&call, request).await;
        self.busy += started.elapsed();
        let stream = result?;
        self.queue_wait += stream.queue_wait();
        Ok((stream, share))
    }

    /// What every call of any contract version goes through before the service: the
    /// run's call limit, the request and media caps, the plugin's permissions, and its
    /// share of the concurrency limit (whose permit the caller holds while the call
    /// is in flight). The service validates the request before anything is sent.
    async fn admit(
        &mut self,
        asked: Asked,
    ) -> Result<(Request, CacheMode, Option<OwnedSemaphorePermit>), LlmError> {
        if self.calls_left == 0 {
            let max_calls = self.settings.max_calls;
            return Err(LlmError::Denied(if max_calls == 0 {
                "describe() may not call the model".to_owned()
            } else {
                format!(
                    "capability llm: agent {} reached its limit of {} model calls in one run",
                    self.caller.name, max_calls
                )
            }));
        }
        self.calls_left -= 1;
        let media = asked.request.media();
        let bytes = asked.bytes(&media);
        if bytes > self.settings.max_request_bytes {
            return Err(LlmError::TooLarge(format!(
                "the request has {bytes} bytes (text, and {LIST_ITEM_BYTES} per message and stop sequence); the host accepts {}",
                self.settings.max_request_bytes
            )));
        }
        let tools = asked.request.tools.len();
        if tools > self.settings.max_tools {
            return Err(LlmError::TooLarge(format!(
                "the request defines {tools} tools; the host accepts {}",
                self.settings.max_tools
            )));
        }
        if media.bytes() > 0 {
            self.check_media(&media)?;
        }
        let (resolved, cache_mode) = self.resolve(asked);
        let permissions = &self.caller.permissions;
        permissions
            .check_call(&resolved.model, resolved.max_tokens)
            .map_err(LlmError::Denied)?;
        match resolved.thinking {
            Some(Thinking::Enabled { budget_tokens }) => {
                permissions.check_thinking(Some(budget_tokens))
            }
            Some(Thinking::Adaptive) => permissions.check_thinking(None),
            Some(Thinking::Disabled) | None => Ok(()),
        }
        .map_err(LlmError::Denied)?;
        let share = match &self.caller.llm_share {
            Some(share) => match tokio::time::timeout_at(self.deadline, share.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => return Err(LlmError::Timeout("the run's deadline was reached waiting for the plugin's share of the concurrency limit".into())),
            },
            None => None,
        };
        Ok((resolved, cache_mode, share))
    }

    /// The host's caps on images and documents (per image, per request) and the
    /// plugin's grant for them.
    fn check_media(&self, media: &Media) -> Result<(), LlmError> {
        let s = &self.settings;
        let (largest_image, media) = (media.largest_image, media.bytes());
        if largest_image > s.max_image_bytes {
            return Err(LlmError::TooLarge(format!(
                "an image has {largest_image} bytes; the host accepts images of at most {}",
                s.max_image_bytes
            )));
        }
        if media > s.max_media_bytes {
            return Err(LlmError::TooLarge(format!(
                "the request carries {media} bytes of images and documents; the host accepts {}",
                s.max_media_bytes
            )));
        }
        self.caller
            .permissions
            .check_media(media)
            .map_err(LlmError::Denied)
    }
}

// ---- contract 0.1.0 ----------------------------------------------------------------

/// A 0.1.0 request: text turns only.
fn asked_0_1(r: wit::LlmRequest) -> Asked {
    let mut request = Request::new(
        String::new(),
        0,
        r.messages
            .into_iter()
            .map(|m| Message {
                role: role_0_1(m.role),
                content: Content::Text(m.content),
            })
            .collect(),
    );
    request.system = r.system.filter(|s| !s.is_empty()).map(System::Text);
    request.temperature = r.temperature;
    request.top_p = r.top_p;
    request.top_k = r.top_k;
    request.stop_sequences = r.stop_sequences;
    request.user_id = r.user_id;
    Asked {
        request,
        model: r.model,
        max_tokens: r.max_tokens,
        cache: cache_mode_0_1(r.cache),
    }
}

fn role_0_1(r: wit::Role) -> Role {
    match r {
        wit::Role::User => Role::User,
        wit::Role::Assistant => Role::Assistant,
    }
}

fn cache_mode_0_1(c: wit::CacheMode) -> CacheMode {
    match c {
        wit::CacheMode::Normal => CacheMode::Normal,
        wit::CacheMode::Bypass => CacheMode::Bypass,
        wit::CacheMode::Refresh => CacheMode::Refresh,
        wit::CacheMode::ReadOnly => CacheMode::ReadOnly,
    }
}

impl Host for LlmCtx {
    async fn complete(
        &mut self,
        request: wit::LlmRequest,
    ) -> wasmtime::Result<Result<wit::LlmResponse, wit::LlmError>> {
        Ok(match self.call(asked_0_1(request)).await {
            Ok(done) => Ok(wit::LlmResponse {
                id: done.response.id,
                model: done.response.model,
                // 0.1.0 has text only; an answer that only uses a tool cannot come
                // back to a 0.1.0 guest, which sends no tools.
                text: done.response.text,
                stop_reason: stop_reason_to_wit(done.response.stop_reason),
                usage: wit::Usage {
                    input_tokens: done.response.usage.input_tokens,
                    output_tokens: done.response.usage.output_tokens,
                    cache_creation_input_tokens: done.response.usage.cache_creation_input_tokens,
                    cache_read_input_tokens: done.response.usage.cache_read_input_tokens,
                },
                cached: done.cached,
            }),
            Err(e) => Err(error_to_wit(e)),
        })
    }
}

impl crate::bindings::v0_1::types::Host for LlmCtx {}

// ---- contract 0.2.0 ----------------------------------------------------------------

fn cache_control_0_2(c: Option<wit2::CacheControl>) -> Option<CacheControl> {
    c.map(|c| {
        CacheControl::new(match c.ttl {
            wit2::CacheTtl::FiveMinutes => CacheTtl::FiveMinutes,
            wit2::CacheTtl::OneHour => CacheTtl::OneHour,
        })
    })
}

fn cache_control_to_0_2(c: Option<CacheControl>) -> Option<wit2::CacheControl> {
    c.map(|c| wit2::CacheControl {
        ttl: match c.ttl {
            CacheTtl::FiveMinutes => wit2::CacheTtl::FiveMinutes,
            CacheTtl::OneHour => wit2::CacheTtl::OneHour,
        },
    })
}

fn image_0_2(i: wit2::Image) -> Image {
    Image {
        media_type: match i.media_type {
            wit2::ImageMediaType::Jpeg => ImageMediaType::Jpeg,
            wit2::ImageMediaType::Png => ImageMediaType::Png,
            wit2::ImageMediaType::Gif => ImageMediaType::Gif,
            wit2::ImageMediaType::Webp => ImageMediaType::Webp,
        },
        data: i.data,
    }
}

fn image_to_0_2(i: Image) -> wit2::Image {
    wit2::Image {
        media_type: match i.media_type {
            ImageMediaType::Jpeg => wit2::ImageMediaType::Jpeg,
            ImageMediaType::Png => wit2::ImageMediaType::Png,
            ImageMediaType::Gif => wit2::ImageMediaType::Gif,
            ImageMediaType::Webp => wit2::ImageMediaType::Webp,
        },
        data: i.data,
    }
}

fn block_0_2(b: wit2::ContentBlock) -> ContentBlock {
    match b {
        wit2::ContentBlock::Text(t) => ContentBlock::Text {
            text: t.text,
            cache_control: cache_control_0_2(t.cache_control),
        },
        wit2::ContentBlock::Image(i) => ContentBlock::Image {
            image: image_0_2(i.image),
            cache_control: cache_control_0_2(i.cache_control),
        },
        wit2::ContentBlock::Document(d) => ContentBlock::Document {
            source: match d.source {
                wit2::DocumentSource::Pdf(bytes) => DocumentSource::Pdf(bytes),
                wit2::DocumentSource::PlainText(text) => DocumentSource::PlainText(text),
            },
            title: d.title.filter(|t| !t.is_empty()),
            cache_control: cache_control_0_2(d.cache_control),
        },
        wit2::ContentBlock::ToolUse(u) => ContentBlock::ToolUse {
            id: u.id,
            name: u.name,
            input: u.input,
        },
        wit2::ContentBlock::ToolResult(r) => ContentBlock::ToolResult {
            tool_use_id: r.tool_use_id,
            content: r
                .content
                .into_iter()
                .map(|c| match c {
                    wit2::ToolResultContent::Text(t) => ToolResultContent::Text(t),
                    wit2::ToolResultContent::Image(i) => ToolResultContent::Image(image_0_2(i)),
                })
                .collect(),
            is_error: r.is_error,
            cache_control: cache_control_0_2(r.cache_control),
        },
        wit2::ContentBlock::Thinking(t) => ContentBlock::Thinking {
            thinking: t.thinking,
            signature: t.signature,
        },
        wit2::ContentBlock::RedactedThinking(data) => ContentBlock::RedactedThinking { data },
    }
}

fn block_to_0_2(b: ContentBlock) -> wit2::ContentBlock {
    match b {
        ContentBlock::Text {
            text,
            cache_control,
        } => wit2::ContentBlock::Text(wit2::TextBlock {
            text,
            cache_control: cache_control_to_0_2(cache_control),
        }),
        ContentBlock::Image {
            image,
            cache_control,
        } => wit2::ContentBlock::Image(wit2::ImageBlock {
            image: image_to_0_2(image),
            cache_control: cache_control_to_0_2(cache_control),
        }),
        ContentBlock::Document {
            source,
            title,
            cache_control,
        } => wit2::ContentBlock::Document(wit2::DocumentBlock {
            source: match source {
                DocumentSource::Pdf(bytes) => wit2::DocumentSource::Pdf(bytes),
                DocumentSource::PlainText(text) => wit2::DocumentSource::PlainText(text),
            },
            title,
            cache_control: cache_control_to_0_2(cache_control),
        }),
        ContentBlock::ToolUse { id, name, input } => {
            wit2::ContentBlock::ToolUse(wit2::ToolUseBlock { id, name, input })
        }
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
            cache_control,
        } => wit2::ContentBlock::ToolResult(wit2::ToolResultBlock {
            tool_use_id,
            content: content
                .into_iter()
                .map(|c| match c {
                    ToolResultContent::Text(t) => wit2::ToolResultContent::Text(t),
                    ToolResultContent::Image(i) => wit2::ToolResultContent::Image(image_to_0_2(i)),
                })
                .collect(),
            is_error,
            cache_control: cache_control_to_0_2(cache_control),
        }),
        ContentBlock::Thinking {
            thinking,
            signature,
        } => wit2::ContentBlock::Thinking(wit2::ThinkingBlock {
            thinking,
            signature,
        }),
        ContentBlock::RedactedThinking { data } => wit2::ContentBlock::RedactedThinking(data),
    }
}

/// A 0.2.0 request. A system prompt of one plain block and a turn of one plain text
/// block become plain text, which means the same to the API and shares the response
/// cache with 0.1.0 requests.
fn asked_0_2(r: wit2::LlmRequest) -> Asked {
    let messages = r
        .messages
        .into_iter()
        .map(|m| Message {
            role: match m.role {
                wit2::Role::User => Role::User,
                wit2::Role::Assistant => Role::Assistant,
            },
            content: Content::Blocks(m.content.into_iter().map(block_0_2).collect()).normalized(),
        })
        .collect();
    let mut request = Request::new(String::new(), 0, messages);
    request.system = System::Blocks(
        r.system
            .into_iter()
            .map(|b| TextBlock {
                text: b.text,
                cache_control: cache_control_0_2(b.cache_control),
            })
            .collect(),
    )
    .normalized();
    request.temperature = r.temperature;
    request.top_p = r.top_p;
    request.top_k = r.top_k;
    request.stop_sequences = r.stop_sequences;
    request.user_id = r.user_id;
    request.tools = r
        .tools
        .into_iter()
        .map(|t| Tool {
            name: t.name,
            description: Some(t.description).filter(|d| !d.is_empty()),
            input_schema: t.input_schema,
            strict: t.strict,
            cache_control: cache_control_0_2(t.cache_control),
        })
        .collect();
    request.tool_choice = r.tool_choice.map(|c| match c {
        wit2::ToolChoice::Auto => ToolChoice::Auto,
        wit2::ToolChoice::Any => ToolChoice::Any,
        wit2::ToolChoice::Tool(name) => ToolChoice::Tool(name),
        wit2::ToolChoice::None => ToolChoice::None,
    });
    request.disable_parallel_tool_use = r.disable_parallel_tool_use;
    request.thinking = r.thinking.map(|t| match t {
        wit2::ThinkingConfig::Disabled => Thinking::Disabled,
        wit2::ThinkingConfig::Enabled(budget_tokens) => Thinking::Enabled { budget_tokens },
        wit2::ThinkingConfig::Adaptive => Thinking::Adaptive,
    });
    request.effort = r.effort.map(|e| match e {
        wit2::Effort::Low => Effort::Low,
        wit2::Effort::Medium => Effort::Medium,
        wit2::Effort::High => Effort::High,
        wit2::Effort::Max => Effort::Max,
    });
    request.output_schema = r.output_schema;
    Asked {
        request,
        model: r.model,
        max_tokens: r.max_tokens,
        cache: match r.cache {
            wit2::CacheMode::Normal => CacheMode::Normal,
            wit2::CacheMode::Bypass => CacheMode::Bypass,
            wit2::CacheMode::Refresh => CacheMode::Refresh,
            wit2::CacheMode::ReadOnly => CacheMode::ReadOnly,
        },
    }
}

fn usage_to_0_2(u: &cf_llm::Usage) -> wit2::Usage {
    wit2::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_write_5m_input_tokens: u.cache_creation_5m_input_tokens(),
        cache_write_1h_input_tokens: u.cache_creation_1h_input_tokens,
        cache_read_input_tokens: u.cache_read_input_tokens,
    }
}

fn response_to_0_2(done: Completion) -> wit2::LlmResponse {
    let r = done.response;
    let content = r.blocks().into_owned();
    wit2::LlmResponse {
        id: r.id,
        model: r.model,
        content: content.into_iter().map(block_to_0_2).collect(),
        text: r.text,
        stop_reason: stop_reason_to_0_2(r.stop_reason),
        usage: usage_to_0_2(&r.usage),
        cached: done.cached,
    }
}

/// A streamed answer held for a 0.2.0 guest.
///
/// The service's stream (which holds the permits of the global and the agent's
/// limits) and the plugin's share permit are moved into a task of their own that reads
/// the answer as it arrives and queues its events for the guest. So the permits, the
/// connection and identical calls waiting for the answer depend on the provider alone,
/// never on how fast the guest reads: a guest that stops reading, or computes with a
/// stream open, holds nothing once the answer is complete, and the idle timeout applies
/// between the provider's events. The queue holds at most one answer (the provider's
/// response cap bounds it). Dropping the state aborts the task, which drops the stream:
/// its permits are handed on and its connection closed.
#[derive(Debug)]
struct StreamState {
    /// The events, then the end of the queue once the answer is complete or failed.
    events: mpsc::UnboundedReceiver<Result<cf_llm::StreamEvent, LlmError>>,
    /// The whole call, sent by the task before it ends.
    done: Option<oneshot::Receiver<Result<Completion, LlmError>>>,
    /// The whole call, once received.
    outcome: Option<Result<Completion, LlmError>>,
    /// A failure read from the queue, returned by every later read.
    failed: Option<LlmError>,
    pump: Pump,
}

/// The task reading a stream; aborted when dropped.
#[derive(Debug)]
struct Pump(Option<tokio::task::JoinHandle<()>>);

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

impl StreamState {
    /// Starts reading `stream` (holding `share` until it ends), reporting the tools
    /// its model asks for to `sink`.
    fn start(
        mut stream: CompletionStream,
        share: Option<OwnedSemaphorePermit>,
        sink: Option<EventSink>,
    ) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Ok(Some(event)) => {
                        if let Some(sink) = &sink {
                            observe(sink, &event);
                        }
                        let _ = tx.send(Ok(event));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
            drop(share);
            let _ = done_tx.send(stream.finish().await);
            // The queue ends after the outcome is sent: a reader that sees its end
            // finds the outcome.
            drop(tx);
        });
        Self {
            events,
            done: Some(done),
            outcome: None,
            failed: None,
            pump: Pump(Some(task)),
        }
    }

    /// The next event for the guest; `None` at the end (then the outcome is known).
    async fn next(&mut self) -> Result<Option<cf_llm::StreamEvent>, LlmError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.events.recv().await {
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(e)) => {
                self.failed = Some(e.clone());
                Err(e)
            }
            None => {
                self.outcome().await?;
                Ok(None)
            }
        }
    }

    /// The whole call, once the queue has ended.
    async fn outcome(&mut self) -> Result<Completion, LlmError> {
        if let Some(done) = self.done.take() {
            self.outcome = Some(done.await.unwrap_or_else(|_| {
                Err(LlmError::Connection(
                    "the stream's reader stopped before its end".into(),
                ))
            }));
        }
        self.outcome.clone().unwrap_or_else(|| {
            Err(LlmError::Connection(
                "the stream's reader stopped before its end".into(),
            ))
        })
    }

    /// Ends the reading at once (the stream is dropped: permits handed on, the
    /// connection closed, the usage so far charged) and waits until it has.
    async fn close(mut self) {
        if let Some(task) = self.pump.0.take() {
            task.abort();
            // Resolves once the task is gone, and the stream with it.
            let _ = task.await;
        }
    }
}

/// Hands a model event to a run's event sink (a tool the model asks for).
fn observe(sink: &EventSink, event: &cf_llm::StreamEvent) {
    if let cf_llm::StreamEvent::BlockStart {
        block: ContentBlock::ToolUse { id, name, .. },
        ..
    } = event
    {
        sink.send(RunEvent::ToolUse {
            id: id.clone(),
            name: name.clone(),
        });
    }
}

fn event_to_0_2(event: cf_llm::StreamEvent) -> wit2::StreamEvent {
    use cf_llm::{BlockDelta, StreamEvent};
    match event {
        StreamEvent::MessageStart { id, model, usage } => {
            wit2::StreamEvent::MessageStart(wit2::StreamStart {
                id,
                model,
                usage: usage_to_0_2(&usage),
            })
        }
        StreamEvent::BlockStart { index, block } => {
            wit2::StreamEvent::BlockStart(wit2::IndexedBlock {
                index,
                block: block_to_0_2(block),
            })
        }
        StreamEvent::BlockDelta { index, delta } => {
            wit2::StreamEvent::BlockDelta(wit2::IndexedDelta {
                index,
                delta: match delta {
                    BlockDelta::Text(t) => wit2::BlockDelta::Text(t),
                    BlockDelta::InputJson(j) => wit2::BlockDelta::InputJson(j),
                    BlockDelta::Thinking(t) => wit2::BlockDelta::Thinking(t),
                    BlockDelta::Signature(s) => wit2::BlockDelta::Signature(s),
                },
            })
        }
        StreamEvent::BlockStop(index) => wit2::StreamEvent::BlockStop(index),
        StreamEvent::MessageDelta { stop_reason, usage } => {
            wit2::StreamEvent::MessageDelta(wit2::MessageDelta {
                stop_reason: stop_reason.map(stop_reason_to_0_2),
                usage: usage_to_0_2(&usage),
            })
        }
    }
}

use crate::bindings::v0_2::claude_force::agent::llm::ResponseStream;

impl LlmCtx {
    /// The state behind a guest's handle (the generated `ResponseStream` is only a
    /// marker type; the table keeps `StreamState`s under the same numbers).
    fn stream_state(
        &mut self,
        handle: &Resource<ResponseStream>,
    ) -> wasmtime::Result<&mut StreamState> {
        Ok(self
            .streams
            .get_mut(&Resource::<StreamState>::new_borrow(handle.rep()))?)
    }

    /// Ends every stream still open (the run is over): each is dropped and its usage
    /// so far charged before this returns, so the run's totals include it.
    pub(crate) async fn close_streams(&mut self) {
        for rep in std::mem::take(&mut self.open_streams) {
            if let Ok(state) = self.streams.delete(Resource::<StreamState>::new_own(rep)) {
                state.close().await;
            }
        }
    }
}

impl crate::bindings::v0_2::claude_force::agent::llm::Host for LlmCtx {
    async fn complete(
        &mut self,
        request: wit2::LlmRequest,
    ) -> wasmtime::Result<Result<wit2::LlmResponse, wit2::LlmError>> {
        let done = match self.call(asked_0_2(request)).await {
            Ok(done) => done,
            Err(e) => return Ok(Err(error_to_0_2(e))),
        };
        if let Some(sink) = &self.settings.options.events {
            for event in cf_llm::replay(&done.response) {
                observe(sink, &event);
            }
        }
        Ok(Ok(response_to_0_2(done)))
    }

    async fn open_stream(
        &mut self,
        request: wit2::LlmRequest,
    ) -> wasmtime::Result<Result<Resource<ResponseStream>, wit2::LlmError>> {
        let (stream, share) = match self.open(asked_0_2(request)).await {
            Ok(opened) => opened,
            Err(e) => return Ok(Err(error_to_0_2(e))),
        };
        let sink = self.settings.options.events.clone();
        // The table is bounded by the run's model-call limit: one stream per call.
        let state = self.streams.push(StreamState::start(stream, share, sink))?;
        self.open_streams.push(state.rep());
        Ok(Ok(Resource::new_own(state.rep())))
    }
}

impl crate::bindings::v0_2::claude_force::agent::llm::HostResponseStream for LlmCtx {
    async fn next(
        &mut self,
        stream: Resource<ResponseStream>,
    ) -> wasmtime::Result<Result<Option<wit2::StreamEvent>, wit2::LlmError>> {
        let started = Instant::now();
        let state = self.stream_state(&stream)?;
        let read = state.next().await;
        let model = match (&read, &state.outcome) {
            (Ok(None), Some(Ok(done))) => Some(done.response.model.clone()),
            _ => None,
        };
        self.busy += started.elapsed();
        if model.is_some() {
            self.last_model = model;
        }
        Ok(read
            .map(|event| event.map(event_to_0_2))
            .map_err(error_to_0_2))
    }

    async fn finish(
        &mut self,
        stream: Resource<ResponseStream>,
    ) -> wasmtime::Result<Result<wit2::LlmResponse, wit2::LlmError>> {
        let started = Instant::now();
        let state = self.stream_state(&stream)?;
        let done = loop {
            match state.next().await {
                Ok(Some(_)) => {}
                Ok(None) => break state.outcome().await,
                Err(e) => break Err(e),
            }
        };
        self.busy += started.elapsed();
        Ok(match done {
            Ok(done) => {
                self.last_model = Some(done.response.model.clone());
                Ok(response_to_0_2(done))
            }
            Err(e) => Err(error_to_0_2(e)),
        })
    }

    async fn drop(&mut self, stream: Resource<ResponseStream>) -> wasmtime::Result<()> {
        let rep = stream.rep();
        // Dropping the state aborts its reader, which drops the service's stream: its
        // permits are handed on and its connection closed.
        self.streams.delete(Resource::<StreamState>::new_own(rep))?;
        self.open_streams.retain(|r| *r != rep);
        Ok(())
    }
}

impl crate::bindings::v0_2::types::Host for LlmCtx {}

// ---- conversions every version shares the shape of ----------------------------------

/// The stop reason and error conversions of one contract version: their WIT types
/// have the same cases in every version but are distinct Rust types.
macro_rules! shared_conversions {
    ($wit:ident, $stop_to:ident, $error_to:ident, $error_from:ident) => {
        fn $stop_to(r: StopReason) -> $wit::StopReason {
            match r {
                StopReason::EndTurn => $wit::StopReason::EndTurn,
                StopReason::MaxTokens => $wit::StopReason::MaxTokens,
                StopReason::StopSequence(s) => $wit::StopReason::StopSequence(s),
                StopReason::ToolUse => $wit::StopReason::ToolUse,
                StopReason::PauseTurn => $wit::StopReason::PauseTurn,
                StopReason::Refusal => $wit::StopReason::Refusal,
                StopReason::ModelContextWindowExceeded => {
                    $wit::StopReason::ModelContextWindowExceeded
                }
                StopReason::Other(s) => $wit::StopReason::Other(s),
            }
        }

        /// The engine's error as the guest sees it.
        pub(crate) fn $error_to(e: LlmError) -> $wit::LlmError {
            match e {
                LlmError::InvalidRequest(m) => $wit::LlmError::InvalidRequest(m),
                LlmError::Authentication(m) => $wit::LlmError::Authentication(m),
                LlmError::Permission(m) => $wit::LlmError::Permission(m),
                LlmError::NotFound(m) => $wit::LlmError::NotFound(m),
                LlmError::TooLarge(m) => $wit::LlmError::TooLarge(m),
                LlmError::RateLimited {
                    retry_after,
                    message,
                } => $wit::LlmError::RateLimited($wit::RateLimitedError {
                    retry_after_ms: retry_after
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    message,
                }),
                LlmError::Overloaded(m) => $wit::LlmError::Overloaded(m),
                LlmError::Server { status, message } => {
                    $wit::LlmError::ServerError($wit::ServerError { status, message })
                }
                LlmError::Timeout(m) => $wit::LlmError::Timeout(m),
                LlmError::Connection(m) => $wit::LlmError::Connection(m),
                LlmError::BudgetExceeded(m) => $wit::LlmError::BudgetExceeded(m),
                LlmError::Denied(m) => $wit::LlmError::Denied(m),
                LlmError::InvalidResponse(m) => $wit::LlmError::InvalidResponse(m),
                other => $wit::LlmError::InvalidResponse(other.to_string()),
            }
        }

        /// The guest's error back in the engine's terms (an agent that gave up on a
        /// call).
        pub(crate) fn $error_from(e: $wit::LlmError) -> LlmError {
            match e {
                $wit::LlmError::InvalidRequest(m) => LlmError::InvalidRequest(m),
                $wit::LlmError::Authentication(m) => LlmError::Authentication(m),
                $wit::LlmError::Permission(m) => LlmError::Permission(m),
                $wit::LlmError::NotFound(m) => LlmError::NotFound(m),
                $wit::LlmError::TooLarge(m) => LlmError::TooLarge(m),
                $wit::LlmError::RateLimited(r) => LlmError::RateLimited {
                    retry_after: r.retry_after_ms.map(Duration::from_millis),
                    message: r.message,
                },
                $wit::LlmError::Overloaded(m) => LlmError::Overloaded(m),
                $wit::LlmError::ServerError(s) => LlmError::Server {
                    status: s.status,
                    message: s.message,
                },
                $wit::LlmError::Timeout(m) => LlmError::Timeout(m),
                $wit::LlmError::Connection(m) => LlmError::Connection(m),
                $wit::LlmError::BudgetExceeded(m) => LlmError::BudgetExceeded(m),
                $wit::LlmError::Denied(m) => LlmError::Denied(m),
                $wit::LlmError::InvalidResponse(m) => LlmError::InvalidResponse(m),
            }
        }
    };
}

shared_conversions!(wit, stop_reason_to_wit, error_to_wit, error_from_wit);
shared_conversions!(wit2, stop_reason_to_0_2, error_to_0_2, error_from_0_2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{Grant, Manifest, Permissions};

    fn ctx(permissions: Permissions, max_calls: u32, max_request_bytes: usize) -> LlmCtx {
        let service =
            LlmService::builder(std::sync::Arc::new(cf_llm::OfflineProvider::new())).build();
        let caller = Caller::new("tester".into(), None, Arc::new(permissions));
        LlmCtx::new(
            service,
            Arc::new(caller),
            Ledger::unlimited(),
            Instant::now() + Duration::from_secs(60),
            CallSettings {
                options: RunOptions::default(),
                agent_model: String::new(),
                host_model: "claude-sonnet-4-5".into(),
                default_max_tokens: 100,
                max_request_bytes,
                max_image_bytes: 5 * 1024 * 1024,
                max_media_bytes: 20 * 1024 * 1024,
                max_tools: 1_000,
                max_calls,
            },
        )
    }

    fn request(text: &str, model: Option<&str>) -> wit::LlmRequest {
        wit::LlmRequest {
            model: model.map(str::to_owned),
            max_tokens: None,
            system: None,
            messages: vec![wit::Message {
                role: wit::Role::User,
                content: text.into(),
            }],
            temperature: None,
            top_p: None,
            top_k: None,
            stop_sequences: Vec::new(),
            user_id: None,
            cache: wit::CacheMode::Normal,
        }
    }

    /// The generated `Host::complete`, called as a guest would: answered, counted, and
    /// refused once the run's call limit is reached.
    #[tokio::test]
    async fn calls_are_answered_until_the_runs_limit() {
        let mut llm = ctx(Permissions::unrestricted("tester"), 2, 1024);
        for _ in 0..2 {
            let answer = Host::complete(&mut llm, request("hi", None))
                .await
                .expect("no trap")
                .expect("answered");
            assert_eq!(answer.model, "claude-sonnet-4-5", "the host's default");
        }
        assert_eq!(llm.last_model(), Some("claude-sonnet-4-5"));
        let refused = Host::complete(&mut llm, request("hi", None))
            .await
            .expect("no trap");
        assert!(
            matches!(&refused, Err(wit::LlmError::Denied(m)) if m.contains("limit of 2")),
            "{refused:?}"
        );
    }

    /// The request byte cap, with each message counting its framing: at the cap it
    /// goes, one byte over it does not.
    #[tokio::test]
    async fn requests_over_the_byte_cap_are_refused() {
        let cap = 10 + LIST_ITEM_BYTES;
        let mut llm = ctx(Permissions::unrestricted("tester"), 5, cap);
        let fits = Host::complete(&mut llm, request(&"a".repeat(10), None))
            .await
            .expect("no trap");
        assert!(fits.is_ok(), "{fits:?}");
        let over = Host::complete(&mut llm, request(&"a".repeat(11), None))
            .await
            .expect("no trap");
        assert!(matches!(over, Err(wit::LlmError::TooLarge(_))), "{over:?}");
    }

    /// A plugin may call only the models it declares and is granted.
    #[tokio::test]
    async fn models_outside_the_permissions_are_denied() {
        let manifest = Manifest {
            models: vec!["claude-haiku-*".into()],
            ..Manifest::default()
        };
        let grant = Grant {
            models: vec!["*".into()],
            ..Grant::default()
        };
        let permissions = Permissions::intersect("tester", &manifest, Some(&grant), "00");
        let mut llm = ctx(permissions, 5, 1024);
        let denied = Host::complete(&mut llm, request("hi", Some("claude-opus-4-1")))
            .await
            .expect("no trap");
        assert!(
            matches!(&denied, Err(wit::LlmError::Denied(m)) if m.contains("claude-opus-4-1")),
            "{denied:?}"
        );
        let allowed = Host::complete(&mut llm, request("hi", Some("claude-haiku-4-5")))
            .await
            .expect("no trap");
        assert!(allowed.is_ok(), "{allowed:?}");
    }

    // ---- contract 0.2.0 ----

    use crate::bindings::v0_2::claude_force::agent::llm::Host as Host2;

    fn request2(blocks: Vec<wit2::ContentBlock>) -> wit2::LlmRequest {
        wit2::LlmRequest {
            model: None,
            max_tokens: Some(4096),
            system: Vec::new(),
            messages: vec![wit2::Message {
                role: wit2::Role::User,
                content: blocks,
            }],
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
            cache: wit2::CacheMode::Bypass,
        }
    }

    fn text2(text: &str) -> wit2::ContentBlock {
        wit2::ContentBlock::Text(wit2::TextBlock {
            text: text.into(),
            cache_control: None,
        })
    }

    fn png(bytes: usize) -> wit2::ContentBlock {
        wit2::ContentBlock::Image(wit2::ImageBlock {
            image: wit2::Image {
                media_type: wit2::ImageMediaType::Png,
                data: vec![0; bytes],
            },
            cache_control: None,
        })
    }

    fn tool2(name: &str, schema: &str) -> wit2::Tool {
        wit2::Tool {
            name: name.into(),
            description: "d".into(),
            input_schema: schema.into(),
            strict: false,
            cache_control: None,
        }
    }

    fn third_party(manifest: Manifest, grant: Grant) -> Permissions {
        Permissions::intersect(
            "tester",
            &Manifest {
                models: vec!["*".into()],
                ..manifest
            },
            Some(&Grant {
                models: vec!["*".into()],
                ..grant
            }),
            "00",
        )
    }

    /// Thinking needs the grant, within its budget cap: obeyed and violated.
    #[tokio::test]
    async fn thinking_follows_the_grant() {
        let thinking = |budget| {
            let mut r = request2(vec![text2("hi")]);
            r.thinking = Some(wit2::ThinkingConfig::Enabled(budget));
            r
        };
        let mut none = ctx(third_party(Manifest::default(), Grant::default()), 5, 1024);
        let refused = Host2::complete(&mut none, thinking(2000))
            .await
            .expect("no trap");
        assert!(
            matches!(&refused, Err(wit2::LlmError::Denied(m)) if m.contains("llm.thinking")),
            "{refused:?}"
        );
        let capped = third_party(
            Manifest {
                thinking: true,
                ..Manifest::default()
            },
            Grant {
                thinking: true,
                max_thinking_budget: Some(2000),
                ..Grant::default()
            },
        );
        let mut llm = ctx(capped, 5, 1024);
        let within = Host2::complete(&mut llm, thinking(2000))
            .await
            .expect("no trap");
        let answer = within.expect("a budget at the cap is allowed");
        assert!(
            matches!(
                answer.content.first(),
                Some(wit2::ContentBlock::Thinking(_))
            ),
            "the offline provider thinks first: {:?}",
            answer.content
        );
        let over = Host2::complete(&mut llm, thinking(2001))
            .await
            .expect("no trap");
        assert!(
            matches!(&over, Err(wit2::LlmError::Denied(m)) if m.contains("at most 2000")),
            "{over:?}"
        );
    }

    /// A budget at or above `max-tokens` is refused before anything is sent.
    #[tokio::test]
    async fn a_thinking_budget_must_stay_below_max_tokens() {
        let mut llm = ctx(Permissions::unrestricted("tester"), 5, 1024);
        let mut r = request2(vec![text2("hi")]);
        r.thinking = Some(wit2::ThinkingConfig::Enabled(4096));
        let refused = Host2::complete(&mut llm, r).await.expect("no trap");
        assert!(
            matches!(&refused, Err(wit2::LlmError::InvalidRequest(m)) if m.contains("below max_tokens")),
            "{refused:?}"
        );
    }

    /// Images: the host's per-image cap (too large) and the grant with its cap
    /// (denied), each obeyed and violated.
    #[tokio::test]
    async fn images_follow_the_caps_and_the_grant() {
        let mut llm = ctx(Permissions::unrestricted("tester"), 10, 1024);
        let at_cap = Host2::complete(&mut llm, request2(vec![text2("see"), png(5 * 1024 * 1024)]))
            .await
            .expect("no trap");
        assert!(at_cap.is_ok(), "{at_cap:?}");
        let over = Host2::complete(
            &mut llm,
            request2(vec![text2("see"), png(5 * 1024 * 1024 + 1)]),
        )
        .await
        .expect("no trap");
        assert!(
            matches!(&over, Err(wit2::LlmError::TooLarge(m)) if m.contains("image")),
            "{over:?}"
        );
        let mut ungranted = ctx(third_party(Manifest::default(), Grant::default()), 5, 1024);
        let denied = Host2::complete(&mut ungranted, request2(vec![png(10)]))
            .await
            .expect("no trap");
        assert!(
            matches!(&denied, Err(wit2::LlmError::Denied(m)) if m.contains("llm.media")),
            "{denied:?}"
        );
        let capped = third_party(
            Manifest {
                media: true,
                ..Manifest::default()
            },
            Grant {
                media: true,
                max_media_bytes: Some(100),
                ..Grant::default()
            },
        );
        let mut llm = ctx(capped, 5, 1024);
        let fits = Host2::complete(&mut llm, request2(vec![png(100)]))
            .await
            .expect("no trap");
        assert!(fits.is_ok(), "{fits:?}");
        let over = Host2::complete(&mut llm, request2(vec![png(101)]))
            .await
            .expect("no trap");
        assert!(
            matches!(&over, Err(wit2::LlmError::Denied(m)) if m.contains("at most 100 bytes")),
            "{over:?}"
        );
    }

    /// The offline provider's tool loop through the 0.2.0 interface: a tool use with
    /// an input built from the schema, then text once the result comes back.
    #[tokio::test]
    async fn a_tool_loop_runs_offline() {
        let mut llm = ctx(Permissions::unrestricted("tester"), 5, 4096);
        let schema = r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}"#;
        let mut first = request2(vec![text2("add 1 and 1")]);
        first.tools = vec![tool2("add", schema)];
        let answer = Host2::complete(&mut llm, first.clone())
            .await
            .expect("no trap")
            .expect("answered");
        assert!(matches!(answer.stop_reason, wit2::StopReason::ToolUse));
        let Some(wit2::ContentBlock::ToolUse(tool_use)) = answer.content.first().cloned() else {
            panic!("a tool use: {:?}", answer.content);
        };
        assert_eq!(tool_use.name, "add");
        assert_eq!(tool_use.input, r#"{"a":1,"b":1}"#, "built from the schema");
        let mut second = first;
        second.messages.push(wit2::Message {
            role: wit2::Role::Assistant,
            content: answer.content,
        });
        second.messages.push(wit2::Message {
            role: wit2::Role::User,
            content: vec![wit2::ContentBlock::ToolResult(wit2::ToolResultBlock {
                tool_use_id: tool_use.id,
                content: vec![wit2::ToolResultContent::Text("2".into())],
                is_error: false,
                cache_control: None,
            })],
        });
        let done = Host2::complete(&mut llm, second)
            .await
            .expect("no trap")
            .expect("answered");
        assert!(matches!(done.stop_reason, wit2::StopReason::EndTurn));
        assert!(done.text.starts_with("[offline]"), "{}", done.text);
    }

    /// What the API would refuse is refused by the host: bad tool names, schemas
    /// that are not objects, a tool result answering nothing, a fifth breakpoint.
    #[tokio::test]
    async fn malformed_tool_requests_are_invalid() {
        let object = r#"{"type":"object"}"#;
        let breakpoint = Some(wit2::CacheControl {
            ttl: wit2::CacheTtl::FiveMinutes,
        });
        let mut cases: Vec<(&str, wit2::LlmRequest)> = Vec::new();
        let mut r = request2(vec![text2("x")]);
        r.tools = vec![tool2("bad name!", object)];
        cases.push(("does not match", r));
        let mut r = request2(vec![text2("x")]);
        r.tools = vec![tool2("t", "[1,2]")];
        cases.push(("not a JSON object", r));
        let mut r = request2(vec![wit2::ContentBlock::ToolResult(
            wit2::ToolResultBlock {
                tool_use_id: "toolu_nothing".into(),
                content: Vec::new(),
                is_error: false,
                cache_control: None,
            },
        )]);
        r.tools = vec![tool2("t", object)];
        cases.push(("answers no tool use", r));
        let mut r = request2(
            (0..5)
                .map(|i| {
                    wit2::ContentBlock::Text(wit2::TextBlock {
                        text: format!("part {i}"),
                        cache_control: breakpoint,
                    })
                })
                .collect(),
        );
        r.tools = Vec::new();
        cases.push(("5 cache breakpoints", r));
        let mut r = request2(vec![text2("x")]);
        r.tool_choice = Some(wit2::ToolChoice::Tool("missing".into()));
        r.tools = vec![tool2("t", object)];
        cases.push(("not one of the request's tools", r));
        for (expected, request) in cases {
            let mut llm = ctx(Permissions::unrestricted("tester"), 5, 4096);
            let refused = Host2::complete(&mut llm, request).await.expect("no trap");
            assert!(
                matches!(&refused, Err(wit2::LlmError::InvalidRequest(m)) if m.contains(expected)),
                "{expected}: {refused:?}"
            );
        }
        // Four breakpoints are allowed.
        let mut llm = ctx(Permissions::unrestricted("tester"), 5, 4096);
        let four = request2(
            (0..4)
                .map(|i| {
                    wit2::ContentBlock::Text(wit2::TextBlock {
                        text: format!("part {i}"),
                        cache_control: breakpoint,
                    })
                })
                .collect(),
        );
        let ok = Host2::complete(&mut llm, four).await.expect("no trap");
        assert!(ok.is_ok(), "{ok:?}");
    }
}
