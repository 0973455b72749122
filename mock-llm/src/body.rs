//! Response bodies: a whole buffer, or a generated body sent in chunks without a
//! `content-length`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bytes per chunk of a generated body.
const CHUNK: usize = 64 * 1024;

/// The server's response body.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    /// A whole buffer, sent with a `content-length`.
    Full(Full<Bytes>),
    /// A generated body, sent chunked.
    Chunked(Chunked),
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
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(full) => Pin::new(full).poll_frame(cx),
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(full) => full.size_hint(),
            // Unknown on purpose: the client must count.
            Self::Chunked(_) => SizeHint::default(),
        }
    }
}
