//! A durable work queue on a Redis Stream: batches submitted by one process, run by
//! the workers of a fleet, their results streamed back.
//!
//! **Keys** (one hash tag per queue, `{cf-queue:<name>}`, so that each script's keys
//! live on one Redis Cluster slot):
//!
//! - `…:items`, a stream of work items (`b` the batch, `i` the item's index, `p` its
//!   payload, opaque here) read by the consumer group `workers`;
//! - `…:batch:<id>`, a hash: `state` (`running` or `cancelled`), `total` once every
//!   item was submitted;
//! - `…:results:<id>`, a hash from item index to result;
//! - `…:done:<id>`, a stream of the indices whose result was stored, in the order they
//!   were, which the submitter reads to stream the results back.
//!
//! **An item's life.** A worker takes it with `XREADGROUP` (it is then pending for
//! that worker), keeps its claim fresh while it runs (`XCLAIM … JUSTID` every third of
//! the lease, only while the worker still owns it), and completes it with one script:
//! `HSETNX` the result, and only if that stored it, `XADD` the index to the batch's
//! done stream; then `XACK` and `XDEL` the item. So an item is acknowledged only after
//! its result is stored, and its result is stored once even if two workers ran it (a
//! worker that lost its claim while running: the second write is a no-op, the batch
//! shows one result).
//!
//! **A worker that dies** (killed, its machine gone) stops refreshing its claims; after
//! one lease without a refresh any other worker takes its items over (`XAUTOCLAIM`),
//! before it reads new ones. An item delivered `max_deliveries` times without a result
//! (it kills every worker that runs it, say) is completed with an `abandoned` result,
//! so that every item of a batch ends with exactly one result. A worker that stops
//! gracefully hands back what it did not finish at once (its claims made idle).
//!
//! Nothing here is kept only in memory: a batch survives any of its workers and its
//! submitter (whose results wait in Redis until their TTL). It survives a restart of
//! Redis itself only if Redis persists (`appendonly yes`): see the README.

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands as _, Script, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The consumer group every worker of a queue belongs to.
const GROUP: &str = "workers";

/// Stores a result once and acknowledges the item. KEYS: the items stream, the
/// batch's results hash, its done stream. ARGV: the group, the entry id, the item's
/// index, the result, the TTL in ms. Returns 1 if this stored the result, 0 if an
/// earlier run's was there already.
const COMPLETE: &str = r"
local fresh = redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
if fresh == 1 then
  redis.call('XADD', KEYS[3], '*', 'i', ARGV[3])
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return fresh
";

/// Refreshes (or, with `release`, hands back) the claims this consumer still holds.
/// KEYS[1] the items stream. ARGV: the group, the consumer, `touch` or `release`, the
/// idle time in ms a released claim gets (past the lease; not past the clock's start,
/// which Redis would read as 0), then entry ids. Returns the ids this consumer no longer owns (another worker took them
/// over, or they were completed).
const CLAIMS: &str = r"
local lost = {}
for n = 5, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[n], ARGV[n], 1)
  if p[1] and p[1][2] == ARGV[2] then
    if ARGV[3] == 'release' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[n], 'IDLE', ARGV[4], 'JUSTID')
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[n], 'JUSTID')
    end
  else
    table.insert(lost, ARGV[n])
  end
end
return lost
";

/// How a [`WorkQueue`] works.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The queue's name: fleets sharing one Redis keep their work apart by it.
    /// Default `default`.
    pub name: String,
    /// How long a worker's claim on an item lives without a refresh: a dead worker's
    /// items go to another after this. Default 10 s.
    pub lease: Duration,
    /// Deliveries of an item without a result before it is completed as
    /// `abandoned`. Default 3.
    pub max_deliveries: u64,
    /// How long a batch's results stay in Redis after its last result. Default 24 h.
    pub result_ttl: Duration,
    /// The longest one Redis operation may take. Default 2 s.
    pub op_timeout: Duration,
    /// How long a read waits for new work or results before it returns empty.
    /// Default 1 s.
    pub block: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            lease: Duration::from_secs(10),
            max_deliveries: 3,
            result_ttl: Duration::from_secs(24 * 3600),
            op_timeout: Duration::from_secs(2),
            block: Duration::from_secs(1),
        }
    }
}

