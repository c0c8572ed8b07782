//! The original's underscore event names and the exact `data` it delivered for them.
//!
//! Reference section 3.3 gives, per type, which keys the original copied and in which order; a
//! receiver that re-serialises the body to check the legacy signature needs those bytes exactly.
//! After them we append, under their source names, the fields the original lost by mistake
//! (reference B5, B6; CONTRACT section 6). Kinds the original never delivered (`cancel_job`,
//! `worker_status`, `machine_status`) have no legacy shape: their subscribers get canonical data.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::json::Object;
use super::{Event, EventKind, canonical};

/// JavaScript truthiness: everything but `null`, `false`, `0`, `NaN` and `""`.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The `data` the original delivered for `event` under its legacy name.
pub fn data(event: &Event) -> Object<'_> {
    let f = &event.fields;
    match event.kind {
        EventKind::JobSubmitted => {
            let job_type = f
                .get("service_required")
                .filter(|v| truthy(v))
                .or_else(|| f.get("job_type"));
            let mut data = common(event, job_type);
            data.insert("job_status", Cow::Owned(Value::from("pending")));
            let priority = f
                .get("priority")
                .filter(|v| truthy(v))
                .map_or_else(|| Cow::Owned(Value::from(50)), Cow::Borrowed);
            data.insert("priority", priority);
            copy(&mut data, f, &["payload", "requirements", "customer_id"]);
            let submitted_at = f
                .get("created_at")
                .filter(|v| truthy(v))
                .unwrap_or(&event.timestamp);
            data.insert("submitted_at", Cow::Borrowed(submitted_at));
            data
        }
        EventKind::JobProgress => {
            let mut data = common(event, f.get("job_type"));
            let progress = f
                .get("progress")
                .filter(|v| truthy(v))
                .map_or_else(|| Cow::Owned(Value::from(0)), Cow::Borrowed);
            data.insert("progress", progress);
            copy(&mut data, f, &["stage"]);
            // B6: the original dropped these although its own test payload shows them.
            copy(&mut data, f, &["message", "status", "estimated_completion"]);
            data
        }
        EventKind::JobCompleted => {
            let mut data = common(event, f.get("job_type"));
            copy(&mut data, f, &["result"]);
            data.insert("completed_at", Cow::Borrowed(&event.timestamp));
            data
        }
        EventKind::JobFailed => {
            let mut data = common(event, f.get("job_type"));
            let error = f
                .get("error")
                .filter(|v| truthy(v))
                .map_or_else(|| Cow::Owned(Value::from("Unknown error")), Cow::Borrowed);
            data.insert("error", error);
            let failed_at = f
                .get("failed_at")
                .filter(|v| truthy(v))
                .unwrap_or(&event.timestamp);
            data.insert("failed_at", Cow::Borrowed(failed_at));
            data
        }
        EventKind::WorkflowSubmitted => {
            let mut data = common(event, None);
            // B6: the original kept only the common part.
            copy(
                &mut data,
                f,
                &[
                    "first_job_id",
                    "customer_id",
                    "service_required",
                    "workflow_type",
                    "message",
                ],
            );
            data
        }
        EventKind::WorkflowCompleted => {
            let mut data = Object::default();
            copy(&mut data, f, &["workflow_id"]);
            data.insert("timestamp", Cow::Borrowed(&event.timestamp));
            copy(
                &mut data,
                f,
                &[
                    "status",
                    "completed_at",
                    "verified",
                    "message",
                    "workflow_details",
                ],
            );
            // B5: the original meant to deliver outputs and never did.
            copy(&mut data, f, &["outputs"]);
            data
        }
        EventKind::WorkflowFailed => {
            let mut data = Object::default();
            copy(&mut data, f, &["worker_id", "workflow_id", "total_steps"]);
            data.insert("timestamp", Cow::Borrowed(&event.timestamp));
            copy(
                &mut data,
                f,
                &[
                    "failed_job_id",
                    "failed_at_step",
                    "error",
                    "failed_at",
                    "workflow_type",
                    "message",
                ],
            );
            data
        }
        _ => canonical::data(event),
    }
}

/// The original's common part: these keys, in this order, each only when truthy.
fn common<'a>(event: &'a Event, job_type: Option<&'a Value>) -> Object<'a> {
    let f = &event.fields;
    let mut data = Object::default();
    let mut put = |key: &'static str, value: Option<&'a Value>| {
        if let Some(v) = value.filter(|v| truthy(v)) {
            data.insert(key, Cow::Borrowed(v));
        }
    };
    put("job_id", f.get("job_id"));
    put("job_type", job_type);
    for key in [
        "worker_id",
        "machine_id",
        "workflow_id",
        "workflow_priority",
        "workflow_datetime",
        "total_steps",
        "current_step",
    ] {
        put(key, f.get(key));
    }
    data
}

/// Copies the keys present in `from` (JSON.stringify drops only `undefined`, so `null` stays).
fn copy<'a>(data: &mut Object<'a>, from: &'a Map<String, Value>, keys: &[&'static str]) {
    for key in keys {
        if let Some(v) = from.get(*key) {
            data.insert(*key, Cow::Borrowed(v));
        }
    }
}
