//! `GET /health` and `GET /metrics`: the original's fields plus uptime, and every figure of
//! [`FIGURES`] (counters and gauges), in both.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use crate::api::reply::Reply;
use crate::api::state::Shared;
use crate::monitor::metrics::render;
use crate::monitor::{FIGURES, Gauges, Group, get};
use crate::outcome::OutcomeClass;

/// The gauges as they are now.
fn gauges(shared: &Shared) -> Gauges {
    let snapshot = shared.registry.snapshot();
    Gauges {
        queue: shared.delivery.queue(),
        webhooks: snapshot.webhooks().len() as u64,
        disconnected_webhooks: snapshot
            .webhooks()
            .iter()
            .filter(|w| w.disconnected)
            .count() as u64,
        redis_connected: shared.counters.redis_connected.load(Ordering::Relaxed),
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) fn metrics(shared: &Shared) -> Reply {
    let c = &shared.counters;
    let mut text = render(c, &c.durations, &gauges(shared));
    text.push_str(&shared.redis.status().prometheus());
    Reply::raw(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into_bytes(),
    )
}

/// The figures of `group`, in table order.
fn group(shared: &Shared, gauges: &Gauges, group: Group) -> Map<String, Value> {
    FIGURES
        .iter()
        .filter(|f| f.group == group)
        .map(|f| {
            let value = (f.read)(&shared.counters, gauges);
            (f.key.to_string(), Value::from(value))
        })
        .collect()
}

/// `GET /health`: 200 while Redis is reachable, 503 `degraded` otherwise.
pub(crate) fn health(shared: &Shared) -> Reply {
    let c = &shared.counters;
    let gauges = gauges(shared);
    let connected = gauges.redis_connected;
    let now = crate::time::now_ms();
    let active = shared
        .registry
        .snapshot()
        .webhooks()
        .iter()
        .filter(|w| w.active)
        .count();
    let mut events = group(shared, &gauges, Group::Events);
    events.insert("malformed_by_source".into(), json!(c.malformed_by_source()));
    let mut deliveries = group(shared, &gauges, Group::Deliveries);
    let attempts: Map<String, Value> = OutcomeClass::ALL
        .iter()
        .map(|o| (o.label().to_string(), Value::from(c.attempts(*o))))
        .collect();
    deliveries.insert("attempts".into(), Value::Object(attempts));
    let body = json!({
        "status": if connected { "ok" } else { "degraded" },
        "service": "webhook-service",
        "timestamp": crate::time::iso8601(now),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": shared.started.elapsed().as_secs(),
        "redis": shared.redis.status().health_json(connected),
        // The original's fields, with its names.
        "processor": {
            "active_webhooks": active,
            "total_webhooks": gauges.webhooks,
            "total_deliveries": get(&c.events_processed),
            "failed_deliveries": get(&c.events_failed),
            "workflow_tracking": {
                "total_tracked_workflows": 0,
                "workflows": [],
                "message": "Internal workflow tracking disabled - using Redis events exclusively",
            },
        },
        "queue": group(shared, &gauges, Group::Queue),
        "instance": shared.config.instance_id,
        "events": events,
        "deliveries": deliveries,
    });
    Reply::envelope(if connected { 200 } else { 503 }, body)
}
