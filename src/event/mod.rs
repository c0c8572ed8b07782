//! Events: what the job queue said happened, independent of any webhook.
//!
//! A source message (channel + bytes) is parsed into one or more [`Event`]s by [`parse`]; the
//! `data` a webhook receives is built from an event by [`canonical`] (dotted names) or [`legacy`]
//! (the original's underscore names and shapes). This module knows nothing of webhooks or HTTP.

pub mod canonical;
pub mod legacy;
pub mod parse;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The 16 canonical event types (CONTRACT section 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `job.submitted`, from `job_submitted`.
    JobSubmitted,
    /// `job.assigned`, from `worker_status` with `new_status == "busy"`.
    JobAssigned,
    /// `job.progress`, from `update_job_progress`.
    JobProgress,
    /// `job.completed`, from `complete_job`.
    JobCompleted,
    /// `job.failed`, from `job_failed`.
    JobFailed,
    /// `job.cancelled`, from `cancel_job`.
    JobCancelled,
    /// `job.status_changed`, derived from every job lifecycle event.
    JobStatusChanged,
    /// `worker.status_changed`, from `worker_status`.
    WorkerStatusChanged,
    /// `worker.connected`, from `worker:events`.
    WorkerConnected,
    /// `worker.disconnected`, from `worker:events`.
    WorkerDisconnected,
    /// `machine.startup_complete`, from `machine:startup:events`.
    MachineStartupComplete,
    /// `machine.shutdown`, from `machine:startup:events`.
    MachineShutdown,
    /// `machine.status_changed`, from the pattern `machine:status:*`.
    MachineStatusChanged,
    /// `workflow.submitted`, from `workflow_submitted`.
    WorkflowSubmitted,
    /// `workflow.completed`, from `workflow_completed`.
    WorkflowCompleted,
    /// `workflow.failed`, from `workflow_failed`.
    WorkflowFailed,
}

impl EventKind {
    /// Every kind, in a fixed order (the index of a kind is `kind as usize`).
    pub(crate) const ALL: [EventKind; 16] = [
        EventKind::JobSubmitted,
        EventKind::JobAssigned,
        EventKind::JobProgress,
        EventKind::JobCompleted,
        EventKind::JobFailed,
        EventKind::JobCancelled,
        EventKind::JobStatusChanged,
        EventKind::WorkerStatusChanged,
        EventKind::WorkerConnected,
        EventKind::WorkerDisconnected,
        EventKind::MachineStartupComplete,
        EventKind::MachineShutdown,
        EventKind::MachineStatusChanged,
        EventKind::WorkflowSubmitted,
        EventKind::WorkflowCompleted,
        EventKind::WorkflowFailed,
    ];

    /// The canonical (dotted) name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::JobSubmitted => "job.submitted",
            EventKind::JobAssigned => "job.assigned",
            EventKind::JobProgress => "job.progress",
            EventKind::JobCompleted => "job.completed",
            EventKind::JobFailed => "job.failed",
            EventKind::JobCancelled => "job.cancelled",
            EventKind::JobStatusChanged => "job.status_changed",
            EventKind::WorkerStatusChanged => "worker.status_changed",
            EventKind::WorkerConnected => "worker.connected",
            EventKind::WorkerDisconnected => "worker.disconnected",
            EventKind::MachineStartupComplete => "machine.startup_complete",
            EventKind::MachineShutdown => "machine.shutdown",
            EventKind::MachineStatusChanged => "machine.status_changed",
            EventKind::WorkflowSubmitted => "workflow.submitted",
            EventKind::WorkflowCompleted => "workflow.completed",
            EventKind::WorkflowFailed => "workflow.failed",
        }
    }

    /// The original's underscore name, for the kinds that have one.
    pub(crate) fn legacy_name(self) -> Option<&'static str> {
        Some(match self {
            EventKind::JobSubmitted => "job_submitted",
            EventKind::JobProgress => "update_job_progress",
            EventKind::JobCompleted => "complete_job",
            EventKind::JobFailed => "job_failed",
            EventKind::JobCancelled => "cancel_job",
            EventKind::WorkerStatusChanged => "worker_status",
            EventKind::MachineStatusChanged => "machine_status",
            EventKind::WorkflowSubmitted => "workflow_submitted",
            EventKind::WorkflowCompleted => "workflow_completed",
            EventKind::WorkflowFailed => "workflow_failed",
            _ => return None,
        })
    }

    /// Looks a kind up by its canonical name.
    pub(crate) fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Looks a kind up by its legacy name.
    pub(crate) fn from_legacy_name(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.legacy_name() == Some(name))
    }

    /// True for the kinds whose subject is a job.
    pub(crate) fn is_job(self) -> bool {
        self.name().starts_with("job.")
    }
}

