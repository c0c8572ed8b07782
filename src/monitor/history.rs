//! Delivery history and per-webhook statistics in Redis, in the original's keys and shapes.
//!
//! Delivery threads hand an [`AttemptRecord`] to the `monitor-recorder` thread through a bounded
//! channel and move on; the recorder writes batches in one pipelined round trip, each record by
//! one Lua script so the lists, counters and response-time figures of a record change together.
//! Per attempt: `webhooks:attempts:<id>` (newest 100), `webhooks:delivery_log` (newest 1000), the
//! original's counters; per event (the delivery's final outcome): `total_events`,
//! `successful_events`, `failed_events`; per response: the average response time, and the newest
//! 1000 response times, from which the p95 is computed once per batch and webhook (not per record:
//! sorting in Redis for every attempt cost more than the attempt).

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{info, warn};
use redis::Commands;
use serde_json::{Map, Value, json};

use super::{Counters, bump};
use crate::app::Shutdown;
use crate::keys;
use crate::redis_conn::{Backoff, RedisPool};

/// Most records waiting for the recorder.
const QUEUE: usize = 65_536;
/// Most records written in one round trip.
const BATCH: usize = 512;
/// Payloads larger than this are not copied into the delivery log.
const MAX_LOGGED_PAYLOAD: usize = 16 * 1024;

const RECORD_SCRIPT: &str = r#"
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[7]) - 1)
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[8]) - 1)
redis.call('HINCRBY', KEYS[1], 'total_deliveries', 1)
redis.call('HSET', KEYS[1], 'last_delivery_at', ARGV[5])
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[1], 'successful_deliveries', 1)
  redis.call('HSET', KEYS[1], 'last_success_at', ARGV[5])
else
  redis.call('HINCRBY', KEYS[1], 'failed_deliveries', 1)
  redis.call('HSET', KEYS[1], 'last_failure_at', ARGV[5])
end
if ARGV[4] == 'ok' then
  redis.call('HINCRBY', KEYS[1], 'total_events', 1)
  redis.call('HINCRBY', KEYS[1], 'successful_events', 1)
elseif ARGV[4] == 'failed' then
  redis.call('HINCRBY', KEYS[1], 'total_events', 1)
  redis.call('HINCRBY', KEYS[1], 'failed_events', 1)
end
if ARGV[6] ~= '' then
  local total = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 'response_time_total_ms', ARGV[6]))
  local count = redis.call('HINCRBY', KEYS[1], 'response_time_count', 1)
  redis.call('HSET', KEYS[1], 'average_response_time_ms', string.format('%.3f', total / count))
  redis.call('LPUSH', KEYS[4], ARGV[6])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[9]) - 1)
end
return 1
"#;

/// How a delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// More attempts may follow.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up (attempts used up, or 410).
    Failed,
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The webhook.
    pub webhook_id: Arc<str>,
    /// Its URL at the time.
    pub url: String,
    /// The event.
    pub event_id: String,
    /// The name it was delivered under.
    pub event_type: Arc<str>,
    /// 1-based.
    pub attempt_number: u32,
    /// When the attempt ended (ms since the epoch).
    pub timestamp: u64,
    /// 2xx?
    pub success: bool,
    /// The HTTP status, when a response came.
    pub response_status: Option<u16>,
    /// The start of the response body (already truncated).
    pub response_body: String,
    /// What went wrong.
    pub error_message: Option<String>,
    /// When the next attempt is due, if one is.
    pub next_retry_at: Option<u64>,
    /// Duration of the attempt, when a response came.
    pub response_time_ms: Option<f64>,
    /// Outcome class label.
    pub outcome: &'static str,
    /// Where the delivery stands.
    pub state: Final,
    /// The body that was sent.
    pub payload: Arc<[u8]>,
    /// True for `POST /webhooks/:id/test` deliveries.
    pub test: bool,
}

