//! Statistics and history: per webhook, a summary, and the global delivery log.

use log::error;
use redis::Commands;
use serde_json::{Value, json};

use super::super::reply::Reply;
use super::super::request::Query;
use super::super::state::Shared;
use super::limit;
use crate::keys;
use crate::monitor::{get, history};

/// Whether the webhook exists; `Err` carries the reply for "no" or a Redis failure.
fn exists(shared: &Shared, id: &str) -> Result<(), Reply> {
    match shared
        .redis
        .with(|conn| conn.hexists::<_, _, bool>(keys::REGISTRY, id))
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Reply::webhook_not_found()),
        Err(e) => Err(redis_failed("read a webhook", &e)),
    }
}

fn redis_failed(what: &str, e: &redis::RedisError) -> Reply {
    error!("could not {what}: {e}");
    Reply::unavailable()
}

/// `GET /webhooks/:id/stats` (404 for an unknown id, unlike the original, B10).
pub(crate) fn webhook_stats(shared: &Shared, id: &str) -> Reply {
    if let Err(reply) = exists(shared, id) {
        return reply;
    }
    match history::stats(&shared.redis, id) {
        Ok(mut stats) => {
            let queue = shared.delivery.queue();
            stats.insert("retry_queue_size".into(), Value::from(queue.retry_backlog));
            stats.insert("pending_deliveries".into(), Value::from(queue.depth));
            Reply::data(200, Value::Object(stats))
        }
        Err(e) => redis_failed("read stats", &e),
    }
}

/// `GET /webhooks/:id/deliveries?limit=N` (default 50, at most 100).
pub(crate) fn webhook_deliveries(shared: &Shared, id: &str, query: &Query) -> Reply {
    let limit = match limit(query, 50, keys::ATTEMPTS_KEPT as usize) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    if let Err(reply) = exists(shared, id) {
        return reply;
    }
    let attempts = history::attempts(&shared.redis, id, limit);
    let total = history::attempts_len(&shared.redis, id);
    match (attempts, total) {
        (Ok(attempts), Ok(total)) => Reply::data_with(
            200,
            json!({"webhook_id": id, "attempts": attempts, "total_count": total}),
            &[("limit", Value::from(limit))],
        ),
        (Err(e), _) | (_, Err(e)) => redis_failed("read deliveries", &e),
    }
}

/// `GET /deliveries/recent?limit=N` (default 100, at most 1000).
pub(crate) fn recent(shared: &Shared, query: &Query) -> Reply {
    let limit = match limit(query, 100, keys::LOG_KEPT as usize) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    match history::recent(&shared.redis, limit) {
        Ok(entries) => {
            Reply::data_with(200, Value::from(entries), &[("limit", Value::from(limit))])
        }
        Err(e) => redis_failed("read the delivery log", &e),
    }
}

/// `GET /stats/summary`: real totals over every webhook (the original's were hard-coded 0, B15).
pub(crate) fn summary(shared: &Shared) -> Reply {
    let ids: Vec<String> = match shared.redis.with(|conn| conn.hkeys(keys::REGISTRY)) {
        Ok(ids) => ids,
        Err(e) => return redis_failed("list webhooks", &e),
    };
    let active: u64 = match shared.redis.with(|conn| conn.scard(keys::ACTIVE)) {
        Ok(n) => n,
        Err(e) => return redis_failed("count active webhooks", &e),
    };
    let all = match history::stats_many(&shared.redis, &ids) {
        Ok(all) => all,
        Err(e) => return redis_failed("read stats", &e),
    };
    let sum = |field: &str| -> u64 { all.iter().filter_map(|s| s[field].as_u64()).sum() };
    let (total, ok, failed) = (
        sum("total_deliveries"),
        sum("successful_deliveries"),
        sum("failed_deliveries"),
    );
    let success_rate = if total == 0 {
        0.0
    } else {
        (ok as f64 * 10_000.0 / total as f64).round() / 100.0
    };
    let midnight = crate::time::now_ms() / 86_400_000 * 86_400_000;
    let today = match history::log_counts_since(&shared.redis, midnight) {
        Ok(counts) => counts,
        Err(e) => return redis_failed("read the delivery log", &e),
    };
    let c = &shared.counters;
    let queue = shared.delivery.queue();
    Reply::data(
        200,
        json!({
            "delivery_stats": {
                "total_deliveries": total,
                "successful_deliveries": ok,
                "failed_deliveries": failed,
                "success_rate": success_rate,
                "total_events": sum("total_events"),
                "successful_events": sum("successful_events"),
                "failed_events": sum("failed_events"),
                "retry_queue_size": queue.retry_backlog,
                "pending_deliveries": queue.depth,
            },
            "webhook_summary": {
                "total_webhooks": ids.len(),
                "active_webhooks": active,
                "total_deliveries_today": today.0,
                "successful_deliveries_today": today.1,
                "failed_deliveries_today": today.2,
            },
            "event_processing": {
                "totalEvents": get(&c.events_received),
                "processedEvents": get(&c.events_processed),
                "skippedEvents": get(&c.events_skipped),
                "failedEvents": get(&c.events_failed) + get(&c.events_malformed),
            },
        }),
    )
}
