//! `GET /openapi.json`: the OpenAPI 3 description of every route in [`super::router::ROUTES`].
//! A test checks that each served route and method is described here.

use serde_json::{Map, Value, json};

use super::router::ROUTES;

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn data_envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["success", "data"],
        "properties": {"success": {"type": "boolean"}, "data": data},
    })
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}})
}

fn limit_param(max: u64) -> Value {
    json!({
        "name": "limit",
        "in": "query",
        "required": false,
        "description": format!("How many, newest first; values above {max} mean {max}."),
        "schema": {"type": "integer", "minimum": 1},
    })
}

/// Responses every route may give besides its own.
fn common(responses: &mut Map<String, Value>, public: bool) {
    responses.insert("404".into(), error_response("Unknown route or resource"));
    responses.insert("405".into(), error_response("Method not allowed"));
    responses.insert("413".into(), error_response("Request body too large"));
    responses.insert("400".into(), error_response("Invalid request"));
    responses.insert("500".into(), error_response("Internal error"));
    responses.insert("503".into(), error_response("Redis unreachable"));
    if !public {
        responses.insert(
            "401".into(),
            error_response("Missing or wrong bearer token"),
        );
    }
}

/// An operation's summary, parameters, request body schema and own responses.
type Described = (
    &'static str,
    Vec<Value>,
    Option<Value>,
    Vec<(&'static str, Value)>,
);

fn operation(pattern: &str, method: &str) -> Value {
    let webhook = json!({"$ref": "#/components/schemas/Webhook"});
    let any = json!({});
    let (summary, params, body, responses): Described = match (pattern, method) {
        ("/", _) | ("/dashboard", _) => (
            "The dashboard (one HTML page; it calls this API from the browser)",
            vec![],
            None,
            vec![(
                "200",
                json!({"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}),
            )],
        ),
        ("/health", _) => (
            "Service health",
            vec![],
            None,
            vec![(
                "200",
                ok("Healthy", json!({"$ref": "#/components/schemas/Health"})),
            )],
        ),
        ("/openapi.json", _) => (
            "This document",
            vec![],
            None,
            vec![("200", ok("OpenAPI 3 document", json!({"type": "object"})))],
        ),
        ("/webhooks", "GET") => (
            "List webhooks (secrets masked)",
            vec![],
            None,
            vec![(
                "200",
                ok(
                    "Webhooks, newest first",
                    json!({"type": "object", "required": ["success", "data", "count"], "properties": {"success": {"type": "boolean"}, "data": {"type": "array", "items": webhook}, "count": {"type": "integer"}}}),
                ),
            )],
        ),
        ("/webhooks", "POST") => (
            "Create a webhook (the only response with the whole secret)",
            vec![],
            Some(json!({"$ref": "#/components/schemas/WebhookCreate"})),
            vec![("201", ok("Created", data_envelope(webhook.clone())))],
        ),
        ("/webhooks/{id}", "GET") => (
            "Get a webhook",
            vec![id_param("id")],
            None,
            vec![("200", ok("The webhook", data_envelope(webhook.clone())))],
        ),
        ("/webhooks/{id}", "PUT") => (
            "Update a webhook",
            vec![id_param("id")],
            Some(json!({"$ref": "#/components/schemas/WebhookInput"})),
            vec![("200", ok("Updated", data_envelope(webhook.clone())))],
        ),
        ("/webhooks/{id}", "DELETE") => (
            "Delete a webhook",
            vec![id_param("id")],
            None,
            vec![(
                "200",
                ok("Deleted", json!({"$ref": "#/components/schemas/Message"})),
            )],
        ),
        ("/webhooks/{id}/test", _) => (
            "Send signed test deliveries now and report their outcome",
            vec![id_param("id")],
            None,
            vec![(
                "200",
                ok(
                    "Outcome of each test delivery",
                    json!({"type": "object", "required": ["success"], "properties": {"success": {"type": "boolean"}, "error": {"type": "string"}, "message": {"type": "string"}, "data": {"type": "object", "required": ["delivered", "results"], "properties": {"delivered": {"type": "boolean"}, "results": {"type": "array", "items": {"type": "object", "properties": {"event_type": {"type": "string"}, "delivered": {"type": "boolean"}, "status_code": {"type": "integer", "nullable": true}, "response_time_ms": {"type": "number"}, "error": {"type": "string", "nullable": true}}}}}}}}),
                ),
            )],
        ),
        ("/webhooks/{id}/reconnect", _) => (
            "Clear disconnection and failure count",
            vec![id_param("id")],
            None,
            vec![(
                "200",
                ok(
                    "Reconnected",
                    json!({"$ref": "#/components/schemas/Message"}),
                ),
            )],
        ),
        ("/webhooks/{id}/stats", _) => (
            "Per-attempt and per-event statistics",
            vec![id_param("id")],
            None,
            vec![(
                "200",
                ok(
                    "Statistics",
                    data_envelope(json!({"$ref": "#/components/schemas/Stats"})),
                ),
            )],
        ),
        ("/webhooks/{id}/deliveries", _) => (
            "Newest attempts",
            vec![id_param("id"), limit_param(100)],
            None,
            vec![(
                "200",
                ok(
                    "Attempts",
                    json!({"type": "object", "required": ["success", "data", "limit"], "properties": {"success": {"type": "boolean"}, "limit": {"type": "integer"}, "data": {"type": "object", "required": ["webhook_id", "attempts", "total_count"], "properties": {"webhook_id": {"type": "string"}, "total_count": {"type": "integer"}, "attempts": {"type": "array", "items": {"type": "object"}}}}}}),
                ),
            )],
        ),
        ("/webhooks/{id}/secret", _) => (
            "The whole secret (and the previous one during a rotation)",
            vec![id_param("id")],
            None,
            vec![(
                "200",
                ok(
                    "Secret",
                    data_envelope(
                        json!({"type": "object", "required": ["secret"], "properties": {"secret": {"type": "string", "nullable": true}, "previous_secret": {"type": "string"}, "previous_expires_at": {"type": "integer"}}}),
                    ),
                ),
            )],
        ),
        ("/webhooks/{id}/secret/rotate", _) => (
            "Rotate the secret; the old one keeps signing during the grace period",
            vec![id_param("id")],
            Some(
                json!({"type": "object", "additionalProperties": false, "properties": {"secret": {"type": "string", "minLength": 8, "maxLength": 512}, "grace_period_ms": {"type": "integer", "minimum": 0, "maximum": 604_800_000}}}),
            ),
            vec![(
                "200",
                ok(
                    "Rotated",
                    data_envelope(
                        json!({"type": "object", "required": ["secret", "previous_expires_at"], "properties": {"secret": {"type": "string"}, "previous_expires_at": {"type": "integer"}}}),
                    ),
                ),
            )],
        ),
        ("/webhooks/{id}/recover", _) => (
            "Redeliver every dead letter of the webhook that failed since a time",
            vec![
                id_param("id"),
                json!({"name": "since", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 0}}),
            ],
            None,
            vec![(
                "202",
                ok(
                    "Queued",
                    data_envelope(
                        json!({"type": "object", "required": ["requeued"], "properties": {"requeued": {"type": "integer"}}}),
                    ),
                ),
            )],
        ),
        ("/dead-letters", _) => (
            "Dead letters, newest first",
            vec![
                json!({"name": "webhook_id", "in": "query", "required": false, "schema": {"type": "string"}}),
                limit_param(1000),
            ],
            None,
            vec![(
                "200",
                ok(
                    "Dead letters",
                    json!({"type": "object", "required": ["success", "data", "count"], "properties": {"success": {"type": "boolean"}, "count": {"type": "integer"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}}}}),
                ),
            )],
        ),
        ("/dead-letters/{id}/redeliver", _) => (
            "Redeliver a dead letter (same event_id, same body)",
            vec![id_param("id")],
            None,
            vec![(
                "202",
                ok(
                    "Queued",
                    data_envelope(json!({"$ref": "#/components/schemas/DeadLetter"})),
                ),
            )],
        ),
        ("/metrics", _) => (
            "Prometheus metrics (text exposition 0.0.4)",
            vec![],
            None,
            vec![(
                "200",
                json!({"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            )],
        ),
        ("/stats/summary", _) => (
            "Totals over every webhook",
            vec![],
            None,
            vec![(
                "200",
                ok(
                    "Summary",
                    data_envelope(
                        json!({"type": "object", "required": ["delivery_stats", "webhook_summary", "event_processing"]}),
                    ),
                ),
            )],
        ),
        ("/deliveries/recent", _) => (
            "Newest delivery log entries",
            vec![limit_param(1000)],
            None,
            vec![(
                "200",
                ok(
                    "Log entries",
                    json!({"type": "object", "required": ["success", "data", "limit"], "properties": {"success": {"type": "boolean"}, "limit": {"type": "integer"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/LogEntry"}}}}),
                ),
            )],
        ),
        ("/test-receivers", "GET") => (
            "List test receivers",
            vec![],
            None,
            vec![(
                "200",
                ok(
                    "Receivers",
                    json!({"type": "object", "required": ["success", "data", "total", "max_receivers"]}),
                ),
            )],
        ),
        ("/test-receivers", _) => (
            "Create a test receiver",
            vec![],
            None,
            vec![
                (
                    "201",
                    ok(
                        "Created",
                        data_envelope(
                            json!({"type": "object", "required": ["id", "url", "view_url", "created_at", "expires_at", "expires_in_hours"]}),
                        ),
                    ),
                ),
                ("429", error_response("Too many receivers")),
            ],
        ),
        ("/test-receivers/{id}/requests", "GET") => (
            "Captured requests, newest first",
            vec![id_param("id"), limit_param(100)],
            None,
            vec![(
                "200",
                ok(
                    "Requests",
                    data_envelope(
                        json!({"type": "object", "required": ["receiver_id", "requests", "total_requests", "returned_count"]}),
                    ),
                ),
            )],
        ),
        ("/test-receivers/{id}/requests", _) => (
            "Clear captured requests",
            vec![id_param("id")],
            None,
            vec![(
                "200",
                ok(
                    "Cleared",
                    json!({"type": "object", "required": ["success", "cleared_count"]}),
                ),
            )],
        ),
        ("/test-receivers/{id}/webhook", _) => (
            "Capture URL of a test receiver (no token needed)",
            vec![id_param("id")],
            Some(any.clone()),
            vec![(
                "200",
                ok(
                    "Captured",
                    json!({"type": "object", "required": ["success", "receiver_id", "request_id"]}),
                ),
            )],
        ),
        ("/webhook-monitor/{sessionId}", _) => (
            "Capture URL of a monitor session (no token needed)",
            vec![id_param("sessionId")],
            Some(any),
            vec![(
                "200",
                ok(
                    "Captured",
                    json!({"type": "object", "required": ["success", "session_id", "request_id"]}),
                ),
            )],
        ),
        ("/webhook-monitor/{sessionId}/requests", "GET") => (
            "Requests captured for a session",
            vec![id_param("sessionId"), limit_param(100)],
            None,
            vec![(
                "200",
                ok(
                    "Requests",
                    data_envelope(
                        json!({"type": "object", "required": ["session_id", "requests", "total_requests", "returned_count"]}),
                    ),
                ),
            )],
        ),
        ("/webhook-monitor/{sessionId}/requests", _) => (
            "Clear a session's requests",
            vec![id_param("sessionId")],
            None,
            vec![(
                "200",
                ok(
                    "Cleared",
                    json!({"type": "object", "required": ["success", "cleared_count"]}),
                ),
            )],
        ),
        _ => ("", vec![], None, vec![]),
    };
    let public = ROUTES
        .iter()
        .find(|r| r.pattern == pattern)
        .is_some_and(|r| r.public);
    let mut all = Map::new();
    for (code, response) in responses {
        all.insert(code.to_string(), response);
    }
    common(&mut all, public);
    if pattern == "/health" {
        all.insert(
            "503".into(),
            ok(
                "Degraded: Redis unreachable",
                json!({"$ref": "#/components/schemas/Health"}),
            ),
        );
    }
    let mut op = Map::new();
    op.insert("summary".into(), Value::from(summary));
    op.insert(
        "operationId".into(),
        Value::from(format!(
            "{}{}",
            method.to_lowercase(),
            pattern.replace(['/', '{', '}', '.', '-'], "_")
        )),
    );
    if !params.is_empty() {
        op.insert("parameters".into(), Value::from(params));
    }
    if let Some(schema) = body {
        let required = matches!(
            (pattern, method),
            ("/webhooks", "POST") | ("/webhooks/{id}", "PUT")
        );
        op.insert(
            "requestBody".into(),
            json!({"required": required, "content": {"application/json": {"schema": schema}}}),
        );
    }
    op.insert("responses".into(), Value::Object(all));
    if public {
        op.insert("security".into(), json!([]));
    }
    Value::Object(op)
}

/// The methods of a route the document describes: HEAD answers as GET does and OPTIONS is the
/// CORS preflight.
pub fn described_methods(route: &super::router::RouteDef) -> Vec<&'static str> {
    route
        .methods
        .iter()
        .copied()
        .filter(|m| *m != "HEAD" && *m != "OPTIONS")
        .collect()
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut item = Map::new();
        for method in described_methods(route) {
            item.insert(method.to_lowercase(), operation(route.pattern, method));
        }
        paths.insert(route.pattern.to_string(), Value::Object(item));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "webhook-service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Management and monitoring API of webhook-service, compatible with the EMP Job Queue webhook service.",
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    })
}

/// Every accepted entry of `events`.
fn event_names() -> Vec<String> {
    let mut names = vec!["*".to_string()];
    for kind in crate::event::EventKind::ALL {
        names.push(kind.name().to_string());
        if let Some(legacy) = kind.legacy_name() {
            names.push(legacy.to_string());
        }
    }
    for prefix in ["job", "worker", "machine", "workflow"] {
        names.push(format!("{prefix}.*"));
    }
    names
}

fn secret_schema() -> Value {
    json!({"type": "string", "minLength": 8, "maxLength": 512})
}

fn schemas() -> Value {
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
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
                "initial_delay_ms": {"type": "integer", "minimum": 10, "maximum": 86_400_000},
                "backoff_multiplier": {"type": "number", "minimum": 1, "maximum": 10},
                "max_delay_ms": {"type": "integer", "minimum": 10, "maximum": 604_800_000},
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
            "properties": {
                "id": {"description": "Ignored"},
                "created_at": {"description": "Ignored"},
                "updated_at": {"description": "Ignored"},
                "consecutive_failures": {"description": "Ignored"},
                "disconnected": {"description": "Ignored"},
                "last_success_at": {"description": "Ignored"},
                "last_failure_at": {"description": "Ignored"},
                "last_delivery_at": {"description": "Ignored"},
                "disabled_reason": {"description": "Ignored"},
                "previous_secret": {"description": "Ignored"},
                "previous_expires_at": {"description": "Ignored"},
                "has_secret": {"description": "Ignored"},
                "url": {"type": "string", "format": "uri", "description": "http or https"},
                "events": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": event_names()}, "description": "Canonical names (job.completed), legacy names (complete_job), * or prefix patterns (job.*)"},
                "secret": secret_schema(),
                "filters": {"$ref": "#/components/schemas/Filters"},
                "headers": {
                    "type": "object",
                    "description": "Custom request headers; the service's own (Content-Type, X-Webhook-*, webhook-*, ...) cannot be set.",
                    "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                    "additionalProperties": {"type": "string", "maxLength": 8192, "pattern": "^[^\\r\\n\\x00]*$"},
                },
                "retry_config": {"$ref": "#/components/schemas/RetryConfig"},
                "active": {"type": "boolean"},
                "static": {"type": "boolean"},
            },
        },
        "WebhookCreate": {
            "allOf": [{"$ref": "#/components/schemas/WebhookInput"}, {"type": "object", "required": ["url", "events"]}],
        },
        "Webhook": {
            "type": "object",
            "required": ["id", "url", "events"],
            "properties": {
                "id": {"type": "string"},
                "url": {"type": "string"},
                "events": {"type": "array", "items": {"type": "string"}},
                "secret": {"type": "string", "nullable": true, "description": "Masked except on create"},
                "filters": {"type": "object"},
                "headers": {"type": "object"},
                "retry_config": {"type": "object"},
                "active": {"type": "boolean"},
                "static": {"type": "boolean"},
                "disconnected": {"type": "boolean"},
                "consecutive_failures": {"type": "integer"},
                "created_at": {"type": "integer"},
                "updated_at": {"type": "integer"},
            },
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::ROUTES;

    #[test]
    fn every_served_route_and_method_is_described() {
        let doc = document();
        for route in ROUTES {
            let methods = described_methods(route);
            assert!(
                !methods.is_empty(),
                "{} has no described method",
                route.pattern
            );
            for method in methods {
                assert!(
                    route.methods.contains(&method),
                    "{method} {} is described but not served",
                    route.pattern
                );
                let op = &doc["paths"][route.pattern][method.to_lowercase()];
                assert!(
                    op.is_object(),
                    "{method} {} is not in the document",
                    route.pattern
                );
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let declared = route.pattern.matches('{').count();
                let path_params = params.iter().filter(|p| p["in"] == "path").count();
                assert_eq!(path_params, declared, "{method} {}", route.pattern);
            }
        }
        let described = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        assert_eq!(
            described,
            ROUTES.len(),
            "the document describes a route that is not served"
        );
    }
}
