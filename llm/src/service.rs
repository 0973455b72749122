//! [`LlmService`]: the one path every model call takes. It validates, checks budgets,
//! holds a permit of the global concurrency limit per attempt, bounds each attempt by
//! a timeout and the caller's deadline, retries transient failures, and accounts costs.

use crate::caching::{CacheLayer, Flight, Leader, request_key};
use crate::ledger::{Ledger, Reservation};
use crate::pricing::{Cost, PriceTable};
use crate::provider::{Provider, ProviderError};
use crate::types::{CacheMode, LlmError, Request, Response};
use cf_cache::{CacheKey, ResponseCache};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Default limit of attempts in flight across the whole host.
pub const DEFAULT_MAX_CONCURRENT: usize = 10;
/// Default number of retries after the first attempt (3 attempts in all).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Default timeout of one attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`LlmServiceBuilder::max_retry_wait`]: the longest wait between
/// attempts that the service honours (the official SDKs ignore longer `retry-after`s).
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Builds an [`LlmService`]. Every setting has a documented default.
#[derive(Debug)]
pub struct LlmServiceBuilder {
    provider: Arc<dyn Provider>,
    prices: PriceTable,
    max_concurrent: usize,
    max_per_agent: Option<usize>,
    max_retries: u32,
    attempt_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_retry_wait: Duration,
    cache: Option<(ResponseCache, Option<String>)>,
    shared: Option<Arc<dyn crate::SharedLimit>>,
    shared_cache: Option<Arc<dyn crate::SharedCache>>,
}

impl LlmServiceBuilder {
    /// A response cache shared with other hosts (`cf-fleet`'s Redis tier), consulted
    /// after this host's own (which must be set: [`response_cache`](Self::response_cache))
    /// and written with every answer stored there; identical calls in flight on
    /// several hosts make one upstream call. Default: none.
    pub fn shared_cache(mut self, cache: Arc<dyn crate::SharedCache>) -> Self {
        self.shared_cache = Some(cache);
        self
    }

    /// A concurrency limit shared with other hosts (`cf-fleet`'s Redis lease
    /// semaphore): every attempt also holds one of its slots, taken after the
    /// service's own permits. Default: none (the limit is this process's alone).
    pub fn shared_limit(mut self, limit: Arc<dyn crate::SharedLimit>) -> Self {
        self.shared = Some(limit);
        self
    }

    /// Puts `cache` in front of the provider. Entries are namespaced per agent, or all
    /// in `shared_namespace` when given. Default: no response cache.
    pub fn response_cache(
        mut self,
        cache: ResponseCache,
        shared_namespace: Option<String>,
    ) -> Self {
        self.cache = Some((cache, shared_namespace));
        self
    }

    /// The price table. Default: the built-in table.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// Attempts in flight at once across every agent, run and batch. Default 10;
    /// values below 1 are treated as 1.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// Attempts in flight at once for any one agent, so that one busy agent cannot
    /// take every permit of the global limit. Default: no per-agent limit (only the
    /// global one); values below 1 are treated as 1. An agent's calls wait for their
    /// agent's permit before they queue for a global one.
    pub fn max_per_agent(mut self, n: usize) -> Self {
        self.max_per_agent = Some(n.max(1));
        self
    }

    /// Retries after a transient failure. Default 2 (3 attempts).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Timeout of one attempt, from sending to the whole answer. Default 30 s.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The longest a streamed call ([`LlmService::stream`]) may go without an event:
    /// from sending to the answer's first event, then between two events (the API's
    /// `ping`s count). A long answer that keeps coming is one attempt however long it
    /// takes; a stall is a [`LlmError::Timeout`]. Default: the attempt timeout.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The longest wait before a retry. When a provider asks for a longer one
    /// (`retry-after`), the service gives up at once and returns the failure, whose
    /// `retry_after` (in [`LlmError::RateLimited`]) tells the caller how long to wait.
    /// Default 60 s.
    pub fn max_retry_wait(mut self, wait: Duration) -> Self {
        self.max_retry_wait = wait;
        self
    }

