//! The `llm` interface: converts the guest's requests, applies the run's settings
//! and limits, and sends them through the host's [`LlmService`].

use crate::bindings::v0_1::claude_force::agent::llm::Host;
use crate::bindings::v0_1::types as wit;
use crate::config::LIST_ITEM_BYTES;
use crate::config::RunOptions;
use cf_llm::{
    CacheMode, CallContext, Ledger, LlmError, LlmService, Message, Request, Role, StopReason, Usage,
};
use std::time::Duration;
use tokio::time::Instant;

/// The `llm` capability of one run.
#[derive(Debug)]
pub(crate) struct LlmCtx {
    pub service: LlmService,
    pub agent: String,
    /// A plugin's component digest: its cached answers are its own.
    pub component: Option<std::sync::Arc<str>>,
    pub ledger: Ledger,
    pub deadline: Instant,
    pub options: RunOptions,
    /// The agent's `default-model`, empty for none.
    pub agent_model: String,
    pub host_model: String,
    pub default_max_tokens: u32,
    pub max_request_bytes: usize,
    /// Calls still allowed in this run; 0 in `describe()`.
    pub calls_left: u32,
    pub max_calls: u32,
    /// Time spent inside model calls.
    pub busy: Duration,
    pub queue_wait: Duration,
    /// The model of the last answer.
    pub last_model: Option<String>,
    /// What the plugin may call, checked before each call.
    pub permissions: std::sync::Arc<crate::permissions::Permissions>,
    /// The plugin's share of the concurrency limit, held during each call.
    pub share: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl LlmCtx {
    /// The request the guest asked for, completed with the run's settings: the
    /// operator's options win, then the guest's values, then the agent's and the
    /// host's defaults.
    fn resolve(&self, r: wit::LlmRequest) -> Request {
        let model = self
            .options
            .model
            .clone()
            .or(r.model.filter(|m| !m.is_empty()))
            .or_else(|| (!self.agent_model.is_empty()).then(|| self.agent_model.clone()))
            .unwrap_or_else(|| self.host_model.clone());
        Request {
            model,
            max_tokens: self
                .options
                .max_tokens
                .or(r.max_tokens)
                .unwrap_or(self.default_max_tokens),
            system: r.system.filter(|s| !s.is_empty()),
            messages: r
                .messages
                .into_iter()
                .map(|m| Message {
                    role: match m.role {
                        wit::Role::User => Role::User,
                        wit::Role::Assistant => Role::Assistant,
                    },
                    content: m.content,
                })
                .collect(),
            temperature: self.options.temperature.or(r.temperature),
            top_p: r.top_p,
            top_k: r.top_k,
            stop_sequences: r.stop_sequences,
            user_id: r.user_id,
        }
    }
}

/// The request's size in bytes, before any copy is made: its text, and
/// [`LIST_ITEM_BYTES`] for each message and stop sequence.
fn request_bytes(r: &wit::LlmRequest) -> usize {
    r.system.as_ref().map_or(0, String::len)
        + r.messages
            .iter()
            .map(|m| m.content.len() + LIST_ITEM_BYTES)
            .sum::<usize>()
        + r.stop_sequences
            .iter()
            .map(|s| s.len() + LIST_ITEM_BYTES)
            .sum::<usize>()
        + r.model.as_ref().map_or(0, String::len)
        + r.user_id.as_ref().map_or(0, String::len)
}

impl Host for LlmCtx {
    async fn complete(
        &mut self,
        request: wit::LlmRequest,
    ) -> wasmtime::Result<Result<wit::LlmResponse, wit::LlmError>> {
        if self.calls_left == 0 {
            let why = if self.max_calls == 0 {
                "describe() may not call the model".to_owned()
            } else {
                format!(
                    "capability llm: agent {} reached its limit of {} model calls in one run",
                    self.agent, self.max_calls
                )
            };
            return Ok(Err(wit::LlmError::Denied(why)));
        }
        self.calls_left -= 1;
        let bytes = request_bytes(&request);
        if bytes > self.max_request_bytes {
            return Ok(Err(wit::LlmError::TooLarge(format!(
                "the request has {bytes} bytes (text, and {LIST_ITEM_BYTES} per message and stop sequence); the host accepts {}",
                self.max_request_bytes
            ))));
        }
        let cache_mode = match request.cache {
            wit::CacheMode::Normal => CacheMode::Normal,
            wit::CacheMode::Bypass => CacheMode::Bypass,
            wit::CacheMode::Refresh => CacheMode::Refresh,
            wit::CacheMode::ReadOnly => CacheMode::ReadOnly,
        };
        let resolved = self.resolve(request);
        if let Err(why) = self
            .permissions
            .check_call(&resolved.model, resolved.max_tokens)
        {
            return Ok(Err(wit::LlmError::Denied(why)));
        }
        let _share = match &self.share {
            Some(share) => match tokio::time::timeout_at(self.deadline, share.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => return Ok(Err(wit::LlmError::Timeout("the run's deadline was reached waiting for the plugin's share of the concurrency limit".into()))),
            },
            None => None,
        };
        let call = CallContext::new(&self.agent, &self.ledger)
            .with_component(self.component.as_deref())
            .with_deadline(self.deadline)
            .with_cache_mode(cache_mode);
        let started = Instant::now();
        let result = self.service.complete(&call, resolved).await;
        self.busy += started.elapsed();
        Ok(match result {
            Ok(done) => {
                self.queue_wait += done.queue_wait;
                self.last_model = Some(done.response.model.clone());
                Ok(wit::LlmResponse {
                    id: done.response.id,
                    model: done.response.model,
                    text: done.response.text,
                    stop_reason: stop_reason_to_wit(done.response.stop_reason),
                    usage: usage_to_wit(&done.response.usage),
                    cached: done.cached,
                })
            }
            Err(e) => Err(error_to_wit(e)),
        })
    }
}

impl crate::bindings::v0_1::types::Host for LlmCtx {}

fn usage_to_wit(u: &Usage) -> wit::Usage {
    wit::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_creation_input_tokens: u.cache_creation_input_tokens,
        cache_read_input_tokens: u.cache_read_input_tokens,
    }
}

