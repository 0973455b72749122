//! The seam between the engine and whatever answers model calls.

use crate::stream::{Read, SseReader, StreamEvent, replay};
use crate::types::{LlmError, Request, Response};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future, as [`Provider::send`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt's failure, classified so that the service can decide whether to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    /// What went wrong, as the guest will see it if this is the last attempt.
    pub error: LlmError,
    /// Whether another attempt may succeed (connection errors, timeouts, 408, 409,
    /// 429, 5xx; a provider's explicit `x-should-retry` overrides).
    pub retryable: bool,
    /// How long the provider asked to wait before the next attempt.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// A failure that another attempt cannot fix.
    pub fn fatal(error: LlmError) -> Self {
        Self {
            error,
            retryable: false,
            retry_after: None,
        }
    }

    /// A failure that another attempt may fix.
    pub fn transient(error: LlmError, retry_after: Option<Duration>) -> Self {
        Self {
            error,
            retryable: true,
            retry_after,
        }
    }
}

/// Something that answers model calls: the Anthropic API, a replayed cassette, the
/// offline stand-in.
///
/// A provider makes exactly one attempt per [`send`](Provider::send): retries,
/// timeouts, concurrency limits, caching and costs are the service's job, so that they
/// happen in exactly one layer whatever the provider.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The provider's name (`offline`, `anthropic`, `replay`), part of cache keys.
    fn name(&self) -> &str;

    /// Where requests go (the base URL), part of cache keys; empty when nowhere.
    fn endpoint(&self) -> &str {
        ""
    }

    /// Whether calls cost money. The offline provider's calls are free.
    fn billable(&self) -> bool {
        true
    }

    /// Makes one attempt.
    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>>;

    /// Makes one attempt whose answer is read as it is generated. The default waits
    /// for the whole answer ([`send`](Self::send)) and replays it as events; a
    /// provider that can stream overrides it.
    fn open<'a>(
        &'a self,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move { self.send(request).await.map(EventStream::whole) })
    }
}

/// One attempt's answer as events ([`Provider::open`]): read from the connection as
/// they arrive, or replayed from an answer that is already whole.
#[derive(Debug)]
pub struct EventStream {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Sse(Box<SseReader>),
    Whole {
        events: VecDeque<StreamEvent>,
        answer: Response,
    },
}

impl EventStream {
    /// The events of an answer that is already whole ([`replay`]).
    pub fn whole(answer: Response) -> Self {
        Self {
            source: Source::Whole {
                events: replay(&answer).into(),
                answer,
            },
        }
    }

    /// The events of a streamed body.
    pub fn sse(reader: SseReader) -> Self {
        Self {
            source: Source::Sse(Box::new(reader)),
        }
    }

    /// The next event; `None` once the answer is complete.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ProviderError> {
        match &mut self.source {
            Source::Sse(reader) => reader.next().await,
            Source::Whole { events, .. } => Ok(events.pop_front()),
        }
    }

    /// One read: an event, a keep-alive (`ping`), or the end.
    pub(crate) async fn step(&mut self) -> Result<Read, ProviderError> {
        match &mut self.source {
            Source::Sse(reader) => reader.step().await,
            Source::Whole { events, .. } => Ok(events.pop_front().map_or(Read::End, Read::Event)),
        }
    }

    /// The whole answer, once [`next`](Self::next) has returned `None`; an error
    /// before.
    pub fn answer(self) -> Result<Response, ProviderError> {
        match self.source {
            Source::Sse(reader) => reader.into_answer(),
            Source::Whole { events, answer } if events.is_empty() => Ok(answer),
            Source::Whole { .. } => Err(ProviderError::fatal(LlmError::InvalidResponse(
                "the answer was taken before its stream was read".into(),
            ))),
        }
    }
}