    /// The service.
    pub fn build(self) -> LlmService {
        LlmService {
            inner: Arc::new(Inner {
                limiter: Arc::new(Semaphore::new(self.max_concurrent)),
                max_concurrent: self.max_concurrent,
                max_per_agent: self.max_per_agent,
                agent_limiters: Mutex::new(HashMap::new()),
                provider: self.provider,
                prices: self.prices,
                max_retries: self.max_retries,
                attempt_timeout: self.attempt_timeout,
                idle_timeout: self.idle_timeout.unwrap_or(self.attempt_timeout),
                max_retry_wait: self.max_retry_wait,
                cache: self.cache.map(|(c, ns)| CacheLayer::new(c, ns)),
                shared: self.shared,
                shared_cache: self.shared_cache,
                waiting: AtomicUsize::new(0),
            }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    provider: Arc<dyn Provider>,
    prices: PriceTable,
    limiter: Arc<Semaphore>,
    max_concurrent: usize,
    max_per_agent: Option<usize>,
    /// One semaphore per agent name, created on first use (only with `max_per_agent`).
    agent_limiters: Mutex<HashMap<String, Arc<Semaphore>>>,
    max_retries: u32,
    attempt_timeout: Duration,
    idle_timeout: Duration,
    max_retry_wait: Duration,
    pub(crate) cache: Option<CacheLayer>,
    shared: Option<Arc<dyn crate::SharedLimit>>,
    shared_cache: Option<Arc<dyn crate::SharedCache>>,
    /// Attempts waiting for a permit (per-agent, then global).
    waiting: AtomicUsize,
}

/// Counts an attempt waiting for a permit until dropped (also when the wait is
/// cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who is calling, and under which account and deadline.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The agent making the call (for logs, cache namespaces and the per-agent limit).
    pub agent: &'a str,
    /// The digest of a third-party plugin's component, when the agent is one: its
    /// cached answers are keyed apart from those of any other component reporting the
    /// same name. `None` for the operator's own agents.
    pub component: Option<&'a str>,
    /// The account the call is charged to.
    pub ledger: &'a Ledger,
    /// No attempt or wait goes past this instant.
    pub deadline: Option<Instant>,
    /// How the call uses the response cache.
    pub cache_mode: CacheMode,
    /// Whether somebody waits for a stream's events as the model writes them (a
    /// terminal, an event sink, an SSE client). When nobody does, a stream asks the
    /// provider for the answer whole and replays it (one delta per block): the same
    /// content at a fraction of the cost (one response to parse instead of an event
    /// per token, no task woken per event). Default: true.
    pub live: bool,
}

impl<'a> CallContext<'a> {
    /// A call with no deadline.
    pub fn new(agent: &'a str, ledger: &'a Ledger) -> Self {
        Self {
            agent,
            component: None,
            ledger,
            deadline: None,
            cache_mode: CacheMode::Normal,
            live: true,
        }
    }

    /// The same call, using the response cache as `mode` says.
    pub fn with_cache_mode(self, mode: CacheMode) -> Self {
        Self {
            cache_mode: mode,
            ..self
        }
    }

    /// The same call, streamed as the model writes it (`true`) or asked for whole and
    /// replayed when streamed (`false`: nobody waits for its events).
    pub fn with_live(self, live: bool) -> Self {
        Self { live, ..self }
    }

    /// The same call, made by the plugin whose component has the digest `component`.
    pub fn with_component(self, component: Option<&'a str>) -> Self {
        Self { component, ..self }
    }

    /// The same call, bounded by `deadline`.
    pub fn with_deadline(self, deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..self
        }
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer.
    pub response: Response,
    /// Attempts sent to the provider (0 for a cached answer).
    pub attempts: u32,
    /// Whether the answer came from the response cache.
    pub cached: bool,
    /// What the call cost (nothing for a cached or shared answer).
    pub cost: Cost,
    /// What a cached or shared answer saved, in US dollars (0 otherwise).
    pub saved_usd: f64,
    /// Time spent waiting for a concurrency permit, over all attempts.
    pub queue_wait: Duration,
}

/// One attempt's failure, and whether it reached the provider.
pub(crate) struct AttemptFailure {
    pub(crate) failure: ProviderError,
    pub(crate) sent: bool,
}

/// The engine every model call goes through. Cheap to clone; clones share the limit.
///
/// ```
/// use cf_llm::{CallContext, Ledger, LlmService, Message, OfflineProvider, Request};
/// use std::{sync::Arc, time::Duration};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let service = LlmService::builder(Arc::new(OfflineProvider::new()))
///     .max_concurrent(50)      // attempts in flight across the host
///     .max_per_agent(10)       // and per agent
///     .max_retries(2)          // 3 attempts at most
///     .attempt_timeout(Duration::from_secs(30))
///     .build();
/// let ledger = Ledger::unlimited();
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
/// let call = CallContext::new("reviewer", &ledger).with_deadline(deadline);
/// let done = service.complete(&call, Request::new("claude-haiku-4-5", 100, vec![Message::user("Hi")])).await.unwrap();
/// assert_eq!(done.attempts, 1);
/// assert_eq!(ledger.totals().calls, 1);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct LlmService {
    inner: Arc<Inner>,
}

impl LlmService {
    /// A builder around `provider`.
    pub fn builder(provider: Arc<dyn Provider>) -> LlmServiceBuilder {
        LlmServiceBuilder {
            provider,
            prices: PriceTable::built_in(),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_per_agent: None,
            max_retries: DEFAULT_MAX_RETRIES,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            idle_timeout: None,
            shared: None,
            shared_cache: None,
            max_retry_wait: DEFAULT_MAX_RETRY_WAIT,
            cache: None,
        }
    }

