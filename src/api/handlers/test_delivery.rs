//! `POST /webhooks/:id/test`: one real, signed delivery per exact entry of `events` (a pattern
//! entry sends one `webhook.test`), made now on the delivery threads, and its real outcome
//! reported (the original always said "sent successfully", reference B10).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::super::reply::Reply;
use super::super::state::Shared;
use super::webhooks::{invalid, store_failed};
use crate::delivery::Delivery;
use crate::event::EventKind;
use crate::json as js;
use crate::time::now_ms;
use crate::webhook::ids;
use crate::webhook::model::{EventNames, Subscription, Webhook};
use crate::webhook::store;

/// `POST /webhooks/:id/test`.
pub(crate) fn test(shared: &Shared, id: &str) -> Reply {
    let stored = match store::get(&shared.redis, id) {
        Ok(Some(w)) => w,
        Ok(None) => return Reply::webhook_not_found(),
        Err(e) => return store_failed("read a webhook", &e),
    };
    let webhook = match Webhook::from_json(id, &Value::Object(stored), EventNames::Lenient) {
        Ok(w) => w,
        Err(e) => return invalid(&e),
    };
    let now = now_ms();
    let deliveries: Vec<Delivery> = webhook
        .subscriptions
        .iter()
        .map(|subscription| test_delivery(id, subscription, now))
        .collect();
    let webhook = Arc::new(webhook);
    let outcomes = shared.delivery.test(webhook.clone(), deliveries.clone());
    let all_delivered = !outcomes.is_empty() && outcomes.iter().all(|o| o.delivered);
    let results: Vec<Value> = deliveries
        .iter()
        .zip(outcomes)
        .map(|(delivery, outcome)| {
            json!({
                "event_type": &*delivery.event_type,
                "delivered": outcome.delivered,
                "status_code": outcome.status,
                "response_time_ms": outcome.response_time_ms,
                "error": outcome.error,
            })
        })
        .collect();
    let data = json!({"delivered": all_delivered, "results": results});
    if all_delivered {
        Reply::data_with(
            200,
            data,
            &[("message", Value::from("Test webhook sent successfully"))],
        )
    } else {
        let first_error = results
            .iter()
            .find(|r| r["delivered"] == false)
            .and_then(|r| r["error"].as_str())
            .unwrap_or("no test delivery could be made")
            .to_string();
        Reply::envelope(
            200,
            json!({"success": false, "error": format!("Test delivery failed: {first_error}"), "data": data}),
        )
    }
}

/// The test delivery of one `events` entry: a pattern entry sends one `webhook.test`.
fn test_delivery(id: &str, subscription: &Subscription, now: u64) -> Delivery {
    let (event_type, kind) = match subscription {
        Subscription::Canonical(k) => (k.name(), Some(*k)),
        Subscription::Legacy(k) => (k.legacy_name().unwrap_or(k.name()), Some(*k)),
        Subscription::All | Subscription::Prefix(_) => ("webhook.test", None),
    };
    let event_id = format!("test_wh_{now}_{}_{event_type}", ids::random_base36(9));
    let mut body = Map::new();
    body.insert("event_type".into(), Value::from(event_type));
    body.insert("event_id".into(), Value::from(event_id.as_str()));
    body.insert("timestamp".into(), Value::from(now));
    body.insert("webhook_id".into(), Value::from(id));
    body.insert("data".into(), sample(kind, event_type, now));
    body.insert(
        "metadata".into(),
        json!({"original_timestamp": now, "test_event": true}),
    );
    Delivery {
        webhook_id: Arc::from(id),
        event_id,
        event_type: Arc::from(event_type),
        kind: kind.unwrap_or(EventKind::JobCompleted),
        body: Arc::from(js::object_to_vec(&body)),
        attempts: 1,
        created_ms: now,
        // A test delivery belongs to no job's line and carries no sequence.
        job: None,
        sequence: None,
    }
}

/// Example `data` for a test delivery of `kind`.
fn sample(kind: Option<EventKind>, event_type: &str, now: u64) -> Value {
    let job = format!("test_job_{now}");
    match kind {
        Some(EventKind::JobSubmitted) => {
            json!({"job_id": job, "job_type": "comfyui", "priority": 50, "payload": {}, "job_status": "pending", "submitted_at": now})
        }
        Some(EventKind::JobAssigned) => {
            json!({"job_id": job, "worker_id": "test_worker", "timestamp": now})
        }
        Some(EventKind::JobProgress) => {
            json!({"job_id": job, "worker_id": "test_worker", "progress": 45, "message": "test progress", "status": "in_progress"})
        }
        Some(EventKind::JobCompleted) => {
            json!({"job_id": job, "worker_id": "test_worker", "result": {"test": true}, "completed_at": now})
        }
        Some(EventKind::JobFailed) => {
            json!({"job_id": job, "worker_id": "test_worker", "error": "test failure", "failed_at": now})
        }
        Some(EventKind::JobCancelled) => {
            json!({"job_id": job, "worker_id": "test_worker", "reason": "test cancellation", "timestamp": now})
        }
        Some(EventKind::JobStatusChanged) => {
            json!({"job_id": job, "new_status": "in_progress", "old_status": "assigned", "timestamp": now})
        }
        Some(k) if k.name().starts_with("worker.") => {
            json!({"worker_id": "test_worker", "machine_id": "test_machine", "timestamp": now})
        }
        Some(k) if k.name().starts_with("machine.") => {
            json!({"machine_id": "test_machine", "timestamp": now})
        }
        Some(_) => json!({"workflow_id": format!("test_workflow_{now}"), "timestamp": now}),
        None => {
            json!({"job_id": job, "test_event_type": event_type, "message": "This is a test webhook delivery"})
        }
    }
}
