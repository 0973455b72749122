//! `cf-host stats`: summarise the run log.

use crate::args::StatsArgs;
use crate::error::{CliError, Exit};
use cf_front::runlog::{self, RunLog};
use cf_front::summary::Summary;
use std::io::Write as _;

pub(crate) fn stats(args: StatsArgs) -> Result<Exit, CliError> {
    let dir = runlog::default_dir()
        .ok_or_else(|| CliError::usage("no data directory for the run log"))?;
    let since = match args.since {
        Some(d) => Some(
            std::time::SystemTime::now()
                .checked_sub(d)
                .ok_or_else(|| CliError::usage("--since reaches before the epoch"))?,
        ),
        None => None,
    };
    let report = RunLog::open(&dir, runlog::DEFAULT_MAX_BYTES)
        .and_then(|log| log.read_since(since))
        .map_err(CliError::usage)?;
    if report.skipped_lines > 0 {
        eprintln!(
            "cf-host: skipped {} unreadable line(s) of the run log",
            report.skipped_lines
        );
    }
    let summary = Summary::from_records(&report.records);
    let mut out = std::io::stdout().lock();
    let _ = if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&summary).unwrap_or_default()
        )
    } else if args.csv {
        write!(out, "{}", summary.to_csv())
    } else {
        write!(out, "{summary}")
    };
    Ok(Exit::Ok)
}
