//! `cf-host cache stats|verify|prune|clear`: look after the response cache.

use crate::args::{CacheAction, CacheArgs, HostArgs};
use crate::error::{CliError, Exit};

pub(crate) fn cache(args: CacheArgs) -> Result<Exit, CliError> {
    let host_args = HostArgs {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..HostArgs::default()
    };
    let settings = super::settings(&host_args)?;
    let dir = settings
        .data_dir
        .clone()
        .ok_or_else(|| CliError::usage("no data directory: pass --data-dir"))?;
    let config = settings.response_cache(&dir)?;
    let cache = cf_host::storage::ResponseCache::open(config)
        .map_err(|e| CliError::usage(format!("the response cache: {e}")))?;
    let failed = |e: cf_host::storage::Error| CliError::Failed(format!("cache: {e}"));
    let (value, clean) = match args.action {
        CacheAction::Stats => (serde_json::to_value(cache.stats()), true),
        CacheAction::Verify { fix } => {
            let r = cache.verify(fix).map_err(failed)?;
            // With --fix, what remains is a damaged file structure (`clear` it).
            let clean = if fix {
                r.database.is_empty()
            } else {
                r.is_clean()
            };
            (serde_json::to_value(r), clean)
        }
        CacheAction::Prune => (serde_json::to_value(cache.prune().map_err(failed)?), true),
        CacheAction::Clear => {
            let n = cache.clear().map_err(failed)?;
            (Ok(serde_json::json!({ "removed": n })), true)
        }
    };
    let value = value.map_err(|e| CliError::Failed(format!("cache: {e}")))?;
    let _ = cf_front::render::cache_report(&mut std::io::stdout().lock(), &value, args.json);
    Ok(if clean { Exit::Ok } else { Exit::TaskFailed })
}
