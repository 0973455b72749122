//! The response cache in front of the provider: canonical request keys, lookups that
//! take no concurrency permit, single-flight for identical requests in flight, and
//! storing only complete successful answers.

use crate::content::{Content, System};
use crate::provider::Provider;
use crate::types::{CacheMode, LlmError, Request, Response, Role};
use cf_cache::{CacheKey, EntryMeta, KeyBuilder, Put, ResponseCache};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Version of the key encoding: bump it when the encoding changes, so that old
/// entries become misses rather than wrong answers.
const KEY_VERSION: &str = "cf-llm/messages-request/v1";

/// The key of `request` sent to `provider`, in `namespace` (the agent, or a shared
/// namespace). Every field the API sees is part of it, each length-prefixed, options
/// distinct from empty values, floats by their exact bits.
pub fn request_key(provider: &dyn Provider, namespace: &str, request: &Request) -> CacheKey {
    // A text turn is its role's letter and its text, as before contract 0.2, so that
    // text-only requests keep their keys. A turn of blocks is an upper-case letter and
    // the blocks' canonical JSON (the wire format, fixed field order, media as base64,
    // tool inputs byte for byte).
    let messages = request.messages.iter().map(|m| match &m.content {
        Content::Text(text) => {
            let role: &[u8] = match m.role {
                Role::User => b"u",
                Role::Assistant => b"a",
            };
            [role, text.as_bytes()].concat()
        }
        Content::Blocks(blocks) => {
            let role: &[u8] = match m.role {
                Role::User => b"U",
                Role::Assistant => b"A",
            };
            [role, &canonical_json(blocks)].concat()
        }
    });
    let f32_bits = |v: Option<f32>| v.map(|v| v.to_bits().to_le_bytes());
    let (system_text, system_blocks) = match &request.system {
        None => (None, None),
        Some(System::Text(text)) => (Some(text.as_bytes()), None),
        Some(System::Blocks(blocks)) => (None, Some(canonical_json(blocks))),
    };
    let key = KeyBuilder::new(KEY_VERSION)
        .field_str("namespace", namespace)
        .field_str("provider", provider.name())
        .field_str("endpoint", provider.endpoint())
        .field_str("model", &request.model)
        .field_u64("max_tokens", u64::from(request.max_tokens))
        .field_opt("system", system_text)
        .field_list("messages", messages)
        .field_opt(
            "temperature",
            f32_bits(request.temperature).as_ref().map(|b| &b[..]),
        )
        .field_opt("top_p", f32_bits(request.top_p).as_ref().map(|b| &b[..]))
        .field_opt(
            "top_k",
            request
                .top_k
                .map(|k| k.to_le_bytes())
                .as_ref()
                .map(|b| &b[..]),
        )
        .field_list(
            "stop_sequences",
            request.stop_sequences.iter().map(String::as_bytes),
        )
        .field_opt("user_id", request.user_id.as_deref().map(str::as_bytes));
    // What contract 0.2 added, each field only when set: the key of a request
    // without them is the key it had before (every field is named in the encoding,
    // so a present field never reads as an absent one).
    let mut extra: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(blocks) = system_blocks {
        extra.push(("system_blocks", blocks));
    }
    if !request.tools.is_empty() {
        extra.push(("tools", canonical_json(&request.tools)));
    }
    if let Some(choice) = &request.tool_choice {
        extra.push(("tool_choice", canonical_json(choice)));
    }
    if request.disable_parallel_tool_use {
        extra.push(("disable_parallel_tool_use", b"1".to_vec()));
    }
    if let Some(thinking) = &request.thinking {
        extra.push(("thinking", canonical_json(thinking)));
    }
    if let Some(effort) = request.effort {
        extra.push(("effort", effort.as_wire().as_bytes().to_vec()));
    }
    if let Some(schema) = &request.output_schema {
        extra.push(("output_schema", schema.as_bytes().to_vec()));
    }
    extra
        .into_iter()
        .fold(key, |key, (name, value)| key.field(name, &value))
        .finish()
}

/// The canonical JSON of a part of a request. Validated requests always encode; a
/// value that does not (a tool input that is not JSON) encodes as its error text,
/// which still keys it apart from every valid request.
fn canonical_json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| format!("\0invalid: {e}").into_bytes())
}