    /// The response cache in front of the provider, if any.
    pub fn response_cache(&self) -> Option<&ResponseCache> {
        self.inner.cache.as_ref().map(|layer| &layer.cache)
    }

    /// Answers stored in the response cache and not yet written to its directory.
    pub fn cache_writes_pending(&self) -> usize {
        self.inner.cache.as_ref().map_or(0, |l| l.pending_writes())
    }

    /// Waits until every answer stored so far is written to the response cache's
    /// directory, then records this process's reads (hits, last access) in its journal.
    /// Answers are written in the background: a call does not wait for the disk, and
    /// its answer is served from memory until it is written. Call this before the
    /// process exits or another process is expected to see them; dropping the last
    /// handle of the service writes what is left too.
    pub async fn flush_cache(&self) {
        if let Some(layer) = &self.inner.cache {
            layer.flush().await;
        }
    }

    /// The provider's name.
    pub fn provider_name(&self) -> &str {
        self.inner.provider.name()
    }

    /// The price table.
    pub fn prices(&self) -> &PriceTable {
        &self.inner.prices
    }

    /// Attempts holding a permit of the global limit now: model calls in flight.
    pub fn calls_in_flight(&self) -> usize {
        self.inner.max_concurrent - self.inner.limiter.available_permits()
    }

    /// Attempts waiting for a permit now (of the per-agent limit, then the global one).
    pub fn calls_waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// The global concurrency limit.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent
    }

    /// The per-agent concurrency limit, if any.
    pub fn max_per_agent(&self) -> Option<usize> {
        self.inner.max_per_agent
    }

    /// The cost of `usage` on `model` through this service's provider.
    pub fn cost(&self, model: &str, usage: &crate::types::Usage) -> Cost {
        if self.inner.provider.billable() {
            self.inner.prices.cost(model, usage)
        } else {
            Cost::default()
        }
    }

