//! The final summary of a batch, and the run log every run is appended to.

use crate::commands::batch::BatchOutcome;
use cf_front::runlog::{self, RunLog, RunRecord};
use cf_front::summary::Summary;

/// Prints counts, wall time, throughput, peak memory and the summary table of a batch
/// (latency percentiles, cache hit rate, tokens, cost and saved cost, by agent and by
/// model) on stderr.
pub(crate) fn print_batch(outcome: &BatchOutcome, records: &[RunRecord], bad_lines: usize) {
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

/// Appends records to the run log; a failure is a warning, never a failed run.
pub(crate) fn append(records: &[RunRecord]) {
    let Some(dir) = runlog::default_dir() else {
        return;
    };
    let appended =
        RunLog::open(&dir, runlog::DEFAULT_MAX_BYTES).and_then(|log| log.append(records));
    if let Err(e) = appended {
        tracing::warn!("could not append to the run log in {}: {e}", dir.display());
    }
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
