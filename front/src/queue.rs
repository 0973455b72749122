//! A batch on the fleet's work queue ([`cf_fleet::WorkQueue`]): how an item and its
//! result travel through Redis, and the worker that runs items with a host.
//!
//! An item carries its id, agent name, task, context and the options a tasks line or
//! the submitter's flags set (model, max tokens, temperature); everything else is the
//! worker's own settings (its limits, budgets, grants, provider). Only agent *names*
//! travel: a worker never loads a component from a path a queue names.
//!
//! A result is the `cf-host run --json` object of the item (with `id`, `index` and
//! the `worker` that ran it) and its run-log record, so that the submitter prints it
//! and sums it up as if it had run it.

use crate::render;
use crate::runlog::RunRecord;
use cf_fleet::{Job, WorkQueue};
use cf_host::{BatchItem, BatchOptions, Host, RunError, RunOptions, Task};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// A batch item as it travels on the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedItem {
    /// The caller's name for the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A built-in or installed agent's name.
    pub agent: String,
    /// The task.
    pub task: String,
    /// Key-value context.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<(String, String)>,
    /// The model, if the item names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The answer's token limit, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The temperature, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

impl QueuedItem {
    /// What of `item` travels.
    pub fn of(item: &BatchItem) -> Self {
        Self {
            id: item.id.clone(),
            agent: item.agent.clone(),
            task: item.task.text.clone(),
            context: item.task.context.clone(),
            model: item.options.model.clone(),
            max_tokens: item.options.max_tokens,
            temperature: item.options.temperature,
        }
    }

    /// The item to run under the worker's `base` options (the item's own override).
    pub fn into_item(self, base: &RunOptions) -> BatchItem {
        BatchItem {
            id: self.id,
            agent: self.agent,
            task: Task {
                text: self.task,
                context: self.context,
            },
            options: crate::tasks::overriding(base, self.model, self.max_tokens, self.temperature),
        }
    }
}

/// Whether `agent` names a component by path (which a queue may not ask a worker to
/// load) rather than an agent by name.
pub fn is_path(agent: &str) -> bool {
    agent.contains('/') || agent.contains('\\') || agent.ends_with(".wasm")
}

/// A result as it is stored on the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedResult {
    /// The `cf-host run --json` object, with `id`, `index` and `worker`.
    pub result: Value,
    /// Its run-log record.
    pub record: RunRecord,
}

impl QueuedResult {
    /// The result of a run of `job`'s item.
    fn of_run(
        job: &Job,
        id: Option<&str>,
        agent: &str,
        task: &str,
        result: &Result<cf_host::RunOutput, RunError>,
        worker: &str,
    ) -> Self {
        let record = RunRecord::from_result(agent, task, result);
        let record = match id {
            Some(id) => record.with_id(id),
            None => record,
        };
        Self::new(render::result_json(agent, result), job, id, worker, record)
    }

    /// A failure of `job`'s item that no run produced (`kind`: `abandoned`,
    /// `cancelled`, `invalid_item`, …).
    pub fn failure(
        job: &Job,
        item: Option<&QueuedItem>,
        kind: &str,
        message: &str,
        worker: &str,
    ) -> Self {
        let agent = item.map_or("", |i| i.agent.as_str());
        let error = cf_host::Error::Setup(message.to_owned());
        let result = Err(RunError::from(error));
        let mut value = render::result_json(agent, &result);
        if let Some(Value::Object(e)) = value.get_mut("error") {
            e.insert("kind".into(), Value::from(kind));
        }
        let mut record =
            RunRecord::from_result(agent, item.map_or("", |i| i.task.as_str()), &result);
        record.error_kind = Some(kind.to_owned());
        let id = item.and_then(|i| i.id.as_deref());
        if let Some(id) = id {
            record = record.with_id(id);
        }
        Self::new(value, job, id, worker, record)
    }

