//! `cf-host run --tasks FILE` / `--task …`: a batch with results as they finish, a
//! progress line on a terminal, Ctrl-C, and a final summary.

use crate::exit;
use crate::output;
use cf_host::{BatchOptions, BatchResult, BatchRun, Host};
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

/// Exit code after Ctrl-C (128 + SIGINT), as shells expect.
const INTERRUPTED: u8 = 130;
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Counts shown on the progress line and in the summary.
#[derive(Debug, Default)]
struct Counts {
    done: usize,
    failed: usize,
    cached: usize,
}

pub(crate) struct BatchOutcome {
    pub results: Vec<BatchResult>,
    pub wall: Duration,
    pub interrupted: bool,
}

/// Runs the batch, printing each result as it finishes.
pub(crate) async fn run(
    host: &Host,
    items: Vec<cf_host::BatchItem>,
    options: BatchOptions,
    json: bool,
) -> BatchOutcome {
    let started = Instant::now();
    let mut batch = host.start_batch(items, options);
    let canceller = batch.canceller();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ncf-host: interrupted: no new items start; running ones get the grace period"
            );
            canceller.cancel();
            return true;
        }
        false
    });
    let progress = std::io::stderr().is_terminal();
    let mut counts = Counts::default();
    let mut results = Vec::with_capacity(batch.len());
    let mut out = Vec::new();
    let mut last_draw = Instant::now();
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            next = batch.next() => {
                let Some(first) = next else { break };
                if progress {
                    clear_progress();
                }
                // Every result ready now goes out in one write: one line per result
                // as it finishes, without a syscall (and a wake-up of the reader) each.
                out.clear();
                let mut ready = Some(first);
                while let Some(result) = ready {
                    counts.done += 1;
                    match &result.result {
                        Ok(o) => counts.cached += usize::from(o.stats.llm_calls > 0 && o.stats.cache_hits == o.stats.llm_calls),
                        Err(_) => counts.failed += 1,
                    }
                    if json {
                        output::write_json_item(&mut out, &result);
                    } else {
                        output::write_human_item(&mut out, &result);
                    }
                    results.push(result);
                    ready = batch.try_next();
                }
                let mut stdout = std::io::stdout().lock();
                // A closed stdout (a reader that went away) must not stop the batch.
                let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
            }
            _ = ticker.tick(), if progress => {}
        }
        if progress && last_draw.elapsed() >= PROGRESS_EVERY {
            draw_progress(&batch, &counts, started);
            last_draw = Instant::now();
        }
    }
    if progress {
        clear_progress();
    }
    let interrupted = if ctrl_c.is_finished() {
        ctrl_c.await.unwrap_or(false)
    } else {
        ctrl_c.abort();
        false
    };
    results.sort_by_key(|r| r.index);
    BatchOutcome {
        results,
        wall: started.elapsed(),
        interrupted,
    }
}

fn draw_progress(batch: &BatchRun, c: &Counts, started: Instant) {
    let total = batch.len();
    let elapsed = started.elapsed().as_secs_f64();
    let eta = if c.done == 0 {
        "?".to_owned()
    } else {
        format!("{:.0}s", elapsed / c.done as f64 * (total - c.done) as f64)
    };
    let cost = batch.totals().cost.usd;
    eprint!(
        "\r\x1b[2K{}/{} done · {} failed · {} cached · {} in flight · ${cost:.4} · ETA {eta}",
        c.done,
        total,
        c.failed,
        c.cached,
        batch.in_flight()
    );
    let _ = std::io::stderr().flush();
}

fn clear_progress() {
    eprint!("\r\x1b[2K");
    let _ = std::io::stderr().flush();
}

/// The exit code of a batch: 130 when interrupted, 1 when an item failed or a line
/// was malformed, else 0.
pub(crate) fn exit_code(outcome: &BatchOutcome, bad_lines: usize) -> u8 {
    if outcome.interrupted {
        INTERRUPTED
    } else if bad_lines > 0 || outcome.results.iter().any(|r| r.result.is_err()) {
        exit::TASK_FAILED
    } else {
        exit::OK
    }
}
