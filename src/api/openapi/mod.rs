//! `GET /openapi.json`: the OpenAPI 3 description of every operation of the route table
//! ([`super::router::Operation`]): the paths and methods come from the table, the text of each
//! operation from an exhaustive `match` here.

use serde_json::{Map, Value, json};

use super::router::{Method, Operation};
use crate::webhook::model::{MAX_GRACE_MS, fields};

mod schemas;

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

/// The OpenAPI operation of `op` served with `method`.
fn operation(op: Operation, method: Method) -> Value {
    let webhook = json!({"$ref": "#/components/schemas/Webhook"});
    let any = json!({});
    let (summary, params, body, responses): Described = match op {
        Operation::Root | Operation::Dashboard => (
            "The dashboard (one HTML page; it calls this API from the browser)",
            vec![],
            None,
            vec![(
                "200",
                json!({"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}),
            )],
        ),
        Operation::Health => (
            "Service health",
            vec![],
            None,
            vec![(
                "200",
                ok("Healthy", json!({"$ref": "#/components/schemas/Health"})),
            )],
        ),
        Operation::OpenApi => (
            "This document",
            vec![],
            None,
            vec![("200", ok("OpenAPI 3 document", json!({"type": "object"})))],
        ),
        Operation::ListWebhooks => (
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
        Operation::CreateWebhook => (
            "Create a webhook (the only response with the whole secret)",
            vec![],
            Some(json!({"$ref": "#/components/schemas/WebhookCreate"})),
            vec![("201", ok("Created", data_envelope(webhook.clone())))],
        ),
        Operation::GetWebhook => (
            "Get a webhook",
            vec![id_param("id")],
            None,
            vec![("200", ok("The webhook", data_envelope(webhook.clone())))],
        ),
        Operation::UpdateWebhook => (
            "Update a webhook",
            vec![id_param("id")],
            Some(json!({"$ref": "#/components/schemas/WebhookInput"})),
            vec![("200", ok("Updated", data_envelope(webhook.clone())))],
        ),
        Operation::DeleteWebhook => (
            "Delete a webhook",
            vec![id_param("id")],
            None,
            vec![(
                "200",
                ok("Deleted", json!({"$ref": "#/components/schemas/Message"})),
            )],
        ),
        Operation::TestWebhook => (
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
        Operation::ReconnectWebhook => (
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
        Operation::WebhookStats => (
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
        Operation::WebhookDeliveries => (
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
        Operation::WebhookSecret => (
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
        Operation::RotateSecret => (
            "Rotate the secret; the old one keeps signing during the grace period",
            vec![id_param("id")],
            Some(
                json!({"type": "object", "additionalProperties": false, "properties": {"secret": fields::secret_schema(), "grace_period_ms": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_MS}}}),
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
        Operation::RecoverWebhook => (
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
        Operation::DeadLetters => (
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
        Operation::RedeliverDeadLetter => (
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
        Operation::Metrics => (
            "Prometheus metrics (text exposition 0.0.4)",
            vec![],
            None,
            vec![(
                "200",
                json!({"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            )],
        ),
        Operation::StatsSummary => (
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
        Operation::RecentDeliveries => (
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
        Operation::ListReceivers => (
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
        Operation::CreateReceiver => (
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
        Operation::ReceiverRequests => (
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
        Operation::ClearReceiver => (
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
        Operation::CaptureForReceiver => (
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
        Operation::CaptureForSession => (
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
        Operation::SessionRequests => (
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
        Operation::ClearSession => (
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
    };
    let (pattern, public) = (op.pattern(), op.public());
    let mut all = Map::new();
    for (code, response) in responses {
        all.insert(code.to_string(), response);
    }
    common(&mut all, public);
    if op == Operation::Health {
        all.insert(
            "503".into(),
            ok(
                "Degraded: Redis unreachable",
                json!({"$ref": "#/components/schemas/Health"}),
            ),
        );
    }
    let mut item = Map::new();
    item.insert("summary".into(), Value::from(summary));
    item.insert(
        "operationId".into(),
        Value::from(format!(
            "{}{}",
            method.as_str().to_lowercase(),
            pattern.replace(['/', '{', '}', '.', '-'], "_")
        )),
    );
    if !params.is_empty() {
        item.insert("parameters".into(), Value::from(params));
    }
    if let Some(schema) = body {
        let required = matches!(op, Operation::CreateWebhook | Operation::UpdateWebhook);
        item.insert(
            "requestBody".into(),
            json!({"required": required, "content": {"application/json": {"schema": schema}}}),
        );
    }
    item.insert("responses".into(), Value::Object(all));
    if public {
        item.insert("security".into(), json!([]));
    }
    Value::Object(item)
}

/// The methods the document describes for `op`: a capture URL serves every method, of which
/// HEAD (answered as GET is) and OPTIONS (the CORS preflight) are left out.
pub(crate) fn described_methods(op: Operation) -> Vec<Method> {
    match op.method() {
        Some(method) => vec![method],
        None => vec![
            Method::Get,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
        ],
    }
}

/// The document as served, built and written once: it never changes while the process runs, and
/// `/openapi.json` needs no token, so a request for it must cost no more than a copy (building
/// and writing the 50 KiB tree each time took a handler thread tens of milliseconds, and 16
/// clients asking for it again and again slowed `/health` past 200 ms).
pub(crate) fn served() -> &'static [u8] {
    static SERVED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    // JavaScript's number formatting, as every JSON response of the API.
    SERVED.get_or_init(|| crate::json::to_vec(&document()))
}

/// The document: its `paths` are the route table's patterns and methods.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for op in Operation::ALL {
        let item = paths
            .entry(op.pattern().to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            for method in described_methods(*op) {
                item.insert(method.as_str().to_lowercase(), operation(*op, method));
            }
        }
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
            "schemas": schemas::schemas(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_described_with_its_path_values() {
        let doc = document();
        let mut described = 0;
        for op in Operation::ALL {
            for method in described_methods(*op) {
                assert!(
                    op.serves(method),
                    "{method:?} {} is described but not served",
                    op.pattern()
                );
                let item = &doc["paths"][op.pattern()][method.as_str().to_lowercase()];
                assert!(
                    item.is_object(),
                    "{method:?} {} is not in the document",
                    op.pattern()
                );
                assert!(item["summary"].as_str().is_some_and(|s| !s.is_empty()));
                assert!(item["responses"].as_object().is_some_and(|r| !r.is_empty()));
                let params = item["parameters"].as_array().cloned().unwrap_or_default();
                let declared = op.pattern().matches('{').count();
                let path_params = params.iter().filter(|p| p["in"] == "path").count();
                assert_eq!(path_params, declared, "{method:?} {}", op.pattern());
                assert_eq!(item["security"] == serde_json::json!([]), op.public());
                described += 1;
            }
        }
        let in_doc: usize = doc["paths"]
            .as_object()
            .map(|p| {
                p.values()
                    .filter_map(Value::as_object)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(
            in_doc, described,
            "the document describes an operation that is not served"
        );
    }
}
