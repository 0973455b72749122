//! The `llm` interface: converts the guest's requests, applies the run's settings
//! and limits, and sends them through the host's [`LlmService`].

use super::Caller;
use crate::bindings::v0_1::claude_force::agent::llm::Host;
use crate::bindings::v0_1::types as wit;
use crate::limits::{LIST_ITEM_BYTES, RunOptions};
use cf_llm::{
    CacheMode, CallContext, Ledger, LlmError, LlmService, Message, Request, Role, StopReason, Usage,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
    /// The largest request a guest may send, in bytes.
    pub max_request_bytes: usize,
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

impl LlmCtx {
    /// The request the guest asked for, completed with the run's settings: the
    /// operator's options win, then the guest's values, then the agent's and the
    /// host's defaults.
    fn resolve(&self, r: wit::LlmRequest) -> Request {
        let s = &self.settings;
        let model = s
            .options
            .model
            .clone()
            .or(r.model.filter(|m| !m.is_empty()))
            .or_else(|| (!s.agent_model.is_empty()).then(|| s.agent_model.clone()))
            .unwrap_or_else(|| s.host_model.clone());
        Request {
            model,
            max_tokens: s
                .options
                .max_tokens
                .or(r.max_tokens)
                .unwrap_or(s.default_max_tokens),
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
            temperature: s.options.temperature.or(r.temperature),
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
            let max_calls = self.settings.max_calls;
            let why = if max_calls == 0 {
                "describe() may not call the model".to_owned()
            } else {
                format!(
                    "capability llm: agent {} reached its limit of {} model calls in one run",
                    self.caller.name, max_calls
                )
            };
            return Ok(Err(wit::LlmError::Denied(why)));
        }
        self.calls_left -= 1;
        let bytes = request_bytes(&request);
        if bytes > self.settings.max_request_bytes {
            return Ok(Err(wit::LlmError::TooLarge(format!(
                "the request has {bytes} bytes (text, and {LIST_ITEM_BYTES} per message and stop sequence); the host accepts {}",
                self.settings.max_request_bytes
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
            .caller
            .permissions
            .check_call(&resolved.model, resolved.max_tokens)
        {
            return Ok(Err(wit::LlmError::Denied(why)));
        }
        let _share = match &self.caller.llm_share {
            Some(share) => match tokio::time::timeout_at(self.deadline, share.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => return Ok(Err(wit::LlmError::Timeout("the run's deadline was reached waiting for the plugin's share of the concurrency limit".into()))),
            },
            None => None,
        };
        let call = CallContext::new(&self.caller.name, &self.ledger)
            .with_component(self.caller.component.as_deref())
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
}
