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
    /// Starts one on a free port (or on `port`), waiting until it answers.
    pub async fn start(port: Option<u16>) -> Option<Self> {
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
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
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
