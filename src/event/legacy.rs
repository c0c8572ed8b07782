//! The original's underscore event names and the exact `data` it delivered for them.
//!
//! Reference section 3.3 gives, per type, which keys the original copied and in which order; a
//! receiver that re-serialises the body to check the legacy signature needs those bytes exactly.
//! After them we append, under their source names, the fields the original lost by mistake
//! (reference B5, B6; CONTRACT section 6). Kinds the original never delivered (`cancel_job`,
//! `worker_status`, `machine_status`) have no legacy shape: their subscribers get canonical data.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{Event, EventKind, canonical};
use crate::json::Object;

/// JavaScript truthiness: everything but `null`, `false`, `0`, `NaN` and `""`.
pub(crate) fn truthy(value: &Value) -> bool {
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
        EventKind::JobSubmitted => job_submitted(event),
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
            // The message's own `timestamp` as it is, absent without one: unlike the envelope's,
            // it never falls back to the time of receipt.
            if let Some(timestamp) = f.get("timestamp") {
                data.insert("completed_at", Cow::Borrowed(timestamp));
            }
            data
        }
        EventKind::JobFailed => job_failed(event),
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
            // The event's timestamp, as in the envelope (reference section 3.3).
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

/// `job_submitted`: the job's type, `pending`, its priority (50 by default) and what it asked for.
fn job_submitted(event: &Event) -> Object<'_> {
    let f = &event.fields;
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
    // The original fell back to its event's timestamp here, which is the envelope's:
    // the message's, or the time of receipt.
    let submitted_at = f
        .get("created_at")
        .filter(|v| truthy(v))
        .unwrap_or(&event.timestamp);
    data.insert("submitted_at", Cow::Borrowed(submitted_at));
    data
}

/// `job_failed`: the error (`Unknown error` without one) and when it failed.
fn job_failed(event: &Event) -> Object<'_> {
    let f = &event.fields;
    let mut data = common(event, f.get("job_type"));
    let error = f
        .get("error")
        .filter(|v| truthy(v))
        .map_or_else(|| Cow::Owned(Value::from("Unknown error")), Cow::Borrowed);
    data.insert("error", error);
    // `failed_at || timestamp` of the message itself: the base worker's failures carry
    // neither, and had no `failed_at` in the original's bodies.
    let failed_at = f
        .get("failed_at")
        .filter(|v| truthy(v))
        .or_else(|| f.get("timestamp"));
    if let Some(failed_at) = failed_at {
        data.insert("failed_at", Cow::Borrowed(failed_at));
    }
    data
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse::parse;

    /// When the messages below are received (ms); it becomes the envelope's `timestamp`.
    const RECEIVED_MS: u64 = 1_759_579_999_999;

    /// (channel, a message without `timestamp`, the original's `data`; `{now}` stands for the
    /// time of receipt).
    const WITHOUT_TIMESTAMP: [(&str, &str, &str); 9] = [
        (
            "job_submitted",
            r#"{"job_id":"j1","service_required":"comfyui","priority":0,"payload":{"p":1},"customer_id":"c"}"#,
            r#"{"job_id":"j1","job_type":"comfyui","job_status":"pending","priority":50,"payload":{"p":1},"customer_id":"c","submitted_at":{now}}"#,
        ),
        (
            "job_submitted",
            r#"{"job_id":"j1","service_required":"comfyui","created_at":"2025-10-04T12:00:00.000Z"}"#,
            r#"{"job_id":"j1","job_type":"comfyui","job_status":"pending","priority":50,"submitted_at":"2025-10-04T12:00:00.000Z"}"#,
        ),
        (
            "update_job_progress",
            r#"{"job_id":"j1","worker_id":"w1","progress":10}"#,
            r#"{"job_id":"j1","worker_id":"w1","progress":10}"#,
        ),
        (
            "complete_job",
            r#"{"job_id":"j1","worker_id":"w1","result":{"ok":true}}"#,
            r#"{"job_id":"j1","worker_id":"w1","result":{"ok":true}}"#,
        ),
        // The base worker's shape: no `timestamp`, no `worker_id`, no `failed_at`.
        (
            "job_failed",
            r#"{"job_id":"j1","service_type":"comfyui","error":"boom","workflow_id":"wf"}"#,
            r#"{"job_id":"j1","workflow_id":"wf","error":"boom"}"#,
        ),
        (
            "job_failed",
            r#"{"job_id":"j1","error":"","failed_at":"2025-10-04T12:05:00.000Z"}"#,
            r#"{"job_id":"j1","error":"Unknown error","failed_at":"2025-10-04T12:05:00.000Z"}"#,
        ),
        (
            "workflow_submitted",
            r#"{"workflow_id":"wf","total_steps":2,"first_job_id":"j1"}"#,
            r#"{"workflow_id":"wf","total_steps":2,"first_job_id":"j1"}"#,
        ),
        (
            "workflow_completed",
            r#"{"workflow_id":"wf","status":"completed","verified":true}"#,
            r#"{"workflow_id":"wf","timestamp":{now},"status":"completed","verified":true}"#,
        ),
        (
            "workflow_failed",
            r#"{"workflow_id":"wf","worker_id":"w1","error":"boom","failed_at":5}"#,
            r#"{"worker_id":"w1","workflow_id":"wf","timestamp":{now},"error":"boom","failed_at":5}"#,
        ),
    ];

    fn legacy_data(channel: &str, message: &str, received_ms: u64) -> String {
        let parsed = parse(channel, message.as_bytes(), received_ms)
            .unwrap_or_else(|e| panic!("{channel}: {e}"));
        let event = parsed
            .events
            .iter()
            .find(|e| e.kind.legacy_name() == Some(channel))
            .unwrap_or_else(|| panic!("{channel}: no event of its own kind"));
        String::from_utf8_lossy(&data(event).to_vec()).into_owned()
    }

    #[test]
    fn messages_without_timestamp_keep_the_original_data() {
        for (channel, message, expected) in WITHOUT_TIMESTAMP {
            let expected = expected.replace("{now}", &RECEIVED_MS.to_string());
            assert_eq!(
                legacy_data(channel, message, RECEIVED_MS),
                expected,
                "{channel} {message}"
            );
        }
    }

    #[test]
    fn the_message_timestamp_is_copied_as_it_is() {
        for (channel, message, expected) in [
            (
                "complete_job",
                r#"{"job_id":"j1","timestamp":0}"#,
                r#"{"job_id":"j1","completed_at":0}"#,
            ),
            (
                "job_failed",
                r#"{"job_id":"j1","failed_at":"","timestamp":7}"#,
                r#"{"job_id":"j1","error":"Unknown error","failed_at":7}"#,
            ),
        ] {
            assert_eq!(
                legacy_data(channel, message, RECEIVED_MS),
                expected,
                "{channel} {message}"
            );
        }
    }
}
