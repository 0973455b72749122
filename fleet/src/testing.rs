//! A real `redis-server` for tests: started on a free loopback port (or a given one),
//! waited for, and killed when dropped. Tests that need one call
//! [`RedisServer::start`]; without `redis-server` installed it returns `None` (the
//! test says it is skipped) unless `CF_REQUIRE_ALL_AGENTS` is set, as in CI, which
//! installs it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A `redis-server` of a test's own, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port (or on `port`), waiting until it answers. It keeps
    /// nothing on disk: killed, it loses everything.
    pub async fn start(port: Option<u16>) -> Option<Self> {
        Self::start_in(port, None).await
    }

    /// Starts one that writes every change to an append-only file in `dir` before it
    /// answers (`appendfsync always`) and reads it back when started again on the same
    /// directory: killed and restarted, it has lost nothing it acknowledged.
    pub async fn start_persistent(port: Option<u16>, dir: &std::path::Path) -> Option<Self> {
        Self::start_in(port, Some(dir)).await
    }

    async fn start_in(port: Option<u16>, dir: Option<&std::path::Path>) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CF_REQUIRE_ALL_AGENTS").is_none(),
                "redis-server is required (CF_REQUIRE_ALL_AGENTS is set): apt-get install redis-server"
            );
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        });
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""]);
        match dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Self { child, port };
        let end = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < end,
                "redis-server did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(redis)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (as a crash would: nothing is saved).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
