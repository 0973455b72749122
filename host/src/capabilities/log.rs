//! The `log` interface: guest records go to the host's `tracing` (target
//! `cf_host::guest`), bounded in size and number.
//!
//! Agent names are not logged raw at info level or above: records at those levels
//! carry `agent_id`, the first 16 hex digits of the name's SHA-256 (as the run log
//! hashes tasks; `cf-host stats` and `--json` results name agents in full), and only
//! debug and trace records name the agent. The record's text is the plugin's own;
//! the host never logs the task.

use super::Caller;
use crate::bindings::v0_1::claude_force::agent::log::{Host, Level};
use crate::bindings::v0_2::claude_force::agent::log as log_0_2;
use crate::limits::truncate;
use std::sync::Arc;

/// The `log` capability of one run.
#[derive(Debug)]
pub(crate) struct LogCtx {
    caller: Arc<Caller>,
    max_bytes: usize,
    records_left: u32,
    dropped: u32,
}

impl LogCtx {
    /// At most `max_records` records of at most `max_bytes` each (longer ones are cut).
    pub(crate) fn new(caller: Arc<Caller>, max_records: u32, max_bytes: usize) -> Self {
        Self {
            caller,
            max_bytes,
            records_left: max_records,
            dropped: 0,
        }
    }

    /// The agent's name.
    pub(crate) fn agent(&self) -> &str {
        &self.caller.name
    }

    /// Records dropped over the limit.
    pub(crate) fn dropped(&self) -> u32 {
        self.dropped
    }

    /// How records at info level and above name the agent.
    pub(crate) fn agent_id(&self) -> &str {
        &self.caller.log_id
    }
}

/// How an agent is named in records at info level and above: the first 16 hex digits
/// of the SHA-256 of its name.
pub(crate) fn agent_id(agent: &str) -> String {
    crate::digest::short_digest(agent)
}

impl Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.record(level, message);
        Ok(())
    }
}

impl log_0_2::Host for LogCtx {
    async fn log(&mut self, level: log_0_2::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log_0_2::Level::Trace => Level::Trace,
            log_0_2::Level::Debug => Level::Debug,
            log_0_2::Level::Info => Level::Info,
            log_0_2::Level::Warn => Level::Warn,
            log_0_2::Level::Error => Level::Error,
        };
        self.record(level, message);
        Ok(())
    }
}

impl LogCtx {
    /// Writes one record (any contract version), within the run's limits.
    fn record(&mut self, level: Level, message: String) {
        if self.records_left == 0 {
            self.dropped += 1;
            return;
        }
        self.records_left -= 1;
        let text = truncate(&message, self.max_bytes);
        let (agent, agent_id) = (self.caller.name.as_str(), self.caller.log_id.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "cf_host::guest", agent, "{text}"),
            Level::Debug => tracing::debug!(target: "cf_host::guest", agent, "{text}"),
            Level::Info => tracing::info!(target: "cf_host::guest", agent_id, "{text}"),
            Level::Warn => tracing::warn!(target: "cf_host::guest", agent_id, "{text}"),
            Level::Error => tracing::error!(target: "cf_host::guest", agent_id, "{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permissions;

    fn ctx(max_records: u32, max_bytes: usize) -> LogCtx {
        let caller = Caller::new(
            "python-expert".into(),
            None,
            Arc::new(Permissions::unrestricted("python-expert")),
        );
        LogCtx::new(Arc::new(caller), max_records, max_bytes)
    }

    #[test]
    fn agent_ids_hide_the_name() {
        let id = agent_id("python-expert");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("python"));
        assert_eq!(id, agent_id("python-expert"));
        assert_ne!(id, agent_id("code-reviewer"));
        assert_eq!(ctx(1, 1).agent_id(), id);
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    /// The generated `Host::log`, called as a guest would: records past the limit are
    /// counted as dropped, never an error the guest sees.
    #[tokio::test]
    async fn records_over_the_limit_are_dropped_not_failed() {
        let mut log = ctx(2, 4);
        for _ in 0..5 {
            Host::log(&mut log, Level::Info, "a long message".into())
                .await
                .expect("log never fails");
        }
        assert_eq!(log.dropped(), 3);
        let mut within = ctx(5, 4);
        Host::log(&mut within, Level::Error, "x".into())
            .await
            .expect("log");
        assert_eq!(within.dropped(), 0);
    }
}
