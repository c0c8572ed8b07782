//! The document's `components.schemas`: the shapes of webhooks (from `webhook::model::fields`),
//! envelopes and figures.

use serde_json::{Value, json};

use crate::webhook::model::fields;
use crate::webhook::model::retry::{ATTEMPTS, INITIAL_DELAY_MS, MAX_DELAY_MS, MULTIPLIER};

pub(super) fn schemas() -> Value {
    let string_list = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "Error": {
            "type": "object",
            "required": ["success", "error"],
            "properties": {"success": {"type": "boolean", "enum": [false]}, "error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
        },
        "Message": {
            "type": "object",
            "required": ["success", "message"],
            "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}},
        },
        "RetryConfig": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "max_attempts": {"type": "integer", "minimum": ATTEMPTS.0, "maximum": ATTEMPTS.1},
                "initial_delay_ms": {"type": "integer", "minimum": INITIAL_DELAY_MS.0, "maximum": INITIAL_DELAY_MS.1},
                "backoff_multiplier": {"type": "number", "minimum": MULTIPLIER.0, "maximum": MULTIPLIER.1},
                "max_delay_ms": {"type": "integer", "minimum": MAX_DELAY_MS.0, "maximum": MAX_DELAY_MS.1},
            },
        },
        "Filters": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "job_types": string_list,
                "job_priorities": {"type": "array", "items": {"type": "number"}},
                "priorities": {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
                "machine_ids": string_list,
                "worker_ids": string_list,
                "custom_filters": {"type": "object", "nullable": true, "description": "Stored, not applied"},
            },
        },
        "WebhookInput": {
            "type": "object",
            "description": "Writable fields. Server-owned fields (id, created_at, counters, ...) are ignored if sent.",
            "additionalProperties": false,
            "properties": fields::input_properties(),
        },
        "WebhookCreate": {
            "allOf": [{"$ref": "#/components/schemas/WebhookInput"}, {"type": "object", "required": ["url", "events"]}],
        },
        "Webhook": fields::output_schema(),
        "Stats": {
            "type": "object",
            "required": ["total_deliveries", "successful_deliveries", "failed_deliveries", "total_events", "successful_events", "failed_events", "average_response_time_ms", "p95_response_time_ms"],
            "properties": {
                "total_deliveries": {"type": "integer"},
                "successful_deliveries": {"type": "integer"},
                "failed_deliveries": {"type": "integer"},
                "total_events": {"type": "integer"},
                "successful_events": {"type": "integer"},
                "failed_events": {"type": "integer"},
                "average_response_time_ms": {"type": "number"},
                "p95_response_time_ms": {"type": "number"},
                "retry_queue_size": {"type": "integer"},
                "pending_deliveries": {"type": "integer"},
                "last_delivery_at": {"type": "integer"},
                "last_success_at": {"type": "integer"},
                "last_failure_at": {"type": "integer"},
            },
        },
        "LogEntry": {
            "type": "object",
            "required": ["webhook_id", "event_id", "event_type", "success", "timestamp", "attempt_number"],
            "properties": {
                "webhook_id": {"type": "string"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "success": {"type": "boolean"},
                "timestamp": {"type": "integer"},
                "attempt_number": {"type": "integer"},
                "response_status": {"type": "integer", "nullable": true},
                "response_time_ms": {"type": "number", "nullable": true},
                "error_message": {"type": "string", "nullable": true},
                "response_body": {"type": "string"},
                "url": {"type": "string"},
                "payload": {},
            },
        },
                "DeadLetter": {
            "type": "object",
            "required": ["id", "webhook_id", "event_id", "event_type", "failed_at", "attempts", "last_status", "last_error"],
            "properties": {
                "id": {"type": "string"},
                "webhook_id": {"type": "string"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "failed_at": {"type": "integer"},
                "attempts": {"type": "integer"},
                "last_status": {"type": "integer", "nullable": true},
                "last_error": {"type": "string"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "service", "timestamp", "version", "redis", "processor", "uptime_s", "queue"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "service": {"type": "string"},
                "timestamp": {"type": "string"},
                "version": {"type": "string"},
                "uptime_s": {"type": "integer"},
                "redis": {"type": "object", "required": ["connected", "status", "mode", "node", "tls", "failovers"], "properties": {
                    "connected": {"type": "boolean"},
                    "status": {"type": "string", "enum": ["ready", "reconnecting"]},
                    "mode": {"type": "string", "enum": ["standalone", "sentinel"]},
                    "node": {"type": "string", "description": "host:port commands go to (the current master behind Sentinel; empty before it is found)"},
                    "tls": {"type": "boolean"},
                    "failovers": {"type": "integer", "description": "Master changes seen since start"},
                    "last_failover_at": {"type": "string", "nullable": true},
                    "master_name": {"type": "string"},
                }},
                "processor": {"type": "object"},
                "queue": {"type": "object", "required": ["depth", "retry_backlog", "oldest_pending_age_ms"]},
            },
        },
    })
}
