//! `GET /metrics`: the server's counters in the Prometheus text format, through the
//! `prometheus-client` crate.

use cf_host::{RunError, RunOutput, RunStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<Outcome, Counter>,
    failures: Family<Kind, Counter>,
    model_calls: Counter,
    attempts: Counter,
    cache_hits: Counter,
    tokens: Family<Direction, Counter>,
    cost: Counter<f64, AtomicU64>,
    permit_wait: Counter<f64, AtomicU64>,
    runs_in_flight: Gauge,
    calls_in_flight: Gauge,
    calls_waiting: Gauge,
    http_refused: Family<Kind, Counter>,
    redis_errors: Gauge,
    redis_degraded: Gauge,
    api_pauses: Gauge,
    queue_depth: Gauge,
    worker_items: Family<Outcome, Gauge>,
    worker_running: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cf");
        let m = Self {
            runs: Family::default(),
            failures: Family::default(),
            model_calls: Counter::default(),
            attempts: Counter::default(),
            cache_hits: Counter::default(),
            tokens: Family::default(),
            cost: Counter::default(),
            permit_wait: Counter::default(),
            runs_in_flight: Gauge::default(),
            calls_in_flight: Gauge::default(),
            calls_waiting: Gauge::default(),
            http_refused: Family::default(),
            redis_errors: Gauge::default(),
            redis_degraded: Gauge::default(),
            api_pauses: Gauge::default(),
            queue_depth: Gauge::default(),
            worker_items: Family::default(),
            worker_running: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "runs",
            "Runs (and batch items) ended, by outcome (ok, failed)",
            m.runs.clone(),
        );
        registry.register(
            "run_failures",
            "Failed runs by error kind",
            m.failures.clone(),
        );
        registry.register(
            "model_calls",
            "Model calls answered (cache hits included)",
            m.model_calls.clone(),
        );
        registry.register(
            "attempts",
            "Attempts sent to the provider",
            m.attempts.clone(),
        );
        registry.register(
            "cache_hits",
            "Model calls answered by the response cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "tokens",
            "Tokens, by direction (input, output)",
            m.tokens.clone(),
        );
        registry.register(
            "cost_usd",
            "What the runs cost, in US dollars",
            m.cost.clone(),
        );
        registry.register(
            "permit_wait_seconds",
            "Time model calls waited for a permit of the concurrency limit",
            m.permit_wait.clone(),
        );
        registry.register(
            "runs_in_flight",
            "Runs and batches running now",
            m.runs_in_flight.clone(),
        );
        registry.register(
            "model_calls_in_flight",
            "Model calls holding a permit of the concurrency limit now",
            m.calls_in_flight.clone(),
        );
        registry.register(
            "model_calls_waiting",
            "Model calls waiting for a permit now (the queue)",
            m.calls_waiting.clone(),
        );
        registry.register(
            "http_refused",
            "Requests refused, by error kind (unauthorized, forbidden, …)",
            m.http_refused.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis operations of the fleet's limit that failed or timed out, since start",
            m.redis_errors.clone(),
        );
        registry.register(
            "redis_degraded",
            "1 while Redis is unreachable (fail-open: model calls under this host's own limit)",
            m.redis_degraded.clone(),
        );
        registry.register(
            "api_pauses",
            "Pauses the API asked for (rate-limit headers, 429s) that this host passed on to the fleet, since start",
            m.api_pauses.clone(),
        );
        registry.register(
            "queue_depth",
            "Items of the fleet's work queue waiting or running (serve --worker)",
            m.queue_depth.clone(),
        );
        registry.register(
            "worker_items",
            "Items this worker dealt with, by outcome: stored, duplicate (another worker stored first), taken_over, abandoned, handed_back, since start",
            m.worker_items.clone(),
        );
        registry.register(
            "worker_running",
            "Items of the work queue this worker runs now",
            m.worker_running.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// A run (or batch item) ended with `result`.
    pub fn run_ended(&self, result: &Result<RunOutput, RunError>) {
        let stats = match result {
            Ok(out) => {
                self.runs
                    .get_or_create(&Outcome {
                        outcome: "ok".into(),
                    })
                    .inc();
                &out.stats
            }
            Err(e) => {
                self.runs
                    .get_or_create(&Outcome {
                        outcome: "failed".into(),
                    })
                    .inc();
                self.failures
                    .get_or_create(&Kind {
                        kind: e.error.kind().into(),
                    })
                    .inc();
                &e.stats
            }
        };
        self.stats(stats);
    }

    fn stats(&self, s: &RunStats) {
        self.model_calls.inc_by(u64::from(s.llm_calls));
        self.attempts.inc_by(u64::from(s.attempts));
        self.cache_hits.inc_by(u64::from(s.cache_hits));
        for (direction, n) in [
            ("input", s.usage.total_input()),
            ("output", s.usage.output_tokens),
        ] {
            self.tokens
                .get_or_create(&Direction {
                    direction: direction.into(),
                })
                .inc_by(n);
        }
        self.cost.inc_by(s.cost.usd);
        self.permit_wait.inc_by(s.timings.queue_wait.as_secs_f64());
    }

    /// A request refused with an error of `kind`.
    pub fn refused(&self, kind: &str) {
        self.http_refused
            .get_or_create(&Kind { kind: kind.into() })
            .inc();
    }

    /// The text format, with the gauges read now.
    pub fn render(
        &self,
        runs: usize,
        calls_in_flight: usize,
        calls_waiting: usize,
        fleet: Option<&cf_fleet::FleetStats>,
        worker: Option<(Option<u64>, &cf_front::queue::WorkerStats)>,
    ) -> String {
        let count = |a: &std::sync::atomic::AtomicU64| {
            i64::try_from(a.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX)
        };
        if let Some(f) = fleet {
            self.redis_errors.set(count(&f.redis_errors));
            self.redis_degraded.set(i64::from(
                f.degraded.load(std::sync::atomic::Ordering::Relaxed),
            ));
            self.api_pauses.set(count(&f.api_pauses));
        }
        if let Some((depth, w)) = worker {
            if let Some(depth) = depth {
                self.queue_depth
                    .set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
            for (outcome, n) in [
                ("stored", &w.stored),
                ("duplicate", &w.duplicates),
                ("taken_over", &w.taken_over),
                ("abandoned", &w.abandoned),
                ("handed_back", &w.handed_back),
            ] {
                self.worker_items
                    .get_or_create(&Outcome {
                        outcome: outcome.into(),
                    })
                    .set(count(n));
            }
            self.worker_running.set(count(&w.running));
        }
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.runs_in_flight.set(gauge(runs));
        self.calls_in_flight.set(gauge(calls_in_flight));
        self.calls_waiting.set(gauge(calls_waiting));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
