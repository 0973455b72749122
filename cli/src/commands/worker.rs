//! `cf-host worker`: runs items of the fleet's work queue ([`cf_front::queue`]) until
//! SIGTERM or Ctrl-C, then lets running items finish within the grace period and
//! hands the rest back to the queue.

use crate::args::WorkerArgs;
use crate::error::{CliError, Exit};
use cf_front::queue::{WorkerOptions, WorkerStats, run_worker};
use cf_front::settings::Settings;
use cf_host::RunOptions;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) async fn worker(args: WorkerArgs) -> Result<Exit, CliError> {
    let settings = super::settings(&args.host)?;
    let queue = settings.work_queue(args.queue.as_deref()).await?;
    let (host, _) = super::fleet_host(&settings).await?;
    let items = args.items.map_or(settings.max_concurrent, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let options = worker_options(&settings, items, Duration::from_secs_f64(args.grace));
    eprintln!(
        "cf-host: worker {} takes items of queue {:?} ({items} at once)",
        options.consumer, settings.redis_queue
    );
    let stats = Arc::new(WorkerStats::default());
    run_worker(
        host.clone(),
        queue,
        options,
        stats.clone(),
        super::serve::shutdown_signal(),
    )
    .await;
    super::flush_telling_why(&host).await;
    eprintln!("cf-host: worker stopped: {}", summary(&stats));
    Ok(Exit::Ok)
}

/// A worker's options under `settings`: a consumer name unique in the fleet (host
/// name, process id, random suffix), the runs' model and budget from the settings.
pub(crate) fn worker_options(settings: &Settings, items: usize, grace: Duration) -> WorkerOptions {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    WorkerOptions {
        consumer: format!(
            "{host}-{}-{}",
            std::process::id(),
            &cf_fleet::random_id()[..8]
        ),
        max_in_flight: items,
        grace,
        base: RunOptions {
            model: settings.model.clone(),
            budget: settings.budget(),
            ..RunOptions::default()
        },
    }
}

/// What a worker did, in one line.
pub(crate) fn summary(stats: &WorkerStats) -> String {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "{} result(s) stored, {} taken over from other workers, {} handed back, {} abandoned, {} duplicate run(s) not stored, {} Redis error(s)",
        n(&stats.stored),
        n(&stats.taken_over),
        n(&stats.handed_back),
        n(&stats.abandoned),
        n(&stats.duplicates),
        n(&stats.redis_errors)
    )
}
