//! [`LlmService::stream`]: a model call whose answer is read as it is generated, under
//! the same limits as a whole one. The stream holds its permits of the concurrency
//! limits from the request until its last event is read, it fails, or it is dropped;
//! each wait for an event is bounded by the idle timeout (a `ping` counts) and the
//! call's deadline; retries happen only until the answer's content has started (its
//! `message_start` and the event after it are read before the stream is handed out,
//! so an error event right after the start, the API's usual way to say it is
//! overloaded, is retried), never after.

use crate::caching::Leader;
use crate::ledger::{Ledger, Reservation};
use crate::provider::EventStream;
use crate::service::{AttemptFailure, Completion, LlmService, Permits, Route, deadline_failure};
use crate::stream::{BlockDelta, Read, StreamEvent, replay};
use crate::types::{CacheMode, LlmError, Request, Usage};
use crate::{CallContext, ProviderError};
use cf_cache::CacheKey;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes of streamed text per output token when an interrupted stream's output is
/// estimated: 3, an over-estimate for English (about 4) so that a guest cannot spend
/// more than it is charged by dropping its streams before their end.
pub const BYTES_PER_TOKEN: u64 = 3;

/// What a stream's source is while it is being replaced: an error, should the
/// replacing be cancelled half-way (a dropped future).
fn interrupted() -> Source {
    Source::Ended(Err(LlmError::Connection(
        "the stream was cancelled while it ended".into(),
    )))
}

/// A model call's answer as it arrives ([`LlmService::stream`]).
///
/// Read it with [`next`](Self::next) until `None`, then take the whole answer with
/// [`finish`](Self::finish) (which also reads whatever is left). An error ends the
/// stream; reading again gives the same error.
///
/// While it is open it holds one permit of the service's concurrency limit (and of
/// the agent's, with a per-agent limit). Its permits are handed on at once when the
/// last event is read, when it fails, and when it is dropped unfinished; a dropped
/// stream closes its connection, and the usage the provider reported until then is
/// charged to the ledger (the API bills an interrupted answer up to where it
/// stopped), as a failed call. A completed answer is stored in the response cache;
/// an interrupted one never is. A cache hit, or the answer of an identical call in
/// flight, is replayed: one start, delta and stop per block, holding no permit.
#[derive(Debug)]
pub struct CompletionStream {
    service: LlmService,
    ledger: Ledger,
    agent: String,
    cache_mode: CacheMode,
    deadline: Option<Instant>,
    idle: Duration,
    source: Source,
    /// The attempts that reached the provider.
    attempts: u32,
    queue_wait: Duration,
    /// What the provider reported so far (input at the start, output as it grows).
    usage: Usage,
    /// Bytes of text, thinking and tool input received: an interrupted stream's output
    /// is charged at least [`BYTES_PER_TOKEN`] of them per token (the API reports
    /// output tokens only at the end).
    delta_bytes: u64,
    model: String,
    /// The flight identical calls wait on, and the key to store the answer under.
    flight: Option<(CacheKey, Leader)>,
    /// The fleet's claim on the call, released once the answer is shared (or the
    /// stream ends without one).
    claim: Option<Box<dyn crate::Lease>>,
}

#[derive(Debug)]
enum Source {
    /// Read from the provider.
    Live {
        /// The answer's first events, read before the stream was handed out.
        first: VecDeque<StreamEvent>,
        events: EventStream,
        /// Handed on when the stream ends.
        permits: Permits,
        /// The budget's hold on the call's worst case, released once its cost is
        /// recorded.
        reservation: Reservation,
    },
    /// A whole answer, replayed.
    Replay {
        events: VecDeque<StreamEvent>,
        done: Completion,
    },
    /// Ended.
    Ended(Result<Completion, LlmError>),
}

