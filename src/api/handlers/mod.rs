//! Route handlers: one function per (route, method), each taking the shared state and the call.

pub mod dead_letters;
pub mod health;
pub mod receivers;
pub mod sessions;
pub mod stats;
pub mod test_delivery;
pub mod webhooks;

use super::reply::Reply;
use super::server::Call;
use crate::app::Shared;

/// Runs the handler of `pattern` for `call` (its method is one the route serves).
pub fn dispatch(shared: &Shared, pattern: &str, call: &Call) -> Reply {
    let method = call.method.as_str();
    match (pattern, method) {
        ("/", _) | ("/dashboard", _) => dashboard(),
        ("/health", _) => health::health(shared),
        ("/openapi.json", _) => Reply::envelope(200, super::openapi::document()),
        ("/webhooks", "GET") => webhooks::list(shared),
        ("/webhooks", _) => webhooks::create(shared, call),
        ("/webhooks/{id}", "GET") => webhooks::get(shared, call),
        ("/webhooks/{id}", "PUT") => webhooks::update(shared, call),
        ("/webhooks/{id}", _) => webhooks::delete(shared, call),
        ("/webhooks/{id}/test", _) => test_delivery::test(shared, call),
        ("/webhooks/{id}/reconnect", _) => webhooks::reconnect(shared, call),
        ("/webhooks/{id}/stats", _) => stats::webhook_stats(shared, call),
        ("/webhooks/{id}/deliveries", _) => stats::webhook_deliveries(shared, call),
        ("/webhooks/{id}/secret", _) => webhooks::secret(shared, call),
        ("/webhooks/{id}/secret/rotate", _) => webhooks::rotate(shared, call),
        ("/webhooks/{id}/recover", _) => dead_letters::recover(shared, call),
        ("/dead-letters", _) => dead_letters::list(shared, call),
        ("/dead-letters/{id}/redeliver", _) => dead_letters::redeliver(shared, call),
        ("/metrics", _) => health::metrics(shared),
        ("/stats/summary", _) => stats::summary(shared),
        ("/deliveries/recent", _) => stats::recent(shared, call),
        ("/test-receivers", "GET") => receivers::list(shared),
        ("/test-receivers", _) => receivers::create(shared),
        ("/test-receivers/{id}/requests", "GET") => receivers::requests(shared, call),
        ("/test-receivers/{id}/requests", _) => receivers::clear(shared, call),
        ("/test-receivers/{id}/webhook", _) => receivers::capture(shared, call),
        ("/webhook-monitor/{sessionId}", _) => sessions::capture(shared, call),
        ("/webhook-monitor/{sessionId}/requests", "GET") => sessions::requests(shared, call),
        ("/webhook-monitor/{sessionId}/requests", _) => sessions::clear(shared, call),
        _ => Reply::internal("no handler for this route"),
    }
}

/// The dashboard: one page, embedded in the binary, no external assets. It holds no data of its
/// own; it calls the API from the browser with the token the user enters.
fn dashboard() -> Reply {
    Reply::raw(
        200,
        "text/html; charset=utf-8",
        include_bytes!("../dashboard.html").to_vec(),
    )
    .with_header(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    )
    .with_header("X-Content-Type-Options", "nosniff")
    .with_header("Cache-Control", "no-store")
}

/// Parses `?limit=`: absent → `default`; not a positive whole number → 400; above `max` → `max`.
pub fn limit(call: &Call, default: usize, max: usize) -> Result<usize, Reply> {
    match call.query("limit") {
        None | Some("") => Ok(default),
        // Any positive whole number, however long, means at most `max`.
        Some(text)
            if text.bytes().all(|b| b.is_ascii_digit()) && text.bytes().any(|b| b != b'0') =>
        {
            Ok(text.parse::<usize>().map_or(max, |n| n.min(max)))
        }
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(Reply::error_message(
                400,
                "limit must be a positive whole number",
                format!("got {text:?}"),
            )),
        },
    }
}

/// Captured bodies are cut to this many bytes (capture URLs need no token).
const CAPTURED_BODY_BYTES: usize = 16 * 1024;

/// The request as a capture record (test receivers and monitor sessions, reference section 6),
/// its body cut to 16 KiB.
pub fn captured_request(call: &Call, id: &str) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = call
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    let query: serde_json::Map<String, serde_json::Value> = call
        .query
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    let truncated = call.body.len() > CAPTURED_BODY_BYTES;
    let kept = &call.body[..call.body.len().min(CAPTURED_BODY_BYTES)];
    let body = serde_json::from_slice(kept)
        .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(kept).into_owned()));
    let user_agent = call.header("user-agent").unwrap_or("");
    serde_json::json!({
        "id": id,
        "timestamp": crate::time::now_ms(),
        "method": call.method,
        "headers": headers,
        "body": body,
        "query": query,
        "user_agent": user_agent,
        "ip": call.client_ip,
        "body_truncated": truncated,
    })
}

/// `req_<ms>_<9 base36>`.
pub fn request_id() -> String {
    format!(
        "req_{}_{}",
        crate::time::now_ms(),
        crate::webhook::ids::random_base36(9)
    )
}
