//! Test receivers (`/test-receivers…`, reference section 6): URLs that capture whatever is sent
//! to them, kept in Redis as the original keeps them (`webhook_test_receiver:<id>`, 24 h TTL,
//! newest 100 requests; at most 100 receivers).

use log::error;
use redis::Commands;
use serde_json::{Value, json};

use super::super::reply::Reply;
use super::super::server::Call;
use super::{captured_request, limit, request_id};
use crate::app::Shared;
use crate::keys;
use crate::time::{iso8601, now_ms};
use crate::webhook::ids;

/// Most receivers at once.
const MAX_RECEIVERS: usize = 100;
/// Requests kept per receiver.
const REQUESTS_KEPT: usize = 100;
/// Lifetime of a receiver.
const TTL_SECONDS: u64 = 86_400;
/// Attempts at a contended capture.
const MAX_TRIES: usize = 10;

fn not_found() -> Reply {
    Reply::error(404, "Test receiver not found")
}

fn failed(what: &str, e: &redis::RedisError) -> Reply {
    error!("could not {what}: {e}");
    Reply::unavailable()
}

fn load(
    shared: &Shared,
    id: &str,
) -> Result<Option<serde_json::Map<String, Value>>, redis::RedisError> {
    let raw: Option<String> = shared
        .redis
        .with(|conn| conn.get(keys::test_receiver(id)))?;
    Ok(raw.and_then(|text| match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }))
}

/// `POST /test-receivers` → 201, or 429 at the limit.
pub fn create(shared: &Shared) -> Reply {
    let ids_now: Vec<String> = match shared
        .redis
        .with(|conn| conn.smembers(keys::TEST_RECEIVERS))
    {
        Ok(ids) => ids,
        Err(e) => return failed("list test receivers", &e),
    };
    let mut live = 0;
    for id in &ids_now {
        match shared
            .redis
            .with(|conn| conn.exists::<_, bool>(keys::test_receiver(id)))
        {
            Ok(true) => live += 1,
            Ok(false) => {
                let _ = shared
                    .redis
                    .with(|conn| conn.srem::<_, _, ()>(keys::TEST_RECEIVERS, id));
            }
            Err(e) => return failed("list test receivers", &e),
        }
    }
    if live >= MAX_RECEIVERS {
        return Reply::error_message(
            429,
            "Too many test receivers",
            format!("at most {MAX_RECEIVERS} exist at once; they expire after 24 hours"),
        );
    }
    let id = ids::random_base36(16);
    let now = now_ms();
    let receiver = json!({
        "id": id,
        "url": format!("{}/test-receivers/{id}/webhook", shared.config.public_url),
        "view_url": format!("{}/webhook-test?receiver={id}", shared.config.app_url),
        "created_at": iso8601(now),
        "expires_at": iso8601(now + TTL_SECONDS * 1000),
        "requests": [],
    });
    let stored = shared.redis.with(|conn| {
        redis::pipe()
            .set_ex(keys::test_receiver(&id), receiver.to_string(), TTL_SECONDS)
            .ignore()
            .sadd(keys::TEST_RECEIVERS, &id)
            .ignore()
            .query::<()>(conn)
    });
    if let Err(e) = stored {
        return failed("create a test receiver", &e);
    }
    let mut data = receiver;
    if let Some(map) = data.as_object_mut() {
        map.shift_remove("requests");
        map.insert("expires_in_hours".into(), Value::from(24));
    }
    Reply::data(201, data)
}