impl LlmService {
    /// Makes a call whose answer is read as it arrives: validate, check the budget,
    /// then the cache (a hit is replayed), then up to `1 + max_retries` attempts to
    /// open the stream, each until the answer's first event arrived. See
    /// [`CompletionStream`] for what it holds and when it lets go.
    ///
    /// Each wait, from the request to the first event and between two events, is
    /// bounded by the [idle timeout](crate::LlmServiceBuilder::idle_timeout) and the
    /// call's deadline.
    pub async fn stream(
        &self,
        call: &CallContext<'_>,
        request: Request,
    ) -> Result<CompletionStream, LlmError> {
        match self.route(call, &request).await? {
            Route::Hit(done) => Ok(CompletionStream::replayed(self, call, done)),
            Route::Direct => self.open_upstream(call, request).await,
            Route::Lead(layer, key, leader, claim) => match self.open_upstream(call, request).await
            {
                Ok(mut stream) => {
                    stream.flight = Some((key, leader));
                    stream.claim = claim;
                    Ok(stream)
                }
                Err(e) => {
                    layer.finish(leader, &Err(e.clone()));
                    Err(e)
                }
            },
        }
    }

    /// The budget's admission, then attempts until one gives the answer's first event.
    async fn open_upstream(
        &self,
        call: &CallContext<'_>,
        request: Request,
    ) -> Result<CompletionStream, LlmError> {
        let reservation = self.admit(call, &request)?;
        let idle = self.idle_timeout();
        let request = &request;
        let ((events, first, permits), attempts, queue_wait) = self
            .retrying(call, move || async move {
                let mut queue_wait = Duration::ZERO;
                let outcome = self
                    .open_attempt(call, request, idle, &mut queue_wait)
                    .await;
                (queue_wait, outcome)
            })
            .await?;
        let mut stream = CompletionStream {
            service: self.clone(),
            ledger: call.ledger.clone(),
            agent: call.agent.to_owned(),
            cache_mode: call.cache_mode,
            deadline: call.deadline,
            idle,
            source: Source::Live {
                first: VecDeque::new(),
                events,
                permits,
                reservation,
            },
            attempts,
            queue_wait,
            usage: Usage::default(),
            delta_bytes: 0,
            model: request.model.clone(),
            flight: None,
            claim: None,
        };
        // The first events were read: what they report (the input tokens) is billed
        // even if the stream is dropped before anyone reads them.
        for event in &first {
            stream.observe(event);
        }
        if let Source::Live { first: slot, .. } = &mut stream.source {
            *slot = first;
        }
        Ok(stream)
    }

    /// One attempt to open a stream: permits, the request, the answer's first events
    /// (up to the first that is not `message_start`).
    async fn open_attempt(
        &self,
        call: &CallContext<'_>,
        request: &Request,
        idle: Duration,
        queue_wait: &mut Duration,
    ) -> Result<(EventStream, VecDeque<StreamEvent>, Permits), AttemptFailure> {
        let permits = self.permits(call, request, queue_wait).await?;
        // A whole answer is bounded by the attempt timeout, as `complete`'s are.
        let wait = if call.live {
            idle
        } else {
            self.attempt_timeout()
        };
        let (limit, bounded_by_deadline) = Self::attempt_limit(call, wait);
        let opened = tokio::time::timeout_at(limit, async {
            let mut events = if call.live {
                self.provider().open(request).await?
            } else {
                EventStream::whole(self.provider().send(request).await?)
            };
            let mut first = VecDeque::new();
            while let Some(event) = events.next().await? {
                let started = matches!(event, StreamEvent::MessageStart { .. });
                first.push_back(event);
                if !started {
                    break;
                }
            }
            Ok::<_, ProviderError>((events, first))
        })
        .await;
        match opened {
            Ok(Ok((events, first))) => Ok((events, first, permits)),
            Ok(Err(failure)) => Err(AttemptFailure {
                failure,
                sent: true,
            }),
            Err(_) if bounded_by_deadline => {
                Err(deadline_failure("before the answer started", true))
            }
            Err(_) => Err(AttemptFailure {
                failure: ProviderError::transient(
                    LlmError::Timeout(format!(
                        "the answer did not start within {} ms (the idle timeout)",
                        idle.as_millis()
                    )),
                    None,
                ),
                sent: true,
            }),
        }
    }
}