fn stop_reason_to_wit(r: StopReason) -> wit::StopReason {
    match r {
        StopReason::EndTurn => wit::StopReason::EndTurn,
        StopReason::MaxTokens => wit::StopReason::MaxTokens,
        StopReason::StopSequence(s) => wit::StopReason::StopSequence(s),
        StopReason::ToolUse => wit::StopReason::ToolUse,
        StopReason::PauseTurn => wit::StopReason::PauseTurn,
        StopReason::Refusal => wit::StopReason::Refusal,
        StopReason::ModelContextWindowExceeded => wit::StopReason::ModelContextWindowExceeded,
        StopReason::Other(s) => wit::StopReason::Other(s),
    }
}

/// The engine's error as the guest sees it.
pub(crate) fn error_to_wit(e: LlmError) -> wit::LlmError {
    match e {
        LlmError::InvalidRequest(m) => wit::LlmError::InvalidRequest(m),
        LlmError::Authentication(m) => wit::LlmError::Authentication(m),
        LlmError::Permission(m) => wit::LlmError::Permission(m),
        LlmError::NotFound(m) => wit::LlmError::NotFound(m),
        LlmError::TooLarge(m) => wit::LlmError::TooLarge(m),
        LlmError::RateLimited {
            retry_after,
            message,
        } => wit::LlmError::RateLimited(wit::RateLimitedError {
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            message,
        }),
        LlmError::Overloaded(m) => wit::LlmError::Overloaded(m),
        LlmError::Server { status, message } => {
            wit::LlmError::ServerError(wit::ServerError { status, message })
        }
        LlmError::Timeout(m) => wit::LlmError::Timeout(m),
        LlmError::Connection(m) => wit::LlmError::Connection(m),
        LlmError::BudgetExceeded(m) => wit::LlmError::BudgetExceeded(m),
        LlmError::Denied(m) => wit::LlmError::Denied(m),
        LlmError::InvalidResponse(m) => wit::LlmError::InvalidResponse(m),
        other => wit::LlmError::InvalidResponse(other.to_string()),
    }
}

/// The guest's error back in the engine's terms (an agent that gave up on a call).
pub(crate) fn error_from_wit(e: wit::LlmError) -> LlmError {
    match e {
        wit::LlmError::InvalidRequest(m) => LlmError::InvalidRequest(m),
        wit::LlmError::Authentication(m) => LlmError::Authentication(m),
        wit::LlmError::Permission(m) => LlmError::Permission(m),
        wit::LlmError::NotFound(m) => LlmError::NotFound(m),
        wit::LlmError::TooLarge(m) => LlmError::TooLarge(m),
        wit::LlmError::RateLimited(r) => LlmError::RateLimited {
            retry_after: r.retry_after_ms.map(Duration::from_millis),
            message: r.message,
        },
        wit::LlmError::Overloaded(m) => LlmError::Overloaded(m),
        wit::LlmError::ServerError(s) => LlmError::Server {
            status: s.status,
            message: s.message,
        },
        wit::LlmError::Timeout(m) => LlmError::Timeout(m),
        wit::LlmError::Connection(m) => LlmError::Connection(m),
        wit::LlmError::BudgetExceeded(m) => LlmError::BudgetExceeded(m),
        wit::LlmError::Denied(m) => LlmError::Denied(m),
        wit::LlmError::InvalidResponse(m) => LlmError::InvalidResponse(m),
    }
}
