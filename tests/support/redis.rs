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
    /// Arguments after ours (TLS ports, ACL users, `--replicaof`, ...).
    extra: Vec<String>,
    /// A config file given first (a sentinel needs one it can rewrite).
    config: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts one with `extra` arguments after ours.
    pub fn start_with(extra: &[String]) -> RedisServer {
        RedisServer::start_on(free_port(), None, extra)
    }

    /// Starts one on `port`, with `config` as its config file and `extra` arguments after ours
    /// (a sentinel: a config file it may rewrite, then `--sentinel`).
    pub fn start_on(
        port: u16,
        config: Option<std::path::PathBuf>,
        extra: &[String],
    ) -> RedisServer {
        let mut server = RedisServer {
            port,
            child: None,
            dir: None,
            extra: extra.to_vec(),
            config,
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
            extra: Vec::new(),
            config: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let config = self.config.iter().map(|c| c.display().to_string());
        let mut args: Vec<String> = config.collect();
        args.extend(
            [
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
            .map(|s| s.to_string()),
        );
        match &self.dir {
            Some(dir) => args.extend(
                ["--appendonly", "yes", "--appendfsync", "always", "--dir"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([dir.display().to_string()]),
            ),
            None if self.config.is_some() => {}
            None => args.extend(["--appendonly".to_string(), "no".to_string()]),
        }
        args.extend(self.extra.iter().cloned());
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

    /// The server's process id (from `INFO server`).
    pub fn pid(&self) -> u32 {
        let info: String = ::redis::cmd("INFO")
            .arg("server")
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("INFO server: {e}"));
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO server has no process_id"))
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

/// Adds an entry to the stream `events`, as the job queue writes it (`channel`, `message`);
/// returns its id.
pub fn add_event(
    conn: &mut ::redis::Connection,
    channel: &str,
    message: &str,
) -> ::redis::RedisResult<String> {
    ::redis::cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("channel")
        .arg(channel)
        .arg("message")
        .arg(message)
        .query(conn)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The durable store of `instance` on `redis`, as the service makes it.
pub fn durable_store(
    redis: &RedisServer,
    instance: &str,
) -> webhook_service::delivery::durable::Durable {
    use webhook_service::config::target::{RedisOptions, Target};
    use webhook_service::redis_conn::RedisPool;
    let target = Target::parse(&redis.url(), "REDIS_URL", &RedisOptions::default());
    let pool = std::sync::Arc::new(RedisPool::new(target.unwrap_or_else(|e| panic!("{e}"))));
    webhook_service::delivery::durable::Durable::new(pool, instance)
}

/// A first attempt of a `complete_job` to `webhook` with this id, not yet recorded.
pub fn first_attempt(webhook: &str, id: &str) -> webhook_service::delivery::Delivery {
    webhook_service::delivery::Delivery {
        webhook_id: std::sync::Arc::from(webhook),
        event_id: id.into(),
        event_type: std::sync::Arc::from("complete_job"),
        kind: webhook_service::event::EventKind::JobCompleted,
        body: std::sync::Arc::from(b"{}".to_vec()),
        attempts: 0,
        created_ms: 1,
        job: None,
        sequence: None,
    }
}
