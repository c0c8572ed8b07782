//! The real `webhook-service` binary as a child process, on its own port, against a test redis.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::redis::RedisServer;
use super::{free_port, wait_until};

/// A running service.
pub struct Service {
    pub port: u16,
    /// The tests' client: one ureq agent, reused, so calls share kept-alive connections as a
    /// real client's do.
    agent: ureq::Agent,
    child: Option<Child>,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// The open-file limit the process runs under (util-linux `prlimit`), if not inherited.
    open_files: Option<u64>,
}

impl Service {
    /// Starts the service against `redis` with loopback allowed as a target, plus `env`.
    pub fn start(redis: &RedisServer, env: &[(&str, &str)]) -> Service {
        Service::start_with(redis, env, None)
    }

    /// [`Service::start`], the process limited to `open_files` descriptors.
    pub fn start_with_open_files(
        redis: &RedisServer,
        env: &[(&str, &str)],
        open_files: u64,
    ) -> Service {
        Service::start_with(redis, env, Some(open_files))
    }

    fn start_with(redis: &RedisServer, env: &[(&str, &str)], open_files: Option<u64>) -> Service {
        let mut all = vec![
            ("REDIS_URL".to_string(), redis.url()),
            (
                "WEBHOOK_ALLOWED_NETWORKS".to_string(),
                "127.0.0.0/8".to_string(),
            ),
            ("RUST_LOG".to_string(), "debug".to_string()),
            ("WEBHOOK_REGISTRY_REFRESH_MS".to_string(), "200".to_string()),
        ];
        for (k, v) in env {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.to_string()));
        }
        let port = free_port();
        let dir = std::env::temp_dir().join("webhook-service-tests");
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join(format!("service-{port}.log"));
        let mut service = Service {
            port,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
            child: None,
            log,
            env: all,
            open_files,
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap_or_else(|e| panic!("log file: {e}"));
        let binary = env!("CARGO_BIN_EXE_webhook-service");
        let mut command = match self.open_files {
            // prlimit sets the limit and execs the binary: the same process id.
            Some(n) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={n}:{n}")).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WEBHOOK_SERVICE_PORT", self.port.to_string())
            .env("WEBHOOK_SERVICE_HOST", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the service: {e}")),
        );
        wait_until(Duration::from_secs(15), "the service to subscribe", || {
            let health = self.try_health()?;
            (health["redis"]["connected"] == Value::Bool(true)).then_some(())
        });
    }

    /// The tests' client of this service (connections kept alive between calls).
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// `GET /health`, if it answers.
    pub fn try_health(&self) -> Option<Value> {
        let mut response = self
            .agent
            .get(&format!("http://127.0.0.1:{}/health", self.port))
            .call()
            .ok()?;
        let text = response.body_mut().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `GET /health`.
    pub fn health(&self) -> Value {
        self.try_health()
            .unwrap_or_else(|| panic!("/health did not answer; log:\n{}", self.log_text()))
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Threads of the process, from /proc.
    pub fn threads(&self) -> Option<u64> {
        self.status_field("Threads:")
    }

    /// Sockets the process holds on its API port (the listener and every connection), from
    /// /proc: its descriptors that are sockets, matched with the TCP table by inode.
    pub fn api_sockets(&self) -> Option<usize> {
        let pid = self.pid()?;
        let inodes: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .ok()?
                .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect();
        let port = format!(":{:04X}", self.port);
        let mut count = 0;
        for table in ["tcp", "tcp6"] {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            // "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode"
            count += text
                .lines()
                .skip(1)
                .map(|line| line.split_whitespace().collect::<Vec<_>>())
                .filter(|cols| {
                    cols.len() > 9 && cols[1].ends_with(&port) && inodes.contains(cols[9])
                })
                .count();
        }
        Some(count)
    }

    /// Resident memory of the process in bytes, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        // "VmRSS:    12345 kB"
        let kb: u64 = self.status_text()?.lines().find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })?;
        Some(kb * 1024)
    }

    fn status_text(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()
    }

    fn status_field(&self, name: &str) -> Option<u64> {
        self.status_text()?
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
    }

    /// The distinct client addresses (`ip:port`) the API's access log shows for requests whose
    /// path contains `marker`: one per connection a client used.
    pub fn connections_used(&self, marker: &str) -> std::collections::BTreeSet<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("webhook_service::api::conn") && l.contains(marker))
            .filter_map(|l| {
                l.rsplit_once(" for ")
                    .map(|(_, peer)| peer.trim().to_string())
            })
            .collect()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Starts the service again with the same settings (a new process, a new port).
    pub fn restart(&mut self) {
        self.kill();
        self.port = free_port();
        self.spawn();
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the exit code and how long it
    /// took, or `None` if it did not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> Option<(i32, Duration)> {
        let pid = self.pid()?;
        let started = std::time::Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "could not send SIGTERM");
        let child = self.child.as_mut()?;
        while started.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some((status.code().unwrap_or(-1), started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("--- service log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