impl CompletionStream {
    /// A stream of an answer that is already whole (and already recorded).
    fn replayed(service: &LlmService, call: &CallContext<'_>, done: Completion) -> Self {
        Self {
            service: service.clone(),
            ledger: call.ledger.clone(),
            agent: call.agent.to_owned(),
            cache_mode: call.cache_mode,
            deadline: call.deadline,
            idle: service.idle_timeout(),
            attempts: 0,
            queue_wait: Duration::ZERO,
            usage: done.response.usage,
            delta_bytes: 0,
            model: done.response.model.clone(),
            source: Source::Replay {
                events: replay(&done.response).into(),
                done,
            },
            flight: None,
            claim: None,
        }
    }

    /// Whether the answer is replayed from the response cache (or an identical call),
    /// holding no permit.
    pub fn is_replay(&self) -> bool {
        matches!(&self.source, Source::Replay { .. })
            || matches!(&self.source, Source::Ended(Ok(done)) if done.cached)
    }

    /// Time spent waiting for concurrency permits before the answer started.
    pub fn queue_wait(&self) -> Duration {
        self.queue_wait
    }

    /// Whether the stream has ended (completed or failed).
    pub fn is_ended(&self) -> bool {
        matches!(self.source, Source::Ended(_))
    }

    /// The next event; `None` once the answer is complete. A failure ends the stream
    /// (its permits are handed on) and is returned again by every later read.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, LlmError> {
        loop {
            let deadline = self.deadline;
            let (limit, bounded_by_deadline) = {
                let limit = Instant::now() + self.idle;
                match deadline {
                    Some(d) if d < limit => (d, true),
                    _ => (limit, false),
                }
            };
            let read = match &mut self.source {
                Source::Ended(Ok(_)) => return Ok(None),
                Source::Ended(Err(e)) => return Err(e.clone()),
                Source::Replay { events, .. } => match events.pop_front() {
                    Some(event) => return Ok(Some(event)),
                    None => {
                        self.end_replay();
                        return Ok(None);
                    }
                },
                Source::Live { first, events, .. } => match first.pop_front() {
                    Some(event) => return Ok(Some(event)),
                    None => tokio::time::timeout_at(limit, events.step()).await,
                },
            };
            match read {
                Ok(Ok(Read::Event(event))) => {
                    self.observe(&event);
                    return Ok(Some(event));
                }
                // A ping: the connection is alive; the idle timer starts again.
                Ok(Ok(Read::KeepAlive)) => {}
                Ok(Ok(Read::End)) => return self.complete().await.map(|()| None),
                Ok(Err(failure)) => return Err(self.fail(failure.error)),
                Err(_elapsed) if bounded_by_deadline => {
                    return Err(self.fail(LlmError::Timeout(
                        "the run's deadline was reached in the middle of a streamed answer".into(),
                    )));
                }
                Err(_elapsed) => {
                    return Err(self.fail(LlmError::Timeout(format!(
                        "the streamed answer stalled: no event for {} ms (the idle timeout)",
                        self.idle.as_millis()
                    ))));
                }
            }
        }
    }

    /// A replay read to its end.
    fn end_replay(&mut self) {
        let source = std::mem::replace(&mut self.source, interrupted());
        if let Source::Replay { done, .. } = source {
            self.source = Source::Ended(Ok(done));
        }
    }

    /// Reads what is left and returns the whole call, as
    /// [`LlmService::complete`] would have (the same answer, attempts, cost).
    pub async fn finish(&mut self) -> Result<Completion, LlmError> {
        while self.next().await?.is_some() {}
        match &self.source {
            Source::Ended(outcome) => outcome.clone(),
            _ => unreachable!("a stream read to its end has ended"),
        }
    }

    /// Keeps what the provider reports: the model and the usage so far.
    fn observe(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::MessageStart { model, usage, .. } => {
                self.usage = *usage;
                if !model.is_empty() {
                    self.model.clone_from(model);
                }
            }
            StreamEvent::MessageDelta { usage, .. } => self.usage = *usage,
            StreamEvent::BlockDelta { delta, .. } => {
                let bytes = match delta {
                    BlockDelta::Text(t) | BlockDelta::InputJson(t) | BlockDelta::Thinking(t) => {
                        t.len()
                    }
                    BlockDelta::Signature(_) => 0,
                };
                self.delta_bytes = self.delta_bytes.saturating_add(bytes as u64);
            }
            _ => {}
        }
    }

    /// The last event was read: hand the permits on, record the cost, store the
    /// answer and share it with identical calls waiting for it.
    async fn complete(&mut self) -> Result<(), LlmError> {
        let source = std::mem::replace(&mut self.source, interrupted());
        let Source::Live {
            events,
            permits,
            reservation,
            ..
        } = source
        else {
            unreachable!("only a live stream completes")
        };
        let response = match events.answer() {
            Ok(response) => response,
            Err(failure) => {
                drop(permits);
                return Err(self.fail(failure.error));
            }
        };
        permits.settle(&response.usage);
        // Handed on before the answer is recorded and stored: the next call in line
        // sends now.
        drop(permits);
        let cost = self.service.cost(&response.model, &response.usage);
        self.ledger
            .record_call(&response.usage, &cost, self.attempts, false, 0.0);
        drop(reservation);
        let known_usd = cost.known_usd();
        self.source = Source::Ended(Ok(Completion {
            response: response.clone(),
            attempts: self.attempts,
            cached: false,
            cost,
            saved_usd: 0.0,
            queue_wait: self.queue_wait,
        }));
        if let Some((key, leader)) = self.flight.take()
            && let Some(layer) = &self.service.inner_cache()
        {
            layer
                .store(self.cache_mode, &self.agent, &key, &response, known_usd)
                .await;
            self.service
                .share_answer(self.cache_mode, &key, &response)
                .await;
            layer.finish(leader, &Ok(response));
        }
        self.claim = None;
        Ok(())
    }

    /// Ends the stream with `error`: permits handed on, the connection closed, the
    /// usage so far charged. Identical calls waiting for it make their own: they have
    /// read nothing yet, so for them a failure here is one before their first event,
    /// which is retried.
    fn fail(&mut self, error: LlmError) -> LlmError {
        // The reservation goes with the old source: after the cost is recorded.
        let live = std::mem::replace(&mut self.source, Source::Ended(Err(error.clone())));
        self.charge_interrupted();
        drop(live);
        if let Some((_, leader)) = self.flight.take()
            && let Some(layer) = self.service.inner_cache()
        {
            layer.abandon(&leader);
        }
        error
    }

    /// Charges the usage reported so far to the ledger, as a failed call: its output
    /// at least the tokens the received deltas hold ([`BYTES_PER_TOKEN`] bytes each),
    /// since the API says how many it generated only at the end.
    fn charge_interrupted(&self) {
        let received = self.delta_bytes.div_ceil(BYTES_PER_TOKEN);
        let usage = Usage {
            output_tokens: self.usage.output_tokens.max(received),
            ..self.usage
        };
        let cost = self.service.cost(&self.model, &usage);
        self.ledger.record_interrupted(&usage, &cost, self.attempts);
    }
}

impl Drop for CompletionStream {
    fn drop(&mut self) {
        if matches!(self.source, Source::Live { .. }) {
            tracing::debug!(agent = %self.agent, "a streamed answer was dropped before its end");
            self.charge_interrupted();
            if let Some((_, leader)) = self.flight.take()
                && let Some(layer) = self.service.inner_cache()
            {
                layer.abandon(&leader);
            }
        }
    }
}