impl AttemptRecord {
    /// The `webhooks:attempts:<id>` entry (the original's `WebhookDeliveryAttempt`, plus
    /// `response_time_ms` and `outcome`).
    pub fn attempt_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "id".into(),
            Value::from(format!("{}_{}", self.event_id, self.attempt_number)),
        );
        m.insert("webhook_id".into(), Value::from(&*self.webhook_id));
        m.insert("event_id".into(), Value::from(self.event_id.as_str()));
        m.insert("event_type".into(), Value::from(&*self.event_type));
        m.insert("attempt_number".into(), Value::from(self.attempt_number));
        m.insert("timestamp".into(), Value::from(self.timestamp));
        m.insert("success".into(), Value::from(self.success));
        if let Some(status) = self.response_status {
            m.insert("response_status".into(), Value::from(status));
            m.insert(
                "response_body".into(),
                Value::from(self.response_body.as_str()),
            );
        }
        if let Some(error) = &self.error_message {
            m.insert("error_message".into(), Value::from(error.as_str()));
        }
        if let Some(at) = self.next_retry_at {
            m.insert("next_retry_at".into(), Value::from(at));
        }
        self.extras(&mut m);
        Value::Object(m)
    }

    /// The `webhooks:delivery_log` entry (the original's shape, plus `response_time_ms`,
    /// `outcome` and the `payload` the monitor UI shows).
    pub fn log_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("webhook_id".into(), Value::from(&*self.webhook_id));
        m.insert("event_id".into(), Value::from(self.event_id.as_str()));
        m.insert("event_type".into(), Value::from(&*self.event_type));
        m.insert("success".into(), Value::from(self.success));
        m.insert("timestamp".into(), Value::from(self.timestamp));
        m.insert("attempt_number".into(), Value::from(self.attempt_number));
        m.insert(
            "response_status".into(),
            self.response_status.map(Value::from).unwrap_or(Value::Null),
        );
        m.insert(
            "error_message".into(),
            self.error_message
                .as_deref()
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        m.insert(
            "response_body".into(),
            Value::from(self.response_body.as_str()),
        );
        m.insert("url".into(), Value::from(self.url.as_str()));
        self.extras(&mut m);
        if self.payload.len() > MAX_LOGGED_PAYLOAD {
            m.insert("payload_truncated".into(), Value::Bool(true));
        }
        Value::Object(m)
    }

    /// The delivery log entry as text, with the sent body spliced in as `payload`: the body is
    /// JSON this service wrote, so it is copied rather than parsed and written again.
    pub fn log_text(&self) -> Vec<u8> {
        let mut text = crate::event::json::to_vec(&self.log_json());
        if self.payload.len() <= MAX_LOGGED_PAYLOAD && text.last() == Some(&b'}') {
            text.pop();
            text.extend_from_slice(b",\"payload\":");
            text.extend_from_slice(&self.payload);
            text.push(b'}');
        }
        text
    }

    fn extras(&self, m: &mut Map<String, Value>) {
        m.insert(
            "response_time_ms".into(),
            self.response_time_ms
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        m.insert("outcome".into(), Value::from(self.outcome));
        if self.test {
            m.insert("test".into(), Value::Bool(true));
        }
    }
}

/// Where delivery threads send records.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: Sender<AttemptRecord>,
    counters: Arc<Counters>,
}

impl Recorder {
    /// Queues a record; when the recorder is far behind the record is counted as dropped (the
    /// delivery itself is unaffected).
    pub fn record(&self, record: AttemptRecord) {
        // An unbounded (list) channel with a length check, not a bounded (array) one: an array
        // channel allocates and touches every slot up front, megabytes of idle memory.
        if self.tx.len() >= QUEUE || self.tx.send(record).is_err() {
            bump(&self.counters.records_dropped);
        }
    }
}

/// The recorder's channel.
pub fn channel(counters: Arc<Counters>) -> (Recorder, Receiver<AttemptRecord>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (Recorder { tx, counters }, rx)
}