/// `GET /test-receivers`.
pub fn list(shared: &Shared) -> Reply {
    let ids: Vec<String> = match shared
        .redis
        .with(|conn| conn.smembers(keys::TEST_RECEIVERS))
    {
        Ok(ids) => ids,
        Err(e) => return failed("list test receivers", &e),
    };
    let mut data = Vec::new();
    for id in ids {
        match load(shared, &id) {
            Ok(Some(r)) => data.push(json!({
                "id": r.get("id"),
                "url": r.get("url"),
                "created_at": r.get("created_at"),
                "expires_at": r.get("expires_at"),
                "request_count": r.get("requests").and_then(Value::as_array).map(Vec::len).unwrap_or(0),
            })),
            Ok(None) => {
                let _ = shared.redis.with(|conn| conn.srem::<_, _, ()>(keys::TEST_RECEIVERS, &id));
            }
            Err(e) => return failed("read a test receiver", &e),
        }
    }
    let total = data.len();
    Reply::data_with(
        200,
        Value::from(data),
        &[
            ("total", Value::from(total)),
            ("max_receivers", Value::from(MAX_RECEIVERS)),
        ],
    )
}

/// `GET /test-receivers/:id/requests?limit=N` (default 50).
pub fn requests(shared: &Shared, call: &Call) -> Reply {
    let limit = match limit(call, 50, REQUESTS_KEPT) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let receiver = match load(shared, call.param(0)) {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => return failed("read a test receiver", &e),
    };
    let all = receiver
        .get("requests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let returned: Vec<Value> = all.iter().take(limit).cloned().collect();
    Reply::data(
        200,
        json!({
            "receiver_id": receiver.get("id"),
            "receiver_url": receiver.get("url"),
            "created_at": receiver.get("created_at"),
            "expires_at": receiver.get("expires_at"),
            "total_requests": all.len(),
            "returned_count": returned.len(),
            "requests": returned,
        }),
    )
}

/// `DELETE /test-receivers/:id/requests`.
pub fn clear(shared: &Shared, call: &Call) -> Reply {
    let id = call.param(0);
    match modify(shared, id, |requests| {
        let n = requests.len();
        requests.clear();
        n
    }) {
        Ok(Some(cleared)) => Reply::envelope(
            200,
            json!({"success": true, "message": format!("Cleared {cleared} requests"), "cleared_count": cleared}),
        ),
        Ok(None) => not_found(),
        Err(e) => failed("clear a test receiver", &e),
    }
}

/// `ANY /test-receivers/:id/webhook`: captures the request.
pub fn capture(shared: &Shared, call: &Call) -> Reply {
    let id = call.param(0);
    let request_id = request_id();
    let record = captured_request(call, &request_id);
    match modify(shared, id, |requests| {
        requests.insert(0, record.clone());
        requests.truncate(REQUESTS_KEPT);
    }) {
        Ok(Some(())) => Reply::envelope(
            200,
            json!({
                "success": true,
                "message": "Test webhook received successfully",
                "receiver_id": id,
                "request_id": request_id,
                "timestamp": iso8601(now_ms()),
            }),
        ),
        Ok(None) => Reply::error_message(
            404,
            "Test receiver not found",
            "This test receiver URL may have expired or been deleted",
        ),
        Err(e) => failed("capture a test request", &e),
    }
}

/// Read-modify-write of a receiver's requests under WATCH, keeping its TTL.
fn modify<T>(
    shared: &Shared,
    id: &str,
    change: impl Fn(&mut Vec<Value>) -> T,
) -> Result<Option<T>, redis::RedisError> {
    let key = keys::test_receiver(id);
    for _ in 0..MAX_TRIES {
        let result = shared
            .redis
            .with(|conn| -> redis::RedisResult<Option<Option<T>>> {
                redis::cmd("WATCH").arg(&key).exec(conn)?;
                let raw: Option<String> = conn.get(&key)?;
                let Some(mut receiver) = raw.and_then(|t| serde_json::from_str::<Value>(&t).ok())
                else {
                    redis::cmd("UNWATCH").exec(conn)?;
                    return Ok(Some(None));
                };
                let mut requests = receiver["requests"].as_array().cloned().unwrap_or_default();
                let out = change(&mut requests);
                receiver["requests"] = Value::from(requests);
                let committed: Option<()> = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(receiver.to_string())
                    .arg("KEEPTTL")
                    .ignore()
                    .query(conn)?;
                Ok(committed.map(|()| Some(out)))
            })?;
        if let Some(done) = result {
            return Ok(done);
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Client,
        "test receiver is being changed too often",
    )))
}
