//! Integration tests: a real redis-server, real HTTP receivers, the real binary.

// The test binary is its own crate: `pub` only shares items between its modules.
#![allow(unreachable_pub)]

mod support;

mod intake;
mod legacy;
mod outcomes;
mod signatures;

use std::time::Duration;

use serde_json::{Value, json};

use support::redis::RedisServer;
use support::service::Service;
use support::wait_until;

/// Generous bound for anything that should take milliseconds.
pub const SOON: Duration = Duration::from_secs(10);

/// Stores `webhook` under `id` as the original stores it, and waits until `service` has it.
pub fn register(redis: &RedisServer, service: &Service, id: &str, mut webhook: Value) {
    webhook["id"] = Value::from(id);
    let before = service.health()["processor"]["total_webhooks"]
        .as_u64()
        .unwrap_or(0);
    let mut conn = redis.conn();
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg(id)
        .arg(webhook.to_string())
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("HSET: {e}"));
    let _: () = ::redis::cmd("SADD")
        .arg("webhooks:active")
        .arg(id)
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("SADD: {e}"));
    // No notification: the periodic refresh must find webhooks written by another process.
    wait_until(SOON, "the service to load the webhook", || {
        let total = service.health()["processor"]["total_webhooks"].as_u64()?;
        (total > before).then_some(())
    });
}

/// A webhook in the original's stored format.
pub fn webhook(url: &str, events: &[&str]) -> Value {
    json!({
        "created_at": 1_700_000_000_000u64,
        "updated_at": 1_700_000_000_000u64,
        "consecutive_failures": 0,
        "disconnected": false,
        "retry_config": {"max_attempts": 3, "initial_delay_ms": 1000, "backoff_multiplier": 2, "max_delay_ms": 30000},
        "url": url,
        "events": events,
        "active": true,
        "filters": {},
    })
}

/// A fresh redis and a service on it.
pub fn setup(env: &[(&str, &str)]) -> (RedisServer, Service) {
    let redis = RedisServer::start();
    let service = Service::start(&redis, env);
    (redis, service)
}
