//! The route table: every operation the API serves, one row each, in the order of the OpenAPI
//! document. A row is the whole of a route but its handler's body: its method and path pattern,
//! whether it needs the token, its lane, what its handler does with a request body, the handler
//! call, and its OpenAPI description (summary: the doc comment; query parameters, request body
//! and its own responses: `openapi`). [`super::router::route_table`] writes [`Route`],
//! [`Operation`] and [`dispatch`] from it, and says what each column means.

use serde_json::json;

use super::handlers::{
    self, dead_letters, health, receivers, sessions, stats, test_delivery, webhooks,
};
use super::openapi::{
    answers, component, data_envelope, error_response, limit_param, ok, query_param, text,
};
use super::router::route_table;
use crate::webhook::model::{MAX_GRACE_MS, fields};

route_table! {
    |shared, request, query, body|

    /// The dashboard (one HTML page; it calls this API from the browser)
    Root: GET "/" public {
        body: Ignored,
        call: handlers::dashboard(),
        openapi: answers("200", text("HTML", "text/html")),
    }
    /// The dashboard (one HTML page; it calls this API from the browser)
    Dashboard: GET "/dashboard" public {
        body: Ignored,
        call: handlers::dashboard(),
        openapi: answers("200", text("HTML", "text/html")),
    }
    /// Service health
    Health: GET "/health" public {
        body: Ignored,
        call: health::health(shared),
        openapi: answers("200", ok("Healthy", component("Health")))
            .answers("503", ok("Degraded: Redis unreachable", component("Health"))),
    }
    /// This document
    OpenApi: GET "/openapi.json" public {
        body: Ignored,
        call: handlers::openapi(),
        openapi: answers("200", ok("OpenAPI 3 document", json!({"type": "object"}))),
    }
    /// List webhooks (secrets masked)
    ListWebhooks: GET "/webhooks" {
        body: Ignored,
        call: webhooks::list(shared),
        openapi: answers("200", ok("Webhooks, newest first", json!({
            "type": "object",
            "required": ["success", "data", "count"],
            "properties": {
                "success": {"type": "boolean"},
                "data": {"type": "array", "items": component("Webhook")},
                "count": {"type": "integer"},
            },
        }))),
    }
    /// Create a webhook (the only response with the whole secret)
    CreateWebhook: POST "/webhooks" {
        body: Whole,
        call: webhooks::create(shared, body),
        openapi: answers("201", ok("Created", data_envelope(component("Webhook"))))
            .required_body(component("WebhookCreate")),
    }
    /// Get a webhook
    GetWebhook { id }: GET "/webhooks/{id}" {
        body: Ignored,
        call: webhooks::get(shared, &id),
        openapi: answers("200", ok("The webhook", data_envelope(component("Webhook")))),
    }
    /// Update a webhook
    UpdateWebhook { id }: PUT "/webhooks/{id}" {
        body: Whole,
        call: webhooks::update(shared, &id, body),
        openapi: answers("200", ok("Updated", data_envelope(component("Webhook"))))
            .required_body(component("WebhookInput")),
    }
    /// Delete a webhook
    DeleteWebhook { id }: DELETE "/webhooks/{id}" {
        body: Ignored,
        call: webhooks::delete(shared, &id),
        openapi: answers("200", ok("Deleted", component("Message"))),
    }
    /// Send signed test deliveries now and report their outcome
    // Slow: it waits on the webhook's target.
    TestWebhook { id }: POST "/webhooks/{id}/test" slow {
        body: Ignored,
        call: test_delivery::test(shared, &id),
        openapi: answers("200", ok("Outcome of each test delivery", json!({
            "type": "object",
            "required": ["success"],
            "properties": {
                "success": {"type": "boolean"},
                "error": {"type": "string"},
                "message": {"type": "string"},
                "data": {
                    "type": "object",
                    "required": ["delivered", "results"],
                    "properties": {
                        "delivered": {"type": "boolean"},
                        "results": {"type": "array", "items": {"type": "object", "properties": {
                            "event_type": {"type": "string"},
                            "delivered": {"type": "boolean"},
                            "status_code": {"type": "integer", "nullable": true},
                            "response_time_ms": {"type": "number"},
                            "error": {"type": "string", "nullable": true},
                        }}},
                    },
                },
            },
        }))),
    }
    /// Clear disconnection and failure count
    ReconnectWebhook { id }: POST "/webhooks/{id}/reconnect" {
        body: Ignored,
        call: webhooks::reconnect(shared, &id),
        openapi: answers("200", ok("Reconnected", component("Message"))),
    }
    /// Per-attempt and per-event statistics
    WebhookStats { id }: GET "/webhooks/{id}/stats" {
        body: Ignored,
        call: stats::webhook_stats(shared, &id),
        openapi: answers("200", ok("Statistics", data_envelope(component("Stats")))),
    }
    /// Newest attempts
    WebhookDeliveries { id }: GET "/webhooks/{id}/deliveries" {
        body: Ignored,
        call: stats::webhook_deliveries(shared, &id, query),
        openapi: answers("200", ok("Attempts", json!({
            "type": "object",
            "required": ["success", "data", "limit"],
            "properties": {
                "success": {"type": "boolean"},
                "limit": {"type": "integer"},
                "data": {
                    "type": "object",
                    "required": ["webhook_id", "attempts", "total_count"],
                    "properties": {
                        "webhook_id": {"type": "string"},
                        "total_count": {"type": "integer"},
                        "attempts": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        })))
        .query(limit_param(100)),
    }
    /// The whole secret (and the previous one during a rotation)
    WebhookSecret { id }: GET "/webhooks/{id}/secret" {
        body: Ignored,
        call: webhooks::secret(shared, &id),
        openapi: answers("200", ok("Secret", data_envelope(json!({
            "type": "object",
            "required": ["secret"],
            "properties": {
                "secret": {"type": "string", "nullable": true},
                "previous_secret": {"type": "string"},
                "previous_expires_at": {"type": "integer"},
            },
        })))),
    }
    /// Rotate the secret; the old one keeps signing during the grace period
    RotateSecret { id }: POST "/webhooks/{id}/secret/rotate" {
        body: Whole,
        call: webhooks::rotate(shared, &id, query, body),
        openapi: answers("200", ok("Rotated", data_envelope(json!({
            "type": "object",
            "required": ["secret", "previous_expires_at"],
            "properties": {
                "secret": {"type": "string"},
                "previous_expires_at": {"type": "integer"},
            },
        }))))
        .body(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "secret": fields::secret_schema(),
                "grace_period_ms": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_MS},
            },
        })),
    }
    /// Redeliver every dead letter of the webhook that failed since a time
    RecoverWebhook { id }: POST "/webhooks/{id}/recover" {
        body: Ignored,
        call: dead_letters::recover(shared, &id, query),
        openapi: answers("202", ok("Queued", data_envelope(json!({
            "type": "object",
            "required": ["requeued"],
            "properties": {"requeued": {"type": "integer"}},
        }))))
        .query(query_param("since", true, json!({"type": "integer", "minimum": 0}))),
    }
    /// Dead letters, newest first
    DeadLetters: GET "/dead-letters" {
        body: Ignored,
        call: dead_letters::list(shared, query),
        openapi: answers("200", ok("Dead letters", json!({
            "type": "object",
            "required": ["success", "data", "count"],
            "properties": {
                "success": {"type": "boolean"},
                "count": {"type": "integer"},
                "data": {"type": "array", "items": component("DeadLetter")},
            },
        })))
        .query(query_param("webhook_id", false, json!({"type": "string"})))
        .query(limit_param(1000)),
    }
    /// Redeliver a dead letter (same event_id, same body)
    RedeliverDeadLetter { id }: POST "/dead-letters/{id}/redeliver" {
        body: Ignored,
        call: dead_letters::redeliver(shared, &id),
        openapi: answers("202", ok("Queued", data_envelope(component("DeadLetter")))),
    }
    /// Prometheus metrics (text exposition 0.0.4)
    Metrics: GET "/metrics" {
        body: Ignored,
        call: health::metrics(shared),
        openapi: answers("200", text("Metrics", "text/plain")),
    }
    /// Totals over every webhook
    StatsSummary: GET "/stats/summary" {
        body: Ignored,
        call: stats::summary(shared),
        openapi: answers("200", ok("Summary", data_envelope(json!({
            "type": "object",
            "required": ["delivery_stats", "webhook_summary", "event_processing"],
        })))),
    }
    /// Newest delivery log entries
    RecentDeliveries: GET "/deliveries/recent" {
        body: Ignored,
        call: stats::recent(shared, query),
        openapi: answers("200", ok("Log entries", json!({
            "type": "object",
            "required": ["success", "data", "limit"],
            "properties": {
                "success": {"type": "boolean"},
                "limit": {"type": "integer"},
                "data": {"type": "array", "items": component("LogEntry")},
            },
        })))
        .query(limit_param(1000)),
    }
    /// List test receivers
    ListReceivers: GET "/test-receivers" {
        body: Ignored,
        call: receivers::list(shared),
        openapi: answers("200", ok("Receivers", json!({
            "type": "object",
            "required": ["success", "data", "total", "max_receivers"],
        }))),
    }
    /// Create a test receiver
    CreateReceiver: POST "/test-receivers" {
        body: Ignored,
        call: receivers::create(shared),
        openapi: answers("201", ok("Created", data_envelope(json!({
            "type": "object",
            "required": ["id", "url", "view_url", "created_at", "expires_at", "expires_in_hours"],
        }))))
        .answers("429", error_response("Too many receivers")),
    }
    /// Captured requests, newest first
    ReceiverRequests { id }: GET "/test-receivers/{id}/requests" {
        body: Ignored,
        call: receivers::requests(shared, &id, query),
        openapi: answers("200", ok("Requests", data_envelope(json!({
            "type": "object",
            "required": ["receiver_id", "requests", "total_requests", "returned_count"],
        }))))
        .query(limit_param(100)),
    }
    /// Clear captured requests
    ClearReceiver { id }: DELETE "/test-receivers/{id}/requests" {
        body: Ignored,
        call: receivers::clear(shared, &id),
        openapi: answers("200", ok("Cleared", json!({
            "type": "object",
            "required": ["success", "cleared_count"],
        }))),
    }
    /// Capture URL of a test receiver (no token needed)
    CaptureForReceiver { id }: ANY "/test-receivers/{id}/webhook" public capture {
        body: Captured,
        call: receivers::capture(shared, &id, request),
        openapi: answers("200", ok("Captured", json!({
            "type": "object",
            "required": ["success", "receiver_id", "request_id"],
        })))
        .body(json!({})),
    }
    /// Capture URL of a monitor session (no token needed)
    CaptureForSession { session_id }: ANY "/webhook-monitor/{sessionId}" public capture {
        body: Captured,
        call: sessions::capture(shared, &session_id, request),
        openapi: answers("200", ok("Captured", json!({
            "type": "object",
            "required": ["success", "session_id", "request_id"],
        })))
        .body(json!({})),
    }
    /// Requests captured for a session
    SessionRequests { session_id }: GET "/webhook-monitor/{sessionId}/requests" {
        body: Ignored,
        call: sessions::requests(shared, &session_id, query),
        openapi: answers("200", ok("Requests", data_envelope(json!({
            "type": "object",
            "required": ["session_id", "requests", "total_requests", "returned_count"],
        }))))
        .query(limit_param(100)),
    }
    /// Clear a session's requests
    ClearSession { session_id }: DELETE "/webhook-monitor/{sessionId}/requests" {
        body: Ignored,
        call: sessions::clear(shared, &session_id),
        openapi: answers("200", ok("Cleared", json!({
            "type": "object",
            "required": ["success", "cleared_count"],
        }))),
    }
}
