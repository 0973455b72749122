//! The response cache in front of the provider: canonical request keys, lookups that
//! take no concurrency permit, single-flight for identical requests in flight, and
//! storing only complete successful answers.

use crate::provider::Provider;
use crate::types::{CacheMode, LlmError, Request, Response, Role};
use cf_cache::{CacheKey, CachedEntry, EntryMeta, KeyBuilder, ResponseCache};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// Version of the key encoding: bump it when the encoding changes, so that old
/// entries become misses rather than wrong answers.
const KEY_VERSION: &str = "cf-llm/messages-request/v1";

/// The key of `request` sent to `provider`, in `namespace` (the agent, or a shared
/// namespace). Every field the API sees is part of it, each length-prefixed, options
/// distinct from empty values, floats by their exact bits.
pub fn request_key(provider: &dyn Provider, namespace: &str, request: &Request) -> CacheKey {
    let messages = request.messages.iter().map(|m| {
        let role: &[u8] = match m.role {
            Role::User => b"u",
            Role::Assistant => b"a",
        };
        [role, m.content.as_bytes()].concat()
    });
    let f32_bits = |v: Option<f32>| v.map(|v| v.to_bits().to_le_bytes());
    KeyBuilder::new(KEY_VERSION)
        .field_str("namespace", namespace)
        .field_str("provider", provider.name())
        .field_str("endpoint", provider.endpoint())
        .field_str("model", &request.model)
        .field_u64("max_tokens", u64::from(request.max_tokens))
        .field_opt("system", request.system.as_deref().map(str::as_bytes))
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
        .field_opt("user_id", request.user_id.as_deref().map(str::as_bytes))
        .finish()
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
    /// Writes in progress at once. Each write creates a file in one directory; hundreds
    /// of threads doing so together spin on the directory's lock in the kernel
    /// (measured: 2000 answers stored from 200 calls in flight took 2-4 s of system CPU
    /// unbounded, against a 1 s batch).
    pub writers: tokio::sync::Semaphore,
}

/// Concurrent writes to the response cache.
const CACHE_WRITERS: usize = 2;

/// The role of a call in single-flight.
pub(crate) enum Flight {
    /// First of its kind: make the call, then [`Leader::finish`].
    Leader(Leader),
    /// An identical call is in flight: wait for its outcome.
    Follower(watch::Receiver<Shared>),
}

/// The call that others wait for. Dropping it without `finish` (a cancelled run)
/// releases the followers, who then make their own call.
pub(crate) struct Leader {
    key: CacheKey,
    sender: watch::Sender<Shared>,
}

impl CacheLayer {
    pub(crate) fn new(cache: ResponseCache, shared_namespace: Option<String>) -> Self {
        Self {
            cache,
            shared_namespace,
            inflight: Mutex::new(HashMap::new()),
            writers: tokio::sync::Semaphore::new(CACHE_WRITERS),
        }
    }

    pub(crate) fn namespace<'a>(&'a self, agent: &'a str) -> &'a str {
        self.shared_namespace.as_deref().unwrap_or(agent)
    }

    /// A cached answer, if the mode reads the cache and one is stored. A payload that
    /// no longer parses (written by another version) is a miss.
    pub(crate) fn lookup(
        &self,
        mode: CacheMode,
        agent: &str,
        key: &CacheKey,
    ) -> Option<(Response, CachedEntry)> {
        if !matches!(mode, CacheMode::Normal | CacheMode::ReadOnly) {
            return None;
        }
        let entry = self.cache.get(self.namespace(agent), key)?;
        match serde_json::from_slice::<Response>(&entry.payload) {
            Ok(response) => Some((response, entry)),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "ignoring a cached answer that does not parse");
                None
            }
        }
    }

    /// Stores a successful answer when the mode writes the cache.
    pub(crate) fn store(
        &self,
        mode: CacheMode,
        agent: &str,
        key: &CacheKey,
        response: &Response,
        cost_usd: Option<f64>,
    ) {
        if !matches!(mode, CacheMode::Normal | CacheMode::Refresh) {
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
        if let Err(e) = self.cache.put(self.namespace(agent), key, &payload, meta) {
            tracing::warn!(key = %key, error = %e, "could not store an answer in the cache");
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
    use crate::types::Message;

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
            ("empty system", Box::new(|r| r.system = Some(String::new()))),
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
