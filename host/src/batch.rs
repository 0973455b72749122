//! Batches: many (agent, task, options) items under the host's one concurrency limit,
//! with a result per item — as they finish, or all in input order — and cancellation
//! that loses nothing that finished.
//!
//! Memory stays bounded by the concurrency, not the batch's length: items are taken
//! from their source (a `Vec`, or a channel a reader fills as it goes:
//! [`Host::start_batch_stream`]) only when there is room to run them, and a finished
//! item holds its room until its result is queued for the caller, so at most
//! `max_in_flight` items are running and as many results are waiting to be taken.

use crate::agent::{Agent, Source, Task};
use crate::error::Error;
use crate::host::Host;
use crate::limits::RunOptions;
use crate::outcome::{RunError, RunOutput};
use cf_llm::{Budget, Ledger, LedgerTotals};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore, mpsc, watch};

/// One item of a batch.
#[derive(Debug, Clone, Default)]
pub struct BatchItem {
    /// The caller's name for the item, echoed in its result.
    pub id: Option<String>,
    /// A built-in agent's name or a path to a component.
    pub agent: String,
    /// The task.
    pub task: Task,
    /// The operator's settings for this item. Its `budget` applies to the item alone;
    /// the batch's budget applies on top.
    pub options: RunOptions,
}

/// Settings of a whole batch.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// What the whole batch may spend. Default: no limit.
    pub budget: Budget,
    /// After [`BatchRun::cancel`], how long items already running may take to finish
    /// before they are stopped. Default 10 s.
    pub grace: Duration,
    /// Items running at once. Default: the host's instance slots, so that an item's
    /// deadline starts when it can really run.
    pub max_in_flight: Option<usize>,
    /// Where the items' events go as they happen (with the item's index), for items
    /// whose own `options.events` is not set. Default: nowhere.
    pub events: Option<crate::BatchEventSink>,
    /// An account the batch's is part of (a tenant's for the day, say): its budget
    /// applies on top of `budget`, and it is charged too. Default: none.
    pub parent: Option<Ledger>,
    /// A limit the items share with other work (a tenant's runs at once, say): each
    /// item holds one of its permits while it runs. Default: none.
    pub share: Option<Arc<Semaphore>>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            budget: Budget::default(),
            grace: Duration::from_secs(10),
            max_in_flight: None,
            events: None,
            parent: None,
            share: None,
        }
    }
}

/// The result of one item.
#[derive(Debug)]
pub struct BatchResult {
    /// The item's position in the input, from 0.
    pub index: usize,
    /// The item's id, if it had one.
    pub id: Option<String>,
    /// The agent as the item named it.
    pub agent: String,
    /// The item's task text (not its context), for the caller's records.
    pub task: String,
    /// What happened.
    pub result: Result<RunOutput, RunError>,
}

/// A batch in progress. Results arrive with [`next`](BatchRun::next) as items finish.
#[derive(Debug)]
pub struct BatchRun {
    results: mpsc::Receiver<BatchResult>,
    cancel: watch::Sender<bool>,
    ledger: Ledger,
    in_flight: Arc<AtomicUsize>,
    /// The number of items, when known at the start (a batch from a `Vec`).
    total: Option<usize>,
    received: usize,
}

/// Cancels a batch from elsewhere (a Ctrl-C handler). Cheap to clone.
#[derive(Debug, Clone)]
pub struct BatchCanceller(watch::Sender<bool>);

impl BatchCanceller {
    /// Stops new items; running ones get the batch's grace period.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

impl BatchRun {
    /// The next result to finish; `None` once every item has reported.
    pub async fn next(&mut self) -> Option<BatchResult> {
        let r = self.results.recv().await;
        self.received += usize::from(r.is_some());
        r
    }

    /// A result that has finished and not been taken yet, without waiting; `None` when
    /// none is ready now (or every item has reported). Drains what is ready after a
    /// [`next`](Self::next), to handle results in groups.
    pub fn try_next(&mut self) -> Option<BatchResult> {
        let r = self.results.try_recv().ok();
        self.received += usize::from(r.is_some());
        r
    }

    /// Stops starting items. Items not started report [`Error::Cancelled`] at once;
    /// running items may finish within the grace period, then are stopped and report
    /// `Cancelled { started: true }`. Every item still reports exactly once.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// A handle that cancels this batch.
    pub fn canceller(&self) -> BatchCanceller {
        BatchCanceller(self.cancel.clone())
    }

    /// What the batch has spent so far.
    pub fn totals(&self) -> LedgerTotals {
        self.ledger.totals()
    }

    /// Items running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The number of items, when known at the start (a batch from a `Vec`); `None`
    /// for a streamed batch.
    pub fn total(&self) -> Option<usize> {
        self.total
    }

    /// Results taken so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Waits for every item and returns the results in input order (this keeps every
    /// result: for long batches, take them with [`next`](Self::next) instead).
    pub async fn finish(mut self) -> Vec<BatchResult> {
        let mut all = Vec::with_capacity(self.total.unwrap_or(0));
        while let Some(r) = self.next().await {
            all.push(r);
        }
        all.sort_by_key(|r| r.index);
        all
    }
}

type Loaded = Arc<OnceCell<Result<Agent, Error>>>;

/// Where a batch's items come from.
enum Items {
    Listed(std::vec::IntoIter<BatchItem>),
    Streamed(mpsc::Receiver<BatchItem>),
}

impl Items {
    async fn next(&mut self) -> Option<BatchItem> {
        match self {
            Self::Listed(items) => items.next(),
            Self::Streamed(items) => items.recv().await,
        }
    }

