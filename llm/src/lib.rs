//! The LLM engine behind `cf-host`: request and response types, the [`Provider`]
//! seam and its implementations, prices, and the [`LlmService`] that every model call
//! of every agent goes through.
//!
//! The engine knows nothing of WebAssembly: the host converts the guest's WIT values
//! into [`Request`]s and back.
//!
//! ```
//! use cf_llm::{LlmService, Message, OfflineProvider, Request, CallContext};
//! use std::sync::Arc;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let service = LlmService::builder(Arc::new(OfflineProvider::new())).build();
//! let request = Request::new("claude-sonnet-4-5", 256, vec![Message::user("Hello")]);
//! let ledger = cf_llm::Ledger::unlimited();
//! let call = CallContext::new("my-agent", &ledger);
//! let done = service.complete(&call, request).await.unwrap();
//! assert!(done.response.text.starts_with("[offline]"));
//! # });
//! ```
//!
//! # Providers
//!
//! A [`Provider`] makes one attempt per call; retries, timeouts, the concurrency limit
//! and costs live in the [`LlmService`] only, so they happen in exactly one layer.
//!
//! - [`AnthropicProvider`]: the Messages API over HTTPS (reqwest + rustls). The base
//!   URL comes from a flag, else `ANTHROPIC_BASE_URL`, else the public API
//!   ([`resolve_base_url`]); the key from `ANTHROPIC_API_KEY` ([`ApiKey::from_env`]),
//!   held in a redacting [`ApiKey`].
//! - [`RecordingProvider`] wraps any provider and appends each answered call to a
//!   JSON Lines cassette; [`ReplayProvider`] answers from one with no network.
//! - [`OfflineProvider`] answers at once with a summary of the request, for trying
//!   agents out.
//!
//! ```no_run
//! use cf_llm::{AnthropicConfig, AnthropicProvider, CallContext, Ledger, LlmService, Message, Request};
//! use std::{sync::Arc, time::Duration};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = AnthropicProvider::new(AnthropicConfig::from_env(None)?)?;
//! let service = LlmService::builder(Arc::new(provider))
//!     .max_concurrent(50)
//!     .attempt_timeout(Duration::from_secs(60))
//!     .build();
//! let ledger = Ledger::unlimited();
//! let done = service
//!     .complete(&CallContext::new("reviewer", &ledger), Request::new("claude-sonnet-4-5", 1024, vec![Message::user("Review this diff…")]))
//!     .await?;
//! println!("{} ({} attempts, ${:.4})", done.response.text, done.attempts, done.cost.usd);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod anthropic;
mod caching;
mod cassette;
mod completion;
mod content;
#[doc(hidden)]
pub mod fuzzing;
mod ledger;
mod offline;
mod pricing;
mod provider;
mod service;
mod shared;
mod stream;
mod types;
mod wire;

pub use anthropic::{
    ANTHROPIC_VERSION, AnthropicConfig, AnthropicConfigError, AnthropicProvider, ApiKey,
    DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, resolve_base_url,
};
pub use caching::request_key;
pub use cassette::{CassetteError, RecordingProvider, ReplayProvider};
pub use completion::{BYTES_PER_TOKEN, CompletionStream};
pub use content::{
    CacheControl, CacheTtl, Content, ContentBlock, DocumentSource, Effort, Image, ImageMediaType,
    System, TextBlock, Thinking, Tool, ToolChoice, ToolResultContent,
};

pub use ledger::{Budget, BudgetRule, Ledger, LedgerTotals, Reservation, WorstCase};
pub use offline::{OfflineProvider, minimal_value};
pub use pricing::{Cost, ModelPrice, PriceTable, PriceTableError};
pub use provider::{BoxFuture, EventStream, Provider, ProviderError};
pub use service::{
    CallContext, Completion, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT, LlmService, LlmServiceBuilder, backoff,
};
pub use shared::{FleetFlight, Lease, RateObserver, SharedCache, SharedLimit};
pub use stream::{Assembler, BlockDelta, SseReader, StreamEvent, replay};
pub use types::{
    CacheMode, LlmError, MAX_CACHE_BREAKPOINTS, MIN_THINKING_BUDGET, Media, Message, Request,
    Response, Role, StopReason, Usage, valid_tool_name,
};
