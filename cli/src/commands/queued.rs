//! `cf-host run --tasks FILE --queue redis://…`: a batch submitted to the fleet's work
//! queue ([`cf_fleet::WorkQueue`]) and run by its workers; the results stream back as
//! they finish, printed and summed up as a local batch's are.
//!
//! Items are read and submitted as they come (in round trips of up to
//! [`SUBMIT_CHUNK`]) and results printed as they arrive, so a batch of any length runs
//! in bounded memory here too. Ctrl-C cancels the batch: workers complete its items
//! not yet started as `cancelled`; the results of the running ones are waited for
//! during the grace period.

use super::batch::{BatchOutcome, Format, Items, Tally, print_results, print_summary};
use crate::args::RunArgs;
use crate::error::{CliError, Exit};
use crate::progress::Progress;
use cf_fleet::WorkQueue;
use cf_front::queue::{QueuedItem, QueuedResult};
use cf_front::render;
use cf_host::{BatchItem, RunOptions};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Items submitted in one round trip.
const SUBMIT_CHUNK: usize = 500;

/// Results read in one round trip.
const READ_CHUNK: usize = 1000;

/// How long without any result before the submitter wonders aloud whether a worker
/// is running.
const NO_WORKER_NOTE: Duration = Duration::from_secs(10);

pub(crate) async fn run_queued(args: RunArgs, url: String) -> Result<Exit, CliError> {
    let settings = super::settings(&args.host)?;
    if settings.budget_usd.is_some() || settings.budget_tokens.is_some() {
        return Err(CliError::usage(
            "--queue: a budget applies where the items run: set it on the workers (budget.usd, budget.tokens), not here",
        ));
    }
    let queue = settings.work_queue(Some(&url)).await?;
    let base = RunOptions {
        model: settings.model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        ..RunOptions::default()
    };
    let bad = Arc::new(AtomicUsize::new(0));
    let (items, progress) = match Items::of(&args, base, &bad)? {
        (Items::Streamed(items), progress) => (items, progress),
        (Items::Listed(items), progress) => {
            let (tx, rx) = mpsc::channel(items.len().max(1));
            for item in items {
                let _ = tx.try_send(item);
            }
            (rx, progress)
        }
    };
    let batch = cf_fleet::random_id();
    queue.open_batch(&batch).await.map_err(CliError::Failed)?;
    progress.note(&format!(
        "cf-host: batch {batch} submitted to queue {:?}; its results stay in Redis for 24 h",
        settings.redis_queue
    ));
    let submitted = Arc::new(AtomicUsize::new(0));
    let submitter = tokio::spawn(submit(
        queue.clone(),
        batch.clone(),
        items,
        submitted.clone(),
        progress.clone(),
    ));
    let outcome = collect(
        &queue,
        &batch,
        submitter,
        &submitted,
        &progress,
        Format::of(&args),
        Duration::from_secs_f64(args.grace),
        &settings.redis_queue,
    )
    .await;
    let bad = bad.load(Ordering::Relaxed);
    print_summary(&outcome, bad);
    Ok(outcome.exit(bad))
}