    /// Makes a call: validate, check the budget, then up to `1 + max_retries` attempts.
    ///
    /// Each attempt holds a permit of the global limit (and of the agent's, with
    /// [`max_per_agent`](LlmServiceBuilder::max_per_agent)) only while it is in
    /// flight, and is bounded by the attempt timeout and the call's deadline. A
    /// transient failure is retried after the provider's `retry_after`, else
    /// [`backoff`]; a wait that would pass the deadline or
    /// [`max_retry_wait`](LlmServiceBuilder::max_retry_wait) is not taken: the
    /// failure is returned at once. When retries run out, the failure of the last
    /// attempt is returned. Attempts that reached the provider are counted in
    /// [`Completion::attempts`] and, on failure, in the ledger.
    pub async fn complete(
        &self,
        call: &CallContext<'_>,
        request: Request,
    ) -> Result<Completion, LlmError> {
        match self.route(call, &request).await? {
            Route::Hit(done) => Ok(done),
            Route::Direct => self.upstream(call, request).await,
            Route::Lead(layer, key, leader, claim) => {
                let guard = AbandonOnDrop {
                    layer,
                    leader: Some(leader),
                };
                let outcome = self.upstream(call, request).await;
                if let Ok(done) = &outcome {
                    layer
                        .store(
                            call.cache_mode,
                            call.agent,
                            &key,
                            &done.response,
                            done.cost.known_usd(),
                        )
                        .await;
                    self.share_answer(call.cache_mode, &key, &done.response)
                        .await;
                }
                // The fleet's waiters find the answer stored before the claim goes.
                drop(claim);
                let shared = outcome
                    .as_ref()
                    .map(|d| d.response.clone())
                    .map_err(Clone::clone);
                if let Some(leader) = guard.disarm() {
                    layer.finish(leader, &shared);
                }
                outcome
            }
        }
    }

