//! A real HTTP/1.1 server on 127.0.0.1 that speaks the Anthropic Messages wire format,
//! for tests and benchmarks of model clients: it records what it receives, counts
//! requests in flight, answers deterministically after a configurable latency, and
//! plays scripted, planned (a [`FaultPlan`] keyed by message, for exact expectations)
//! or random faults, logging which one each request was served ([`MockServer::served`]).
//! It speaks the API's content blocks, tools, extended thinking, prompt caching and
//! structured output, checks requests as the API does, and serves scripted
//! [`Reply`]s, so a test can drive a whole tool loop against it. It streams answers as
//! server-sent events on request, with scripted stream faults (see "Streaming").
//!
//! ```
//! use cf_mock_llm::{Fault, MockConfig, MockServer, Reply};
//! use serde_json::json;
//! use std::time::Duration;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let server = MockServer::start(MockConfig { latency: Duration::from_millis(5), ..MockConfig::default() })
//!     .await
//!     .expect("bind 127.0.0.1");
//! server.push_fault(Fault::rate_limited(1)); // the next request gets a 429
//! // The next valid request gets this tool call.
//! server.push_reply(Reply::tool_use("search", json!({"query": "rust"})));
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.url(), format!("{}/v1/messages", server.base_url()));
//! assert_eq!(server.requests(), 0);
//! server.stop().await;
//! # });
//! ```
//!
//! # What the server checks
//!
//! `POST /v1/messages` only (else 404 or 405), an `x-api-key` header (unless
//! [`MockConfig::require_api_key`] is off; else 401), an `anthropic-version` header and
//! a valid JSON request (else 400), each answered with the documented error body.
//! Every response carries a `request-id` header. A request is refused with a 400
//! `invalid_request_error` whose message starts with the path of the field at fault
//! (`messages.2.content.0.source.data: invalid base64 data`) unless:
//!
//! - it has a `model`, `max_tokens ≥ 1` and at least one message, each
//!   `{role: user|assistant, content}` with a string content or a list of blocks:
//!   `text` (not blank), `image` (`source: {type: base64, media_type: image/jpeg|png|
//!   gif|webp, data}`), `document` (a base64 `application/pdf` source or `{type: text,
//!   media_type: text/plain, data}`), `tool_use` `{id, name, input: {…}}` (assistant
//!   turns), `tool_result` `{tool_use_id, content?: string | text and image blocks,
//!   is_error?}` (user turns), `thinking` `{thinking, signature}` and
//!   `redacted_thinking` `{data}` (assistant turns); base64 data must be valid base64;
//!   fields the API does not know are refused;
//! - the tool results of a user turn answer the calls of the assistant turn just
//!   before it (a dangling `tool_use_id` is refused), all of them, before any other
//!   block of the turn; tool ids are unique; a request with calls or results has
//!   `tools`;
//! - every thinking block of an assistant turn carries [`thinking_signature`] of its
//!   text ("thinking block signature does not match"), and every redacted block the
//!   data this server issued;
//! - `system` is a string or a list of text blocks;
//! - `tools` are `{name, description?, input_schema: {type: object, …}, strict?,
//!   cache_control?}` with unique names matching `^[a-zA-Z0-9_-]{1,64}$`;
//!   `tool_choice` is `{type: auto|any|none}` or `{type: tool, name}` naming one of
//!   them, with an optional `disable_parallel_tool_use`, and only with tools;
//! - `thinking` is `{type: enabled, budget_tokens}` with `1024 ≤ budget_tokens <
//!   max_tokens`, `{type: adaptive}` or `{type: disabled}`; with thinking on,
//!   `tool_choice` does not force a tool, `temperature` is absent or 1, `top_k` is
//!   absent, and the last assistant turn, when it calls tools, starts with its
//!   thinking block (thinking must be sent back in a tool loop);
//! - `output_config` is `{effort?: low|medium|high|max, format?: {type: json_schema,
//!   schema: {…}}}`;
//! - `cache_control` is `{type: ephemeral, ttl?: 5m|1h}`, on at most 4 tools, system
//!   blocks and message blocks together, with no `1h` breakpoint after a `5m` one.
//!
//! # What the server answers
//!
//! For each request, in this order: a scripted or planned fault claims it (see
//! [`MockServer::push_fault`]; a [`Fault::Hang`] then goes on as below); else the
//! checks above refuse it; else the oldest scripted [`Reply`] answers it
//! ([`MockServer::push_reply`]); else the default answer ([`answer_for`]):
//!
//! - with thinking on, a `thinking` block signed with [`thinking_signature`] comes
//!   first, then a `redacted_thinking` block with fresh opaque data when the system
//!   prompt or the last user message contains [`REDACT_MARKER`];
//! - with tools, `tool_choice` not `none` and no tool result in the last user
//!   message: one `tool_use` block calling the first tool (or the one `tool_choice`
//!   names) with id `toolu_mock_<n>` (counted per server, from 1) and the input
//!   [`value_for_schema`] builds from its `input_schema`, `stop_reason` `tool_use`;
//! - else one text block: with `output_config.format`, the JSON of
//!   [`value_for_schema`] of its schema; else `[mock] model=… messages=… last user
//!   message: "…"`, quoting its text and its tool results' text; `stop_reason`
//!   `end_turn` (or `stop_sequence`, `max_tokens` when cut).
//!
//! `usage.input_tokens` is [`estimate_tokens`] of the request (text by its bytes, an
//! image or document by its base64 or text data, a tool call by its name and input
//! JSON, a tool result by its content, a tool by its JSON, thinking blocks not at all)
//! minus the cache counters; `output_tokens` that of the answer.
//!
//! # Prompt caching
//!
//! With breakpoints, the server hashes the prefix of the request (tools, then system
//! blocks, then message blocks, each without its `cache_control`) up to each
//! breakpoint, and remembers the prefixes it wrote. It reads the longest prefix it
//! wrote that ends at most 20 blocks before a breakpoint
//! (`cache_read_input_tokens`) and writes the rest up to the last breakpoint
//! (`cache_creation_input_tokens`, split in `cache_creation: {ephemeral_5m_input_tokens,
//! ephemeral_1h_input_tokens}` by the TTL of the breakpoint closing each part). So the
//! first sight of a prefix writes all of it and a later one reads all of it. Entries
//! never expire (a test never depends on the clock): [`MockServer::forget_prompt_cache`]
//! plays an expiry. There is no minimum cacheable length. Without breakpoints the cache
//! counters are 0 and `cache_creation` is absent.
//!
//! # Streaming
//!
//! A request with `"stream": true` (checked and answered as above) gets `200` with
//! `content-type: text/event-stream`: the very answer it would get whole, cut into the
//! API's server-sent events, each `event: <type>\ndata: <json>\n\n` (the `data` has the
//! same `type`):
//!
//! - `message_start`: the message with empty `content`, `stop_reason` and
//!   `stop_sequence` null, and `usage` with the input and cache counters and
//!   `output_tokens: 1`;
//! - per block, from index 0: `content_block_start` (`text` with `text: ""`,
//!   `thinking` with `thinking: ""`, `tool_use` with its id and name and `input: {}`;
//!   `redacted_thinking` and any other block whole), then `content_block_delta`s
//!   (`text_delta {text}`, `thinking_delta {thinking}` then one `signature_delta
//!   {signature}` with the whole signature, `input_json_delta {partial_json}` of the
//!   input's JSON), each of [`StreamConfig::delta_chars`] characters (cut on char
//!   boundaries; the last may be shorter), then `content_block_stop`;
//! - `message_delta` with `delta: {stop_reason, stop_sequence}` and the final
//!   (cumulative) `usage`; `message_stop`.
//!
//! So appending the deltas to their blocks (and parsing each tool's `partial_json`)
//! gives back the whole answer, ids and usage included. [`StreamConfig`] also sets a
//! `ping` event every N events, a pause between events, CRLF line ends, and the
//! chunking of the body (events cut into chunks of a fixed size or of seeded random
//! sizes, sent as separate writes, so a client meets partial lines and split UTF-8). A stream
//! counts in [`MockServer::in_flight`] until its body ends or its client goes away
//! (then [`Served::abandoned`] is true); [`Served::left`] is when the body ended.
//!
//! [`Fault::Stream`] scripts what breaks a stream ([`StreamFault`]): an `error` event
//! after N events, then the end; the connection aborted after N events; a stall of a
//! given length after N events; no `message_stop`; a `data:` line of cut JSON after N
//! events. It is scripted, keyed and planned like every [`Fault`]. Other faults do as
//! they do to a whole request (their bodies are JSON, not events), and a
//! [`Fault::Hang`] delays the stream's head.
//!
//! ```
//! use cf_mock_llm::{Fault, MockConfig, MockServer, StreamConfig, StreamFault};
//! use std::time::Duration;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let server = MockServer::start(MockConfig {
//!     stream: StreamConfig { delta_chars: 4, ping_every: 5, ..StreamConfig::default() },
//!     ..MockConfig::default()
//! })
//! .await
//! .expect("bind 127.0.0.1");
//! // The next request's stream sends 3 events, then nothing for a minute.
//! server.push_fault(Fault::Stream(StreamFault::Stall { after: 3, duration: Duration::from_secs(60) }));
//! // Streams of messages mentioning "flaky" end with an overloaded_error event.
//! server.push_fault_for("flaky", Fault::Stream(StreamFault::overloaded_after(2)));
//! assert_eq!(server.pending_faults(), 2);
//! # });
//! ```
#![deny(missing_docs)]