/// What a call waiting on an identical call in flight receives.
pub(crate) type Shared = Option<Result<Response, LlmError>>;

/// The response cache and the calls in flight, by key.
#[derive(Debug)]
pub(crate) struct CacheLayer {
    pub cache: ResponseCache,
    /// `Some(name)`: every agent shares this namespace; `None`: one per agent.
    pub shared_namespace: Option<String>,
    inflight: Mutex<HashMap<CacheKey, watch::Receiver<Shared>>>,
    writes: Arc<WriteBehind>,
}

/// Answers waiting to be written (or being written). A call that stored an answer does
/// not wait for the disk: the answer is served from here until its entry is installed,
/// and one background writer at a time installs whatever has queued, in groups
/// ([`ResponseCache::put_many`]: one database transaction per group).
/// Writing in the call held the finished run's instance slot through the file I/O
/// (docs/benchmarks.md, "What moved the figures").
#[derive(Debug)]
struct WriteBehind {
    cache: ResponseCache,
    queue: Mutex<Queue>,
    /// Signalled when the writer stops.
    idle: Condvar,
    /// Signalled when a group is full or someone waits for the writes: the writer
    /// gathering a group stops waiting.
    more: Condvar,
    /// [`GROUP_WAIT`], longer in tests.
    group_wait: Duration,
    /// Answers queued or being written: [`CacheLayer::flush`] waits for zero, and a
    /// store waits while it is at [`MAX_QUEUED`].
    pending: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Queue {
    items: Vec<Queued>,
    /// The latest answer stored for each key not yet installed, by its sequence number.
    staged: HashMap<CacheKey, (u64, Staged)>,
    seq: u64,
    writing: bool,
    /// Someone waits for the queue to be written ([`CacheLayer::flush`], the drop): the
    /// writer writes what it has without gathering a group.
    hurry: bool,
}

#[derive(Debug, Clone)]
struct Staged {
    response: Response,
    meta: EntryMeta,
}

#[derive(Debug)]
struct Queued {
    seq: u64,
    namespace: String,
    key: CacheKey,
    payload: Vec<u8>,
    meta: EntryMeta,
}

/// Answers that may wait to be written before a store waits for the writer.
const MAX_QUEUED: usize = 4096;

/// A writer that finds fewer answers than this waits up to [`GROUP_WAIT`] for more
/// before it writes them in one transaction. Each commit costs the writer a WAL frame
/// per page it touched (an index leaf per answer, the metadata and the interior pages
/// once per commit) and costs every other connection its page cache (SQLite drops a
/// reader's cache when the database changed since its last read): at a few thousand
/// answers a second, writing each group as soon as the previous one was written
/// committed every few answers, and nearly every lookup read its B-tree path from the
/// file again (docs/benchmarks.md, "Issue 14, third pass").
const GROUP: usize = 256;

/// How long a writer gathers a group. Answers waiting are served from memory, so
/// this delays only what another process sees (and what a crash loses: a cache's
/// answers, made again on the next call).
const GROUP_WAIT: Duration = Duration::from_millis(20);

impl WriteBehind {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes groups until the queue is empty. Runs on one blocking thread at a time.
    fn drain(&self) {
        loop {
            let items = {
                let mut queue = self.queue();
                let until = Instant::now() + self.group_wait;
                while !queue.items.is_empty() && queue.items.len() < GROUP && !queue.hurry {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    queue = self
                        .more
                        .wait_timeout(queue, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if queue.items.is_empty() {
                    queue.writing = false;
                    queue.hurry = false;
                    self.idle.notify_all();
                    return;
                }
                std::mem::take(&mut queue.items)
            };
            let puts: Vec<Put<'_>> = items
                .iter()
                .map(|q| Put {
                    agent: &q.namespace,
                    key: &q.key,
                    payload: &q.payload,
                    meta: q.meta,
                })
                .collect();
            let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.cache.put_many(&puts)
            }));
            match results {
                Ok(results) => {
                    for (q, result) in items.iter().zip(results) {
                        if let Err(e) = result {
                            tracing::warn!(key = %q.key, error = %e, "could not store an answer in the cache");
                        }
                    }
                }
                Err(_) => tracing::error!(
                    answers = items.len(),
                    "storing answers in the cache panicked; they were not stored"
                ),
            }
            let mut queue = self.queue();
            for q in &items {
                if queue
                    .staged
                    .get(&q.key)
                    .is_some_and(|(seq, _)| *seq == q.seq)
                {
                    queue.staged.remove(&q.key);
                }
            }
            drop(queue);
            self.pending.send_modify(|n| *n -= items.len());
        }
    }
}

