//! `GET /health`: the original's fields plus uptime, queue figures and counters.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::api::reply::Reply;
use crate::app::Shared;
use crate::monitor::metrics::{Gauges, render};
use crate::monitor::{OUTCOMES, get};

/// `GET /metrics`: Prometheus text exposition.
pub fn metrics(shared: &Shared) -> Reply {
    let c = &shared.counters;
    let snapshot = shared.registry.snapshot();
    let durable = &shared.delivery.durable;
    let gauges = Gauges {
        retry_backlog: shared.retry_backlog() as u64,
        oldest_due_seconds: shared.oldest_pending_age_ms() as f64 / 1000.0,
        dead_letters: durable.dead_letter_count().unwrap_or(0),
        disconnected_webhooks: snapshot
            .webhooks()
            .iter()
            .filter(|w| w.disconnected)
            .count() as u64,
        redis_connected: c.redis_connected.load(Ordering::Relaxed),
        queue_depth: shared.queue_depth() as u64,
        in_flight: shared.delivery.gate.in_flight() as u64,
        webhooks: snapshot.webhooks().len() as u64,
    };
    let mut text = render(c, &c.durations, gauges);
    text.push_str(&shared.redis.status().prometheus());
    Reply::raw(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into_bytes(),
    )
}

/// `GET /health`: 200 while Redis is reachable, 503 `degraded` otherwise.
pub fn health(shared: &Shared) -> Reply {
    let c = &shared.counters;
    let connected = c.redis_connected.load(Ordering::Relaxed);
    let now = crate::time::now_ms();
    let snapshot = shared.registry.snapshot();
    let active = snapshot.webhooks().iter().filter(|w| w.active).count();
    let attempts: serde_json::Map<String, Value> = OUTCOMES
        .iter()
        .map(|o| (o.label().to_string(), Value::from(c.attempts(*o))))
        .collect();
    let body = json!({
        "status": if connected { "ok" } else { "degraded" },
        "service": "webhook-service",
        "timestamp": crate::time::iso8601(now),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": shared.started.elapsed().as_secs(),
        "redis": shared.redis.status().health_json(connected),
        "processor": {
            "active_webhooks": active,
            "total_webhooks": snapshot.webhooks().len(),
            "total_deliveries": get(&c.events_processed),
            "failed_deliveries": get(&c.events_failed),
            "workflow_tracking": {
                "total_tracked_workflows": 0,
                "workflows": [],
                "message": "Internal workflow tracking disabled - using Redis events exclusively",
            },
        },
        "queue": {
            "depth": shared.queue_depth(),
            "in_flight": shared.delivery.gate.in_flight(),
            "retry_backlog": shared.backlog.retries.load(Ordering::Relaxed),
                        "oldest_pending_age_ms": shared.oldest_pending_age_ms(),
            "dead_letters": shared.delivery.durable.dead_letter_count().unwrap_or(0),
        },
        "instance": shared.config.instance_id,
        "events": {
            "received": get(&c.events_received),
            "processed": get(&c.events_processed),
            "skipped": get(&c.events_skipped),
                        "duplicate": get(&c.events_duplicate),
            "claimed_elsewhere": get(&c.events_claimed_elsewhere),
            "unrecorded": get(&c.events_unrecorded),
            "malformed": get(&c.events_malformed),
            "failed": get(&c.events_failed),
            "malformed_by_source": c.malformed_by_source(),
        },
        "deliveries": {
            "created": get(&c.deliveries_created),
            "succeeded": get(&c.deliveries_succeeded),
            "failed": get(&c.deliveries_failed),
            "throttled": get(&c.deliveries_throttled),
                        "dropped": get(&c.deliveries_dropped),
            "spilled": get(&c.deliveries_spilled),
            "records_dropped": get(&c.records_dropped),
            "attempts": attempts,
        },
    });
    Reply::envelope(if connected { 200 } else { 503 }, body)
}
