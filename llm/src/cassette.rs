//! Record and replay: [`RecordingProvider`] writes every answered request to a
//! cassette file; [`ReplayProvider`] answers from one with no network.
//!
//! A cassette is JSON Lines, one answered call per line:
//! `{"request": <Request>, "response": <Response>}`. The request is the engine's own
//! [`Request`] (never a header, so never the API key), which serializes with a fixed
//! field order: equal requests give equal lines.

use crate::provider::{BoxFuture, Provider, ProviderError};
use crate::types::{LlmError, Request, Response, Role};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How much of the first user message an unseen-request error quotes, in characters.
const QUOTE_CHARS: usize = 60;

/// Why a cassette could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CassetteError {
    /// The file could not be opened or read.
    #[error("cannot open cassette {}: {source}", path.display())]
    Io {
        /// The cassette.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a recorded call.
    #[error("cassette {}, line {line}: {message}", path.display())]
    Parse {
        /// The cassette.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One line of a cassette.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<'a> {
    request: std::borrow::Cow<'a, Request>,
    response: std::borrow::Cow<'a, Response>,
}

/// The key a request is matched on: its canonical JSON.
fn canonical(request: &Request) -> Result<String, LlmError> {
    serde_json::to_string(request)
        .map_err(|e| LlmError::InvalidRequest(format!("cannot encode the request: {e}")))
}

/// Wraps a provider and appends every successful call to a cassette (JSON Lines),
/// one line per call, written and flushed while holding a lock so that concurrent
/// calls never interleave. Failed calls are not recorded. Its name, endpoint and
/// billing are the inner provider's.
///
/// A line that cannot be written is logged and counted
/// ([`failed_writes`](Self::failed_writes)); the call still succeeds.
///
/// ```
/// use cf_llm::{OfflineProvider, RecordingProvider, ReplayProvider, Provider, Request, Message};
/// use std::sync::Arc;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("calls.jsonl");
/// let recorder = RecordingProvider::new(Arc::new(OfflineProvider::new()), &path).unwrap();
/// let request = Request::new("claude-sonnet-4-5", 64, vec![Message::user("Hi")]);
/// let live = recorder.send(&request).await.unwrap();
///
/// let replay = ReplayProvider::open(&path).unwrap();
/// assert_eq!(replay.send(&request).await.unwrap(), live);
/// # });
/// ```
#[derive(Debug)]
pub struct RecordingProvider {
    inner: std::sync::Arc<dyn Provider>,
    path: PathBuf,
    file: Mutex<File>,
    failed_writes: AtomicU64,
}

impl RecordingProvider {
    /// Records `inner`'s answers at the end of `path` (created if missing).
    pub fn new(
        inner: std::sync::Arc<dyn Provider>,
        path: impl AsRef<Path>,
    ) -> Result<Self, CassetteError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| CassetteError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            inner,
            path,
            file: Mutex::new(file),
            failed_writes: AtomicU64::new(0),
        })
    }

    /// The cassette's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines that could not be written so far.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }

    fn append(&self, request: &Request, response: &Response) {
        let entry = Entry {
            request: std::borrow::Cow::Borrowed(request),
            response: std::borrow::Cow::Borrowed(response),
        };
        let result = serde_json::to_vec(&entry)
            .map_err(std::io::Error::other)
            .and_then(|mut line| {
                line.push(b'\n');
                // One write of a whole line under the lock: lines never interleave. The
                // write is short, so blocking the executor thread for it is acceptable.
                let mut file = self
                    .file
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                file.write_all(&line)?;
                file.flush()
            });
        if let Err(e) = result {
            self.failed_writes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(cassette = %self.path.display(), error = %e, "could not record a model call");
        }
    }
}

impl Provider for RecordingProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }

    fn billable(&self) -> bool {
        self.inner.billable()
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        Box::pin(async move {
            let response = self.inner.send(request).await?;
            self.append(request, &response);
            Ok(response)
        })
    }
}

/// The answers recorded for one request, replayed in order, then the last again.
#[derive(Debug)]
struct Recorded {
    responses: Vec<Response>,
    next: AtomicUsize,
}

/// Answers from a cassette written by [`RecordingProvider`], with no network. A
/// request is matched on all of its fields; a request recorded several times gets
/// its answers in the recorded order, then the last one again. An unseen request is
/// a [`LlmError::NotFound`] that is never retried. Replayed calls cost nothing
/// (`billable` is false).
#[derive(Debug)]
pub struct ReplayProvider {
    path: PathBuf,
    display: String,
    entries: HashMap<String, Recorded>,
    answers: usize,
}