mod answer;
mod body;
mod fault;
pub mod measure;
mod prompt_cache;
mod reply;
mod request;
mod schema;
mod stream;
mod thinking;
mod timer;

pub use answer::{answer_for, estimate_tokens};
pub use fault::{Fault, FaultMix, FaultPlan};
pub use reply::Reply;
pub use schema::value_for_schema;
pub use stream::{StreamConfig, StreamFault};
pub use thinking::{REDACT_MARKER, thinking_signature};

use body::{Chunked, Events, ResponseBody};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// The largest request body the server reads.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// The listen backlog: large enough for thousands of simultaneous connects.
const BACKLOG: u32 = 4096;

/// How the server behaves. `MockConfig::default()`: no latency, no faults, no replies,
/// records requests, requires an API key, any free port, streams with
/// [`StreamConfig::default()`].
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before every response (a `tokio::time::sleep`, so thousands of requests
    /// wait at once). Default: none.
    pub latency: Duration,
    /// Faults to play first, one per request, in order. Default: none.
    pub faults: Vec<Fault>,
    /// Random faults for requests no scripted fault claims. Default: none.
    pub fault_mix: Option<FaultMix>,
    /// Keep every request for [`MockServer::received`]. Default: on (turn it off for
    /// long soak runs so memory stays flat).
    pub record: bool,
    /// Refuse requests without `x-api-key` with a 401. Default: on.
    pub require_api_key: bool,
    /// The port on 127.0.0.1; 0 picks a free one. Default: 0.
    pub port: u16,
    /// Keep a short note of every request for [`MockServer::served`]: its number, its
    /// last user message and the fault it was served. Default: off.
    pub log_served: bool,
    /// Replies to serve first, one per valid request no fault claims, in order (see
    /// [`MockServer::push_reply`]). Default: none.
    pub replies: Vec<Reply>,
    /// How answers to requests with `"stream": true` are streamed (see the crate docs,
    /// "Streaming"). Default: [`StreamConfig::default()`].
    pub stream: StreamConfig,
    /// The account's request rate, as the API enforces it: every answer carries
    /// `anthropic-ratelimit-requests-{limit,remaining,reset}`, and a request past the
    /// window's limit gets a 429 with `retry-after` (and `retry-after-ms`). Default:
    /// none.
    pub rate_limit: Option<RateLimit>,
}

