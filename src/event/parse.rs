//! Source message (channel, bytes) → events. Pure: no I/O, no clock, no state.
//!
//! Which channel means what is CONTRACT section 1. `job.status_changed` needs the job's previous
//! status, which is state, so this module only reports a [`StatusHint`]; the intake's job tracker
//! turns it into an event.

use std::fmt;

use serde_json::{Map, Value};

use super::{Event, EventKind, id_string, identity_hash};
use crate::json;

/// Channels read with SUBSCRIBE.
pub(crate) const CHANNELS: [&str; 14] = [
    "job_submitted",
    "update_job_progress",
    "complete_job",
    "job_failed",
    "cancel_job",
    "worker_status",
    "workflow_submitted",
    "workflow_completed",
    "workflow_failed",
    "worker:events",
    "machine:startup:events",
    "job.events",
    "worker.events",
    "machine.events",
];

/// Channel patterns read with PSUBSCRIBE (their messages arrive as `pmessage`).
pub(crate) const PATTERNS: [&str; 1] = ["machine:status:*"];

/// Prefix of the machine status channels matched by [`PATTERNS`].
const MACHINE_STATUS_PREFIX: &str = "machine:status:";

/// The broker's re-publish markers, which never make a message a different event (reference B11).
const RETRY_MARKERS: [&str; 2] = ["retry_verification", "retry_attempt"];

/// What one source message yields.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The events, in the order they happened.
    pub events: Vec<Event>,
    /// The job lifecycle step this message reports, if any.
    pub(crate) status: Option<StatusHint>,
}

/// A job moved to a new status; the job tracker knows the previous one.
#[derive(Debug, Clone)]
pub(crate) struct StatusHint {
    /// The job.
    pub(crate) job_id: String,
    /// Its new status: pending, assigned, in_progress, completed, failed or cancelled.
    pub(crate) new_status: &'static str,
    /// The worker, when the message names one.
    pub(crate) worker_id: Option<Value>,
    /// The job type, when the message names one (submissions do).
    pub(crate) job_type: Option<String>,
    /// The priority, when the message has one (submissions do).
    pub(crate) priority: Option<Value>,
    /// The message that reported the step, for the derived event's identity and timestamp.
    pub(crate) source: Event,
}

/// Why a message could not be turned into events.
#[derive(Debug)]
pub enum ParseError {
    /// The payload is not JSON.
    NotJson(serde_json::Error),
    /// The payload is JSON but not an object.
    NotObject,
    /// A field the event needs is absent or empty.
    Missing(&'static str),
    /// A type discriminator has a value we do not know.
    UnknownType {
        /// The discriminating field (`type` or `event_type`).
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The channel is not one we read.
    UnknownChannel,
}

impl ParseError {
    /// A short, stable name for the kind of problem (for counting and log-once).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ParseError::NotJson(_) => "not_json",
            ParseError::NotObject => "not_object",
            ParseError::Missing(_) => "missing_field",
            ParseError::UnknownType { .. } => "unknown_type",
            ParseError::UnknownChannel => "unknown_channel",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotJson(e) => write!(f, "message is not JSON: {e}"),
            ParseError::NotObject => write!(f, "message is not a JSON object"),
            ParseError::Missing(field) => write!(f, "message lacks `{field}`"),
            ParseError::UnknownType { field, value } => {
                write!(f, "unknown `{field}` {value:?}")
            }
            ParseError::UnknownChannel => write!(f, "channel is not one this service reads"),
        }
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ParseError::NotJson(e) => Some(e),
            _ => None,
        }
    }
}

/// Parses one message received on `channel` at `received_ms`.
pub fn parse(channel: &str, payload: &[u8], received_ms: u64) -> Result<Parsed, ParseError> {
    let value: Value = serde_json::from_slice(payload).map_err(ParseError::NotJson)?;
    let Value::Object(mut fields) = value else {
        return Err(ParseError::NotObject);
    };
    for marker in RETRY_MARKERS {
        fields.shift_remove(marker);
    }
    let message = Message {
        channel,
        received_ms,
        bytes: std::cell::OnceCell::new(),
    };
    match channel {
        "job_submitted" => message.job(fields, EventKind::JobSubmitted, Some("pending")),
        "update_job_progress" => message.job(fields, EventKind::JobProgress, Some("in_progress")),
        "complete_job" => message.job(fields, EventKind::JobCompleted, Some("completed")),
        "job_failed" => message.job(fields, EventKind::JobFailed, Some("failed")),
        "cancel_job" => message.job(fields, EventKind::JobCancelled, Some("cancelled")),
        "worker_status" => message.worker_status(fields),
        "workflow_submitted" => message.workflow(fields, EventKind::WorkflowSubmitted),
        "workflow_completed" => message.workflow(fields, EventKind::WorkflowCompleted),
        "workflow_failed" => message.workflow(fields, EventKind::WorkflowFailed),
        "worker:events" => message.worker_event(fields),
        "machine:startup:events" => message.machine_startup(fields),
        "job.events" | "worker.events" | "machine.events" => message.typed(fields),
        _ if channel.starts_with(MACHINE_STATUS_PREFIX) => message.machine_status(fields),
        _ => Err(ParseError::UnknownChannel),
    }
}

