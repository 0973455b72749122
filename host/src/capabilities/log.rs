//! The `log` interface: guest records go to the host's `tracing` under the agent's
//! name, bounded in size and number.

use crate::bindings::v0_1::claude_force::agent::log::{Host, Level};

/// The `log` capability of one run.
#[derive(Debug)]
pub(crate) struct LogCtx {
    pub agent: String,
    pub max_bytes: usize,
    pub records_left: u32,
    pub dropped: u32,
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
        let agent = self.agent.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "cf_host::guest", agent, "{text}"),
            Level::Debug => tracing::debug!(target: "cf_host::guest", agent, "{text}"),
            Level::Info => tracing::info!(target: "cf_host::guest", agent, "{text}"),
            Level::Warn => tracing::warn!(target: "cf_host::guest", agent, "{text}"),
            Level::Error => tracing::error!(target: "cf_host::guest", agent, "{text}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
