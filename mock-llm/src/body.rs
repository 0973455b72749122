//! Response bodies: a whole buffer, a generated body sent in chunks without a
//! `content-length`, or a stream of server-sent events.

use crate::stream::Step;
use crate::{InFlight, State};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Bytes per chunk of a generated body.
const CHUNK: usize = 64 * 1024;

/// The server's response body.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    /// A whole buffer, sent with a `content-length`.
    Full(Full<Bytes>),
    /// A generated body, sent chunked.
    Chunked(Chunked),
    /// Server-sent events, sent chunked, one event per chunk.
    Events(Events),
}

/// The error of a body a [`StreamFault::Drop`](crate::StreamFault::Drop) breaks: hyper
/// aborts the connection on it.
#[derive(Debug)]
pub(crate) struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream dropped by a scripted fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// A streamed body: its steps played in order. It holds the request's in-flight
/// guard until its last step (or until hyper drops it because the client went away).
pub(crate) struct Events {
    steps: VecDeque<Step>,
    state: Arc<State>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    guard: Option<InFlight>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("steps", &self.steps.len())
            .field("waiting", &self.wait.is_some())
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(steps: Vec<Step>, state: Arc<State>) -> Self {
        Self {
            steps: steps.into(),
            state,
            wait: None,
            guard: None,
        }
    }

    /// Keeps the request counted in flight until the body ends.
    pub(crate) fn hold(&mut self, guard: InFlight) {
        self.guard = Some(guard);
    }

    /// The server is done with the request: it ended the body itself.
    fn finish(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.finished = true;
        }
    }

    fn poll_step(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DroppedByFault>>> {
        loop {
            if let Some(wait) = &mut self.wait {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            match self.steps.pop_front() {
                Some(Step::Send(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Step::Wait(d)) if d.is_zero() => {
                    // A yield: hyper flushes what it holds before polling again.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(Step::Wait(d)) => {
                    let state = Arc::clone(&self.state);
                    let at = Instant::now() + d;
                    self.wait = Some(Box::pin(async move { state.timer.sleep_until(at).await }));
                }
                Some(Step::Fail) => {
                    self.finish();
                    return Poll::Ready(Some(Err(DroppedByFault)));
                }
                Some(Step::MarkFirstDelta) => {
                    if let Some(guard) = &mut self.guard {
                        guard.first_delta = Some(Instant::now());
                    }
                }
                None => {
                    self.finish();
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// A JSON message of a given size: a prefix, a long run of `x` inside a text block,
/// and a suffix, produced chunk by chunk.
#[derive(Debug)]
pub(crate) struct Chunked {
    prefix: Option<Bytes>,
    filler: Bytes,
    remaining: usize,
    suffix: Option<Bytes>,
}

impl Chunked {
    /// A valid message body of (at least) `size` bytes.
    pub(crate) fn message_of(size: usize) -> Self {
        let prefix = Bytes::from_static(br#"{"id":"msg_mock_big","type":"message","role":"assistant","model":"mock","content":[{"type":"text","text":""#);
        let suffix = Bytes::from_static(br#""}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}"#);
        let remaining = size.saturating_sub(prefix.len() + suffix.len());
        Self {
            prefix: Some(prefix),
            filler: Bytes::from(vec![b'x'; CHUNK]),
            remaining,
            suffix: Some(suffix),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = DroppedByFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DroppedByFault>>> {
        match self.get_mut() {
            Self::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Self::Events(events) => events.poll_step(cx),
            Self::Chunked(c) => {
                let next = if let Some(prefix) = c.prefix.take() {
                    Some(prefix)
                } else if c.remaining > 0 {
                    let n = c.remaining.min(CHUNK);
                    c.remaining -= n;
                    Some(c.filler.slice(..n))
                } else {
                    c.suffix.take()
                };
                Poll::Ready(next.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(full) => full.is_end_stream(),
            Self::Chunked(c) => c.prefix.is_none() && c.remaining == 0 && c.suffix.is_none(),
            // Only `poll_frame` returning `None` ends it, so that the guard is released
            // as finished.
            Self::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(full) => full.size_hint(),
            // Unknown on purpose: the client must count.
            Self::Chunked(_) | Self::Events(_) => SizeHint::default(),
        }
    }
}