/// A copy of `event` without its fields: what a derived `job.status_changed` takes from the
/// message that reported the step (it has fields of its own).
fn without_fields(event: &Event) -> Event {
    Event {
        kind: event.kind,
        source: event.source.clone(),
        fields: Map::new(),
        timestamp: event.timestamp.clone(),
        timestamp_ms: event.timestamp_ms,
        identity: event.identity,
        new_status: event.new_status.clone(),
        old_status: event.old_status.clone(),
        known_job_type: event.known_job_type.clone(),
        known_priority: event.known_priority.clone(),
    }
}

struct Message<'a> {
    channel: &'a str,
    received_ms: u64,
    /// The message without retry markers, serialised: the identity of most events (written when
    /// first needed: job and workflow events are identified by their id instead).
    bytes: std::cell::OnceCell<Vec<u8>>,
}

impl Message<'_> {
    fn event(&self, kind: EventKind, fields: Map<String, Value>) -> Event {
        let (timestamp, timestamp_ms) = match fields.get("timestamp") {
            Some(v) if super::legacy::truthy(v) => {
                let ms = v
                    .as_u64()
                    .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .unwrap_or(self.received_ms);
                (v.clone(), ms)
            }
            _ => (Value::from(self.received_ms), self.received_ms),
        };
        let name = kind.name().as_bytes();
        let identity = match kind {
            EventKind::JobSubmitted | EventKind::JobCompleted | EventKind::JobCancelled => {
                let id = fields.get("job_id").and_then(id_string).unwrap_or_default();
                identity_hash(&[name, id.as_bytes()])
            }
            EventKind::WorkflowSubmitted
            | EventKind::WorkflowCompleted
            | EventKind::WorkflowFailed => {
                let id = fields
                    .get("workflow_id")
                    .and_then(id_string)
                    .unwrap_or_default();
                identity_hash(&[name, id.as_bytes()])
            }
            _ => identity_hash(&[
                name,
                self.bytes.get_or_init(|| json::object_to_vec(&fields)),
            ]),
        };
        Event {
            kind,
            source: self.channel.to_string(),
            fields,
            timestamp,
            timestamp_ms,
            identity,
            new_status: None,
            old_status: None,
            known_job_type: None,
            known_priority: None,
        }
    }

    fn job(
        &self,
        fields: Map<String, Value>,
        kind: EventKind,
        new_status: Option<&'static str>,
    ) -> Result<Parsed, ParseError> {
        let job_id = require(&fields, "job_id")?;
        let event = self.event(kind, fields);
        let status = new_status.map(|new_status| StatusHint {
            job_id,
            new_status,
            worker_id: event.fields.get("worker_id").cloned(),
            job_type: match kind {
                EventKind::JobSubmitted => event.job_type(),
                _ => None,
            },
            priority: match kind {
                EventKind::JobSubmitted => event.priority(),
                _ => None,
            },
            source: without_fields(&event),
        });
        Ok(Parsed {
            events: vec![event],
            status,
        })
    }

    fn worker_status(&self, fields: Map<String, Value>) -> Result<Parsed, ParseError> {
        require(&fields, "worker_id")?;
        let busy_with = match fields.get("new_status") {
            Some(Value::String(s)) if s == "busy" => {
                fields.get("current_job_id").and_then(id_string)
            }
            _ => None,
        };
        let mut parsed = Parsed::default();
        if let Some(job_id) = busy_with {
            let assigned = self.event(EventKind::JobAssigned, fields.clone());
            parsed.status = Some(StatusHint {
                job_id,
                new_status: "assigned",
                worker_id: fields.get("worker_id").cloned(),
                job_type: None,
                priority: None,
                source: without_fields(&assigned),
            });
            parsed.events.push(assigned);
        }
        parsed
            .events
            .insert(0, self.event(EventKind::WorkerStatusChanged, fields));
        Ok(parsed)
    }

    fn workflow(&self, fields: Map<String, Value>, kind: EventKind) -> Result<Parsed, ParseError> {
        require(&fields, "workflow_id")?;
        Ok(self.single(kind, fields))
    }

    fn worker_event(&self, fields: Map<String, Value>) -> Result<Parsed, ParseError> {
        let kind = match discriminator(&fields, "type")? {
            "worker_connected" => EventKind::WorkerConnected,
            "worker_disconnected" => EventKind::WorkerDisconnected,
            other => return Err(unknown("type", other)),
        };
        require(&fields, "worker_id")?;
        Ok(self.single(kind, fields))
    }

    fn machine_startup(&self, fields: Map<String, Value>) -> Result<Parsed, ParseError> {
        let kind = match discriminator(&fields, "event_type")? {
            "startup_complete" => EventKind::MachineStartupComplete,
            "shutdown" => EventKind::MachineShutdown,
            // Steps of a start-up that no webhook event describes: understood, nothing to deliver.
            "startup_begin" | "startup_step" | "startup_failed" => return Ok(Parsed::default()),
            other => return Err(unknown("event_type", other)),
        };
        let event = self.event(kind, fields);
        if event.machine_id().is_none() {
            return Err(ParseError::Missing("machine_id"));
        }
        Ok(Parsed {
            events: vec![event],
            status: None,
        })
    }

    fn machine_status(&self, mut fields: Map<String, Value>) -> Result<Parsed, ParseError> {
        let from_channel = &self.channel[MACHINE_STATUS_PREFIX.len()..];
        if fields.get("machine_id").and_then(id_string).is_none() {
            if from_channel.is_empty() {
                return Err(ParseError::Missing("machine_id"));
            }
            fields.insert("machine_id".into(), Value::from(from_channel));
        }
        Ok(self.single(EventKind::MachineStatusChanged, fields))
    }

    /// The v1 channels `job.events`, `worker.events`, `machine.events` (reference 3.4).
    fn typed(&self, fields: Map<String, Value>) -> Result<Parsed, ParseError> {
        let kind = match discriminator(&fields, "type")? {
            "job_submitted" => EventKind::JobSubmitted,
            "job_assigned" => EventKind::JobAssigned,
            "job_progress" | "update_job_progress" => EventKind::JobProgress,
            "job_completed" | "complete_job" => EventKind::JobCompleted,
            "job_failed" => EventKind::JobFailed,
            "job_status_changed" => EventKind::JobStatusChanged,
            "worker_connected" => EventKind::WorkerConnected,
            "worker_disconnected" => EventKind::WorkerDisconnected,
            "machine_startup_complete" => EventKind::MachineStartupComplete,
            "machine_shutdown" => EventKind::MachineShutdown,
            other => return Err(unknown("type", other)),
        };
        let mut flat = Map::with_capacity(fields.len() + 8);
        let mut nested = None;
        for (key, value) in fields {
            match key.as_str() {
                "type" => {}
                "data" => nested = Some(value),
                _ => {
                    flat.insert(key, value);
                }
            }
        }
        if let Some(Value::Object(data)) = nested {
            for (key, value) in data {
                flat.entry(key).or_insert(value);
            }
        }
        let needed = if kind.is_job() {
            "job_id"
        } else if kind.name().starts_with("worker.") {
            "worker_id"
        } else {
            "machine_id"
        };
        require(&flat, needed)?;
        let mut event = self.event(kind, flat);
        if kind == EventKind::JobStatusChanged {
            event.new_status = ["new_status", "status", "job_status"]
                .iter()
                .find_map(|k| event.str_field(k));
            if event.new_status.is_none() {
                return Err(ParseError::Missing("new_status"));
            }
            event.old_status = event.str_field("old_status");
        }
        Ok(Parsed {
            events: vec![event],
            status: None,
        })
    }

    fn single(&self, kind: EventKind, fields: Map<String, Value>) -> Parsed {
        Parsed {
            events: vec![self.event(kind, fields)],
            status: None,
        }
    }
}