/// Starts the `monitor-recorder` thread.
pub fn spawn(
    rx: Receiver<AttemptRecord>,
    redis: Arc<RedisPool>,
    counters: Arc<Counters>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor-recorder".into())
        .spawn(move || {
            let mut backoff = Backoff::default();
            let mut batch: Vec<AttemptRecord> = Vec::with_capacity(BATCH);
            let mut p95_at: HashMap<Arc<str>, Instant> = HashMap::new();
            loop {
                if batch.is_empty() {
                    match rx.recv_timeout(Duration::from_millis(500)) {
                        Ok(record) => batch.push(record),
                        Err(RecvTimeoutError::Timeout) if shutdown.is_set() => return,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                batch.extend(rx.try_iter().take(BATCH - batch.len()));
                match write(&redis, &batch, &mut p95_at) {
                    Ok(()) => {
                        if backoff.failures() > 0 {
                            info!("delivery history is being recorded again");
                        }
                        backoff.reset();
                        batch.clear();
                    }
                    Err(e) => {
                        if backoff.failures() == 0 {
                            warn!("cannot record delivery history: {e}; retrying with backoff");
                        }
                        // Keep what we have, up to a bound, while Redis is away.
                        if batch.len() >= BATCH {
                            counters.records_dropped.fetch_add(
                                batch.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            batch.clear();
                        }
                        shutdown.sleep(backoff.next_delay());
                        if shutdown.is_set() {
                            return;
                        }
                    }
                }
            }
        })
}

/// How often one webhook's p95 is recomputed (reading 1000 response times back costs more than
/// the records themselves).
const P95_EVERY: Duration = Duration::from_secs(1);

fn write(
    redis: &RedisPool,
    batch: &[AttemptRecord],
    p95_at: &mut HashMap<Arc<str>, Instant>,
) -> redis::RedisResult<()> {
    let script = redis::Script::new(RECORD_SCRIPT);
    let mut pipe = redis::pipe();
    pipe.cmd("SCRIPT").arg("LOAD").arg(RECORD_SCRIPT).ignore();
    for record in batch {
        let state = match record.state {
            Final::Pending => "",
            Final::Delivered => "ok",
            Final::Failed => "failed",
        };
        let response_ms = record
            .response_time_ms
            .map(|ms| format!("{ms:.3}"))
            .unwrap_or_default();
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(4)
            .arg(keys::stats(&record.webhook_id))
            .arg(keys::attempts(&record.webhook_id))
            .arg(keys::DELIVERY_LOG)
            .arg(keys::latencies(&record.webhook_id))
            .arg(crate::event::json::to_vec(&record.attempt_json()))
            .arg(record.log_text())
            .arg(if record.success { "1" } else { "0" })
            .arg(state)
            .arg(record.timestamp)
            .arg(response_ms)
            .arg(keys::ATTEMPTS_KEPT)
            .arg(keys::LOG_KEPT)
            .arg(keys::LATENCIES_KEPT)
            .ignore();
    }
    redis.with(|conn| pipe.query::<()>(conn))?;
    // p95 of the newest response times, at most once a second per webhook.
    let now = Instant::now();
    let mut webhooks: Vec<Arc<str>> = batch
        .iter()
        .filter(|r| r.response_time_ms.is_some())
        .map(|r| r.webhook_id.clone())
        .collect();
    webhooks.sort_unstable();
    webhooks.dedup();
    webhooks.retain(|id| {
        p95_at
            .get(id)
            .is_none_or(|at| now.duration_since(*at) >= P95_EVERY)
    });
    if p95_at.len() > 10_000 {
        p95_at.retain(|_, at| now.duration_since(*at) < P95_EVERY);
    }
    for id in &webhooks {
        p95_at.insert(id.clone(), now);
    }
    if webhooks.is_empty() {
        return Ok(());
    }
    let lists: Vec<Vec<f64>> = redis.with(|conn| {
        let mut pipe = redis::pipe();
        for id in &webhooks {
            pipe.lrange(keys::latencies(id), 0, -1);
        }
        pipe.query(conn)
    })?;
    let mut pipe = redis::pipe();
    for (id, mut times) in webhooks.iter().zip(lists) {
        if times.is_empty() {
            continue;
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let index = ((times.len() as f64 * 0.95).ceil() as usize).clamp(1, times.len()) - 1;
        pipe.hset(
            keys::stats(id),
            "p95_response_time_ms",
            format!("{:.3}", times[index]),
        )
        .ignore();
    }
    redis.with(|conn| pipe.query::<()>(conn))
}

/// The newest `limit` attempts of a webhook, newest first.
pub fn attempts(redis: &RedisPool, id: &str, limit: usize) -> redis::RedisResult<Vec<Value>> {
    let raw: Vec<String> =
        redis.with(|conn| conn.lrange(keys::attempts(id), 0, limit as isize - 1))?;
    Ok(parse_all(raw))
}

/// Number of attempts kept for a webhook.
pub fn attempts_len(redis: &RedisPool, id: &str) -> redis::RedisResult<usize> {
    redis.with(|conn| conn.llen(keys::attempts(id)))
}

/// The newest `limit` delivery log entries, newest first.
pub fn recent(redis: &RedisPool, limit: usize) -> redis::RedisResult<Vec<Value>> {
    let raw: Vec<String> =
        redis.with(|conn| conn.lrange(keys::DELIVERY_LOG, 0, limit as isize - 1))?;
    Ok(parse_all(raw))
}

fn parse_all(raw: Vec<String>) -> Vec<Value> {
    raw.iter()
        .filter_map(|text| serde_json::from_str(text).ok())
        .collect()
}

/// Counter fields of a stats hash, as numbers.
const STAT_FIELDS: [&str; 6] = [
    "total_deliveries",
    "successful_deliveries",
    "failed_deliveries",
    "total_events",
    "successful_events",
    "failed_events",
];

/// A webhook's stats, every field of the contract present (zeros where nothing happened yet).
pub fn stats(redis: &RedisPool, id: &str) -> redis::RedisResult<Map<String, Value>> {
    let raw: std::collections::HashMap<String, String> =
        redis.with(|conn| conn.hgetall(keys::stats(id)))?;
    Ok(stats_object(&raw))
}

/// Stats of many webhooks in one round trip.
pub fn stats_many(
    redis: &RedisPool,
    ids: &[String],
) -> redis::RedisResult<Vec<Map<String, Value>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<std::collections::HashMap<String, String>> = redis.with(|conn| {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(keys::stats(id));
        }
        pipe.query(conn)
    })?;
    Ok(raw.iter().map(stats_object).collect())
}

fn stats_object(raw: &std::collections::HashMap<String, String>) -> Map<String, Value> {
    let mut m = Map::new();
    let number = |field: &str| -> Value {
        raw.get(field)
            .and_then(|v| v.parse::<f64>().ok())
            .and_then(|f| {
                if f.fract() == 0.0 {
                    Some(Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }
            })
            .unwrap_or(Value::from(0))
    };
    for field in STAT_FIELDS {
        m.insert(field.into(), number(field));
    }
    for field in ["average_response_time_ms", "p95_response_time_ms"] {
        m.insert(field.into(), number(field));
    }
    for field in ["last_delivery_at", "last_success_at", "last_failure_at"] {
        if let Some(at) = raw.get(field).and_then(|v| v.parse::<u64>().ok()) {
            m.insert(field.into(), Value::from(at));
        }
    }
    m
}

/// A summary of attempts in the delivery log since `since_ms`: (total, succeeded, failed).
pub fn log_counts_since(redis: &RedisPool, since_ms: u64) -> redis::RedisResult<(u64, u64, u64)> {
    let entries = recent(redis, keys::LOG_KEPT as usize)?;
    let mut counts = (0, 0, 0);
    for entry in entries
        .iter()
        .filter(|e| e["timestamp"].as_u64().is_some_and(|t| t >= since_ms))
    {
        counts.0 += 1;
        if entry["success"] == json!(true) {
            counts.1 += 1;
        } else {
            counts.2 += 1;
        }
    }
    Ok(counts)
}
