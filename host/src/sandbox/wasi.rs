//! The WASI context of a run, which grants nothing: no arguments, no environment, no
//! preopened directories, no sockets, no stdin. Only stdout and stderr exist, each
//! kept in a bounded buffer and written to the log when the run ends; output past the
//! bound is counted and dropped, never an error the guest could trip over.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The empty WASI context, with stdout and stderr going to `stdio`.
pub(crate) fn empty_ctx(stdio: &Stdio) -> WasiCtx {
    wasmtime_wasi::WasiCtxBuilder::new()
        .stdout(stdio.stdout.clone())
        .stderr(stdio.stderr.clone())
        // The default socket check already denies every address.
        .allow_ip_name_lookup(false)
        .build()
}

/// A run's captured stdout and stderr.
#[derive(Debug, Clone)]
pub(crate) struct Stdio {
    stdout: Capture,
    stderr: Capture,
}

impl Stdio {
    /// Keeps at most `max` bytes of each stream.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            stdout: Capture::new(max),
            stderr: Capture::new(max),
        }
    }

    /// Writes what the guest printed to the debug log, under its name.
    pub(crate) fn flush_to_log(&self, agent: &str) {
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (text, dropped) = capture.take();
            if !text.is_empty() {
                tracing::debug!(target: "cf_host::guest", agent, stream, dropped, "{}", text.trim_end());
            }
        }
    }
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

/// A bounded capture of one guest stream.
#[derive(Debug, Clone)]
struct Capture {
    buffer: Arc<Mutex<Buffer>>,
    max: usize,
}

impl Capture {
    fn new(max: usize) -> Self {
        Self {
            buffer: Arc::default(),
            max,
        }
    }

    /// What was kept, and how many bytes were dropped.
    fn take(&self) -> (String, usize) {
        let mut b = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&b.bytes).into_owned();
        let dropped = b.dropped;
        b.bytes.clear();
        b.dropped = 0;
        (text, dropped)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut b = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.max.saturating_sub(b.bytes.len());
        let keep = room.min(data.len());
        b.bytes.extend_from_slice(&data[..keep]);
        b.dropped += data.len() - keep;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// Output past the bound is counted and dropped; the guest's write still succeeds.
    #[tokio::test]
    async fn output_past_the_bound_is_dropped_and_counted() {
        let capture = Capture::new(4);
        let mut stream = std::pin::Pin::from(capture.async_stream());
        stream
            .write_all(b"abcdef")
            .await
            .expect("writes never fail");
        stream.write_all(b"gh").await.expect("writes never fail");
        assert_eq!(capture.take(), ("abcd".to_owned(), 4));
        assert_eq!(capture.take(), (String::new(), 0), "taking empties it");
    }
}