    /// Where a call goes: validated, then answered from the cache, by an identical
    /// call in flight (waited for), or sent upstream (as the leader that identical
    /// calls wait for, when the cache is used).
    pub(crate) async fn route<'s>(
        &'s self,
        call: &CallContext<'_>,
        request: &Request,
    ) -> Result<Route<'s>, LlmError> {
        if let Err(e) = request.validate() {
            call.ledger.record_failure(0);
            return Err(e);
        }
        let Some(layer) = self
            .inner
            .cache
            .as_ref()
            .filter(|_| call.cache_mode != CacheMode::Bypass)
        else {
            return Ok(Route::Direct);
        };
        let namespace = layer.key_namespace(call.agent, call.component);
        let key = request_key(&*self.inner.provider, &namespace, request);
        // A hit takes no concurrency permit and spends no budget.
        if let Some(response) = layer.lookup(call.cache_mode, call.agent, &key) {
            return Ok(Route::Hit(self.free_answer(call, response)));
        }
        loop {
            match layer.flight(key) {
                Flight::Follower(mut rx) => {
                    let waited = match call.deadline {
                        Some(d) => tokio::time::timeout_at(d, rx.wait_for(Option::is_some))
                            .await
                            .map(|r| r.map(|v| v.clone())),
                        None => Ok(rx.wait_for(Option::is_some).await.map(|v| v.clone())),
                    };
                    match waited {
                        Ok(Ok(Some(Ok(response)))) => {
                            return Ok(Route::Hit(self.free_answer(call, response)));
                        }
                        Ok(Ok(Some(Err(e)))) => {
                            call.ledger.record_failure(0);
                            return Err(e);
                        }
                        // The leader was cancelled: go again (perhaps as the leader).
                        Ok(Ok(None) | Err(_)) => continue,
                        Err(_elapsed) => {
                            call.ledger.record_failure(0);
                            return Err(LlmError::Timeout(
                                "the run's deadline was reached while waiting for an identical call in flight".into(),
                            ));
                        }
                    }
                }
                Flight::Leader(leader) => {
                    // One call per host asks the fleet.
                    let claim = match self.fleet_flight(call, &key).await {
                        FleetStep::Answer(response) => {
                            layer
                                .store(call.cache_mode, call.agent, &key, &response, None)
                                .await;
                            layer.finish(leader, &Ok(response.clone()));
                            return Ok(Route::Hit(self.free_answer(call, response)));
                        }
                        FleetStep::Lead(claim) => claim,
                    };
                    return Ok(Route::Lead(layer, key, leader, claim));
                }
            }
        }
    }

    /// The fleet's answer to `key` (from its shared cache, or from the host that is
    /// making the identical call), or this host's claim to make it.
    async fn fleet_flight(&self, call: &CallContext<'_>, key: &CacheKey) -> FleetStep {
        let Some(shared) = &self.inner.shared_cache else {
            return FleetStep::Lead(None);
        };
        let hex = key.to_hex();
        let answer = match call.cache_mode {
            CacheMode::Normal => match shared.flight(&hex, call.deadline).await {
                crate::FleetFlight::Answer(bytes) => bytes,
                crate::FleetFlight::Lead(claim) => return FleetStep::Lead(claim),
            },
            CacheMode::ReadOnly => match shared.get(&hex).await {
                Some(bytes) => bytes,
                None => return FleetStep::Lead(None),
            },
            CacheMode::Refresh | CacheMode::Bypass => return FleetStep::Lead(None),
        };
        match serde_json::from_slice::<Response>(&answer) {
            Ok(response) => FleetStep::Answer(response),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "ignoring a shared cached answer that does not parse");
                FleetStep::Lead(None)
            }
        }
    }

    /// Stores a new answer in the fleet's shared cache (when the call's mode writes).
    pub(crate) async fn share_answer(&self, mode: CacheMode, key: &CacheKey, response: &Response) {
        let Some(shared) = &self.inner.shared_cache else {
            return;
        };
        if !matches!(mode, CacheMode::Normal | CacheMode::Refresh) {
            return;
        }
        match serde_json::to_vec(response) {
            Ok(bytes) => shared.put(&key.to_hex(), bytes).await,
            Err(e) => tracing::warn!(error = %e, "could not encode an answer for the shared cache"),
        }
    }

    /// An answer that cost nothing: from the cache, or shared by an identical call.
    pub(crate) fn free_answer(&self, call: &CallContext<'_>, response: Response) -> Completion {
        let saved_usd = self
            .cost(&response.model, &response.usage)
            .known_usd()
            .unwrap_or(0.0);
        call.ledger
            .record_call(&response.usage, &Cost::default(), 0, true, saved_usd);
        Completion {
            response,
            attempts: 0,
            cached: true,
            cost: Cost::default(),
            saved_usd,
            queue_wait: Duration::ZERO,
        }
    }

    /// The call to the provider: budget check, attempts, retries.
    async fn upstream(
        &self,
        call: &CallContext<'_>,
        request: Request,
    ) -> Result<Completion, LlmError> {
        // Held until this call's cost is recorded (or it fails).
        let _reservation = self.admit(call, &request)?;
        let request = &request;
        let (response, attempts, queue_wait) = self
            .retrying(call, move || async move {
                let mut queue_wait = Duration::ZERO;
                let outcome = self.attempt(call, request, &mut queue_wait).await;
                (queue_wait, outcome)
            })
            .await?;
        let cost = self.cost(&response.model, &response.usage);
        call.ledger
            .record_call(&response.usage, &cost, attempts, false, 0.0);
        Ok(Completion {
            response,
            attempts,
            cached: false,
            cost,
            saved_usd: 0.0,
            queue_wait,
        })
    }

    /// The budget's admission of `request`: its worst case reserved until the
    /// returned reservation is dropped. A refusal is recorded as a failed call.
    pub(crate) fn admit(
        &self,
        call: &CallContext<'_>,
        request: &Request,
    ) -> Result<Reservation, LlmError> {
        let inner = &*self.inner;
        let billable = inner.provider.billable();
        let price = inner.prices.price(&request.model);
        let priced = !billable || price.is_some();
        // What the call may cost: nothing from a provider that does not bill.
        let worst = crate::ledger::WorstCase::of(request, price.filter(|_| billable));
        call.ledger.admit(priced, worst).inspect_err(|_| {
            call.ledger.record_failure(0);
        })
    }

    /// Up to `1 + max_retries` runs of `attempt` (which says how long it waited for
    /// permits), with the waits between them: the value of the first that succeeds,
    /// the attempts that reached the provider (this one included) and the time spent
    /// waiting for permits. A failure that is not retried is recorded in the ledger
    /// and returned.
    pub(crate) async fn retrying<T, F>(
        &self,
        call: &CallContext<'_>,
        mut attempt: impl FnMut() -> F,
    ) -> Result<(T, u32, Duration), LlmError>
    where
        F: Future<Output = (Duration, Result<T, AttemptFailure>)>,
    {
        let inner = &*self.inner;
        let mut queue_wait = Duration::ZERO;
        let mut attempts = 0u32;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let (waited, outcome) = attempt().await;
            queue_wait += waited;
            let AttemptFailure { failure, sent } = match outcome {
                Ok(value) => return Ok((value, attempts + 1, queue_wait)),
                Err(failure) => failure,
            };
            if sent {
                attempts += 1;
            }
            let retries_left = tries <= inner.max_retries;
            let wait = failure.retry_after.unwrap_or_else(|| backoff(tries - 1));
            let fits = wait <= inner.max_retry_wait
                && call.deadline.is_none_or(|d| Instant::now() + wait < d);
            if !(failure.retryable && retries_left && fits) {
                tracing::debug!(agent = call.agent, attempts, error = %failure.error, "model call failed");
                call.ledger.record_failure(attempts);
                return Err(failure.error);
            }
            tracing::debug!(agent = call.agent, attempt = attempts, wait_ms = wait.as_millis() as u64, error = %failure.error, "retrying model call");
            tokio::time::sleep(wait).await;
        }
    }

    /// The semaphore of `agent`'s share of the limit, if there is one.
    fn agent_limiter(&self, agent: &str) -> Option<Arc<Semaphore>> {
        let n = self.inner.max_per_agent?;
        let mut map = self
            .inner
            .agent_limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Arc::clone(
            map.entry(agent.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(n))),
        ))
    }

    /// The permits of one attempt (the agent's share, then the global limit), waited
    /// for within the call's deadline; the wait is added to `queue_wait`.
    pub(crate) async fn permits(
        &self,
        call: &CallContext<'_>,
        request: &Request,
        queue_wait: &mut Duration,
    ) -> Result<Permits, AttemptFailure> {
        let inner = &*self.inner;
        if call.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(deadline_failure("before the call could start", false));
        }
        let shutting_down = || AttemptFailure {
            failure: ProviderError::fatal(LlmError::Connection(
                "the service is shutting down".into(),
            )),
            sent: false,
        };
        let queued = Instant::now();
        let _waiting = Waiting::enter(&inner.waiting);
        let permits = async {
            let agent = match self.agent_limiter(call.agent) {
                Some(limiter) => Some(limiter.acquire_owned().await.map_err(|_| shutting_down())?),
                None => None,
            };
            let global = Arc::clone(&inner.limiter)
                .acquire_owned()
                .await
                .map_err(|_| shutting_down())?;
            // The fleet's slot last: it is the scarcest, held for the shortest time.
            let lease = match &inner.shared {
                Some(shared) => shared
                    .acquire(call.deadline, crate::ledger::WorstCase::usage(request))
                    .await
                    .map_err(|error| AttemptFailure {
                        failure: ProviderError::fatal(error),
                        sent: false,
                    })?,
                None => None,
            };
            Ok::<_, AttemptFailure>(Permits {
                _agent: agent,
                _global: global,
                _lease: lease,
            })
        };
        let permits = match call.deadline {
            Some(d) => tokio::time::timeout_at(d, permits)
                .await
                .map_err(|_| deadline_failure("while waiting for a concurrency permit", false))??,
            None => permits.await?,
        };
        *queue_wait += queued.elapsed();
        Ok(permits)
    }

    /// When an attempt that starts now must end: after `timeout`, or at the call's
    /// deadline if that comes first (then `true`).
    pub(crate) fn attempt_limit(call: &CallContext<'_>, timeout: Duration) -> (Instant, bool) {
        let limit = Instant::now() + timeout;
        match call.deadline {
            Some(d) if d < limit => (d, true),
            _ => (limit, false),
        }
    }

    /// One attempt, holding its permits only while it is in flight.
    async fn attempt(
        &self,
        call: &CallContext<'_>,
        request: &Request,
        queue_wait: &mut Duration,
    ) -> Result<Response, AttemptFailure> {
        let inner = &*self.inner;
        let permits = self.permits(call, request, queue_wait).await?;
        let (limit, bounded_by_deadline) = Self::attempt_limit(call, inner.attempt_timeout);
        let outcome = tokio::time::timeout_at(limit, inner.provider.send(request)).await;
        // Hand the permit on before this call's caller goes on: a waiting call sends
        // its request now, not after this run's post-processing (the limit's next
        // request is on the critical path; this run's remaining work is not).
        let contended = inner.limiter.available_permits() == 0;
        if let Ok(Ok(response)) = &outcome {
            permits.settle(&response.usage);
        }
        drop(permits);
        if contended {
            tokio::task::yield_now().await;
        }
        match outcome {
            Ok(result) => result.map_err(|failure| AttemptFailure {
                failure,
                sent: true,
            }),
            Err(_) if bounded_by_deadline => {
                Err(deadline_failure("before the answer arrived", true))
            }
            Err(_) => Err(AttemptFailure {
                failure: ProviderError::transient(
                    LlmError::Timeout(format!(
                        "no complete answer within {} ms",
                        inner.attempt_timeout.as_millis()
                    )),
                    None,
                ),
                sent: true,
            }),
        }
    }

    /// The response cache layer, if any.
    pub(crate) fn inner_cache(&self) -> Option<&CacheLayer> {
        self.inner.cache.as_ref()
    }

    /// The bound of one attempt of a whole call (`--timeout`).
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.inner.attempt_timeout
    }

    /// The idle timeout of streamed calls.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.inner.idle_timeout
    }

    /// The provider.
    pub(crate) fn provider(&self) -> &dyn Provider {
        &*self.inner.provider
    }
}

