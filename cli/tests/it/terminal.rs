//! A real terminal for the tests that need one: a tmux server of the test's own.

use std::process::Command;

/// A tmux server of the test's own (its own socket), killed when dropped.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (CI installs it)")
    }

    /// A tmux server of its own (`name` and this process's id), running `script` in a
    /// 220 × 50 session `cf`.
    pub(crate) fn start(name: &str, script: &str) -> Self {
        let tmux = Self {
            socket: format!("{name}-{}", std::process::id()),
        };
        let started = tmux.cmd(&[
            "new-session",
            "-d",
            "-s",
            "cf",
            "-x",
            "220",
            "-y",
            "50",
            "sh",
            "-c",
            script,
        ]);
        assert!(started.status.success(), "{started:?}");
        tmux
    }

    /// The screen of the session's pane `cf`.
    pub(crate) fn capture(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "cf"]).stdout).into()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// Whether tmux is installed. Without it `test` says so and passes, unless
/// `CF_REQUIRE_ALL_AGENTS` is set (CI sets it, and installs tmux): then it fails.
pub(crate) fn tmux_available(test: &str) -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CF_REQUIRE_ALL_AGENTS").is_none(),
            "tmux is required (CF_REQUIRE_ALL_AGENTS is set)"
        );
        eprintln!("{test}: skipped: tmux is not installed");
    }
    found
}