    fn new(mut value: Value, job: &Job, id: Option<&str>, worker: &str, record: RunRecord) -> Self {
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), id.map_or(Value::Null, Value::from));
            map.insert("index".into(), Value::from(job.index));
            map.insert("worker".into(), Value::from(worker));
        }
        Self {
            result: value,
            record,
        }
    }

    /// As stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether the run succeeded.
    pub fn ok(&self) -> bool {
        self.result.get("ok").and_then(Value::as_bool) == Some(true)
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in the consumer group: unique in the fleet (a host name and a random
    /// suffix).
    pub consumer: String,
    /// Items it runs at once.
    pub max_in_flight: usize,
    /// After the stop signal, how long running items may take to finish; the rest is
    /// handed back to the queue.
    pub grace: Duration,
    /// The options every item runs under (an item's model, max tokens and temperature
    /// override them).
    pub base: RunOptions,
}

/// What a worker has done, for metrics and logs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Items run whose result this worker stored.
    pub stored: AtomicU64,
    /// Items run whose result another worker had stored first (the item's claim was
    /// lost while it ran: the second result was not kept).
    pub duplicates: AtomicU64,
    /// Items taken over from a worker that left them unfinished.
    pub taken_over: AtomicU64,
    /// Items completed as abandoned (their deliveries ran out).
    pub abandoned: AtomicU64,
    /// Items handed back unfinished at a stop.
    pub handed_back: AtomicU64,
    /// Claims found lost at a refresh.
    pub claims_lost: AtomicU64,
    /// Redis operations that failed.
    pub redis_errors: AtomicU64,
    /// Items running now.
    pub running: AtomicU64,
}

/// Runs items from `queue` on `host` until `stop` completes, then lets running items
/// finish within the grace period and hands back the rest. Redis going away is
/// waited out (with a warning and a count): items in flight are completed when it is
/// back, or taken over by another worker after the lease.
pub async fn run_worker(
    host: Host,
    queue: WorkQueue,
    options: WorkerOptions,
    stats: Arc<WorkerStats>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let n = options.max_in_flight.max(1);
    let (tx, rx) = mpsc::channel::<BatchItem>(1);
    let mut batch = host.start_batch_stream(
        rx,
        BatchOptions {
            grace: options.grace,
            max_in_flight: Some(n),
            ..BatchOptions::default()
        },
    );
    let held: Held = Arc::default();
    let room = Arc::new(Notify::new());
    let stopping = Arc::new(tokio::sync::watch::Sender::new(false));
    let canceller = batch.canceller();
    {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            stop.await;
            stopping.send_replace(true);
            canceller.cancel();
        });
    }
    let feeder = tokio::spawn(feed(
        queue.clone(),
        options.clone(),
        stats.clone(),
        held.clone(),
        room.clone(),
        stopping.subscribe(),
        tx,
    ));
    let heartbeat = tokio::spawn(refresh(
        queue.clone(),
        options.consumer.clone(),
        stats.clone(),
        held.clone(),
    ));
    let mut handed_back = Vec::new();
    while let Some(done) = batch.next().await {
        let entry = done.id.clone().unwrap_or_default();
        let running = held.lock().ok().and_then(|mut h| h.remove(&entry));
        stats.running.fetch_sub(1, Ordering::Relaxed);
        room.notify_one();
        let Some(Running { job, id }) = running else {
            continue;
        };
        let cancelled_by_stop = *stopping.borrow()
            && matches!(&done.result, Err(e) if matches!(e.error, cf_host::Error::Cancelled { .. }));
        if cancelled_by_stop {
            handed_back.push(job.entry.clone());
            continue;
        }
        let result = QueuedResult::of_run(
            &job,
            id.as_deref(),
            &done.agent,
            &done.task,
            &done.result,
            &options.consumer,
        );
        store(&queue, &stats, &job, &result).await;
    }
    feeder.abort();
    heartbeat.abort();
    // Items taken but never started (still in the channel when the batch stopped).
    if let Ok(mut h) = held.lock() {
        handed_back.extend(h.drain().map(|(entry, _)| entry));
    }
    if !handed_back.is_empty() {
        stats
            .handed_back
            .fetch_add(handed_back.len() as u64, Ordering::Relaxed);
        if let Err(e) = queue.release(&options.consumer, &handed_back).await {
            tracing::warn!(error = %e, items = handed_back.len(), "could not hand unfinished items back; another worker takes them over after the lease");
        }
    }
}

/// The items a worker has taken and not completed, by stream entry (the id their
/// batch item runs under).
type Held = Arc<Mutex<HashMap<String, Running>>>;

/// An item taken from the queue: its job, and the caller's id for it (the batch item
/// runs under the job's entry id, which finds it again).
struct Running {
    job: Job,
    id: Option<String>,
}

/// Stores, for `job`, a failure that no run produced (see [`QueuedResult::failure`]).
async fn store_failure(
    queue: &WorkQueue,
    stats: &WorkerStats,
    job: &Job,
    item: Option<&QueuedItem>,
    kind: &str,
    message: &str,
    worker: &str,
) {
    let result = QueuedResult::failure(job, item, kind, message, worker);
    store(queue, stats, job, &result).await;
}

