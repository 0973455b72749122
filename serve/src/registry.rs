//! The runs and batches the server knows: their state, the events they produced (for
//! server-sent events that start from the beginning), their results, and the tasks
//! running them (cancelled at shutdown). Finished ones are kept up to [`KEPT`] each,
//! oldest forgotten first.

use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Finished runs (and batches) kept for `GET`, each.
pub const KEPT: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh id: `prefix`, then 128 random bits in hex.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", cf_fleet::random_id())
}

/// Where a run or a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Running.
    Running,
    /// Finished (its result says how).
    Done,
    /// Stopped by the server's shutdown.
    Cancelled,
}

impl Status {
    /// As the API says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What a run or a batch has produced so far: its events (JSON objects, each with its
/// `type`), and its status. Readers follow `version`.
pub struct Record {
    /// Its id.
    pub id: String,
    /// The tenant that started it.
    pub tenant: String,
    state: Mutex<RecordState>,
    version: watch::Sender<u64>,
    task: Mutex<Option<AbortHandle>>,
    /// What stops its work beyond the task (a batch's running items).
    on_cancel: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Its result should it be cancelled (a run's: a `cancelled` result).
    cancelled: Mutex<Option<Value>>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct RecordState {
    status: Status,
    events: Vec<Value>,
    /// Per batch item, its result (input order), `None` until it finishes.
    results: Vec<Option<Value>>,
    /// Indices of finished items, in the order they finished.
    finished: Vec<usize>,
    /// Summary fields (agent, total, …).
    info: Value,
}

impl Record {
    fn new(id: String, tenant: String, info: Value, items: usize) -> Self {
        Self {
            id,
            tenant,
            state: Mutex::new(RecordState {
                status: Status::Running,
                events: Vec::new(),
                results: vec![None; items],
                finished: Vec::new(),
                info,
            }),
            version: watch::channel(0).0,
            task: Mutex::new(None),
            on_cancel: Mutex::new(None),
            cancelled: Mutex::new(None),
        }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Notes the task running it (aborted if the server shuts down first).
    pub fn set_task(&self, task: AbortHandle) {
        *lock(&self.task) = Some(task);
    }

    /// What else to do to stop it (a batch's items), and its result if it is
    /// cancelled.
    pub fn on_cancel(&self, stop: Option<Box<dyn Fn() + Send + Sync>>, result: Option<Value>) {
        *lock(&self.on_cancel) = stop;
        *lock(&self.cancelled) = result;
    }

    /// Adds an event.
    pub fn push(&self, event: Value) {
        lock(&self.state).events.push(event);
        self.bump();
    }

    /// A batch item's result (also an event).
    pub fn item_done(&self, index: usize, result: Value) {
        {
            let mut s = lock(&self.state);
            let mut event = result.clone();
            if let Value::Object(map) = &mut event {
                map.insert("type".into(), "result".into());
            }
            s.events.push(event);
            if let Some(slot) = s.results.get_mut(index) {
                *slot = Some(result);
                s.finished.push(index);
            }
        }
        self.bump();
    }

    /// The end: `result` (a run's), the status, and a last event.
    pub fn finish(&self, status: Status, result: Option<Value>) {
        {
            let mut s = lock(&self.state);
            if s.status != Status::Running {
                return;
            }
            s.status = status;
            let mut last = match result {
                Some(r) => r,
                None => json!({}),
            };
            if let Value::Object(map) = &mut last {
                map.insert(
                    "type".into(),
                    if s.results.is_empty() {
                        "result"
                    } else {
                        "done"
                    }
                    .into(),
                );
                if status == Status::Cancelled {
                    map.insert("status".into(), "cancelled".into());
                }
            }
            s.events.push(last);
        }
        *lock(&self.task) = None;
        self.bump();
    }

    /// Its status.
    pub fn status(&self) -> Status {
        lock(&self.state).status
    }

    /// Its summary fields, its status and the number of finished items.
    pub fn view(&self) -> (Value, Status, usize) {
        let s = lock(&self.state);
        (s.info.clone(), s.status, s.finished.len())
    }

    /// The last event (a run's result once it is done).
    pub fn last_event(&self) -> Option<Value> {
        lock(&self.state).events.last().cloned()
    }

    /// Events from `from` on, and whether the record has ended.
    pub fn events_from(&self, from: usize) -> (Vec<Value>, bool) {
        let s = lock(&self.state);
        (
            s.events
                .get(from..)
                .map(<[Value]>::to_vec)
                .unwrap_or_default(),
            s.status != Status::Running,
        )
    }

    /// Batch results from position `from` on: in input order (as far as every earlier
    /// one is there) or in the order they finished; and whether none will follow.
    pub fn results_from(&self, from: usize, input_order: bool) -> (Vec<Value>, bool) {
        let s = lock(&self.state);
        let out = if input_order {
            s.results
                .iter()
                .skip(from)
                .map_while(Clone::clone)
                .collect::<Vec<_>>()
        } else {
            s.finished
                .iter()
                .skip(from)
                .filter_map(|&i| s.results.get(i).cloned().flatten())
                .collect()
        };
        (out, s.status != Status::Running)
    }

    /// A receiver that changes whenever the record does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn abort(&self) {
        if let Some(stop) = lock(&self.on_cancel).take() {
            stop();
        }
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        let result = lock(&self.cancelled).take();
        self.finish(Status::Cancelled, result);
    }
}

/// Every run and batch.
#[derive(Debug, Default)]
pub struct Registry {
    records: Mutex<Records>,
    running: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Records {
    by_id: HashMap<String, Arc<Record>>,
    /// Ids in the order they started, for forgetting the oldest finished.
    order: VecDeque<String>,
}

impl Registry {
    /// A record for a new run (`items` 0) or batch, counted as running.
    pub fn start(&self, prefix: &str, tenant: &str, info: Value, items: usize) -> Arc<Record> {
        let record = Arc::new(Record::new(new_id(prefix), tenant.to_owned(), info, items));
        let mut records = lock(&self.records);
        records.by_id.insert(record.id.clone(), record.clone());
        records.order.push_back(record.id.clone());
        // Forget the oldest finished beyond the cap (running ones are never dropped).
        while records.order.len() > 2 * KEPT {
            let Some(oldest) = records.order.pop_front() else {
                break;
            };
            let running = records
                .by_id
                .get(&oldest)
                .is_some_and(|r| r.status() == Status::Running);
            if running {
                records.order.push_back(oldest);
                break;
            }
            records.by_id.remove(&oldest);
        }
        self.running.send_modify(|n| *n += 1);
        record
    }

    /// The record's run or batch has ended.
    pub fn ended(&self) {
        self.running.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// The record with `id`, if it belongs to `tenant`.
    pub fn get(&self, id: &str, tenant: &str) -> Option<Arc<Record>> {
        lock(&self.records)
            .by_id
            .get(id)
            .filter(|r| r.tenant == tenant)
            .cloned()
    }

    /// Runs and batches running now.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Waits until nothing is running.
    pub async fn idle(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Cancels everything still running, recording it as cancelled.
    pub fn cancel_all(&self) {
        let running: Vec<Arc<Record>> = lock(&self.records)
            .by_id
            .values()
            .filter(|r| r.status() == Status::Running)
            .cloned()
            .collect();
        for record in running {
            record.abort();
        }
    }
}
