//! How a command ends, and the one place exit codes are decided ([`code`]).

use cf_front::settings::ConfigError;

/// How a command that ran ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Every task succeeded.
    Ok,
    /// A task failed (the agent, a model call, a limit), or a check found a problem.
    TaskFailed,
    /// Ctrl-C stopped a batch.
    Interrupted,
    /// The run was refused before anything ran; its result says why.
    Refused,
}

/// Why a command could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad input or configuration: nothing ran.
    #[error("{0}")]
    Usage(String),
    /// The configuration cannot be used: nothing ran.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The host refused something before running it (an invalid agent name, a task
    /// too long, not a valid component).
    #[error(transparent)]
    Host(#[from] cf_host::Error),
    /// An operation failed after it started (a cache file that could not be read).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self::Usage(message.to_string())
    }
}

/// The process's exit code, as documented in `--help` and the README: 0 success, 1 a
/// task failed, 2 usage or configuration error (nothing ran), 130 interrupted.
pub(crate) fn code(result: &Result<Exit, CliError>) -> u8 {
    match result {
        Ok(Exit::Ok) => 0,
        Ok(Exit::TaskFailed) | Err(CliError::Failed(_)) => 1,
        Ok(Exit::Interrupted) => 130,
        Ok(Exit::Refused) | Err(CliError::Usage(_) | CliError::Config(_) | CliError::Host(_)) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_decided_here() {
        assert_eq!(code(&Ok(Exit::Ok)), 0);
        assert_eq!(code(&Ok(Exit::TaskFailed)), 1);
        assert_eq!(code(&Err(CliError::Failed("x".into()))), 1);
        assert_eq!(code(&Err(CliError::usage("bad flag"))), 2);
        assert_eq!(code(&Err(ConfigError::from("bad value").into())), 2);
        assert_eq!(code(&Ok(Exit::Interrupted)), 130);
        assert_eq!(code(&Ok(Exit::Refused)), 2);
    }
}