/// One item as a worker took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The stream entry's id (the claim's name).
    pub entry: String,
    /// The batch it belongs to.
    pub batch: String,
    /// Its index in the batch.
    pub index: usize,
    /// What the submitter put in it.
    pub payload: String,
    /// How many times it was delivered, this time included: more than 1 means a
    /// worker took it over from another that did not finish it.
    pub deliveries: u64,
}

/// What a worker takes: items to run, and items whose batch was cancelled or whose
/// deliveries ran out (to be completed without running).
#[derive(Debug, Default)]
pub struct Taken {
    /// Items to run.
    pub run: Vec<Job>,
    /// Items delivered `max_deliveries` times already: to be completed as abandoned.
    pub abandoned: Vec<Job>,
    /// Items of a batch that was cancelled (or whose record expired).
    pub cancelled: Vec<Job>,
}

#[derive(Debug)]
struct Inner {
    conn: ConnectionManager,
    /// Blocking reads only (`XREAD… BLOCK`), so that they never hold up the others.
    blocking: ConnectionManager,
    config: QueueConfig,
    tag: String,
    complete: Script,
    claims: Script,
    /// Where this consumer's `XAUTOCLAIM` scan goes on from.
    reclaim_from: tokio::sync::Mutex<String>,
}

/// A queue on Redis (see the module's docs). Cloning shares the connections.
#[derive(Debug, Clone)]
pub struct WorkQueue {
    inner: Arc<Inner>,
}