/// The background writer's task. If the runtime drops it unstarted (shutting down),
/// it hands the writing role back, so that the drop of the layer writes what is left.
struct Writer {
    writes: Arc<WriteBehind>,
    ran: bool,
}

impl Writer {
    fn run(mut self) {
        self.writes.drain();
        self.ran = true;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.ran {
            let mut queue = self.writes.queue();
            queue.writing = false;
            queue.hurry = false;
            self.writes.idle.notify_all();
        }
    }
}

impl Drop for CacheLayer {
    /// Writes what is still queued, or waits for the writer at work to do so, then
    /// records this process's reads: when the last handle of a service is gone, its
    /// answers and hits are on disk (the writer's task may still hold a handle of the
    /// cache for a moment, so its own drop cannot be relied on for the reads).
    fn drop(&mut self) {
        let writes = &*self.writes;
        let mut queue = writes.queue();
        queue.hurry = true;
        writes.more.notify_all();
        let mut queue = writes
            .idle
            .wait_while(queue, |q| q.writing)
            .unwrap_or_else(|p| p.into_inner());
        queue.writing = true;
        queue.hurry = true;
        drop(queue);
        writes.drain();
        record_reads(&self.cache);
    }
}

/// Writes this process's reads (hits, last access) to the cache's database; a failure
/// is logged, never returned.
fn record_reads(cache: &ResponseCache) {
    if let Err(e) = cache.flush() {
        tracing::warn!(error = %e, "could not record the cache's reads");
    }
}

/// The role of a call in single-flight.
pub(crate) enum Flight {
    /// First of its kind: make the call, then [`Leader::finish`].
    Leader(Leader),
    /// An identical call is in flight: wait for its outcome.
    Follower(watch::Receiver<Shared>),
}

/// The call that others wait for. Dropping it without `finish` (a cancelled run)
/// releases the followers, who then make their own call.
#[derive(Debug)]
pub(crate) struct Leader {
    key: CacheKey,
    sender: watch::Sender<Shared>,
}

impl CacheLayer {
    pub(crate) fn new(cache: ResponseCache, shared_namespace: Option<String>) -> Self {
        Self::gathering(cache, shared_namespace, GROUP_WAIT)
    }

    fn gathering(
        cache: ResponseCache,
        shared_namespace: Option<String>,
        group_wait: Duration,
    ) -> Self {
        Self {
            writes: Arc::new(WriteBehind {
                cache: cache.clone(),
                queue: Mutex::default(),
                idle: Condvar::new(),
                more: Condvar::new(),
                group_wait,
                pending: watch::channel(0).0,
            }),
            cache,
            shared_namespace,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn namespace<'a>(&'a self, agent: &'a str) -> &'a str {
        self.shared_namespace.as_deref().unwrap_or(agent)
    }

    /// The namespace a call's key is built in: the shared one when configured, else
    /// the agent's name, followed for a third-party plugin by its component's digest
    /// (so that a plugin reporting another's name never reads that one's answers).
    pub(crate) fn key_namespace<'a>(
        &'a self,
        agent: &'a str,
        component: Option<&str>,
    ) -> std::borrow::Cow<'a, str> {
        match (&self.shared_namespace, component) {
            (None, Some(digest)) => format!("{agent}\0{digest}").into(),
            _ => self.namespace(agent).into(),
        }
    }