/// A failure because the call's deadline came `what`.
pub(crate) fn deadline_failure(what: &str, sent: bool) -> AttemptFailure {
    AttemptFailure {
        failure: ProviderError::fatal(LlmError::Timeout(format!(
            "the run's deadline was reached {what}"
        ))),
        sent,
    }
}

/// The permits an attempt holds while it is in flight; dropping them hands them on.
#[derive(Debug)]
pub(crate) struct Permits {
    _agent: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
    _lease: Option<Box<dyn crate::Lease>>,
}

impl Permits {
    /// Tells the fleet's limit what the attempt used.
    pub(crate) fn settle(&self, used: &crate::types::Usage) {
        if let Some(lease) = &self._lease {
            lease.settle(used);
        }
    }
}

/// Where [`LlmService::route`] sends a call.
pub(crate) enum Route<'s> {
    /// Answered without the provider (cache, or an identical call in flight).
    Hit(Completion),
    /// To the provider, without the cache.
    Direct,
    /// To the provider, as the leader of identical calls (on this host, and on the
    /// fleet's while the claim is held); its answer is stored.
    Lead(
        &'s CacheLayer,
        CacheKey,
        Leader,
        Option<Box<dyn crate::Lease>>,
    ),
}

/// What the fleet says of a call this host leads.
enum FleetStep {
    Answer(Response),
    Lead(Option<Box<dyn crate::Lease>>),
}

