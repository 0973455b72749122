//! `cf-host config show`: the effective configuration, secrets redacted.

use crate::args::{ConfigAction, ConfigArgs};
use crate::error::{CliError, Exit};

pub(crate) fn config(args: ConfigArgs) -> Result<Exit, CliError> {
    match args.action {
        ConfigAction::Show { json, host } => {
            let s = super::settings(&host)?;
            let _ = cf_front::render::settings(&mut std::io::stdout().lock(), &s, json);
            Ok(Exit::Ok)
        }
    }
}
