//! Test receivers (`/test-receivers…`, reference section 6): URLs that capture whatever is sent
//! to them, kept in Redis as the original keeps them (`webhook_test_receiver:<id>`, 24 h TTL,
//! newest 100 requests; at most 100 receivers), each receiver's requests at most a hundredth of
//! `WEBHOOK_CAPTURE_MAX_BYTES`. Captured requests are copied as JSON text (`RawValue`), never
//! parsed into a tree, when a receiver is read, changed or listed.

use log::error;
use redis::Commands;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::super::captures::{Capture, REQUESTS_KEPT};
use super::super::reply::Reply;
use super::super::request::{Query, Request};
use super::super::state::Shared;
use super::{json_array, limit};
use crate::json::ObjectWriter;
use crate::keys;
use crate::time::{iso8601, now_ms};
use crate::webhook::ids;

/// Most receivers at once.
const MAX_RECEIVERS: usize = 100;
/// The content type of JSON replies written from kept text.
const JSON: &str = "application/json; charset=utf-8";
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

/// A receiver as stored in Redis: its fields in order, each kept as JSON text, so that its
/// captured requests are copied as text and never parsed into a tree.
struct Stored(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Stored, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Stored;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a test receiver object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stored, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push(field);
                }
                Ok(Stored(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

impl Stored {
    /// A field's JSON text, `null` if absent.
    fn field(&self, name: &str) -> &[u8] {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or(b"null", |(_, v)| v.get().as_bytes())
    }

    /// The captured requests, newest first, each as JSON text.
    fn requests(&self) -> Vec<Box<RawValue>> {
        serde_json::from_slice(self.field("requests")).unwrap_or_default()
    }

    fn set_requests(&mut self, requests: &[Box<RawValue>]) -> Result<(), serde_json::Error> {
        let text = RawValue::from_string(
            String::from_utf8_lossy(&json_array(requests.iter().map(|r| r.get().as_bytes())))
                .into_owned(),
        )?;
        match self.0.iter_mut().find(|(k, _)| k == "requests") {
            Some((_, value)) => *value = text,
            None => self.0.push(("requests".into(), text)),
        }
        Ok(())
    }

    fn to_json(&self) -> Vec<u8> {
        let mut w = ObjectWriter::new(self.0.iter().map(|(_, v)| v.get().len() + 16).sum());
        for (name, value) in &self.0 {
            w.raw(name, value.get().as_bytes());
        }
        w.finish()
    }
}

fn load(shared: &Shared, id: &str) -> Result<Option<Stored>, redis::RedisError> {
    let raw: Option<String> = shared
        .redis
        .with(|conn| conn.get(keys::test_receiver(id)))?;
    Ok(raw.and_then(|text| serde_json::from_str(&text).ok()))
}

/// `POST /test-receivers` → 201, or 429 at the limit.
pub(crate) fn create(shared: &Shared) -> Reply {
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
pub(crate) fn list(shared: &Shared) -> Reply {
    let ids: Vec<String> = match shared
        .redis
        .with(|conn| conn.smembers(keys::TEST_RECEIVERS))
    {
        Ok(ids) => ids,
        Err(e) => return failed("list test receivers", &e),
    };
    let mut items = Vec::new();
    for id in ids {
        match load(shared, &id) {
            Ok(Some(r)) => {
                let mut w = ObjectWriter::new(256);
                w.raw("id", r.field("id"))
                    .raw("url", r.field("url"))
                    .raw("created_at", r.field("created_at"))
                    .raw("expires_at", r.field("expires_at"))
                    .u64("request_count", r.requests().len() as u64);
                items.push(w.finish());
            }
            Ok(None) => {
                let _ = shared
                    .redis
                    .with(|conn| conn.srem::<_, _, ()>(keys::TEST_RECEIVERS, &id));
            }
            Err(e) => return failed("read a test receiver", &e),
        }
    }
    let mut body = ObjectWriter::new(items.iter().map(Vec::len).sum::<usize>() + 64);
    body.bool("success", true)
        .raw("data", &json_array(items.iter().map(Vec::as_slice)))
        .u64("total", items.len() as u64)
        .u64("max_receivers", MAX_RECEIVERS as u64);
    Reply::raw(200, JSON, body.finish())
}

/// `GET /test-receivers/:id/requests?limit=N` (default 50).
pub(crate) fn requests(shared: &Shared, id: &str, query: &Query) -> Reply {
    let limit = match limit(query, 50, REQUESTS_KEPT) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let receiver = match load(shared, id) {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => return failed("read a test receiver", &e),
    };
    let all = receiver.requests();
    let returned = &all[..all.len().min(limit)];
    let mut data = ObjectWriter::new(returned.iter().map(|r| r.get().len()).sum::<usize>() + 512);
    data.raw("receiver_id", receiver.field("id"))
        .raw("receiver_url", receiver.field("url"))
        .raw("created_at", receiver.field("created_at"))
        .raw("expires_at", receiver.field("expires_at"))
        .u64("total_requests", all.len() as u64)
        .u64("returned_count", returned.len() as u64)
        .raw(
            "requests",
            &json_array(returned.iter().map(|r| r.get().as_bytes())),
        );
    let mut body = ObjectWriter::new(0);
    body.bool("success", true).raw("data", &data.finish());
    Reply::raw(200, JSON, body.finish())
}

/// `DELETE /test-receivers/:id/requests`.
pub(crate) fn clear(shared: &Shared, id: &str) -> Reply {
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

/// `ANY /test-receivers/:id/webhook`: captures the request. A receiver keeps its newest 100
/// requests, and at most a hundredth of `WEBHOOK_CAPTURE_MAX_BYTES` of them (so that all
/// receivers together stay within it); beyond that its oldest go.
pub(crate) fn capture(shared: &Shared, id: &str, request: &Request) -> Reply {
    let capture = Capture::new(request);
    let request_id = capture.id.clone();
    let record =
        match RawValue::from_string(String::from_utf8_lossy(&capture.to_json()).into_owned()) {
            Ok(record) => record,
            Err(e) => {
                error!("test receiver {id}: a capture is not JSON: {e}");
                return Reply::internal("could not capture the request");
            }
        };
    let budget = shared.config.capture_max_bytes / MAX_RECEIVERS;
    match modify(shared, id, |requests| {
        requests.insert(0, record.clone());
        requests.truncate(REQUESTS_KEPT);
        let mut bytes: usize = requests.iter().map(|r| r.get().len()).sum();
        while bytes > budget && requests.len() > 1 {
            bytes -= requests.pop().map_or(0, |r| r.get().len());
        }
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
    change: impl Fn(&mut Vec<Box<RawValue>>) -> T,
) -> Result<Option<T>, redis::RedisError> {
    let key = keys::test_receiver(id);
    for _ in 0..MAX_TRIES {
        let result = shared
            .redis
            .with(|conn| -> redis::RedisResult<Option<Option<T>>> {
                redis::cmd("WATCH").arg(&key).exec(conn)?;
                let raw: Option<String> = conn.get(&key)?;
                let Some(mut receiver) = raw.and_then(|t| serde_json::from_str::<Stored>(&t).ok())
                else {
                    redis::cmd("UNWATCH").exec(conn)?;
                    return Ok(Some(None));
                };
                let mut requests = receiver.requests();
                let out = change(&mut requests);
                if let Err(e) = receiver.set_requests(&requests) {
                    redis::cmd("UNWATCH").exec(conn)?;
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "captured requests are not JSON",
                        e.to_string(),
                    )));
                }
                let committed: Option<()> = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(receiver.to_json())
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
