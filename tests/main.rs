//! Integration tests: a real redis-server, real HTTP receivers, the real binary.

// The test binary is its own crate: `pub` only shares items between its modules.
#![allow(unreachable_pub)]

mod support;

mod api;
mod clients;
mod durability;
mod edge;
mod figures;
mod framing;
mod hostile;
mod intake;
mod isolation;
mod legacy;
mod order;
mod outcomes;
mod redis_prod;
mod signatures;
mod writes;

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

/// An API response: status, headers (names lowercased), JSON body (`Null` if not JSON).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The JSON body, `Null` if there is none.
    pub body: Value,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Calls the service's API over the tests' kept-alive connections.
pub fn call(
    service: &Service,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let url = format!("http://127.0.0.1:{}{}", service.port, path);
    let mut request = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("Content-Type", "application/json");
    }
    let request = request
        .body(body.unwrap_or("").as_bytes().to_vec())
        .unwrap_or_else(|e| panic!("bad test request: {e}"));
    let mut response = service
        .agent()
        .run(request)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", service.log_text()));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh redis and a service on it.
pub fn setup(env: &[(&str, &str)]) -> (RedisServer, Service) {
    let redis = RedisServer::start();
    let service = Service::start(&redis, env);
    (redis, service)
}