impl MockConfig {
    /// A server for load (benchmarks, long batches): answers after `latency` and keeps
    /// no record of requests (a long run would hold every body); the rest default.
    pub fn for_load(latency: Duration) -> Self {
        Self {
            latency,
            record: false,
            ..Self::default()
        }
    }
}

/// A request rate: `requests` per `window` (fixed windows from the server's start).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests a window takes.
    pub requests: u64,
    /// The window.
    pub window: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            faults: Vec::new(),
            fault_mix: None,
            record: true,
            require_api_key: true,
            port: 0,
            log_served: false,
            replies: Vec::new(),
            stream: StreamConfig::default(),
            rate_limit: None,
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedRequest {
    /// The HTTP method.
    pub method: String,
    /// The path (and query).
    pub path: String,
    /// Every header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Value::Null` when it was not JSON.
    pub body: Value,
    /// The body's size in bytes.
    pub body_bytes: usize,
}

/// What the server did with one request (see [`MockConfig::log_served`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The request's number, from 1 (as in its `request-id`, `req_mock_NNNNNN`).
    pub request: u64,
    /// Its last user message (empty when the body had none).
    pub last_user: String,
    /// The fault it was served, or `None` when it was answered normally (which may
    /// still be an error, e.g. a 401 for a missing key).
    pub fault: Option<Fault>,
    /// When the server started on it (and counted it in flight).
    pub arrived: Instant,
    /// When the server was done with it (and stopped counting it); `None` while it is
    /// in flight.
    pub left: Option<Instant>,
    /// Whether the client went away before the server was done (its connection
    /// closed during a [`Fault::Hang`], the latency or a streamed body).
    pub abandoned: bool,
    /// When a streamed answer's first `content_block_delta` (its first token) was
    /// handed to the connection; `None` for a whole answer or before it.
    pub first_delta: Option<Instant>,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request carried an `x-api-key` header.
    pub fn has_api_key(&self) -> bool {
        self.header("x-api-key").is_some()
    }
}

