//! Monitor sessions (`/webhook-monitor/:sessionId`, reference section 6): an in-memory capture
//! used by the monitor UI's "Create Test" webhooks. Newest 100 requests per session; sessions
//! idle for an hour are forgotten; at most 1000 sessions (the capture URL needs no token).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::super::reply::Reply;
use super::super::server::Call;
use super::{captured_request, limit, request_id};
use crate::app::Shared;

const REQUESTS_KEPT: usize = 100;
const MAX_SESSIONS: usize = 1000;
const IDLE: Duration = Duration::from_secs(3600);

/// Captured requests per session.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: HashMap<String, (Instant, VecDeque<Value>)>,
}

impl Sessions {
    fn purge(&mut self) {
        self.sessions.retain(|_, (last, _)| last.elapsed() < IDLE);
        while self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, (last, _))| *last)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.sessions.remove(&id),
                None => break,
            };
        }
    }
}

/// `ANY /webhook-monitor/:sessionId`.
pub fn capture(shared: &Shared, call: &Call) -> Reply {
    let session = call.param(0).to_string();
    let request_id = request_id();
    let record = captured_request(call, &request_id);
    {
        let mut sessions = shared.sessions.lock();
        if !sessions.sessions.contains_key(&session) {
            sessions.purge();
        }
        let entry = sessions
            .sessions
            .entry(session.clone())
            .or_insert_with(|| (Instant::now(), VecDeque::new()));
        entry.0 = Instant::now();
        entry.1.push_front(record);
        entry.1.truncate(REQUESTS_KEPT);
    }
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
pub fn requests(shared: &Shared, call: &Call) -> Reply {
    let limit = match limit(call, 50, REQUESTS_KEPT) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let session = call.param(0);
    let sessions = shared.sessions.lock();
    let all: Vec<Value> = sessions
        .sessions
        .get(session)
        .map(|(_, r)| r.iter().cloned().collect())
        .unwrap_or_default();
    drop(sessions);
    let returned: Vec<Value> = all.iter().take(limit).cloned().collect();
    Reply::data(
        200,
        json!({
            "session_id": session,
            "requests": returned,
            "total_requests": all.len(),
            "returned_count": returned.len(),
        }),
    )
}

/// `DELETE /webhook-monitor/:sessionId/requests`.
pub fn clear(shared: &Shared, call: &Call) -> Reply {
    let cleared = shared
        .sessions
        .lock()
        .sessions
        .remove(call.param(0))
        .map(|(_, r)| r.len())
        .unwrap_or(0);
    Reply::envelope(
        200,
        json!({"success": true, "message": format!("Cleared {cleared} requests"), "cleared_count": cleared}),
    )
}
