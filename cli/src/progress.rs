//! The batch progress line on a terminal, drawn by `indicatif`: done and total, a
//! bar, the ETA, then the model calls in flight apart from the calls waiting for a
//! permit, failures, cached answers, the cost so far and the items running (each
//! holding an instance slot, most of them waiting for a permit under a low limit).
//! Steady while results stream to a file; results written to the same terminal are
//! printed above it; cut to the terminal's width. Hidden when stderr is not a
//! terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;

/// What the line shows, sampled by the batch loop.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub done: usize,
    pub failed: usize,
    pub cached: usize,
    /// Items holding an instance slot (running guest code or inside a model call).
    pub running: usize,
    /// Model calls holding a permit of the global limit.
    pub calls_in_flight: usize,
    /// Model calls waiting for a permit.
    pub calls_waiting: usize,
    pub cost_usd: f64,
}

/// The progress line of one batch. Clones share the line.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
    /// Whether results go to the same terminal as the line.
    shared_terminal: bool,
}

impl Progress {
    /// A line for `total` items (unknown for stdin) on stderr, when stderr is a
    /// terminal.
    pub(crate) fn new(total: Option<usize>) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total.map(|t| t as u64), target);
        // The templates are constants: they parse. The message takes what is left of
        // the terminal's width and is cut there, so the line never wraps.
        let template = match total {
            Some(_) => "{pos}/{len} [{bar:12}] ETA {eta} · {wide_msg}",
            None => "{pos} done · {elapsed} · {wide_msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self {
            bar,
            shared_terminal: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        }
    }

    /// Whether the line is drawn at all.
    pub(crate) fn visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Redraws with `c` (indicatif limits the rate).
    pub(crate) fn update(&self, c: &Counts) {
        self.bar.set_position(c.done as u64);
        self.bar.set_message(message(c));
    }

    /// Runs `write` (results to stdout) with the line out of the way when both share
    /// a terminal.
    pub(crate) fn around<T>(&self, write: impl FnOnce() -> T) -> T {
        if self.shared_terminal {
            self.bar.suspend(write)
        } else {
            write()
        }
    }

    /// One line of the total turned out not to be an item (a malformed line).
    pub(crate) fn skipped_one(&self) {
        if let Some(len) = self.bar.length() {
            self.bar.set_length(len.saturating_sub(1));
        }
    }

    /// A line for people on stderr, above the progress line.
    pub(crate) fn note(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the line (the summary follows).
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn message(c: &Counts) -> String {
    format!(
        "{} calls in flight · {} waiting · {} failed · {} cached · ${:.4} · {} items running",
        c.calls_in_flight, c.calls_waiting, c.failed, c.cached, c.cost_usd, c.running
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_calls_in_flight_apart_from_calls_waiting() {
        let line = message(&Counts {
            done: 3,
            failed: 1,
            cached: 2,
            running: 256,
            calls_in_flight: 2,
            calls_waiting: 254,
            cost_usd: 0.5,
        });
        assert!(
            line.starts_with("2 calls in flight · 254 waiting"),
            "{line}"
        );
        assert!(line.contains("1 failed · 2 cached"), "{line}");
        assert!(line.ends_with("256 items running"), "{line}");
    }
}