    /// After a cancellation: a streamed source takes no more items (its sender sees the
    /// channel closed), so only what it had already queued remains.
    fn close(&mut self) {
        if let Self::Streamed(items) = self {
            items.close();
        }
    }
}

impl Host {
    /// Starts a batch; see [`BatchRun`]. Must be called within a tokio runtime.
    pub fn start_batch(&self, items: Vec<BatchItem>, options: BatchOptions) -> BatchRun {
        let total = items.len();
        self.start(Items::Listed(items.into_iter()), Some(total), options)
    }

    /// Starts a batch whose items arrive on `items` (a reader filling it as it goes,
    /// with its own bound): an item is taken only when there is room to run it, so a
    /// batch of millions holds no more than its concurrency in memory. It ends when
    /// the sender is dropped and every item taken has reported. Feed `items` from
    /// another task or thread than the one taking results: with every room taken and
    /// every queue full, one task doing both would wait on itself. After a
    /// cancellation the channel is closed: items queued in it report as cancelled,
    /// items never sent are not reported.
    pub fn start_batch_stream(
        &self,
        items: mpsc::Receiver<BatchItem>,
        options: BatchOptions,
    ) -> BatchRun {
        self.start(Items::Streamed(items), None, options)
    }

    fn start(&self, items: Items, total: Option<usize>, options: BatchOptions) -> BatchRun {
        let (cancel, cancelled) = watch::channel(false);
        let ledger = match &options.parent {
            Some(parent) => parent.child(options.budget),
            None => Ledger::with_budget(options.budget),
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let limit = options
            .max_in_flight
            .unwrap_or(self.runtime().instance_slots().available_permits())
            .max(1);
        // Finished items wait here for the caller; each keeps its room until taken.
        let (tx, rx) = mpsc::channel(limit);
        tokio::spawn(drive(
            self.clone(),
            items,
            options.grace,
            options.events,
            options.share,
            limit,
            ledger.clone(),
            in_flight.clone(),
            tx,
            cancelled,
        ));
        BatchRun {
            results: rx,
            cancel,
            ledger,
            in_flight,
            total,
            received: 0,
        }
    }

    /// Runs a batch to the end and returns every result in input order.
    pub async fn run_batch(
        &self,
        items: Vec<BatchItem>,
        options: BatchOptions,
    ) -> Vec<BatchResult> {
        self.start_batch(items, options).finish().await
    }
}

/// Starts items in input order as room frees up, until done or cancelled.
#[expect(
    clippy::too_many_arguments,
    reason = "the batch's state, moved into its driver task"
)]
async fn drive(
    host: Host,
    mut items: Items,
    grace: Duration,
    events: Option<crate::BatchEventSink>,
    share: Option<Arc<Semaphore>>,
    limit: usize,
    ledger: Ledger,
    in_flight: Arc<AtomicUsize>,
    tx: mpsc::Sender<BatchResult>,
    mut cancelled: watch::Receiver<bool>,
) {
    let room = Arc::new(Semaphore::new(limit));
    let mut agents: HashMap<String, Loaded> = HashMap::new();
    let mut index = 0;
    // Room first, then the item: the source is read only as fast as items can run.
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancelled.wait_for(|c| *c) => break,
            permit = room.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        // A streamed source may wait for its reader (stdin): a cancellation stops the
        // wait, and an item that arrives after one is not started.
        let next = tokio::select! {
            biased;
            _ = cancelled.wait_for(|c| *c) => break,
            next = items.next() => next,
        };
        let Some(item) = next else {
            break;
        };
        if *cancelled.borrow() {
            report_unstarted(&tx, index, item).await;
            index += 1;
            break;
        }
        let loaded = agents.entry(item.agent.clone()).or_default().clone();
        let (host, ledger, tx, in_flight) =
            (host.clone(), ledger.clone(), tx.clone(), in_flight.clone());
        let mut cancelled = cancelled.clone();
        let events = events.clone();
        let share = share.clone();
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let BatchItem {
                id,
                agent,
                task,
                mut options,
            } = item;
            if options.events.is_none() {
                options.events = events.as_ref().map(|sink| sink.item(index));
            }
            let text = task.text.clone();
            // The load and the run are boxed: their futures are kilobytes, and the
            // spawned task's future (which would hold them inline) is moved several
            // times on its way into the task (16 KB copied per item).
            let run = async {
                let _share = match share {
                    Some(share) => share.acquire_owned().await.ok(),
                    None => None,
                };
                let agent = loaded
                    .get_or_init(|| Box::pin(host.load(Source::from(agent.as_str()))))
                    .await
                    .clone()
                    .map_err(RunError::from)?;
                Box::pin(agent.run_in(task, &options, &ledger)).await
            };
            let stop = async {
                let _ = cancelled.wait_for(|c| *c).await;
                tokio::time::sleep(grace).await;
            };
            let result = tokio::select! {
                r = run => r,
                _ = stop => Err(RunError::from(Error::Cancelled { started: true })),
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            // The room is given back once the result is queued for the caller, so at
            // most `limit` items run and `limit` results wait, however long the batch.
            let _ = tx
                .send(BatchResult {
                    index,
                    id,
                    agent,
                    task: text,
                    result,
                })
                .await;
            drop(permit);
        });
        index += 1;
    }
    // Items never started after a cancellation each report; of a streamed source, those
    // it had queued (it is closed: what its reader had not handed over yet is not read).
    items.close();
    while let Some(item) = items.next().await {
        if tx.is_closed() {
            break;
        }
        report_unstarted(&tx, index, item).await;
        index += 1;
    }
}

async fn report_unstarted(tx: &mpsc::Sender<BatchResult>, index: usize, item: BatchItem) {
    let _ = tx
        .send(BatchResult {
            index,
            id: item.id,
            agent: item.agent,
            task: item.task.text,
            result: Err(Error::Cancelled { started: false }.into()),
        })
        .await;
}
