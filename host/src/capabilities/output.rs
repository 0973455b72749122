//! The `output` interface of contract 0.2.0: partial output an agent hands to whoever
//! runs it while it works. The host bounds it by the run's output cap and passes each
//! piece on to the run's [`EventSink`] (the terminal, a program reading events, the
//! library's run handle) as it comes.

use crate::bindings::v0_2::claude_force::agent::output::Host;
use crate::events::{EventSink, RunEvent};

/// The `output` capability of one run.
#[derive(Debug)]
pub(crate) struct OutputCtx {
    /// Bytes the run may still emit.
    bytes_left: usize,
    /// Pieces emitted within the cap.
    pieces: u32,
    /// Pieces dropped past the cap.
    dropped: u32,
    /// Where the pieces go.
    sink: Option<EventSink>,
}

impl OutputCtx {
    /// At most `max_bytes` of emitted text in one run, handed to `sink`.
    pub(crate) fn new(max_bytes: usize, sink: Option<EventSink>) -> Self {
        Self {
            bytes_left: max_bytes,
            pieces: 0,
            dropped: 0,
            sink,
        }
    }

    /// Pieces emitted within the cap, and dropped past it.
    pub(crate) fn counts(&self) -> (u32, u32) {
        (self.pieces, self.dropped)
    }
}

impl Host for OutputCtx {
    async fn emit(&mut self, text: String) -> wasmtime::Result<()> {
        match self.bytes_left.checked_sub(text.len()) {
            Some(left) => {
                self.bytes_left = left;
                self.pieces = self.pieces.saturating_add(1);
                if let Some(sink) = &self.sink
                    && !text.is_empty()
                {
                    sink.send(RunEvent::Output(text));
                }
            }
            None => {
                self.bytes_left = 0;
                self.dropped = self.dropped.saturating_add(1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emitted text counts against the cap and reaches the sink in order; past the
    /// cap, pieces are dropped, not failed, and not passed on.
    #[tokio::test]
    async fn emits_are_bounded_by_the_cap() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            EventSink::new(move |e| seen.lock().unwrap().push(e))
        };
        let mut out = OutputCtx::new(10, Some(sink));
        for piece in ["hello", "world"] {
            Host::emit(&mut out, piece.into()).await.expect("no trap");
        }
        assert_eq!(out.counts(), (2, 0), "exactly at the cap");
        Host::emit(&mut out, "!".into()).await.expect("no trap");
        assert_eq!(out.counts(), (2, 1), "one byte past it is dropped");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                RunEvent::Output("hello".into()),
                RunEvent::Output("world".into())
            ]
        );
    }
}
