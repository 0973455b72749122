//! `cf-host run --tasks FILE` / `--task …`: a batch with results as they finish, a
//! progress line on a terminal ([`crate::progress`]), Ctrl-C, and a final summary.

use crate::args::RunArgs;
use crate::error::{CliError, Exit};
use crate::progress::{Counts, Progress};
use crate::runlog;
use cf_front::render;
use cf_front::runlog::RunRecord;
use cf_front::summary::Summary;
use cf_host::{BatchItem, BatchOptions, BatchResult, Host, RunOptions, Task};
use std::io::Write as _;
use std::time::{Duration, Instant};

/// How often the progress line is sampled while no result arrives.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

struct BatchOutcome {
    results: Vec<BatchResult>,
    wall: Duration,
    interrupted: bool,
}

pub(crate) async fn run_batch(args: RunArgs) -> Result<Exit, CliError> {
    let (host, settings) = super::host_and_settings(&args.host)?;
    let base = RunOptions {
        model: settings.model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        // The batch's budget is its own (below); each item's runs under the same rule,
        // which also applies to a plugin's granted budget.
        budget: cf_host::Budget {
            rule: settings.budget_rule,
            ..cf_host::Budget::default()
        },
        ..RunOptions::default()
    };
    let default_agent = args.agent.as_deref();
    let (items, bad) = match &args.tasks {
        Some(path) if path == "-" => {
            cf_front::tasks::read_jsonl(std::io::stdin().lock(), default_agent, &base)
        }
        Some(path) => {
            let file =
                std::fs::File::open(path).map_err(|e| CliError::usage(format!("{path}: {e}")))?;
            cf_front::tasks::read_jsonl(std::io::BufReader::new(file), default_agent, &base)
        }
        None => (
            items_from_flags(
                &args.batch_tasks,
                default_agent.unwrap_or_default(),
                &args.context,
                &base,
            ),
            Vec::new(),
        ),
    };
    for b in &bad {
        eprintln!(
            "cf-host: {}:{}: skipped: {}",
            render::terminal_safe(args.tasks.as_deref().unwrap_or("-")),
            b.line,
            render::terminal_safe(&b.message)
        );
    }
    let options = BatchOptions {
        budget: settings.budget(),
        grace: Duration::from_secs_f64(args.grace),
        max_in_flight: None,
    };
    let texts: Vec<String> = items.iter().map(|i| i.task.text.clone()).collect();
    let outcome = run(&host, items, options, args.json).await;
    super::flush_telling_why(&host).await;
    let records: Vec<RunRecord> = outcome
        .results
        .iter()
        .map(|r| {
            let record = RunRecord::from_result(&r.agent, &texts[r.index], &r.result);
            match &r.id {
                Some(id) => record.with_id(id.clone()),
                None => record,
            }
        })
        .collect();
    runlog::append(&records);
    print_summary(&outcome, &records, bad.len());
    let exit = if outcome.interrupted {
        Exit::Interrupted
    } else if !bad.is_empty() || outcome.results.iter().any(|r| r.result.is_err()) {
        Exit::TaskFailed
    } else {
        Exit::Ok
    };
    // The process exits next (see `main`): leave the results and the host (flushed
    // above) to the kernel rather than freeing them piece by piece.
    std::mem::forget((host, outcome, records));
    Ok(exit)
}

/// Items from repeated `--task TEXT`, all for `agent`, numbered from 1.
fn items_from_flags(
    texts: &[String],
    agent: &str,
    context: &[(String, String)],
    base: &RunOptions,
) -> Vec<BatchItem> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| BatchItem {
            id: Some((i + 1).to_string()),
            agent: agent.to_owned(),
            task: Task {
                text: text.clone(),
                context: context.to_vec(),
            },
            options: base.clone(),
        })
        .collect()
}

/// Runs the batch, printing each result as it finishes.
async fn run(
    host: &Host,
    items: Vec<BatchItem>,
    options: BatchOptions,
    json: bool,
) -> BatchOutcome {
    let started = Instant::now();
    let mut batch = host.start_batch(items, options);
    let canceller = batch.canceller();
    let progress = Progress::new(batch.len());
    let notes = progress.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            notes.note(
                "cf-host: interrupted: no new items start; running ones get the grace period",
            );
            canceller.cancel();
            return true;
        }
        false
    });
    let mut counts = Counts::default();
    let mut results = Vec::with_capacity(batch.len());
    let mut out = Vec::new();
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            next = batch.next() => {
                let Some(first) = next else { break };
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
                        render::write_json_item(&mut out, &result);
                    } else {
                        render::write_human_item(&mut out, &result);
                    }
                    results.push(result);
                    ready = batch.try_next();
                }
                progress.around(|| {
                    let mut stdout = std::io::stdout().lock();
                    // A closed stdout (a reader that went away) must not stop the batch.
                    let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
                });
            }
            _ = ticker.tick(), if progress.visible() => {}
        }
        if !progress.visible() {
            continue;
        }
        let llm = host.llm();
        counts.running = batch.in_flight();
        counts.calls_in_flight = llm.calls_in_flight();
        counts.calls_waiting = llm.calls_waiting();
        counts.cost_usd = batch.totals().cost.usd;
        progress.update(&counts);
    }
    progress.finish();
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

/// Prints counts, wall time, throughput, peak memory and the summary table of a batch
/// (latency percentiles, cache hit rate, tokens, cost and saved cost, by agent and by
/// model) on stderr.
fn print_summary(outcome: &BatchOutcome, records: &[RunRecord], bad_lines: usize) {
    let total = outcome.results.len();
    let ok = outcome.results.iter().filter(|r| r.result.is_ok()).count();
    let summary = Summary::from_records(records);
    eprintln!(
        "cf-host: {total} item(s): {ok} ok, {} failed, {bad_lines} malformed line(s) skipped · {:.3} s · {:.1} items/s · peak memory {}",
        total - ok,
        outcome.wall.as_secs_f64(),
        summary.throughput(outcome.wall),
        peak_memory()
    );
    eprint!("{summary}");
}

/// The process's peak resident memory, from /proc (Linux); "unknown" elsewhere.
fn peak_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.0} MiB", kb / 1024.0),
        )
}
