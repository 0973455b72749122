//! The work queue against a real `redis-server` (each test starts its own on a free
//! loopback port): items run once each by several workers, a dead worker's items
//! taken over after the lease, a result stored once even when two workers ran the
//! item, deliveries that run out, cancelled batches, claims kept fresh and handed back.

use cf_fleet::testing::RedisServer as Redis;
use cf_fleet::{Job, QueueConfig, WorkQueue, random_id};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

fn config(lease: Duration) -> QueueConfig {
    QueueConfig {
        name: format!("test-{}", &random_id()[..8]),
        lease,
        block: Duration::from_millis(100),
        ..QueueConfig::default()
    }
}

async fn queue(redis: &Redis, config: &QueueConfig) -> WorkQueue {
    WorkQueue::connect(&redis.url(), config.clone())
        .await
        .expect("connects")
}

/// Submits `n` items with payload `item-<i>` to a new batch; returns its id.
async fn submit(q: &WorkQueue, n: usize) -> String {
    let batch = random_id();
    q.open_batch(&batch).await.expect("opens");
    let items: Vec<(usize, String)> = (0..n).map(|i| (i, format!("item-{i}"))).collect();
    for chunk in items.chunks(100) {
        q.submit(&batch, chunk).await.expect("submits");
    }
    q.seal(&batch, n).await.expect("seals");
    batch
}

/// Reads `batch`'s results until `n` arrived (or 30 s passed); every (index, result)
/// in the order they were stored.
async fn collect(q: &WorkQueue, batch: &str, n: usize) -> Vec<(usize, String)> {
    let mut after = "0".to_owned();
    let mut all = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while all.len() < n {
        assert!(
            Instant::now() < end,
            "only {} of {n} results after 30 s",
            all.len()
        );
        let (last, got) = q.results(batch, &after, 500).await.expect("reads");
        after = last;
        all.extend(got);
    }
    all
}

/// Takes from `q` as `consumer` until it gets at least one item to run (or 30 s).
async fn take_some(q: &WorkQueue, consumer: &str, max: usize) -> Vec<Job> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let taken = q.take(consumer, max).await.expect("takes");
        if !taken.run.is_empty() {
            return taken.run;
        }
        assert!(Instant::now() < end, "{consumer} took nothing in 30 s");
    }
}

/// Three workers run 600 items: every index has exactly one result, equal to what its
/// item asked for, and each worker ran some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_every_item_once() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let config = config(Duration::from_secs(10));
    let submitter = queue(&redis, &config).await;
    let batch = submit(&submitter, 600).await;
    let mut workers = Vec::new();
    for w in 0..3 {
        let q = queue(&redis, &config).await;
        workers.push(tokio::spawn(async move {
            let me = format!("worker-{w}");
            let mut ran = 0;
            loop {
                let taken = q.take(&me, 16).await.expect("takes");
                if taken.run.is_empty() {
                    return ran;
                }
                for job in taken.run {
                    let stored = q
                        .complete(&job, &job.payload.to_uppercase())
                        .await
                        .expect("completes");
                    assert!(stored, "a first run's result is stored");
                    ran += 1;
                }
            }
        }));
    }
    let results = collect(&submitter, &batch, 600).await;
    let mut ran = Vec::new();
    for w in workers {
        ran.push(w.await.expect("worker"));
    }
    assert_eq!(ran.iter().sum::<usize>(), 600, "{ran:?}");
    let by_index: BTreeMap<usize, String> = results.iter().cloned().collect();
    assert_eq!(by_index.len(), 600, "each index once");
    assert_eq!(results.len(), 600, "no index twice");
    for (i, r) in &by_index {
        assert_eq!(r, &format!("ITEM-{i}"));
    }
    assert_eq!(
        submitter.depth().await.expect("depth"),
        0,
        "every item acked and deleted"
    );
}