struct Faults {
    queue: VecDeque<Fault>,
    /// Per-key queues: a request whose last user message contains the key takes the
    /// key's next fault before the global queue is consulted.
    keyed: Vec<(String, VecDeque<Fault>)>,
    /// Consulted after the scripts, with the request's last user message and how many
    /// requests with the same message came before it.
    plan: Option<FaultPlan>,
    /// Requests seen per last user message (kept only while a plan is set).
    seen: HashMap<String, u32>,
    rng: fastrand::Rng,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("queue", &self.queue)
            .field("keyed", &self.keyed)
            .field("plan", &self.plan.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    latency: Duration,
    stream: StreamConfig,
    timer: timer::PreciseTimer,
    record: bool,
    require_api_key: bool,
    fault_mix: Option<FaultMix>,
    faults: Mutex<Faults>,
    /// Scripted replies, tool ids, redacted thinking issued, the prompt cache.
    memory: Mutex<answer::Memory>,
    received: Mutex<Vec<ReceivedRequest>>,
    log_served: bool,
    served: Mutex<Vec<Served>>,
    requests: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    rate_limit: Option<RateLimit>,
    /// The current window's number and its requests.
    window: Mutex<(u64, u64)>,
    started: Instant,
    rate_limited: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data are plain queues and lists: a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    /// The rate-limit headers of a request that arrived at `arrived`, and whether the
    /// window's limit refuses it.
    fn rate(&self, arrived: Instant) -> (Vec<(String, String)>, bool) {
        let Some(limit) = self.rate_limit else {
            return (Vec::new(), false);
        };
        let window = limit.window.max(Duration::from_millis(1));
        let nth =
            (arrived.saturating_duration_since(self.started).as_nanos() / window.as_nanos()) as u64;
        let (allowed, remaining) = {
            let mut w = lock(&self.window);
            if w.0 != nth {
                *w = (nth, 0);
            }
            if w.1 < limit.requests {
                w.1 += 1;
                (true, limit.requests - w.1)
            } else {
                (false, 0)
            }
        };
        let end = self.started + window * u32::try_from(nth + 1).unwrap_or(u32::MAX);
        let until = end.saturating_duration_since(Instant::now());
        let reset = std::time::SystemTime::now() + until;
        let mut headers = vec![
            (
                "anthropic-ratelimit-requests-limit".to_owned(),
                limit.requests.to_string(),
            ),
            (
                "anthropic-ratelimit-requests-remaining".to_owned(),
                remaining.to_string(),
            ),
            (
                "anthropic-ratelimit-requests-reset".to_owned(),
                humantime::format_rfc3339_millis(reset).to_string(),
            ),
        ];
        if !allowed {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            headers.push((
                "retry-after".to_owned(),
                until.as_secs_f64().ceil().max(1.0).to_string(),
            ));
            headers.push((
                "retry-after-ms".to_owned(),
                until.as_millis().max(1).to_string(),
            ));
        }
        (headers, !allowed)
    }

    fn next_fault(&self, last_user: &str) -> Option<Fault> {
        let mut f = lock(&self.faults);
        let nth = match f.plan {
            Some(_) => {
                let count = f.seen.entry(last_user.to_owned()).or_insert(0);
                *count += 1;
                Some(*count - 1)
            }
            None => None,
        };
        for (key, queue) in &mut f.keyed {
            if last_user.contains(key.as_str())
                && let Some(fault) = queue.pop_front()
            {
                return Some(fault);
            }
        }
        if let Some(fault) = f.queue.pop_front() {
            return Some(fault);
        }
        if let (Some(plan), Some(nth)) = (&f.plan, nth) {
            return plan(last_user, nth);
        }
        let mix = self.fault_mix?;
        mix.draw(&mut f.rng)
    }
}

fn last_user_text(body: &Value) -> String {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match last.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Counts a request in flight for as long as it lives, even when its connection is
/// dropped mid-way; a streamed answer's body holds it until the body ends.
pub(crate) struct InFlight {
    state: Arc<State>,
    n: u64,
    arrived: Instant,
    finished: bool,
    /// See [`Served::first_delta`].
    pub(crate) first_delta: Option<Instant>,
}

impl InFlight {
    /// Counts the request; returns the guard, the request's number (from 1) and the
    /// time it was counted.
    fn enter(state: &Arc<State>) -> (Self, u64, Instant) {
        let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let arrived = Instant::now();
        let guard = Self {
            state: Arc::clone(state),
            n,
            arrived,
            finished: false,
            first_delta: None,
        };
        (guard, n, arrived)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.state.log_served {
            let left = Instant::now();
            let mut served = lock(&self.state.served);
            // Numbers restart after `reset_stats`; the arrival time tells them apart.
            let mine = |s: &&mut Served| s.request == self.n && s.arrived == self.arrived;
            if let Some(s) = served.iter_mut().rev().find(mine) {
                s.left = Some(left);
                s.abandoned = !self.finished;
                s.first_delta = self.first_delta;
            }
        }
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The service's error: the only one closes the connection without a response.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by a scripted fault")
    }
}

impl std::error::Error for ResetConnection {}

/// A running mock server. Dropping it stops the server and closes every connection;
/// [`stop`](MockServer::stop) does the same and waits until the port is closed.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Binds 127.0.0.1 and starts serving on the current tokio runtime.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, config.port)))?;
        let listener = socket.listen(BACKLOG)?;
        let addr = listener.local_addr()?;
        let seed = config.fault_mix.map_or(0, |m| m.seed);
        let state = Arc::new(State {
            latency: config.latency,
            stream: config.stream,
            timer: timer::PreciseTimer::start()?,
            record: config.record,
            require_api_key: config.require_api_key,
            fault_mix: config.fault_mix,
            faults: Mutex::new(Faults {
                queue: config.faults.into(),
                keyed: Vec::new(),
                plan: None,
                seen: HashMap::new(),
                rng: fastrand::Rng::with_seed(seed),
            }),
            memory: Mutex::new(answer::Memory::with_replies(config.replies)),
            received: Mutex::new(Vec::new()),
            log_served: config.log_served,
            served: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            rate_limit: config.rate_limit,
            window: Mutex::new((0, 0)),
            started: Instant::now(),
            rate_limited: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(MockServer {
            addr,
            state,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, the base URL a client is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Messages endpoint: `{base_url}/v1/messages`.
    pub fn url(&self) -> String {
        format!("{}/v1/messages", self.base_url())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests refused with a 429 by [`MockConfig::rate_limit`].
    pub fn rate_limited(&self) -> u64 {
        self.state.rate_limited.load(Ordering::Relaxed)
    }

    /// Adds a fault at the end of the global script.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state.faults).queue.push_back(fault);
    }

    /// Adds faults at the end of the global script.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state.faults).queue.extend(faults);
    }

    /// Adds a fault for requests whose last user message contains `key`; such a
    /// request takes its key's faults before the global script's.
    pub fn push_fault_for(&self, key: &str, fault: Fault) {
        let mut f = lock(&self.state.faults);
        match f.keyed.iter_mut().find(|(k, _)| k == key) {
            Some((_, queue)) => queue.push_back(fault),
            None => f.keyed.push((key.to_owned(), VecDeque::from([fault]))),
        }
    }

    /// Decides the faults of requests that no scripted fault claims (before any
    /// [`FaultMix`]): see [`FaultPlan`]. Replaces an earlier plan and forgets the
    /// counts of requests per message.
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        let mut f = lock(&self.state.faults);
        f.plan = Some(plan);
        f.seen.clear();
    }

    /// Adds a reply at the end of the script of replies: the next valid request that
    /// no fault claims is answered with it instead of the default answer.
    ///
    /// The order for each request: a scripted or planned fault claims it first (then no
    /// reply is consumed, except after a [`Fault::Hang`], which answers normally); then
    /// the route, key, headers and body are checked (a refused request consumes no
    /// reply either); then the oldest reply is served; with none left, the default
    /// answer (see [`answer_for`]).
    pub fn push_reply(&self, reply: Reply) {
        lock(&self.state.memory).replies.push_back(reply);
    }

    /// Adds replies at the end of the script of replies.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.memory).replies.extend(replies);
    }

    /// Scripted replies not yet served.
    pub fn pending_replies(&self) -> usize {
        lock(&self.state.memory).replies.len()
    }

    /// Forgets every prompt prefix the server cached, as if they had all expired
    /// (entries never expire on their own: see the crate docs).
    pub fn forget_prompt_cache(&self) {
        lock(&self.state.memory).cache.clear();
    }

    /// What the server did with each request so far, oldest first (empty unless
    /// [`MockConfig::log_served`] is on).
    pub fn served(&self) -> Vec<Served> {
        lock(&self.state.served).clone()
    }

    /// Scripted faults not yet consumed (global and per key).
    pub fn pending_faults(&self) -> usize {
        let f = lock(&self.state.faults);
        f.queue.len() + f.keyed.iter().map(|(_, q)| q.len()).sum::<usize>()
    }

    /// Every request received so far, oldest first (empty when recording is off).
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.received).clone()
    }

