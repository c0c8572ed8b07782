//! Dead letters (CONTRACT section 6): deliveries that used up their attempts, kept with their
//! payload and last error, listed and redelivered (same `event_id`, same body).

use log::{error, info};
use redis::Commands;
use serde_json::{Value, json};

use super::super::reply::Reply;
use super::super::server::Call;
use super::limit;
use crate::app::Shared;
use crate::delivery::durable::DurableError;
use crate::keys;

fn failed(what: &str, e: &DurableError) -> Reply {
    error!("could not {what}: {e}");
    Reply::unavailable()
}

/// `GET /dead-letters?webhook_id=&limit=` (default 100, at most 1000).
pub fn list(shared: &Shared, call: &Call) -> Reply {
    let limit = match limit(call, 100, 1000) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let webhook = call.query("webhook_id").filter(|w| !w.is_empty());
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
pub fn redeliver(shared: &Shared, call: &Call) -> Reply {
    let id = call.param(0);
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
pub fn recover(shared: &Shared, call: &Call) -> Reply {
    let id = call.param(0);
    let since = match call.query("since").map(str::parse::<u64>) {
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
