//! One module per command; each returns how it ended or a typed error, and `main`
//! turns that into the exit code.

pub(crate) mod agents;
pub(crate) mod batch;
pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod inspect;
pub(crate) mod new;
pub(crate) mod queued;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod stats;
pub(crate) mod worker;

use crate::args::HostArgs;
use crate::error::CliError;
use cf_front::settings::{self, Settings};
use cf_host::Host;
use std::time::Duration;

/// The effective settings for these flags.
pub(crate) fn settings(args: &HostArgs) -> Result<Settings, CliError> {
    Ok(settings::from_process(&args.overrides())?)
}

/// Builds the host from the effective settings, saying so when the offline provider
/// answers for lack of a key; with `redis.url`, connected to the fleet's limit.
pub(crate) async fn build_host(s: &Settings) -> Result<Host, CliError> {
    Ok(fleet_host(s).await?.0)
}

/// The host, and the fleet's limit it shares when `redis.url` is set.
pub(crate) async fn fleet_host(
    s: &Settings,
) -> Result<(Host, Option<cf_fleet::RedisLimit>), CliError> {
    if s.provider_kind().1 {
        eprintln!(
            "cf-host: ANTHROPIC_API_KEY is not set; using the offline provider (answers are labelled [offline])"
        );
    }
    let fleet = s.fleet_limit().await?;
    // The API's rate-limit headers pause the whole fleet.
    let observer = fleet
        .clone()
        .map(|l| std::sync::Arc::new(l) as std::sync::Arc<dyn cf_host::llm::RateObserver>);
    let mut builder = s.host_builder_observed(observer)?;
    if let Some(limit) = &fleet {
        builder = builder.shared_limit(std::sync::Arc::new(limit.clone()));
    }
    match s.fleet_cache().await? {
        (Some(cache), _) => builder = builder.shared_cache(std::sync::Arc::new(cache)),
        (None, Some(why)) => eprintln!("cf-host: {why}"),
        (None, None) => {}
    }
    Ok((builder.build()?, fleet))
}

/// Settings and host for a command.
pub(crate) async fn host_and_settings(args: &HostArgs) -> Result<(Host, Settings), CliError> {
    let s = settings(args)?;
    Ok((build_host(&s).await?, s))
}

/// Flushes the host; if that takes a while (a slow disk), says what it is waiting for.
/// Gives up after one run's deadline: another process holding the response cache's
/// lock must not keep the CLI running past the limit the user set.
pub(crate) async fn flush_telling_why(host: &Host) {
    let flush = host.flush();
    tokio::pin!(flush);
    if tokio::time::timeout(Duration::from_secs(1), &mut flush)
        .await
        .is_err()
    {
        eprintln!(
            "cf-host: writing {} answer(s) to the response cache…",
            host.llm().cache_writes_pending()
        );
        let limit = host
            .limits()
            .deadline
            .saturating_sub(Duration::from_secs(1));
        if tokio::time::timeout(limit, &mut flush).await.is_err() {
            eprintln!(
                "cf-host: gave up writing {} answer(s) to the response cache after the run deadline (is another process holding its lock?); they were not saved",
                host.llm().cache_writes_pending()
            );
        }
    }
}