impl ReplayProvider {
    /// Reads a whole cassette. Blank lines are skipped; any other line that is not a
    /// recorded call is an error naming it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CassetteError> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| CassetteError::Io {
            path: path.clone(),
            source,
        })?;
        let mut entries: HashMap<String, Recorded> = HashMap::new();
        let mut answers = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parse_error = |message: String| CassetteError::Parse {
                path: path.clone(),
                line: i + 1,
                message,
            };
            let entry: Entry<'static> =
                serde_json::from_str(line).map_err(|e| parse_error(e.to_string()))?;
            let key = canonical(&entry.request).map_err(|e| parse_error(e.to_string()))?;
            entries
                .entry(key)
                .or_insert_with(|| Recorded {
                    responses: Vec::new(),
                    next: AtomicUsize::new(0),
                })
                .responses
                .push(entry.response.into_owned());
            answers += 1;
        }
        let display = path.display().to_string();
        Ok(Self {
            path,
            display,
            entries,
            answers,
        })
    }

    /// The cassette's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers recorded in the cassette.
    pub fn len(&self) -> usize {
        self.answers
    }

    /// Whether the cassette holds no answer.
    pub fn is_empty(&self) -> bool {
        self.answers == 0
    }

    fn answer(&self, request: &Request) -> Result<Response, ProviderError> {
        let key = canonical(request).map_err(ProviderError::fatal)?;
        let Some(recorded) = self.entries.get(&key) else {
            let first_user = request
                .messages
                .iter()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.text())
                .unwrap_or_default();
            let quoted: String = first_user.chars().take(QUOTE_CHARS).collect();
            return Err(ProviderError::fatal(LlmError::NotFound(format!(
                "no recorded answer for this request in {}: model={}, {} messages, first user message starts {:?}",
                self.display,
                request.model,
                request.messages.len(),
                quoted
            ))));
        };
        let i = recorded.next.fetch_add(1, Ordering::Relaxed);
        let last = recorded.responses.len().saturating_sub(1);
        recorded.responses.get(i.min(last)).cloned().ok_or_else(|| {
            ProviderError::fatal(LlmError::NotFound(format!(
                "empty recording in {}",
                self.display
            )))
        })
    }
}

impl Provider for ReplayProvider {
    fn name(&self) -> &str {
        "replay"
    }

    fn endpoint(&self) -> &str {
        &self.display
    }

    fn billable(&self) -> bool {
        false
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        Box::pin(std::future::ready(self.answer(request)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OfflineProvider;
    use crate::types::{Message, StopReason, Usage};
    use std::sync::Arc;

    fn response(text: &str) -> Response {
        Response {
            content: Vec::new(),
            id: text.into(),
            model: "m".into(),
            text: text.into(),
            stop_reason: StopReason::EndTurn,
            usage: Usage::default(),
        }
    }

    fn line(request: &Request, text: &str) -> String {
        serde_json::to_string(&Entry {
            request: std::borrow::Cow::Borrowed(request),
            response: std::borrow::Cow::Owned(response(text)),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn repeated_requests_replay_in_order_then_repeat_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let a = Request::new("m", 5, vec![Message::user("a")]);
        let b = Request::new("m", 5, vec![Message::user("b")]);
        std::fs::write(
            &path,
            [
                line(&a, "a1"),
                line(&b, "b1"),
                String::new(),
                line(&a, "a2"),
            ]
            .join("\n"),
        )
        .unwrap();
        let replay = ReplayProvider::open(&path).unwrap();
        assert_eq!(replay.len(), 3);
        let texts: Vec<String> = [&a, &a, &a, &b]
            .iter()
            .map(|r| replay.answer(r).unwrap().text)
            .collect();
        assert_eq!(texts, ["a1", "a2", "a2", "b1"]);
        let mut other = a.clone();
        other.temperature = Some(0.5);
        let e = replay.answer(&other).unwrap_err();
        assert!(!e.retryable);
        assert!(
            matches!(&e.error, LlmError::NotFound(m) if m.contains("c.jsonl") && m.contains("model=m, 1 messages, first user message starts \"a\"")),
            "{:?}",
            e.error
        );
    }

    #[test]
    fn bad_cassettes_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        let a = Request::new("m", 5, vec![Message::user("a")]);
        std::fs::write(&path, format!("{}\n{{\"request\": 1}}\n", line(&a, "x"))).unwrap();
        let e = ReplayProvider::open(&path).unwrap_err();
        assert!(matches!(e, CassetteError::Parse { line: 2, .. }), "{e}");
        assert!(matches!(
            ReplayProvider::open(dir.path().join("missing")),
            Err(CassetteError::Io { .. })
        ));
    }

    #[tokio::test]
    async fn concurrent_recording_writes_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        let recorder =
            Arc::new(RecordingProvider::new(Arc::new(OfflineProvider::new()), &path).unwrap());
        assert_eq!(recorder.name(), "offline");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let recorder = Arc::clone(&recorder);
            tasks.spawn(async move {
                recorder
                    .send(&Request::new(
                        "m",
                        50,
                        vec![Message::user(format!("task {i} {}", "x".repeat(i * 100)))],
                    ))
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(recorder.failed_writes(), 0);
        let replay = ReplayProvider::open(&path).unwrap();
        assert_eq!(replay.len(), 64);
    }
}
