//! The final summary of a batch, on stderr.

use crate::batch::BatchOutcome;

/// Prints counts, wall time and throughput of a batch.
pub(crate) fn print_batch(outcome: &BatchOutcome, bad_lines: usize) {
    let total = outcome.results.len();
    let ok = outcome.results.iter().filter(|r| r.result.is_ok()).count();
    let wall = outcome.wall.as_secs_f64();
    eprintln!(
        "cf-host: {total} item(s): {ok} ok, {} failed, {bad_lines} malformed line(s) skipped · {wall:.3} s · {:.1} items/s",
        total - ok,
        if wall > 0.0 { total as f64 / wall } else { 0.0 }
    );
}
