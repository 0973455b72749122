//! `cf-host agents`: the built-in agents and what they say about themselves.

use crate::args::AgentsArgs;
use crate::error::{CliError, Exit};

pub(crate) async fn agents(args: AgentsArgs) -> Result<Exit, CliError> {
    let (host, _) = super::host_and_settings(&args.host).await?;
    let mut infos = Vec::new();
    for name in cf_host::builtin_agents() {
        let agent = host
            .load(name)
            .await
            .map_err(|e| CliError::usage(format!("built-in agent {name}: {e}")))?;
        infos.push(agent.info().clone());
    }
    let _ = cf_front::render::agents(&mut std::io::stdout().lock(), &infos, args.json);
    Ok(Exit::Ok)
}