/// Forgets a single-flight whose leader's call was dropped before it finished, so that
/// its followers and later calls are not left waiting.
struct AbandonOnDrop<'a> {
    layer: &'a CacheLayer,
    leader: Option<Leader>,
}

impl AbandonOnDrop<'_> {
    fn disarm(mut self) -> Option<Leader> {
        self.leader.take()
    }
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(leader) = &self.leader {
            self.layer.abandon(leader);
        }
    }
}

/// The wait before retry `n` (0-based) when the provider did not say:
/// `min(0.5 · 2^n, 8)` seconds times a jitter factor in [0.75, 1].
pub fn backoff(n: u32) -> Duration {
    let base = (0.5 * 2f64.powi(n.min(16) as i32)).min(8.0);
    Duration::from_secs_f64(base * (1.0 - 0.25 * fastrand::f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OfflineProvider;
    use crate::ledger::Budget;
    use crate::provider::BoxFuture;
    use crate::types::{Message, StopReason, Usage};

    /// A provider that plays a script of outcomes, then succeeds.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<ProviderError>>);

    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn send<'a>(&'a self, r: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
            let next = self.0.lock().unwrap().pop();
            let resp = Response {
                content: Vec::new(),
                id: "x".into(),
                model: r.model.clone(),
                text: "ok".into(),
                stop_reason: StopReason::EndTurn,
                usage: Usage {
                    input_tokens: 1000,
                    output_tokens: 1000,
                    ..Usage::default()
                },
            };
            Box::pin(async move { next.map_or(Ok(resp), Err) })
        }
    }

    fn request() -> Request {
        Request::new("claude-sonnet-4-5", 10, vec![Message::user("hi")])
    }

    #[test]
    fn backoff_follows_the_sdk_schedule() {
        for (n, max) in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)] {
            for _ in 0..50 {
                let w = backoff(n).as_secs_f64();
                assert!(w <= max + 1e-9 && w >= max * 0.75 - 1e-9, "retry {n}: {w}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_then_reported() {
        let err = || {
            ProviderError::transient(
                LlmError::Overloaded("busy".into()),
                Some(Duration::from_millis(10)),
            )
        };
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![err(), err()])))).build();
        let ledger = Ledger::unlimited();
        let done = svc
            .complete(&CallContext::new("a", &ledger), request())
            .await
            .unwrap();
        assert_eq!(done.attempts, 3);
        assert!(done.cost.usd > 0.0);

        let svc =
            LlmService::builder(Arc::new(Scripted(Mutex::new(vec![err(), err(), err()])))).build();
        let e = svc
            .complete(&CallContext::new("a", &ledger), request())
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::Overloaded(_)));
        assert_eq!(ledger.totals().attempts, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_failures_are_not_retried() {
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![ProviderError::fatal(
            LlmError::Authentication("no".into()),
        )]))))
        .build();
        let ledger = Ledger::unlimited();
        let e = svc
            .complete(&CallContext::new("a", &ledger), request())
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::Authentication(_)));
        assert_eq!(ledger.totals().attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_past_the_deadline() {
        let long = ProviderError::transient(
            LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(60)),
                message: "slow down".into(),
            },
            Some(Duration::from_secs(60)),
        );
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![long])))).build();
        let ledger = Ledger::unlimited();
        let start = Instant::now();
        let call = CallContext::new("a", &ledger).with_deadline(start + Duration::from_secs(5));
        let e = svc.complete(&call, request()).await.unwrap_err();
        assert!(matches!(e, LlmError::RateLimited { .. }));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "gave up at once instead of waiting 60 s"
        );
    }

    #[tokio::test]
    async fn budget_stops_calls_before_they_are_sent() {
        let svc = LlmService::builder(Arc::new(OfflineProvider::new())).build();
        let ledger = Ledger::with_budget(Budget {
            usd: None,
            tokens: Some(1),
            ..Default::default()
        });
        svc.complete(&CallContext::new("a", &ledger), request())
            .await
            .unwrap();
        let e = svc
            .complete(&CallContext::new("a", &ledger), request())
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::BudgetExceeded(_)));
        assert_eq!(ledger.totals().calls, 1);
    }

    #[tokio::test]
    async fn invalid_requests_never_reach_the_provider() {
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![])))).build();
        let ledger = Ledger::unlimited();
        let mut r = request();
        r.messages.clear();
        assert!(matches!(
            svc.complete(&CallContext::new("a", &ledger), r).await,
            Err(LlmError::InvalidRequest(_))
        ));
        assert_eq!(ledger.totals().attempts, 0);
    }
}