/// Waits out a Redis outage: retries `op` with a growing pause, saying so once.
async fn patiently<T, F: std::future::Future<Output = Result<T, String>>>(
    progress: &Progress,
    what: &str,
    mut op: impl FnMut() -> F,
) -> T {
    let mut pause = Duration::from_millis(100);
    let mut said = false;
    loop {
        match op().await {
            Ok(v) => {
                if said {
                    progress.note(&format!("cf-host: {what}: Redis is back"));
                }
                return v;
            }
            Err(e) => {
                if !said {
                    progress.note(&format!(
                        "cf-host: {what}: {}; retrying until Redis is back (Ctrl-C stops)",
                        render::terminal_safe(&e)
                    ));
                    said = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Submits the items as they come; seals the batch with their number at the end.
async fn submit(
    queue: WorkQueue,
    batch: String,
    mut items: mpsc::Receiver<BatchItem>,
    submitted: Arc<AtomicUsize>,
    progress: Progress,
) -> usize {
    let mut index = 0;
    let mut chunk: Vec<(usize, String)> = Vec::with_capacity(SUBMIT_CHUNK);
    while let Some(first) = items.recv().await {
        let mut next = Some(first);
        while let Some(item) = next {
            let payload = serde_json::to_string(&QueuedItem::of(&item)).unwrap_or_default();
            chunk.push((index, payload));
            index += 1;
            next = if chunk.len() < SUBMIT_CHUNK {
                items.try_recv().ok()
            } else {
                None
            };
        }
        patiently(&progress, "submitting items", || {
            queue.submit(&batch, &chunk)
        })
        .await;
        submitted.store(index, Ordering::Relaxed);
        chunk.clear();
    }
    patiently(&progress, "sealing the batch", || queue.seal(&batch, index)).await;
    index
}

/// Prints results as they arrive until every submitted item has one (or, after
/// Ctrl-C, the grace period ends).
#[allow(clippy::too_many_arguments)]
async fn collect(
    queue: &WorkQueue,
    batch: &str,
    mut submitter: tokio::task::JoinHandle<usize>,
    submitted: &AtomicUsize,
    progress: &Progress,
    format: Format,
    grace: Duration,
    queue_name: &str,
) -> BatchOutcome {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut total: Option<usize> = None;
    let mut after = "0".to_owned();
    let mut out = Vec::new();
    let mut interrupted_at: Option<Instant> = None;
    let mut wondered = false;
    // While Redis is away: the pause before the next try.
    let mut outage: Option<Duration> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if total.is_some_and(|t| tally.counts.done >= t) {
            break;
        }
        if interrupted_at.is_some_and(|at| at.elapsed() >= grace) {
            progress.note(&format!(
                "cf-host: stopped waiting after the grace period; {} item(s) still running on workers (their results stay in Redis under batch {batch})",
                submitted.load(Ordering::Relaxed).saturating_sub(tally.counts.done)
            ));
            break;
        }
        tokio::select! {
            read = queue.results(batch, &after, READ_CHUNK) => {
                let (last, results) = match read {
                    Ok(r) => {
                        if outage.take().is_some() {
                            progress.note("cf-host: reading results: Redis is back");
                        }
                        r
                    }
                    Err(e) => {
                        let pause = outage.get_or_insert_with(|| {
                            progress.note(&format!(
                                "cf-host: reading results: {}; retrying until Redis is back (Ctrl-C stops)",
                                render::terminal_safe(&e)
                            ));
                            Duration::from_millis(50)
                        });
                        *pause = (*pause * 2).min(Duration::from_secs(2));
                        tokio::time::sleep(*pause).await;
                        continue;
                    }
                };
                after = last;
                out.clear();
                for (_, stored) in results {
                    let Ok(result) = serde_json::from_str::<QueuedResult>(&stored) else {
                        progress.note("cf-host: a result on the queue is not of this version; skipped");
                        continue;
                    };
                    let (ok, cached) = (result.ok(), result.record.cached);
                    write_result(&mut out, format, result.result);
                    tally.add(ok, cached, result.record);
                }
                // Results that came through Redis are logged as they arrive.
                tally.write_log();
                if !out.is_empty() {
                    print_results(progress, &out);
                }
                if tally.counts.done == 0 && !wondered && started.elapsed() >= NO_WORKER_NOTE {
                    wondered = true;
                    progress.note(&format!(
                        "cf-host: no result yet after {} s: is a worker (cf-host worker, cf-host serve --worker) taking items of queue {queue_name:?} on this Redis?",
                        NO_WORKER_NOTE.as_secs()
                    ));
                }
            }
            n = &mut submitter, if total.is_none() => {
                total = Some(n.unwrap_or_else(|_| submitted.load(Ordering::Relaxed)));
            }
            _ = &mut ctrl_c, if interrupted_at.is_none() => {
                interrupted_at = Some(Instant::now());
                submitter.abort();
                progress.note("cf-host: interrupted: the batch is cancelled (items not started are not run); waiting for the running ones during the grace period");
                if total.is_none() {
                    total = Some(submitted.load(Ordering::Relaxed));
                }
                if let Err(e) = queue.cancel(batch).await {
                    progress.note(&format!("cf-host: could not cancel the batch: {}", render::terminal_safe(&e)));
                }
            }
        }
        tally.counts.running = submitted
            .load(Ordering::Relaxed)
            .saturating_sub(tally.counts.done);
        progress.update(&tally.counts);
    }
    progress.finish();
    tally.outcome(started, interrupted_at.is_some())
}

fn write_result(out: &mut Vec<u8>, format: Format, mut value: Value) {
    match format {
        Format::Human => render::write_human_value(out, &value),
        Format::Json | Format::StreamJson => {
            if let (Format::StreamJson, Value::Object(map)) = (format, &mut value) {
                map.insert("type".into(), Value::from("result"));
            }
            // Writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &value);
            out.push(b'\n');
        }
    }
}