    /// A cached answer, if the mode reads the cache and one is stored (or stored and
    /// still waiting to be written). A payload that no longer parses (written by
    /// another version) is a miss.
    pub(crate) fn lookup(&self, mode: CacheMode, agent: &str, key: &CacheKey) -> Option<Response> {
        if !matches!(mode, CacheMode::Normal | CacheMode::ReadOnly) {
            return None;
        }
        let namespace = self.namespace(agent);
        if !self.cache.is_excluded(namespace) {
            let staged = self.writes.queue().staged.get(key).map(|(_, s)| s.clone());
            if let Some(Staged { response, meta }) = staged {
                self.cache.count_hit(namespace, meta.tokens, meta.cost_usd);
                return Some(response);
            }
        }
        let entry = self.cache.get(namespace, key)?;
        match serde_json::from_slice::<Response>(&entry.payload) {
            Ok(response) => Some(response),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "ignoring a cached answer that does not parse");
                None
            }
        }
    }

    /// Stores a successful answer when the mode writes the cache: it is served at once
    /// and written in the background. Waits only while [`MAX_QUEUED`] answers are
    /// waiting to be written.
    pub(crate) async fn store(
        &self,
        mode: CacheMode,
        agent: &str,
        key: &CacheKey,
        response: &Response,
        cost_usd: Option<f64>,
    ) {
        let namespace = self.namespace(agent);
        if !matches!(mode, CacheMode::Normal | CacheMode::Refresh)
            || self.cache.is_excluded(namespace)
        {
            return;
        }
        let payload = match serde_json::to_vec(response) {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "could not encode an answer for the cache"),
        };
        let meta = EntryMeta {
            tokens: response.usage.total(),
            cost_usd,
            ttl: None,
        };
        let mut rx = self.writes.pending.subscribe();
        if *rx.borrow() >= MAX_QUEUED {
            let _ = rx.wait_for(|n| *n < MAX_QUEUED).await;
        }
        let start = {
            let mut queue = self.writes.queue();
            queue.seq += 1;
            let seq = queue.seq;
            let staged = Staged {
                response: response.clone(),
                meta,
            };
            queue.staged.insert(*key, (seq, staged));
            queue.items.push(Queued {
                seq,
                namespace: namespace.to_owned(),
                key: *key,
                payload,
                meta,
            });
            self.writes.pending.send_modify(|n| *n += 1);
            if queue.items.len() == GROUP {
                self.writes.more.notify_one();
            }
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            let writer = Writer {
                writes: Arc::clone(&self.writes),
                ran: false,
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || writer.run())),
                Err(_) => writer.run(),
            }
        }
    }

    /// Answers stored and not yet written.
    pub(crate) fn pending_writes(&self) -> usize {
        *self.writes.pending.borrow()
    }

    /// Waits until every stored answer is written (or has failed and been logged),
    /// then records this process's reads.
    pub(crate) async fn flush(&self) {
        {
            let mut queue = self.writes.queue();
            if queue.writing {
                queue.hurry = true;
                self.writes.more.notify_all();
            }
        }
        let mut rx = self.writes.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        let cache = self.cache.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || record_reads(&cache)).await {
            tracing::warn!(error = %e, "recording the cache's reads failed");
        }
    }

    /// Joins the identical call in flight, or becomes the one others join.
    pub(crate) fn flight(&self, key: CacheKey) -> Flight {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = inflight.get(&key)
            && rx.has_changed().is_ok()
        {
            return Flight::Follower(rx.clone());
        }
        let (sender, receiver) = watch::channel(None);
        inflight.insert(key, receiver);
        Flight::Leader(Leader { key, sender })
    }

    /// Publishes the leader's outcome to its followers and forgets the flight.
    pub(crate) fn finish(&self, leader: Leader, outcome: &Result<Response, LlmError>) {
        self.forget(&leader.key);
        leader.sender.send_replace(Some(outcome.clone()));
    }

    fn forget(&self, key: &CacheKey) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Forgets a flight whose leader was cancelled, so that later calls do not join it.
    pub(crate) fn abandon(&self, leader: &Leader) {
        self.forget(&leader.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OfflineProvider;
    use crate::content::{
        CacheControl, CacheTtl, ContentBlock, Effort, Image, ImageMediaType, TextBlock, Thinking,
        Tool, ToolChoice,
    };
    use crate::types::Message;

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            input_schema: r#"{"type":"object"}"#.into(),
            strict: false,
            cache_control: None,
        }
    }

    /// A turn of one plain text block is the same request as its text (the API reads
    /// them alike), so 0.1.0 and 0.2.0 guests share answers; one block more is not.
    #[test]
    fn one_plain_block_keys_like_its_text() {
        let p = OfflineProvider::new();
        let as_text = base();
        let mut as_block = base();
        as_block.messages[0].content = Content::Blocks(vec![ContentBlock::text("hi")]).normalized();
        as_block.system = System::Blocks(vec![TextBlock {
            text: "sys".into(),
            cache_control: None,
        }])
        .normalized();
        assert_eq!(
            request_key(&p, "agent", &as_text),
            request_key(&p, "agent", &as_block)
        );
    }

    /// A cached tool-use answer comes back exactly: its blocks, the input's bytes.
    #[tokio::test]
    async fn a_cached_tool_use_answer_is_replayed_exactly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layer = CacheLayer::new(open(dir.path()), None);
        let p = OfflineProvider::new();
        let mut request = base();
        request.tools = vec![tool("add")];
        let key = request_key(&p, "agent", &request);
        let answer = Response {
            id: "msg_1".into(),
            model: "claude-sonnet-4-5".into(),
            content: vec![
                ContentBlock::Thinking {
                    thinking: "sum it".into(),
                    signature: "c2ln+/=".into(),
                },
                ContentBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "add".into(),
                    input: r#"{"b": 2,  "a":1}"#.into(),
                },
            ],
            text: String::new(),
            stop_reason: crate::StopReason::ToolUse,
            usage: crate::Usage::default(),
        };
        layer
            .store(CacheMode::Normal, "agent", &key, &answer, None)
            .await;
        layer.flush().await;
        let reopened = CacheLayer::new(open(dir.path()), None);
        let hit = reopened
            .lookup(CacheMode::Normal, "agent", &key)
            .expect("a hit");
        assert_eq!(hit, answer);
    }

    fn base() -> Request {
        let mut r = Request::new("claude-sonnet-4-5", 100, vec![Message::user("hi")]);
        r.system = Some("sys".into());
        r.temperature = Some(0.5);
        r
    }

    #[test]
    fn every_field_the_api_sees_changes_the_key() {
        let p = OfflineProvider::new();
        let k = |r: &Request| request_key(&p, "agent", r);
        let original = k(&base());
        assert_eq!(
            original,
            k(&base()),
            "the same request always gives the same key"
        );
        type Change = Box<dyn Fn(&mut Request)>;
        let variants: Vec<(&str, Change)> = vec![
            ("model", Box::new(|r| r.model = "claude-haiku-4-5".into())),
            ("max_tokens", Box::new(|r| r.max_tokens = 101)),
            ("system", Box::new(|r| r.system = Some("sys2".into()))),
            ("no system", Box::new(|r| r.system = None)),
            (
                "empty system",
                Box::new(|r| r.system = Some(String::new().into())),
            ),
            (
                "message text",
                Box::new(|r| r.messages[0].content = "hi!".into()),
            ),
            (
                "message role",
                Box::new(|r| r.messages[0].role = Role::Assistant),
            ),
            (
                "another message",
                Box::new(|r| r.messages.push(Message::assistant("x"))),
            ),
            ("temperature", Box::new(|r| r.temperature = Some(0.50001))),
            ("no temperature", Box::new(|r| r.temperature = None)),
            ("top_p", Box::new(|r| r.top_p = Some(0.9))),
            ("top_k", Box::new(|r| r.top_k = Some(5))),
            (
                "stop sequence",
                Box::new(|r| r.stop_sequences = vec!["END".into()]),
            ),
            ("user id", Box::new(|r| r.user_id = Some("u".into()))),
            // Contract 0.2's fields.
            ("a tool", Box::new(|r| r.tools = vec![tool("t")])),
            (
                "another tool",
                Box::new(|r| r.tools = vec![tool("t"), tool("u")]),
            ),
            (
                "a tool's schema",
                Box::new(|r| {
                    let mut t = tool("t");
                    t.input_schema = r#"{"type":"object","required":[]}"#.into();
                    r.tools = vec![t];
                }),
            ),
            (
                "a tool choice",
                Box::new(|r| {
                    r.tools = vec![tool("t")];
                    r.tool_choice = Some(ToolChoice::Any);
                }),
            ),
            (
                "no parallel tool use",
                Box::new(|r| {
                    r.tools = vec![tool("t")];
                    r.disable_parallel_tool_use = true;
                }),
            ),
            (
                "thinking",
                Box::new(|r| {
                    r.thinking = Some(Thinking::Enabled {
                        budget_tokens: 1024,
                    })
                }),
            ),
            (
                "adaptive thinking",
                Box::new(|r| r.thinking = Some(Thinking::Adaptive)),
            ),
            ("effort", Box::new(|r| r.effort = Some(Effort::Low))),
            (
                "an output schema",
                Box::new(|r| r.output_schema = Some(r#"{"type":"object"}"#.into())),
            ),
            (
                "system blocks",
                Box::new(|r| {
                    r.system = Some(System::Blocks(vec![TextBlock {
                        text: "sys".into(),
                        cache_control: Some(CacheControl::new(CacheTtl::FiveMinutes)),
                    }]))
                }),
            ),
            (
                "a breakpoint's TTL",
                Box::new(|r| {
                    r.system = Some(System::Blocks(vec![TextBlock {
                        text: "sys".into(),
                        cache_control: Some(CacheControl::new(CacheTtl::OneHour)),
                    }]))
                }),
            ),
            (
                "a message of blocks",
                Box::new(|r| {
                    r.messages[0].content =
                        Content::Blocks(vec![ContentBlock::text("hi"), ContentBlock::text("!")])
                }),
            ),
            (
                "an image",
                Box::new(|r| {
                    r.messages[0].content = Content::Blocks(vec![
                        ContentBlock::text("hi"),
                        ContentBlock::Image {
                            image: Image {
                                media_type: ImageMediaType::Png,
                                data: vec![1, 2, 3],
                            },
                            cache_control: None,
                        },
                    ])
                }),
            ),
        ];
        let mut seen = std::collections::HashSet::from([original]);
        for (what, change) in variants {
            let mut r = base();
            change(&mut r);
            assert!(seen.insert(k(&r)), "changing {what} must change the key");
        }
        assert_ne!(
            request_key(&p, "other-agent", &base()),
            original,
            "the namespace is part of the key"
        );
    }

    /// A cache on `dir` and `n` answers stored through a layer on it, with the runtime's
    /// only blocking thread held until `gate` is released: the writer cannot start.
    fn stored_but_unwritten(
        dir: &std::path::Path,
        n: usize,
    ) -> (
        CacheLayer,
        tokio::runtime::Runtime,
        std::sync::mpsc::Sender<()>,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .build()
            .expect("runtime");
        let (gate, held) = std::sync::mpsc::channel::<()>();
        let (started, blocked) = std::sync::mpsc::channel();
        drop(rt.spawn_blocking(move || {
            started.send(()).expect("test alive");
            let _ = held.recv();
        }));
        blocked.recv().expect("the blocking thread is held");
        let layer = CacheLayer::new(open(dir), None);
        rt.block_on(async {
            for (key, answer) in store_answers(&layer, 0..n).await {
                let served = layer.lookup(CacheMode::Normal, "agent", &key);
                assert_eq!(served, Some(answer), "served before it is written");
            }
        });
        assert_eq!(open(dir).stats().entries, 0, "nothing written yet");
        (layer, rt, gate)
    }

    fn open(dir: &std::path::Path) -> ResponseCache {
        let mut cfg = cf_cache::CacheConfig::new(dir);
        cfg.secret = Some(cf_cache::Secret::new([7; 32]).expect("secret"));
        ResponseCache::open(cfg).expect("cache")
    }

    /// Runs `f` on a thread, failing instead of hanging if it does not return.
    fn within_10s(what: &str, f: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what} did not return"));
    }

    /// Stores answers to the questions numbered `questions`; their keys and answers.
    async fn store_answers(
        layer: &CacheLayer,
        questions: std::ops::Range<usize>,
    ) -> Vec<(CacheKey, Response)> {
        let p = OfflineProvider::new();
        let mut stored = Vec::new();
        for i in questions {
            let request = Request::new("m", 10, vec![Message::user(format!("q{i}"))]);
            let key = request_key(&p, "agent", &request);
            let answer = OfflineProvider::answer(&request);
            layer
                .store(CacheMode::Normal, "agent", &key, &answer, None)
                .await;
            stored.push((key, answer));
        }
        stored
    }

    /// A layer on `dir` whose writer gathers for longer than any test lasts (only a
    /// full group, a flush or the drop start a write), and a runtime for it.
    fn gathering_layer(dir: &std::path::Path) -> (CacheLayer, tokio::runtime::Runtime) {
        let layer = CacheLayer::gathering(open(dir), None, Duration::from_secs(3600));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        (layer, rt)
    }

    #[test]
    fn a_writer_gathers_a_group_until_it_is_full() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (layer, rt) = gathering_layer(tmp.path());
        rt.block_on(async {
            store_answers(&layer, 0..GROUP - 1).await;
            assert_eq!(layer.pending_writes(), GROUP - 1);
            assert_eq!(open(tmp.path()).stats().entries, 0, "gathering");
            // The answer that fills the group wakes the writer.
            store_answers(&layer, GROUP - 1..GROUP).await;
            let mut pending = layer.writes.pending.subscribe();
            tokio::time::timeout(Duration::from_secs(10), pending.wait_for(|n| *n < GROUP))
                .await
                .expect("a full group is written without waiting out the gathering")
                .expect("the layer is alive");
        });
        assert_eq!(open(tmp.path()).stats().entries, GROUP as u64);
        // The layer first: its drop hurries the writer, which the runtime's drop waits for.
        within_10s("dropping the layer", move || drop(layer));
        drop(rt);
    }

    #[test]
    fn a_flush_writes_what_the_writer_is_gathering() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (layer, rt) = gathering_layer(tmp.path());
        rt.block_on(async {
            let stored = store_answers(&layer, 0..3).await;
            assert_eq!(open(tmp.path()).stats().entries, 0, "gathering");
            let (key, answer) = &stored[0];
            assert_eq!(
                layer.lookup(CacheMode::Normal, "agent", key).as_ref(),
                Some(answer),
                "served while it waits"
            );
            tokio::time::timeout(Duration::from_secs(10), layer.flush())
                .await
                .expect("the flush does not wait out the gathering");
            assert_eq!(open(tmp.path()).stats().entries, 3);
        });
        // The drop of a layer whose writer gathers does not wait it out either.
        rt.block_on(async {
            store_answers(&layer, 3..5).await;
        });
        within_10s("dropping a gathering layer", move || drop(layer));
        assert_eq!(open(tmp.path()).stats().entries, 5);
        drop(rt);
    }

    #[test]
    fn dropping_the_layer_waits_for_the_writer_at_work() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (layer, rt, gate) = stored_but_unwritten(tmp.path(), 25);
        let (dropping, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(layer);
            let _ = dropping.send(());
        });
        assert!(
            dropped
                .recv_timeout(std::time::Duration::from_millis(50))
                .is_err(),
            "the drop waits while the writer has not run"
        );
        gate.send(()).expect("release the blocking thread");
        dropped
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the drop returns once the writer is done");
        assert_eq!(open(tmp.path()).stats().entries, 25);
        drop(rt);
    }

    #[test]
    fn a_writer_the_runtime_never_started_leaves_the_writing_to_the_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layer = CacheLayer::new(open(tmp.path()), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let handle = rt.handle().clone();
        rt.shutdown_background();
        // A store on a runtime that has shut down: its writer task is dropped unrun.
        let _entered = handle.enter();
        let p = OfflineProvider::new();
        let request = Request::new("m", 10, vec![Message::user("q")]);
        let key = request_key(&p, "agent", &request);
        let answer = OfflineProvider::answer(&request);
        {
            let store =
                std::pin::pin!(layer.store(CacheMode::Normal, "agent", &key, &answer, None));
            let polled = store.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            assert!(
                polled.is_ready(),
                "a store with room in the queue does not wait"
            );
        }
        assert_eq!(open(tmp.path()).stats().entries, 0, "nothing written yet");
        within_10s("dropping the layer", move || drop(layer));
        assert_eq!(open(tmp.path()).stats().entries, 1, "the drop wrote it");
    }

    #[test]
    fn message_boundaries_are_unambiguous() {
        let p = OfflineProvider::new();
        let mut a = base();
        a.messages = vec![Message::user("ab"), Message::assistant("c")];
        let mut b = base();
        b.messages = vec![Message::user("a"), Message::assistant("bc")];
        assert_ne!(request_key(&p, "n", &a), request_key(&p, "n", &b));
    }
}
