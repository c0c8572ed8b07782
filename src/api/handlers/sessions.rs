//! Monitor sessions (`/webhook-monitor/:sessionId`, reference section 6): an in-memory capture
//! used by the monitor UI's "Create Test" webhooks, kept in [`crate::api::captures::Sessions`]
//! under the capture budget.

use serde_json::json;

use super::super::captures::{Capture, REQUESTS_KEPT};
use super::super::reply::Reply;
use super::super::request::{Query, Request};
use super::super::state::Shared;
use super::{json_array, limit};
use crate::json::ObjectWriter;

/// `ANY /webhook-monitor/:sessionId`.
pub(crate) fn capture(shared: &Shared, session: &str, request: &Request) -> Reply {
    let capture = Capture::new(request);
    let request_id = capture.id.clone();
    shared.sessions.record(session, capture);
    Reply::envelope(
        200,
        json!({
            "success": true,
            "message": "Webhook request captured for monitoring",
            "session_id": session,
            "request_id": request_id,
            "timestamp": crate::time::iso8601(crate::time::now_ms()),
        }),
    )
}

/// `GET /webhook-monitor/:sessionId/requests?limit=N` (an unknown session has none).
pub(crate) fn requests(shared: &Shared, session: &str, query: &Query) -> Reply {
    let limit = match limit(query, 50, REQUESTS_KEPT) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let (total, newest) = shared.sessions.list(session, limit);
    // Written from the kept bytes: no JSON tree of the captures is ever built.
    let records: Vec<Vec<u8>> = newest.iter().map(|c| c.to_json()).collect();
    let mut data = ObjectWriter::new(records.iter().map(Vec::len).sum::<usize>() + 128);
    data.str("session_id", session)
        .raw("requests", &json_array(records.iter().map(Vec::as_slice)))
        .u64("total_requests", total as u64)
        .u64("returned_count", records.len() as u64);
    let mut body = ObjectWriter::new(0);
    body.bool("success", true).raw("data", &data.finish());
    Reply::raw(200, "application/json; charset=utf-8", body.finish())
}

/// `DELETE /webhook-monitor/:sessionId/requests`.
pub(crate) fn clear(shared: &Shared, session: &str) -> Reply {
    let cleared = shared.sessions.clear(session);
    Reply::envelope(
        200,
        json!({"success": true, "message": format!("Cleared {cleared} requests"), "cleared_count": cleared}),
    )
}
