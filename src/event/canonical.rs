//! The `data` of canonical (dotted-name) deliveries (CONTRACT section 6, "Canonical data").
//!
//! Identity fields first (`job_id`, `worker_id`, `machine_id`, `workflow_id`, when present), then
//! every other field of the source message as published. A few kinds are defined more narrowly:
//! `job.assigned` and `job.status_changed` have fixed shapes.

use std::borrow::Cow;

use serde_json::Value;

use super::{Event, EventKind};
use crate::json::Object;

const IDENTITY: [&str; 4] = ["job_id", "worker_id", "machine_id", "workflow_id"];

/// The canonical `data` for `event`.
pub fn data(event: &Event) -> Object<'_> {
    let f = &event.fields;
    let mut data = Object::default();
    match event.kind {
        EventKind::JobAssigned => {
            if let Some(job_id) = event.job_id() {
                data.insert("job_id", Cow::Owned(Value::from(job_id)));
            }
            if let Some(worker) = f.get("worker_id") {
                data.insert("worker_id", Cow::Borrowed(worker));
            }
            data.insert("timestamp", Cow::Borrowed(&event.timestamp));
        }
        EventKind::JobStatusChanged => {
            if let Some(job_id) = event.job_id() {
                data.insert("job_id", Cow::Owned(Value::from(job_id)));
            }
            if let Some(status) = &event.new_status {
                data.insert("new_status", Cow::Owned(Value::from(status.as_str())));
            }
            if let Some(old) = &event.old_status {
                data.insert("old_status", Cow::Owned(Value::from(old.as_str())));
            }
            if let Some(worker) = f.get("worker_id").filter(|v| !v.is_null()) {
                data.insert("worker_id", Cow::Borrowed(worker));
            }
            data.insert("timestamp", Cow::Borrowed(&event.timestamp));
        }
        _ => {
            for key in IDENTITY {
                if let Some(v) = f.get(key) {
                    data.insert(key, Cow::Borrowed(v));
                } else if key == "machine_id"
                    && let Some(id) = event.machine_id()
                {
                    // machine.* events may carry the id only inside machine_config.
                    data.insert(key, Cow::Owned(Value::from(id)));
                }
            }
            if event.kind == EventKind::JobSubmitted
                && let Some(job_type) = event.job_type()
            {
                data.insert("job_type", Cow::Owned(Value::from(job_type)));
            }
            // The message's own keys are unique: each need only be checked against the few
            // put first.
            let head = data.len();
            for (key, value) in f {
                if !data.first_contain(head, key) {
                    data.push_new(key.as_str(), Cow::Borrowed(value));
                }
            }
            if event.kind == EventKind::JobSubmitted && !data.contains_key("priority") {
                data.push_new("priority", Cow::Owned(Value::from(50)));
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse::parse;

    fn text(channel: &str, message: &str) -> String {
        let parsed = parse(channel, message.as_bytes(), 1).unwrap_or_default();
        let event = &parsed.events[0];
        String::from_utf8(data(event).to_vec()).unwrap_or_default()
    }

    #[test]
    fn identity_first_then_the_message_in_order_each_key_once() {
        assert_eq!(
            text(
                "job_submitted",
                r#"{"x":{"deep":[1,2.5]},"worker_id":"w","job_id":"j","job_type":"t","y":null}"#
            ),
            r#"{"job_id":"j","worker_id":"w","job_type":"t","x":{"deep":[1,2.5]},"y":null,"priority":50}"#
        );
        assert_eq!(
            text("job_submitted", r#"{"priority":7,"job_id":"j"}"#),
            r#"{"job_id":"j","priority":7}"#
        );
        assert_eq!(
            text(
                "complete_job",
                r#"{"result":{"ok":true},"job_id":"j","timestamp":5}"#
            ),
            r#"{"job_id":"j","result":{"ok":true},"timestamp":5}"#
        );
    }
}
