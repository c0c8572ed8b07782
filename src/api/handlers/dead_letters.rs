//! Dead letters (CONTRACT section 6): deliveries that used up their attempts, kept with their
//! payload and last error, listed and redelivered (same `event_id`, same body).

use log::{error, info};
use redis::Commands;
use serde_json::{Value, json};

use super::super::reply::Reply;
use super::super::request::Query;
use super::super::state::Shared;
use super::limit;
use crate::keys;

fn failed(what: &str, e: &impl std::fmt::Display) -> Reply {
    error!("could not {what}: {e}");
    Reply::unavailable()
}

/// `GET /dead-letters?webhook_id=&limit=` (default 100, at most 1000).
pub(crate) fn list(shared: &Shared, query: &Query) -> Reply {
    let limit = match limit(query, 100, 1000) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let webhook = query.get("webhook_id").filter(|w| !w.is_empty());
    match shared.delivery.dead_letters(webhook, limit) {
        Ok(letters) => {
            let data: Vec<Value> = letters.iter().map(view).collect();
            let count = data.len();
            Reply::data_with(200, Value::from(data), &[("count", Value::from(count))])
        }
        Err(e) => failed("list dead letters", &e),
    }
}

/// `POST /dead-letters/:id/redeliver` → 202.
pub(crate) fn redeliver(shared: &Shared, id: &str) -> Reply {
    match shared.delivery.redeliver(id) {
        Ok(Some(letter)) => {
            info!("dead letter {id} queued for redelivery");
            Reply::data(202, view(&letter))
        }
        Ok(None) => Reply::error(404, "Dead letter not found"),
        Err(e) => failed("redeliver a dead letter", &e),
    }
}

/// `POST /webhooks/:id/recover?since=<ms>` → 202 `{requeued}`.
pub(crate) fn recover(shared: &Shared, id: &str, query: &Query) -> Reply {
    let since = match query.get("since").map(str::parse::<u64>) {
        Some(Ok(ms)) => ms,
        Some(Err(_)) => {
            return Reply::envelope(
                400,
                json!({"success": false, "error": "since must be a time in ms since the epoch", "field": "since"}),
            );
        }
        None => {
            return Reply::envelope(
                400,
                json!({"success": false, "error": "since is required", "field": "since"}),
            );
        }
    };
    match shared
        .redis
        .with(|conn| conn.hexists::<_, _, bool>(keys::REGISTRY, id))
    {
        Ok(true) => {}
        Ok(false) => return Reply::webhook_not_found(),
        Err(e) => {
            error!("could not read a webhook: {e}");
            return Reply::unavailable();
        }
    }
    match shared.delivery.recover(id, since) {
        Ok(requeued) => {
            info!("webhook {id}: {requeued} dead letters since {since} queued for redelivery");
            Reply::data(202, json!({"requeued": requeued}))
        }
        Err(e) => failed("recover dead letters", &e),
    }
}

/// `{id, webhook_id, event_id, event_type, failed_at, attempts, last_status, last_error}` of a
/// stored dead letter, as the API lists it.
fn view(letter: &Value) -> Value {
    json!({
        "id": letter["id"],
        "webhook_id": letter["webhook_id"],
        "event_id": letter["event_id"],
        "event_type": letter["event_type"],
        "failed_at": letter["failed_at"],
        "attempts": letter["attempts"],
        "last_status": letter["last_status"],
        "last_error": letter["last_error"],
    })
}
