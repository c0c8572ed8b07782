//! A `redis-server` of our own on a free port, with nothing kept on disk, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

/// A running redis-server.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// With persistence: the data directory (append-only file, fsync on every write).
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: None,
        };
        server.spawn();
        server
    }

    /// Starts one that keeps everything (AOF, fsync always), so it survives `restart`.
    pub fn start_persistent() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("webhook-service-redis-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        let mut server = RedisServer {
            port,
            child: None,
            dir: Some(dir),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &self.dir {
            Some(dir) => args.extend(
                ["--appendonly", "yes", "--appendfsync", "always", "--dir"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([dir.display().to_string()]),
            ),
            None => args.extend(["--appendonly".to_string(), "no".to_string()]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
        self.child = Some(child);
        let url = self.url();
        wait_until(Duration::from_secs(10), "redis-server to answer", || {
            let client = ::redis::Client::open(url.as_str()).ok()?;
            let mut conn = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .ok()?;
            ::redis::cmd("PING").query::<String>(&mut conn).ok()
        });
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A new connection.
    pub fn conn(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("cannot connect to the test redis: {e}"))
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Publishes `payload` on `channel`; returns the number of subscribers that got it.
    pub fn publish(&self, channel: &str, payload: &str) -> i64 {
        ::redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("PUBLISH {channel}: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
