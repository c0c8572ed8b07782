//! What `/health` and `/metrics` say about Redis: how it is reached (standalone or Sentinel, TLS
//! or not), which node the service talks to now, and how many times that node changed.
//!
//! The pool is the only writer; the API handlers read it without touching Redis.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::config::target::Mode;

/// Redis as this process sees it. Shared through the pool.
#[derive(Debug)]
pub(crate) struct RedisStatus {
    mode: Mode,
    tls: bool,
    /// The Sentinel master name (empty when standalone).
    master_name: String,
    /// `host:port` of the node commands go to (empty until a Sentinel names the master).
    node: Mutex<String>,
    /// Bumped each time the node changes: connections to an older one are dropped.
    generation: AtomicU64,
    /// Master changes seen (Sentinel failovers).
    failovers: AtomicU64,
    /// When the last one was seen (ms since the epoch; 0: never).
    last_failover_ms: AtomicU64,
}

impl RedisStatus {
    /// The status before any connection.
    pub(crate) fn new(mode: Mode, tls: bool, master_name: &str, node: String) -> RedisStatus {
        RedisStatus {
            mode,
            tls,
            master_name: master_name.to_string(),
            node: Mutex::new(node),
            generation: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            last_failover_ms: AtomicU64::new(0),
        }
    }

    /// `host:port` of the node commands go to.
    pub(crate) fn node(&self) -> String {
        self.node.lock().clone()
    }

    /// Master changes seen since start.
    pub(crate) fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// The current node's generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records the node a resolution found. Returns the previous node if it changed (then the
    /// generation moves on, so connections to the old node are dropped). The first node found is
    /// no failover.
    pub(crate) fn set_node(&self, node: &str) -> Option<String> {
        let mut current = self.node.lock();
        if *current == node {
            return None;
        }
        let previous = std::mem::replace(&mut *current, node.to_string());
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !previous.is_empty() {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            self.last_failover_ms
                .store(crate::time::now_ms(), Ordering::Relaxed);
        }
        Some(previous)
    }

    /// The `redis` object of `/health`, with `connected` as the intake sees it.
    pub(crate) fn health_json(&self, connected: bool) -> Value {
        let last = self.last_failover_ms.load(Ordering::Relaxed);
        let mut value = json!({
            "connected": connected,
            "status": if connected { "ready" } else { "reconnecting" },
            "mode": self.mode.name(),
            "node": self.node(),
            "tls": self.tls,
            "failovers": self.failovers(),
            "last_failover_at": (last > 0).then(|| crate::time::iso8601(last)),
        });
        if self.mode == Mode::Sentinel {
            value["master_name"] = Value::from(self.master_name.as_str());
        }
        value
    }

    /// Prometheus lines: `webhook_redis_info` (labels: mode, node, tls) and
    /// `webhook_redis_failovers_total`.
    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::with_capacity(512);
        let node = self.node().replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "# HELP webhook_redis_info The Redis node commands go to (value always 1)."
        );
        let _ = writeln!(out, "# TYPE webhook_redis_info gauge");
        let _ = writeln!(
            out,
            "webhook_redis_info{{mode=\"{}\",node=\"{node}\",tls=\"{}\"}} 1",
            self.mode.name(),
            self.tls
        );
        let _ = writeln!(
            out,
            "# HELP webhook_redis_failovers_total Changes of the Redis master seen through Sentinel."
        );
        let _ = writeln!(out, "# TYPE webhook_redis_failovers_total counter");
        let _ = writeln!(out, "webhook_redis_failovers_total {}", self.failovers());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_master_counts_as_a_failover_and_moves_the_generation() {
        let status = RedisStatus::new(Mode::Sentinel, false, "mymaster", String::new());
        assert_eq!(status.set_node("10.0.0.1:6379"), Some(String::new()));
        assert_eq!(
            status.failovers(),
            0,
            "the first master found is no failover"
        );
        let generation = status.generation();
        assert_eq!(status.set_node("10.0.0.1:6379"), None);
        assert_eq!(status.generation(), generation);
        assert_eq!(
            status.set_node("10.0.0.2:6379"),
            Some("10.0.0.1:6379".into())
        );
        assert_eq!(status.failovers(), 1);
        assert_eq!(status.generation(), generation + 1);
        let health = status.health_json(true);
        assert_eq!(health["node"], "10.0.0.2:6379");
        assert_eq!(health["failovers"], 1);
        assert_eq!(health["master_name"], "mymaster");
        assert!(health["last_failover_at"].is_string());
        let text = status.prometheus();
        assert!(text.contains(
            "webhook_redis_info{mode=\"sentinel\",node=\"10.0.0.2:6379\",tls=\"false\"} 1"
        ));
        assert!(text.contains("webhook_redis_failovers_total 1"));
    }
}