/// Stores `result` for `job`, retrying while Redis is away for up to one lease (after
/// which the item is another worker's anyway).
async fn store(queue: &WorkQueue, stats: &WorkerStats, job: &Job, result: &QueuedResult) {
    let json = result.to_json();
    let give_up = tokio::time::Instant::now() + queue.config().lease;
    let mut wait = Duration::from_millis(50);
    loop {
        match queue.complete(job, &json).await {
            Ok(true) => {
                stats.stored.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(false) => {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(index = job.index, batch = %job.batch, "an item's result was stored by another worker first (this worker's claim had lapsed); kept that one");
                return;
            }
            Err(e) => {
                stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                if tokio::time::Instant::now() + wait > give_up {
                    tracing::error!(error = %e, index = job.index, "could not store a result; the item runs again on another worker after the lease");
                    return;
                }
                tracing::warn!(error = %e, "storing a result failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Takes items while there is room, until the stop.
async fn feed(
    queue: WorkQueue,
    options: WorkerOptions,
    stats: Arc<WorkerStats>,
    held: Held,
    room: Arc<Notify>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    tx: mpsc::Sender<BatchItem>,
) {
    let n = options.max_in_flight.max(1);
    let me = options.consumer.as_str();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stopping.borrow() {
            return;
        }
        let free = n.saturating_sub(held.lock().map_or(n, |h| h.len()));
        if free == 0 {
            tokio::select! {
                () = room.notified() => {}
                _ = stopping.changed() => {}
            }
            continue;
        }
        let taken = tokio::select! {
            taken = queue.take(me, free) => taken,
            _ = stopping.changed() => return,
        };
        let taken = match taken {
            Ok(taken) => {
                backoff = Duration::from_millis(100);
                taken
            }
            Err(e) => {
                stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "the work queue is unreachable; waiting for it");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        for job in &taken.abandoned {
            stats.abandoned.fetch_add(1, Ordering::Relaxed);
            let item: Option<QueuedItem> = serde_json::from_str(&job.payload).ok();
            let message = format!(
                "abandoned: delivered {} times and no worker finished it (did it stop each worker that ran it?)",
                job.deliveries - 1
            );
            store_failure(
                &queue,
                &stats,
                job,
                item.as_ref(),
                "abandoned",
                &message,
                me,
            )
            .await;
        }
        for job in &taken.cancelled {
            let item: Option<QueuedItem> = serde_json::from_str(&job.payload).ok();
            let message = "the batch was cancelled before the item started";
            store_failure(&queue, &stats, job, item.as_ref(), "cancelled", message, me).await;
        }
        for job in taken.run {
            if job.deliveries > 1 {
                stats.taken_over.fetch_add(1, Ordering::Relaxed);
            }
            let item = match serde_json::from_str::<QueuedItem>(&job.payload) {
                Ok(item) if is_path(&item.agent) => {
                    let message = format!(
                        "{:?} is a path; a worker runs agents by name only",
                        item.agent
                    );
                    let kind = "invalid_agent_name";
                    store_failure(&queue, &stats, &job, Some(&item), kind, &message, me).await;
                    continue;
                }
                Ok(item) => item,
                Err(e) => {
                    let message = format!("not an item of this version: {e}");
                    store_failure(&queue, &stats, &job, None, "invalid_item", &message, me).await;
                    continue;
                }
            };
            let mut item = item.into_item(&options.base);
            let id = item.id.replace(job.entry.clone());
            if let Ok(mut h) = held.lock() {
                h.insert(job.entry.clone(), Running { job, id });
            }
            stats.running.fetch_add(1, Ordering::Relaxed);
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// Keeps the claims of the items held fresh, every third of the lease.
async fn refresh(queue: WorkQueue, consumer: String, stats: Arc<WorkerStats>, held: Held) {
    let mut every = tokio::time::interval(queue.config().lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let entries: Vec<String> = held
            .lock()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        match queue.touch(&consumer, &entries).await {
            Ok(lost) if !lost.is_empty() => {
                stats
                    .claims_lost
                    .fetch_add(lost.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    items = lost.len(),
                    "claims lapsed while the items ran (another worker may run them too; their result is stored once)"
                );
            }
            Ok(_) => {}
            Err(e) => {
                stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "could not refresh the claims of running items");
            }
        }
    }
}
