//! The `data` of canonical (dotted-name) deliveries (CONTRACT section 6, "Canonical data").
//!
//! Identity fields first (`job_id`, `worker_id`, `machine_id`, `workflow_id`, when present), then
//! every other field of the source message as published. A few kinds are defined more narrowly:
//! `job.assigned` and `job.status_changed` have fixed shapes.

use serde_json::{Map, Value};

use super::{Event, EventKind};

const IDENTITY: [&str; 4] = ["job_id", "worker_id", "machine_id", "workflow_id"];

/// The canonical `data` for `event`.
pub fn data(event: &Event) -> Map<String, Value> {
    let f = &event.fields;
    match event.kind {
        EventKind::JobAssigned => {
            let mut data = Map::new();
            if let Some(job_id) = event.job_id() {
                data.insert("job_id".into(), Value::from(job_id));
            }
            if let Some(worker) = f.get("worker_id") {
                data.insert("worker_id".into(), worker.clone());
            }
            data.insert("timestamp".into(), event.timestamp.clone());
            data
        }
        EventKind::JobStatusChanged => {
            let mut data = Map::new();
            if let Some(job_id) = event.job_id() {
                data.insert("job_id".into(), Value::from(job_id));
            }
            if let Some(status) = &event.new_status {
                data.insert("new_status".into(), Value::from(status.as_str()));
            }
            if let Some(old) = &event.old_status {
                data.insert("old_status".into(), Value::from(old.as_str()));
            }
            if let Some(worker) = f.get("worker_id").filter(|v| !v.is_null()) {
                data.insert("worker_id".into(), worker.clone());
            }
            data.insert("timestamp".into(), event.timestamp.clone());
            data
        }
        _ => {
            let mut data = Map::with_capacity(f.len() + 2);
            for key in IDENTITY {
                if let Some(v) = f.get(key) {
                    data.insert(key.to_string(), v.clone());
                } else if key == "machine_id"
                    && let Some(id) = event.machine_id()
                {
                    // machine.* events may carry the id only inside machine_config.
                    data.insert(key.to_string(), Value::from(id));
                }
            }
            if event.kind == EventKind::JobSubmitted
                && let Some(job_type) = event.job_type()
            {
                data.insert("job_type".into(), Value::from(job_type));
            }
            for (key, value) in f {
                if !data.contains_key(key) {
                    data.insert(key.clone(), value.clone());
                }
            }
            if event.kind == EventKind::JobSubmitted && !data.contains_key("priority") {
                data.insert("priority".into(), Value::from(50));
            }
            data
        }
    }
}