/// One thing that happened, as parsed from one source message.
///
/// `fields` is the source message flattened into one object (for the legacy typed channels the
/// nested `data` is lifted to the top level), without the broker's retry markers.
#[derive(Clone, Debug)]
pub struct Event {
    /// What happened.
    pub(crate) kind: EventKind,
    /// The channel the message came from (for metrics and logs).
    pub(crate) source: String,
    /// The source message's fields.
    pub(crate) fields: Map<String, Value>,
    /// The envelope timestamp: the message's `timestamp`, or the time it was received.
    pub timestamp: Value,
    /// Milliseconds since the epoch for `event_id`: the numeric timestamp, or the receive time.
    pub(crate) timestamp_ms: u64,
    /// Hash of the identity that makes two messages "the same event" (CONTRACT section 6).
    pub(crate) identity: [u8; 32],
    /// For `job.status_changed`: the status the job moved to.
    pub(crate) new_status: Option<String>,
    /// For `job.status_changed`: the status before, when known.
    pub(crate) old_status: Option<String>,
    /// The job's type when the message does not carry it but an earlier `job.submitted` did.
    pub(crate) known_job_type: Option<String>,
    /// The job's priority when the message does not carry it but an earlier `job.submitted` did.
    pub(crate) known_priority: Option<Value>,
}

impl Event {
    /// A string field of the message, when present and non-empty (numbers are printed).
    pub(crate) fn str_field(&self, key: &str) -> Option<String> {
        id_string(self.fields.get(key)?)
    }

    /// The job id, if the event concerns a job.
    pub(crate) fn job_id(&self) -> Option<String> {
        self.str_field("job_id").or_else(|| match self.kind {
            EventKind::JobAssigned => self.str_field("current_job_id"),
            _ => None,
        })
    }

    /// The worker id, when present.
    pub(crate) fn worker_id(&self) -> Option<String> {
        self.str_field("worker_id")
    }

    /// The machine id: top level, else `machine_config.machine_id`.
    pub(crate) fn machine_id(&self) -> Option<String> {
        self.str_field("machine_id").or_else(|| {
            self.fields
                .get("machine_config")
                .and_then(|c| c.get("machine_id"))
                .and_then(id_string)
        })
    }

    /// The job type: `service_required`, `job_type` or `service_type`, else what an earlier
    /// `job.submitted` for the same job said.
    pub(crate) fn job_type(&self) -> Option<String> {
        ["service_required", "job_type", "service_type"]
            .iter()
            .find_map(|k| self.str_field(k))
            .or_else(|| self.known_job_type.clone())
    }

    /// The job priority (JavaScript `priority || 50` for submissions), else what an earlier
    /// `job.submitted` said.
    pub(crate) fn priority(&self) -> Option<Value> {
        match self.fields.get("priority") {
            Some(v) if legacy::truthy(v) => Some(v.clone()),
            _ if self.kind == EventKind::JobSubmitted => Some(Value::from(50)),
            _ => self.known_priority.clone(),
        }
    }
}

/// The text of an id-like value: a non-empty string, or a number.
pub(crate) fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Hashes the parts of an identity, unambiguously (each part is length-prefixed).
pub(crate) fn identity_hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The stable `event_id` one webhook sees for one event: `wh_<ms>_<9 base36 chars>`, the suffix
/// derived from the webhook id and the event identity, so every attempt and every redelivery of the
/// same event to the same webhook carries the same id (CONTRACT section 6).
pub(crate) fn event_id(webhook_id: &str, event: &Event) -> String {
    let digest = identity_hash(&[
        webhook_id.as_bytes(),
        &event.identity,
        event.kind.name().as_bytes(),
    ]);
    let mut n = u64::from_le_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    let mut suffix = [b'0'; 9];
    for slot in suffix.iter_mut().rev() {
        *slot = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    format!(
        "wh_{}_{}",
        event.timestamp_ms,
        std::str::from_utf8(&suffix).unwrap_or("000000000")
    )
}
