//! The run log every run is appended to.

use cf_front::runlog::{self, RunLog, RunRecord};

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