    /// The body of the `index`-th request received (from 0, as in
    /// [`received`](MockServer::received)); `None` when there is no such request.
    pub fn received_body(&self, index: usize) -> Option<Value> {
        lock(&self.state.received)
            .get(index)
            .map(|r| r.body.clone())
    }

    /// The body of the last request received; `None` before the first one.
    pub fn last_body(&self) -> Option<Value> {
        lock(&self.state.received).last().map(|r| r.body.clone())
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests and resets the counters (between phases of a test).
    pub fn reset_stats(&self) {
        lock(&self.state.received).clear();
        lock(&self.state.served).clear();
        self.state.requests.store(0, Ordering::Relaxed);
        self.state
            .max_in_flight
            .store(self.in_flight(), Ordering::SeqCst);
    }

    /// Stops accepting, closes every connection, and waits until the server task is
    /// gone.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which aborts
/// every connection task.
async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a connection aborted before accept: back off briefly.
                tracing::warn!(error = %e, "mock server: accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        while connections.try_join_next().is_some() {}
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "mock server: connection ended");
            }
        });
    }
}

fn full(body: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::Full(Full::new(body.into()))
}

fn respond(
    status: u16,
    body: ResponseBody,
    request_id: &str,
    extra: &[(String, String)],
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("request-id"), v);
    }
    for (name, value) in extra {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    response
}

