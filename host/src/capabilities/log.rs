//! The `log` interface: guest records go to the host's `tracing` (target
//! `cf_host::guest`), bounded in size and number.
//!
//! Agent names are not logged raw at info level or above: records at those levels
//! carry `agent_id`, the first 16 hex digits of the name's SHA-256 (as the run log
//! hashes tasks; `cf-host stats` and `--json` results name agents in full), and only
//! debug and trace records name the agent. The record's text is the plugin's own;
//! the host never logs the task.

use crate::bindings::v0_1::claude_force::agent::log::{Host, Level};

/// The `log` capability of one run.
#[derive(Debug)]
pub(crate) struct LogCtx {
    pub agent: String,
    /// [`agent_id`] of `agent`.
    pub agent_id: String,
    pub max_bytes: usize,
    pub records_left: u32,
    pub dropped: u32,
}

/// How an agent is named in records at info level and above: a hash of its name.
pub(crate) fn agent_id(agent: &str) -> String {
    crate::metrics::task_hash(agent)
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.records_left == 0 {
            self.dropped += 1;
            return Ok(());
        }
        self.records_left -= 1;
        let text = truncate(&message, self.max_bytes);
        let (agent, agent_id) = (self.agent.as_str(), self.agent_id.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "cf_host::guest", agent, "{text}"),
            Level::Debug => tracing::debug!(target: "cf_host::guest", agent, "{text}"),
            Level::Info => tracing::info!(target: "cf_host::guest", agent_id, "{text}"),
            Level::Warn => tracing::warn!(target: "cf_host::guest", agent_id, "{text}"),
            Level::Error => tracing::error!(target: "cf_host::guest", agent_id, "{text}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{agent_id, truncate};

    #[test]
    fn agent_ids_hide_the_name() {
        let id = agent_id("python-expert");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("python"));
        assert_eq!(id, agent_id("python-expert"));
        assert_ne!(id, agent_id("code-reviewer"));
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