impl WorkQueue {
    /// Connects to `url` and makes sure the queue's stream and consumer group exist.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, String> {
        if config.name.is_empty()
            || !config
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "the queue's name {:?} must be letters, digits, '-', '_' or '.'",
                config.name
            ));
        }
        let conn = crate::connect(url, config.op_timeout).await?;
        let blocking = crate::connect_with(
            url,
            config.op_timeout,
            Some(config.block + config.op_timeout),
        )
        .await?;
        let queue = Self {
            inner: Arc::new(Inner {
                conn,
                blocking,
                tag: format!("cf-queue:{}", config.name),
                config,
                complete: Script::new(COMPLETE),
                claims: Script::new(CLAIMS),
                reclaim_from: tokio::sync::Mutex::new("0-0".into()),
            }),
        };
        queue.ensure_group().await?;
        Ok(queue)
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    fn key(&self, what: &str) -> String {
        format!("cf:{{{}}}:{what}", self.inner.tag)
    }

    fn items_key(&self) -> String {
        self.key("items")
    }

    fn batch_key(&self, batch: &str) -> String {
        self.key(&format!("batch:{batch}"))
    }

    fn results_key(&self, batch: &str) -> String {
        self.key(&format!("results:{batch}"))
    }

    fn done_key(&self, batch: &str) -> String {
        self.key(&format!("done:{batch}"))
    }

    async fn timed<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.inner.config.op_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("the work queue ({what}): {e}")),
            Err(_) => Err(format!(
                "the work queue ({what}): Redis did not answer within {} ms",
                self.inner.config.op_timeout.as_millis()
            )),
        }
    }

    /// The stream and its group, created if missing (a Redis restarted without its
    /// data has neither).
    async fn ensure_group(&self) -> Result<(), String> {
        let mut conn = self.inner.conn.clone();
        let created: Result<(), String> = self
            .timed(
                "creating the consumer group",
                conn.xgroup_create_mkstream::<_, _, _, ()>(self.items_key(), GROUP, "0"),
            )
            .await;
        match created {
            Err(e) if e.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    // ----- The submitter's side -----

    /// Opens a batch named `batch` (a [`crate::random_id`]) before its items are
    /// submitted.
    pub async fn open_batch(&self, batch: &str) -> Result<(), String> {
        let key = self.batch_key(batch);
        let ttl = self.ttl_ms();
        let mut conn = self.inner.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "state", "running")
            .ignore()
            .pexpire(&key, ttl)
            .ignore();
        self.timed("opening a batch", pipe.query_async::<()>(&mut conn))
            .await
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.config.result_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Adds `items` (index, payload) of `batch` to the queue, in one round trip.
    pub async fn submit(&self, batch: &str, items: &[(usize, String)]) -> Result<(), String> {
        if items.is_empty() {
            return Ok(());
        }
        let key = self.items_key();
        let mut pipe = redis::pipe();
        for (index, payload) in items {
            pipe.xadd(
                &key,
                "*",
                &[
                    ("b", batch.as_bytes()),
                    ("i", index.to_string().as_bytes()),
                    ("p", payload.as_bytes()),
                ],
            )
            .ignore();
        }
        let mut conn = self.inner.conn.clone();
        self.timed("submitting items", pipe.query_async::<()>(&mut conn))
            .await
    }

    /// Records that `batch` has `total` items, all submitted.
    pub async fn seal(&self, batch: &str, total: usize) -> Result<(), String> {
        let key = self.batch_key(batch);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "total", total)
            .ignore()
            .pexpire(&key, self.ttl_ms())
            .ignore();
        let mut conn = self.inner.conn.clone();
        self.timed("sealing a batch", pipe.query_async::<()>(&mut conn))
            .await
    }

    /// Cancels `batch`: workers complete its items not yet started as cancelled
    /// without running them (items running go on).
    pub async fn cancel(&self, batch: &str) -> Result<(), String> {
        let mut conn = self.inner.conn.clone();
        self.timed(
            "cancelling a batch",
            conn.hset::<_, _, _, ()>(self.batch_key(batch), "state", "cancelled"),
        )
        .await
    }

    /// Results of `batch` stored after the done stream's entry `after` (`0` for the
    /// first), waiting up to the block time for one: the last entry read and the
    /// (index, result) pairs, in the order they were stored.
    pub async fn results(
        &self,
        batch: &str,
        after: &str,
        max: usize,
    ) -> Result<(String, Vec<(usize, String)>), String> {
        let done = self.done_key(batch);
        let options = StreamReadOptions::default()
            .count(max.max(1))
            .block(self.inner.config.block.as_millis() as usize);
        let mut blocking = self.inner.blocking.clone();
        let (keys, ids) = ([&done], [after]);
        let read = blocking.xread_options::<_, _, Option<StreamReadReply>>(&keys, &ids, &options);
        let reply = match tokio::time::timeout(
            self.inner.config.block + self.inner.config.op_timeout,
            read,
        )
        .await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(format!("the work queue (reading results): {e}")),
            Err(_) => return Err("the work queue (reading results): Redis did not answer".into()),
        };
        let ids: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        let Some(last) = ids.last().map(|e| e.id.clone()) else {
            return Ok((after.to_owned(), Vec::new()));
        };
        let indices: Vec<usize> = ids
            .iter()
            .filter_map(|e| field(&e.map, "i").and_then(|i| i.parse().ok()))
            .collect();
        let mut conn = self.inner.conn.clone();
        let values: Vec<Option<String>> = self
            .timed(
                "reading results",
                redis::cmd("HMGET")
                    .arg(self.results_key(batch))
                    .arg(&indices)
                    .query_async(&mut conn),
            )
            .await?;
        let results = indices
            .into_iter()
            .zip(values)
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .collect();
        Ok((last, results))
    }

    // ----- The workers' side -----

    /// Takes up to `max` items for `consumer`: first items another worker left
    /// unfinished for longer than the lease, then new ones, waiting up to the block
    /// time when there are none.
    pub async fn take(&self, consumer: &str, max: usize) -> Result<Taken, String> {
        let mut jobs = self.reclaim(consumer, max).await?;
        let mut taken = Taken::default();
        jobs.retain(|job| {
            if job.deliveries > self.inner.config.max_deliveries {
                taken.abandoned.push(job.clone());
                false
            } else {
                true
            }
        });
        if jobs.len() + taken.abandoned.len() < max {
            let room = max - jobs.len() - taken.abandoned.len();
            jobs.extend(self.read_new(consumer, room, jobs.is_empty()).await?);
        }
        // Items of a batch that is no longer running are not run.
        let mut states: HashMap<String, bool> = HashMap::new();
        for job in jobs {
            let running = match states.get(&job.batch) {
                Some(&running) => running,
                None => {
                    let mut conn = self.inner.conn.clone();
                    let state: Option<String> = self
                        .timed(
                            "reading a batch's state",
                            conn.hget(self.batch_key(&job.batch), "state"),
                        )
                        .await?;
                    let running = state.as_deref() == Some("running");
                    states.insert(job.batch.clone(), running);
                    running
                }
            };
            if running {
                taken.run.push(job);
            } else {
                taken.cancelled.push(job);
            }
        }
        Ok(taken)
    }

    async fn reclaim(&self, consumer: &str, max: usize) -> Result<Vec<Job>, String> {
        let mut from = self.inner.reclaim_from.lock().await;
        let wrapped = from.as_str() != "0-0";
        let mut jobs = self.reclaim_from(consumer, max, &mut from).await?;
        // The scan went on from where the last one stopped and reached the end: what
        // was skipped before it (handed back since, or idle only now) is looked at again.
        if wrapped && jobs.len() < max && from.as_str() == "0-0" {
            jobs.extend(
                self.reclaim_from(consumer, max - jobs.len(), &mut from)
                    .await?,
            );
        }
        Ok(jobs)
    }

    async fn reclaim_from(
        &self,
        consumer: &str,
        max: usize,
        from: &mut String,
    ) -> Result<Vec<Job>, String> {
        let options = StreamAutoClaimOptions::default().count(max.max(1));
        let mut conn = self.inner.conn.clone();
        let reply: redis::streams::StreamAutoClaimReply = match self
            .timed(
                "taking over a dead worker's items",
                conn.xautoclaim_options(
                    self.items_key(),
                    GROUP,
                    consumer,
                    self.inner.config.lease.as_millis() as u64,
                    from.as_str(),
                    options,
                ),
            )
            .await
        {
            Ok(reply) => reply,
            // Redis restarted without its data: the group is gone; make it again.
            Err(e) if e.contains("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        *from = reply.next_stream_id.clone();
        // Entries deleted while pending (trimmed by an operator): nothing to run.
        if !reply.deleted_ids.is_empty() {
            let _ = self
                .timed(
                    "acknowledging deleted items",
                    conn.xack::<_, _, _, ()>(self.items_key(), GROUP, &reply.deleted_ids),
                )
                .await;
        }
        let mut jobs = Vec::new();
        for entry in &reply.claimed {
            let Some(mut job) = job_of(entry) else {
                self.drop_malformed(&entry.id).await;
                continue;
            };
            let pending: redis::streams::StreamPendingCountReply = self
                .timed(
                    "counting deliveries",
                    conn.xpending_count(self.items_key(), GROUP, &entry.id, &entry.id, 1),
                )
                .await?;
            job.deliveries = pending.ids.first().map_or(1, |p| p.times_delivered as u64);
            jobs.push(job);
        }
        if !jobs.is_empty() {
            tracing::warn!(
                items = jobs.len(),
                "took over items a worker left unfinished for longer than the lease"
            );
        }
        Ok(jobs)
    }

    async fn read_new(&self, consumer: &str, max: usize, wait: bool) -> Result<Vec<Job>, String> {
        let mut options = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(max.max(1));
        if wait {
            options = options.block(self.inner.config.block.as_millis() as usize);
        }
        let mut blocking = self.inner.blocking.clone();
        let key = self.items_key();
        let (keys, ids) = ([&key], [">"]);
        let read = blocking.xread_options::<_, _, Option<StreamReadReply>>(&keys, &ids, &options);
        let reply = match tokio::time::timeout(
            self.inner.config.block + self.inner.config.op_timeout,
            read,
        )
        .await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.to_string().contains("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Ok(Err(e)) => return Err(format!("the work queue (taking items): {e}")),
            Err(_) => return Err("the work queue (taking items): Redis did not answer".into()),
        };
        let mut jobs = Vec::new();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            match job_of(&entry) {
                Some(job) => jobs.push(job),
                None => self.drop_malformed(&entry.id).await,
            }
        }
        Ok(jobs)
    }

    /// An entry without a batch or an index (not written by a submitter of this
    /// version): acknowledged and deleted, with a warning; it has no batch to report to.
    async fn drop_malformed(&self, entry: &str) {
        tracing::warn!(entry, "dropped a malformed item from the work queue");
        let mut conn = self.inner.conn.clone();
        let mut pipe = redis::pipe();
        pipe.xack(self.items_key(), GROUP, &[entry])
            .ignore()
            .xdel(self.items_key(), &[entry])
            .ignore();
        let _ = self
            .timed(
                "dropping a malformed item",
                pipe.query_async::<()>(&mut conn),
            )
            .await;
    }

    /// Keeps `consumer`'s claims on `entries` fresh; returns those it no longer holds.
    pub async fn touch(&self, consumer: &str, entries: &[String]) -> Result<Vec<String>, String> {
        self.claims(consumer, "touch", entries).await
    }

    /// Hands `entries` back at once (a worker stopping before it ran them): the next
    /// worker to look takes them over without waiting for the lease.
    pub async fn release(&self, consumer: &str, entries: &[String]) -> Result<(), String> {
        self.claims(consumer, "release", entries).await.map(drop)
    }

    async fn claims(
        &self,
        consumer: &str,
        mode: &str,
        entries: &[String],
    ) -> Result<Vec<String>, String> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.inner.claims.prepare_invoke();
        invocation
            .key(self.items_key())
            .arg(GROUP)
            .arg(consumer)
            .arg(mode)
            .arg(self.inner.config.lease.as_millis() as u64 + 1000);
        for entry in entries {
            invocation.arg(entry);
        }
        let mut conn = self.inner.conn.clone();
        self.timed(
            "refreshing claims",
            invocation.invoke_async::<Vec<String>>(&mut conn),
        )
        .await
    }

    /// Stores `job`'s result and acknowledges it: true if this stored it, false if a
    /// result of an earlier run of the item was there already (kept; this one is not).
    pub async fn complete(&self, job: &Job, result: &str) -> Result<bool, String> {
        let mut invocation = self.inner.complete.prepare_invoke();
        invocation
            .key(self.items_key())
            .key(self.results_key(&job.batch))
            .key(self.done_key(&job.batch))
            .arg(GROUP)
            .arg(&job.entry)
            .arg(job.index)
            .arg(result)
            .arg(self.ttl_ms());
        let mut conn = self.inner.conn.clone();
        let fresh: i64 = self
            .timed("storing a result", invocation.invoke_async(&mut conn))
            .await?;
        Ok(fresh == 1)
    }

    /// Items waiting or running: the stream's length.
    pub async fn depth(&self) -> Result<u64, String> {
        let mut conn = self.inner.conn.clone();
        self.timed("measuring the queue", conn.xlen(self.items_key()))
            .await
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.inner.conn.clone();
        self.timed("ping", redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .is_ok()
    }
}

fn field(map: &HashMap<String, Value>, name: &str) -> Option<String> {
    match map.get(name)? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn job_of(entry: &StreamId) -> Option<Job> {
    Some(Job {
        entry: entry.id.clone(),
        batch: field(&entry.map, "b")?,
        index: field(&entry.map, "i")?.parse().ok()?,
        payload: field(&entry.map, "p").unwrap_or_default(),
        deliveries: 1,
    })
}