fn error(status: u16, kind: &str, message: &str, request_id: &str) -> Response<ResponseBody> {
    respond(
        status,
        full(answer::error_body(kind, message)),
        request_id,
        &[],
    )
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ResetConnection> {
    let (mut in_flight, n, arrived) = InFlight::enter(&state);
    // Dropped here if the client goes away first: then `finished` stays false.
    let mut response = serve(&state, req, n, arrived).await;
    match response.as_mut().map(Response::body_mut) {
        // A stream is in flight until its body ends or the client goes away.
        Ok(ResponseBody::Events(events)) => events.hold(in_flight),
        _ => in_flight.finished = true,
    }
    response
}

async fn serve(
    state: &Arc<State>,
    req: Request<Incoming>,
    n: u64,
    arrived: Instant,
) -> Result<Response<ResponseBody>, ResetConnection> {
    let request_id = format!("req_mock_{n:06}");
    let (parts, incoming) = req.into_parts();
    let bytes = match Limited::new(incoming, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(error(
                413,
                "request_too_large",
                "request body too large or unreadable",
                &request_id,
            ));
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let body = parsed.clone().unwrap_or(Value::Null);
    if state.record {
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        lock(&state.received).push(ReceivedRequest {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            headers,
            body: body.clone(),
            body_bytes: bytes.len(),
        });
    }
    let last_user = last_user_text(&body);
    let fault = state.next_fault(&last_user);
    if state.log_served {
        lock(&state.served).push(Served {
            request: n,
            last_user,
            fault: fault.clone(),
            arrived,
            left: None,
            abandoned: false,
            first_delta: None,
        });
    }
    if !state.latency.is_zero() {
        // Counted from the request's arrival: reading and parsing it is part of the
        // latency, not added to it.
        state.timer.sleep_until(arrived + state.latency).await;
    }
    let (fault, stream_fault) = match fault {
        Some(Fault::Stream(f)) => (None, Some(f)),
        other => (other, None),
    };
    match fault {
        None | Some(Fault::Stream(_)) => {}
        Some(Fault::Reset) => return Err(ResetConnection),
        Some(Fault::Hang(d)) => tokio::time::sleep(d).await,
        Some(Fault::Status {
            status,
            body,
            headers,
        }) => return Ok(respond(status, full(body), &request_id, &headers)),
        Some(Fault::Malformed) => {
            return Ok(respond(
                200,
                full(r#"{"id": "msg_mock", "type": "message", "content": [{"type": "te"#),
                &request_id,
                &[],
            ));
        }
        Some(Fault::Oversized(size)) => {
            return Ok(respond(
                200,
                ResponseBody::Chunked(Chunked::message_of(size)),
                &request_id,
                &[],
            ));
        }
        Some(Fault::EmptyContent) => {
            let id = format!("msg_mock_{n:06}");
            let mut answer = answer::answer(&body, &id, &mut lock(&state.memory), false)
                .unwrap_or_else(|_| serde_json::json!({}));
            answer["content"] = Value::Array(Vec::new());
            return Ok(respond(200, full(answer.to_string()), &request_id, &[]));
        }
        Some(Fault::Response(value)) => {
            return Ok(respond(200, full(value.to_string()), &request_id, &[]));
        }
    }
    if parts.uri.path() != "/v1/messages" {
        return Ok(error(
            404,
            "not_found_error",
            &format!("no route for {}", parts.uri.path()),
            &request_id,
        ));
    }
    if parts.method != hyper::Method::POST {
        return Ok(error(
            405,
            "invalid_request_error",
            "method not allowed",
            &request_id,
        ));
    }
    if state.require_api_key && !parts.headers.contains_key("x-api-key") {
        return Ok(error(
            401,
            "authentication_error",
            "x-api-key header is required",
            &request_id,
        ));
    }
    if !parts.headers.contains_key("anthropic-version") {
        return Ok(error(
            400,
            "invalid_request_error",
            "anthropic-version header is required",
            &request_id,
        ));
    }
    let Some(request) = parsed else {
        return Ok(error(
            400,
            "invalid_request_error",
            "the body is not valid JSON",
            &request_id,
        ));
    };
    let (rate_headers, refused) = state.rate(arrived);
    if refused {
        return Ok(respond(
            429,
            full(answer::error_body(
                "rate_limit_error",
                "this request would exceed the rate limit of your organization",
            )),
            &request_id,
            &rate_headers,
        ));
    }
    let answer = answer::answer(
        &request,
        &format!("msg_mock_{n:06}"),
        &mut lock(&state.memory),
        true,
    );
    match answer {
        Ok(answer) if request.get("stream") == Some(&Value::Bool(true)) => {
            let steps = stream::steps(&answer, &state.stream, stream_fault.as_ref());
            let body = ResponseBody::Events(Events::new(steps, Arc::clone(state)));
            let mut response = respond(200, body, &request_id, &rate_headers);
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            Ok(response)
        }
        Ok(answer) => Ok(respond(
            200,
            full(answer.to_string()),
            &request_id,
            &rate_headers,
        )),
        Err(message) => Ok(error(400, "invalid_request_error", &message, &request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one request on a connection of its own; returns the status (0 when the
    /// connection was closed without a response).
    async fn post(server: &MockServer, text: &str) -> u16 {
        let body = serde_json::json!({"model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": text}]})
        .to_string();
        let mut stream = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .expect("write");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_fault_plan_schedules_per_message_and_the_served_log_says_what_happened() {
        let server = MockServer::start(MockConfig {
            log_served: true,
            ..MockConfig::default()
        })
        .await
        .expect("bind");
        server.set_fault_plan(Arc::new(|text: &str, nth: u32| match (text, nth) {
            ("a", 0) => Some(Fault::overloaded()),
            ("a", 1) => Some(Fault::Reset),
            ("b", 0) => Some(Fault::server_error()),
            _ => None,
        }));
        // Scripted faults come first and still count as a request of their message.
        server.push_fault_for("b", Fault::unauthorized());
        let statuses = [
            post(&server, "a").await,
            post(&server, "b").await,
            post(&server, "a").await,
            post(&server, "a").await,
            post(&server, "b").await,
        ];
        assert_eq!(statuses, [529, 401, 0, 200, 200]);
        let served = server.served();
        let summary: Vec<(u64, &str, Option<Fault>)> = served
            .iter()
            .map(|s| (s.request, s.last_user.as_str(), s.fault.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, "a", Some(Fault::overloaded())),
                (2, "b", Some(Fault::unauthorized())),
                (3, "a", Some(Fault::Reset)),
                (4, "a", None),
                (5, "b", None),
            ]
        );
        assert!(
            served
                .iter()
                .all(|s| s.left.is_some_and(|left| left >= s.arrived) && !s.abandoned),
            "a reset is the server's doing, not the client's: {served:?}"
        );
        server.reset_stats();
        assert!(server.served().is_empty());
    }

    #[tokio::test]
    async fn a_client_that_gives_up_during_a_hang_is_logged_as_gone() {
        let server = MockServer::start(MockConfig {
            log_served: true,
            ..MockConfig::default()
        })
        .await
        .expect("bind");
        server.push_fault(Fault::Hang(Duration::from_secs(600)));
        let gave_up = tokio::time::timeout(Duration::from_millis(200), post(&server, "x")).await;
        assert!(gave_up.is_err(), "the hang outlasts the client");
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(s) = server.served().pop().filter(|s| s.left.is_some()) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server notices the closed connection within 10 s");
        assert!(served.abandoned);
        assert_eq!(server.in_flight(), 0);
    }

    #[tokio::test]
    async fn nothing_is_logged_unless_asked() {
        let server = MockServer::start(MockConfig::default())
            .await
            .expect("bind");
        assert_eq!(post(&server, "x").await, 200);
        assert!(server.served().is_empty());
        assert_eq!(server.requests(), 1);
    }
}
