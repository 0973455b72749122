//! [`LlmService`]: the one path every model call takes. It validates, checks budgets,
//! holds a permit of the global concurrency limit per attempt, bounds each attempt by
//! a timeout and the caller's deadline, retries transient failures, and accounts costs.

use crate::ledger::Ledger;
use crate::pricing::{Cost, PriceTable};
use crate::provider::{Provider, ProviderError};
use crate::types::{LlmError, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Default limit of attempts in flight across the whole host.
pub const DEFAULT_MAX_CONCURRENT: usize = 10;
/// Default number of retries after the first attempt (3 attempts in all).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Default timeout of one attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds an [`LlmService`]. Every setting has a documented default.
#[derive(Debug)]
pub struct LlmServiceBuilder {
    provider: Arc<dyn Provider>,
    prices: PriceTable,
    max_concurrent: usize,
    max_retries: u32,
    attempt_timeout: Duration,
}

impl LlmServiceBuilder {
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

    /// The service.
    pub fn build(self) -> LlmService {
        LlmService {
            inner: Arc::new(Inner {
                limiter: Semaphore::new(self.max_concurrent),
                max_concurrent: self.max_concurrent,
                provider: self.provider,
                prices: self.prices,
                max_retries: self.max_retries,
                attempt_timeout: self.attempt_timeout,
            }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    provider: Arc<dyn Provider>,
    prices: PriceTable,
    limiter: Semaphore,
    max_concurrent: usize,
    max_retries: u32,
    attempt_timeout: Duration,
}

/// Who is calling, and under which account and deadline.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The agent making the call (for logs and cache namespaces).
    pub agent: &'a str,
    /// The account the call is charged to.
    pub ledger: &'a Ledger,
    /// No attempt or wait goes past this instant.
    pub deadline: Option<Instant>,
}

impl<'a> CallContext<'a> {
    /// A call with no deadline.
    pub fn new(agent: &'a str, ledger: &'a Ledger) -> Self {
        Self { agent, ledger, deadline: None }
    }

    /// The same call, bounded by `deadline`.
    pub fn with_deadline(self, deadline: Instant) -> Self {
        Self { deadline: Some(deadline), ..self }
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
    /// What the call cost.
    pub cost: Cost,
    /// Time spent waiting for a concurrency permit, over all attempts.
    pub queue_wait: Duration,
}

/// The engine every model call goes through. Cheap to clone; clones share the limit.
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
            max_retries: DEFAULT_MAX_RETRIES,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
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

    /// The global concurrency limit.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent
    }

    /// The cost of `usage` on `model` through this service's provider.
    pub fn cost(&self, model: &str, usage: &crate::types::Usage) -> Cost {
        if self.inner.provider.billable() { self.inner.prices.cost(model, usage) } else { Cost::default() }
    }

    /// Makes a call: validate, check the budget, then up to `1 + max_retries` attempts.
    /// The failure of the last attempt is returned when retries run out.
    pub async fn complete(&self, call: &CallContext<'_>, request: Request) -> Result<Completion, LlmError> {
        let inner = &*self.inner;
        if let Err(e) = request.validate() {
            call.ledger.record_failure(0);
            return Err(e);
        }
        let priced = !inner.provider.billable() || inner.prices.price(&request.model).is_some();
        if let Err(e) = call.ledger.check(priced) {
            call.ledger.record_failure(0);
            return Err(e);
        }
        let mut queue_wait = Duration::ZERO;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = self.attempt(call, &request, &mut queue_wait).await;
            let failure = match outcome {
                Ok(response) => {
                    let cost = self.cost(&response.model, &response.usage);
                    call.ledger.record_call(&response.usage, &cost, attempts, false, 0.0);
                    return Ok(Completion { response, attempts, cached: false, cost, queue_wait });
                }
                Err(failure) => failure,
            };
            let retries_left = attempts <= inner.max_retries;
            let wait = failure.retry_after.unwrap_or_else(|| backoff(attempts - 1));
            let fits = call.deadline.is_none_or(|d| Instant::now() + wait < d);
            if !(failure.retryable && retries_left && fits) {
                tracing::debug!(agent = call.agent, attempts, error = %failure.error, "model call failed");
                call.ledger.record_failure(attempts);
                return Err(failure.error);
            }
            tracing::debug!(agent = call.agent, attempt = attempts, wait_ms = wait.as_millis() as u64, error = %failure.error, "retrying model call");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt, holding a permit only while it is in flight.
    async fn attempt(&self, call: &CallContext<'_>, request: &Request, queue_wait: &mut Duration) -> Result<Response, ProviderError> {
        let inner = &*self.inner;
        let deadline_error = || ProviderError::fatal(LlmError::Timeout("the run's deadline was reached".into()));
        let queued = Instant::now();
        let permit = match call.deadline {
            Some(d) => tokio::time::timeout_at(d, inner.limiter.acquire()).await.map_err(|_| deadline_error())?,
            None => inner.limiter.acquire().await,
        };
        let _permit = permit.map_err(|_| ProviderError::fatal(LlmError::Connection("the service is shutting down".into())))?;
        *queue_wait += queued.elapsed();
        let mut limit = Instant::now() + inner.attempt_timeout;
        let mut bounded_by_deadline = false;
        if let Some(d) = call.deadline {
            if d < limit {
                limit = d;
                bounded_by_deadline = true;
            }
        }
        match tokio::time::timeout_at(limit, inner.provider.send(request)).await {
            Ok(result) => result,
            Err(_) if bounded_by_deadline => Err(deadline_error()),
            Err(_) => Err(ProviderError::transient(
                LlmError::Timeout(format!("no complete answer within {} ms", inner.attempt_timeout.as_millis())),
                None,
            )),
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
    use std::sync::Mutex;

    /// A provider that plays a script of outcomes, then succeeds.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<ProviderError>>);

    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn send<'a>(&'a self, r: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
            let next = self.0.lock().unwrap().pop();
            let resp = Response { id: "x".into(), model: r.model.clone(), text: "ok".into(), stop_reason: StopReason::EndTurn, usage: Usage { input_tokens: 1000, output_tokens: 1000, ..Usage::default() } };
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
        let err = || ProviderError::transient(LlmError::Overloaded("busy".into()), Some(Duration::from_millis(10)));
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![err(), err()])))).build();
        let ledger = Ledger::unlimited();
        let done = svc.complete(&CallContext::new("a", &ledger), request()).await.unwrap();
        assert_eq!(done.attempts, 3);
        assert!(done.cost.usd > 0.0);

        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![err(), err(), err()])))).build();
        let e = svc.complete(&CallContext::new("a", &ledger), request()).await.unwrap_err();
        assert!(matches!(e, LlmError::Overloaded(_)));
        assert_eq!(ledger.totals().attempts, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_failures_are_not_retried() {
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![ProviderError::fatal(LlmError::Authentication("no".into()))])))).build();
        let ledger = Ledger::unlimited();
        let e = svc.complete(&CallContext::new("a", &ledger), request()).await.unwrap_err();
        assert!(matches!(e, LlmError::Authentication(_)));
        assert_eq!(ledger.totals().attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_past_the_deadline() {
        let long = ProviderError::transient(LlmError::RateLimited { retry_after: Some(Duration::from_secs(60)), message: "slow down".into() }, Some(Duration::from_secs(60)));
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![long])))).build();
        let ledger = Ledger::unlimited();
        let start = Instant::now();
        let call = CallContext::new("a", &ledger).with_deadline(start + Duration::from_secs(5));
        let e = svc.complete(&call, request()).await.unwrap_err();
        assert!(matches!(e, LlmError::RateLimited { .. }));
        assert!(start.elapsed() < Duration::from_secs(5), "gave up at once instead of waiting 60 s");
    }

    #[tokio::test]
    async fn budget_stops_calls_before_they_are_sent() {
        let svc = LlmService::builder(Arc::new(OfflineProvider::new())).build();
        let ledger = Ledger::with_budget(Budget { usd: None, tokens: Some(1) });
        svc.complete(&CallContext::new("a", &ledger), request()).await.unwrap();
        let e = svc.complete(&CallContext::new("a", &ledger), request()).await.unwrap_err();
        assert!(matches!(e, LlmError::BudgetExceeded(_)));
        assert_eq!(ledger.totals().calls, 1);
    }

    #[tokio::test]
    async fn invalid_requests_never_reach_the_provider() {
        let svc = LlmService::builder(Arc::new(Scripted(Mutex::new(vec![])))).build();
        let ledger = Ledger::unlimited();
        let mut r = request();
        r.messages.clear();
        assert!(matches!(svc.complete(&CallContext::new("a", &ledger), r).await, Err(LlmError::InvalidRequest(_))));
        assert_eq!(ledger.totals().attempts, 0);
    }
}