/// A worker that took items and died: after the lease another takes them over (their
/// deliveries counted); when the first one comes back and completes an item anyway,
/// its result is not stored a second time and the batch shows one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_items_are_taken_over_and_stored_once() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let config = config(Duration::from_millis(500));
    let q = queue(&redis, &config).await;
    let batch = submit(&q, 5).await;
    let ghost = take_some(&q, "ghost", 5).await;
    assert_eq!(ghost.len(), 5);
    assert!(ghost.iter().all(|j| j.deliveries == 1));
    // Right away the items are the ghost's: nothing to take.
    let early = q.take("rescuer", 5).await.expect("takes");
    assert!(early.run.is_empty(), "{early:?}");
    // After the lease they are the rescuer's.
    let rescued = take_some(&q, "rescuer", 5).await;
    assert_eq!(rescued.len(), 5);
    assert!(rescued.iter().all(|j| j.deliveries == 2), "{rescued:?}");
    for job in &rescued {
        assert!(q.complete(job, "rescuer's").await.expect("completes"));
    }
    // The ghost finishes late: the stored results stay the rescuer's.
    assert!(!q.complete(&ghost[0], "ghost's").await.expect("completes"));
    assert_eq!(
        q.touch("ghost", &[ghost[1].entry.clone()])
            .await
            .expect("touch"),
        vec![ghost[1].entry.clone()],
        "the ghost's claims are lost"
    );
    let results = collect(&q, &batch, 5).await;
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|(_, r)| r == "rescuer's"), "{results:?}");
    // Nothing more arrives: the ghost's late write added no entry.
    let (_, more) = q.results(&batch, "0", 100).await.expect("reads again");
    assert_eq!(more.len(), 5);
}

/// Claims kept fresh are not taken over however long the item runs; claims handed
/// back are taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_claims_are_kept_and_released_ones_taken_at_once() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let config = config(Duration::from_millis(600));
    let q = queue(&redis, &config).await;
    submit(&q, 2).await;
    let held = take_some(&q, "busy", 2).await;
    let entries: Vec<String> = held.iter().map(|j| j.entry.clone()).collect();
    // Four leases, refreshed every fifth of one.
    let end = Instant::now() + Duration::from_millis(2400);
    while Instant::now() < end {
        assert!(q.touch("busy", &entries).await.expect("touch").is_empty());
        let other = q.take("other", 2).await.expect("takes");
        assert!(
            other.run.is_empty(),
            "a fresh claim was taken over: {other:?}"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    q.release("busy", &entries).await.expect("releases");
    let taken = q.take("other", 2).await.expect("takes");
    assert_eq!(
        taken.run.len(),
        2,
        "handed back, taken without waiting for the lease"
    );
    assert!(taken.run.iter().all(|j| j.deliveries == 2));
}

/// An item delivered `max_deliveries` times without a result is handed out as
/// abandoned, not to be run again; items of a cancelled batch as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_deliveries_and_cancelled_batches_are_not_run() {
    let Some(redis) = Redis::start(None).await else {
        return;
    };
    let spent = QueueConfig {
        max_deliveries: 2,
        ..config(Duration::from_millis(300))
    };
    let q = queue(&redis, &spent).await;
    submit(&q, 1).await;
    take_some(&q, "first", 1).await;
    let second = take_some(&q, "second", 1).await;
    assert_eq!(second[0].deliveries, 2);
    let end = Instant::now() + Duration::from_secs(30);
    let abandoned = loop {
        let taken = q.take("third", 1).await.expect("takes");
        assert!(taken.run.is_empty(), "run a third time: {taken:?}");
        if let Some(job) = taken.abandoned.into_iter().next() {
            break job;
        }
        assert!(Instant::now() < end, "never abandoned");
    };
    assert_eq!(abandoned.deliveries, 3);

    // Another queue: the abandoned item stays the third's until it is completed.
    let q = queue(&redis, &config(Duration::from_secs(10))).await;
    let batch = submit(&q, 3).await;
    q.cancel(&batch).await.expect("cancels");
    let taken = q.take("fourth", 3).await.expect("takes");
    assert!(taken.run.is_empty(), "{taken:?}");
    assert_eq!(taken.cancelled.len(), 3);
}