fn require(fields: &Map<String, Value>, key: &'static str) -> Result<String, ParseError> {
    fields
        .get(key)
        .and_then(id_string)
        .ok_or(ParseError::Missing(key))
}

fn discriminator<'a>(
    fields: &'a Map<String, Value>,
    key: &'static str,
) -> Result<&'a str, ParseError> {
    match fields.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(ParseError::Missing(key)),
    }
}

fn unknown(field: &'static str, value: &str) -> ParseError {
    ParseError::UnknownType {
        field,
        value: value.chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(channel: &str, payload: &str) -> Vec<&'static str> {
        match parse(channel, payload.as_bytes(), 1) {
            Ok(p) => p.events.iter().map(|e| e.kind.name()).collect(),
            Err(e) => vec![e.kind()],
        }
    }

    #[test]
    fn channels_map_to_canonical_kinds() {
        let cases = [
            ("job_submitted", r#"{"job_id":"j"}"#, vec!["job.submitted"]),
            (
                "update_job_progress",
                r#"{"job_id":"j"}"#,
                vec!["job.progress"],
            ),
            ("complete_job", r#"{"job_id":"j"}"#, vec!["job.completed"]),
            ("job_failed", r#"{"job_id":"j"}"#, vec!["job.failed"]),
            ("cancel_job", r#"{"job_id":"j"}"#, vec!["job.cancelled"]),
            (
                "worker_status",
                r#"{"worker_id":"w","new_status":"busy","current_job_id":"j"}"#,
                vec!["worker.status_changed", "job.assigned"],
            ),
            (
                "worker_status",
                r#"{"worker_id":"w","new_status":"busy","current_job_id":""}"#,
                vec!["worker.status_changed"],
            ),
            (
                "worker:events",
                r#"{"type":"worker_connected","worker_id":"w"}"#,
                vec!["worker.connected"],
            ),
            (
                "worker:events",
                r#"{"type":"worker_disconnected","worker_id":"w"}"#,
                vec!["worker.disconnected"],
            ),
            (
                "worker:events",
                r#"{"type":"nope","worker_id":"w"}"#,
                vec!["unknown_type"],
            ),
            (
                "machine:startup:events",
                r#"{"event_type":"startup_complete","machine_config":{"machine_id":"m"}}"#,
                vec!["machine.startup_complete"],
            ),
            (
                "machine:startup:events",
                r#"{"event_type":"shutdown","machine_id":"m"}"#,
                vec!["machine.shutdown"],
            ),
            (
                "machine:startup:events",
                r#"{"event_type":"startup_step","machine_id":"m"}"#,
                vec![],
            ),
            (
                "machine:startup:events",
                r#"{"event_type":"shutdown"}"#,
                vec!["missing_field"],
            ),
            (
                "machine:status:m1",
                r#"{"status":{}}"#,
                vec!["machine.status_changed"],
            ),
            (
                "workflow_submitted",
                r#"{"workflow_id":"f"}"#,
                vec!["workflow.submitted"],
            ),
            (
                "workflow_completed",
                r#"{"workflow_id":"f"}"#,
                vec!["workflow.completed"],
            ),
            (
                "workflow_failed",
                r#"{"workflow_id":"f"}"#,
                vec!["workflow.failed"],
            ),
            (
                "job.events",
                r#"{"type":"job_progress","job_id":"j","data":{"progress":5}}"#,
                vec!["job.progress"],
            ),
            (
                "job.events",
                r#"{"type":"job_status_changed","job_id":"j","data":{"new_status":"x"}}"#,
                vec!["job.status_changed"],
            ),
            (
                "machine.events",
                r#"{"type":"machine_shutdown","machine_id":"m"}"#,
                vec!["machine.shutdown"],
            ),
            ("complete_job", "not json", vec!["not_json"]),
            ("complete_job", "[1]", vec!["not_object"]),
            ("complete_job", r#"{"job_id":""}"#, vec!["missing_field"]),
            ("elsewhere", r#"{}"#, vec!["unknown_channel"]),
        ];
        for (channel, payload, expected) in cases {
            assert_eq!(kinds(channel, payload), expected, "{channel} {payload}");
        }
    }

    #[test]
    fn b11_republished_completion_is_the_same_event() {
        let first = parse("complete_job", br#"{"job_id":"j","timestamp":5}"#, 1);
        let again = parse(
            "complete_job",
            br#"{"job_id":"j","timestamp":5,"retry_verification":true,"retry_attempt":99}"#,
            2,
        );
        match (first, again) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.events[0].identity, b.events[0].identity);
                assert!(!b.events[0].fields.contains_key("retry_attempt"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn machine_status_takes_the_id_from_the_channel() {
        let parsed = parse("machine:status:m-7", br#"{"status":"ready"}"#, 1);
        let id = parsed.ok().and_then(|p| p.events[0].machine_id());
        assert_eq!(id.as_deref(), Some("m-7"));
    }
}
