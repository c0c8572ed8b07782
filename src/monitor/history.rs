//! Delivery history and per-webhook statistics in Redis, in the original's keys and shapes.
//!
//! Delivery threads hand an [`AttemptRecord`] to the `monitor-recorder` thread through a bounded
//! channel and move on; the recorder writes each batch (up to 512 records) in one atomic
//! round trip, with one push per list and one small script per webhook for its counters, so a
//! batch costs Redis about as much as a handful of attempts recorded one by one would. Per attempt: `webhooks:attempts:<id>` (newest 100), `webhooks:delivery_log` (newest 1000), the
//! original's counters; per event (the delivery's final outcome): `total_events`,
//! `successful_events`, `failed_events`; per response: the average response time, and the newest
//! 1000 response times. The p95 is computed from those when the stats are read, so it is exact as
//! soon as the batch with the last attempt is written, and costs the write path nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{info, warn};
use redis::Commands;
use serde_json::{Map, Value, json};

use super::{Counters, bump};
use crate::json::ObjectWriter;
use crate::keys;
use crate::redis_conn::RedisPool;
use crate::shutdown::Shutdown;
use crate::shutdown::{Backoff, Outage};

/// Most records waiting for the recorder.
const QUEUE: usize = 65_536;
/// Most records written in one round trip.
const BATCH: usize = 512;
/// How long the recorder lets records gather after the first of a batch arrives.
const LINGER: Duration = Duration::from_millis(5);
/// Payloads larger than this are not copied into the delivery log.
const MAX_LOGGED_PAYLOAD: usize = 16 * 1024;

/// Adds one batch's figures to a webhook's stats hash. ARGV: deliveries, succeeded, failed,
/// events delivered, events given up, time of the last attempt, of the last success ('' for
/// none), of the last failure ('' for none), sum of response times (ms), number of responses.
const STATS_SCRIPT: &str = r#"
local h = KEYS[1]
redis.call('HINCRBY', h, 'total_deliveries', ARGV[1])
redis.call('HSET', h, 'last_delivery_at', ARGV[6])
if ARGV[2] ~= '0' then
  redis.call('HINCRBY', h, 'successful_deliveries', ARGV[2])
  redis.call('HSET', h, 'last_success_at', ARGV[7])
end
if ARGV[3] ~= '0' then
  redis.call('HINCRBY', h, 'failed_deliveries', ARGV[3])
  redis.call('HSET', h, 'last_failure_at', ARGV[8])
end
local delivered, given_up = tonumber(ARGV[4]), tonumber(ARGV[5])
if delivered + given_up > 0 then
  redis.call('HINCRBY', h, 'total_events', delivered + given_up)
end
if delivered > 0 then redis.call('HINCRBY', h, 'successful_events', delivered) end
if given_up > 0 then redis.call('HINCRBY', h, 'failed_events', given_up) end
if ARGV[10] ~= '0' then
  local total = tonumber(redis.call('HINCRBYFLOAT', h, 'response_time_total_ms', ARGV[9]))
  local count = redis.call('HINCRBY', h, 'response_time_count', ARGV[10])
  redis.call('HSET', h, 'average_response_time_ms', string.format('%.3f', total / count))
end
return 1
"#;

/// How a delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Final {
    /// More attempts may follow.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up (attempts used up, or 410).
    Failed,
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRecord {
    /// The webhook.
    pub(crate) webhook_id: Arc<str>,
    /// Its URL at the time.
    pub(crate) url: String,
    /// The event.
    pub(crate) event_id: String,
    /// The name it was delivered under.
    pub(crate) event_type: Arc<str>,
    /// 1-based.
    pub(crate) attempt_number: u32,
    /// When the attempt ended (ms since the epoch).
    pub(crate) timestamp: u64,
    /// 2xx?
    pub(crate) success: bool,
    /// The HTTP status, when a response came.
    pub(crate) response_status: Option<u16>,
    /// The start of the response body (already truncated).
    pub(crate) response_body: String,
    /// What went wrong.
    pub(crate) error_message: Option<String>,
    /// When the next attempt is due, if one is.
    pub(crate) next_retry_at: Option<u64>,
    /// Duration of the attempt, when a response came.
    pub(crate) response_time_ms: Option<f64>,
    /// Outcome class label.
    pub(crate) outcome: &'static str,
    /// Where the delivery stands.
    pub(crate) state: Final,
    /// The body that was sent.
    pub(crate) payload: Arc<[u8]>,
    /// True for `POST /webhooks/:id/test` deliveries.
    pub(crate) test: bool,
}

impl AttemptRecord {
    /// The `webhooks:attempts:<id>` entry (the original's `WebhookDeliveryAttempt`, plus
    /// `response_time_ms` and `outcome`).
    pub(crate) fn attempt_text(&self) -> Vec<u8> {
        let mut w = ObjectWriter::new(256 + self.response_body.len());
        let id = format!("{}_{}", self.event_id, self.attempt_number);
        w.str("id", &id)
            .str("webhook_id", &self.webhook_id)
            .str("event_id", &self.event_id)
            .str("event_type", &self.event_type)
            .u64("attempt_number", u64::from(self.attempt_number))
            .u64("timestamp", self.timestamp)
            .bool("success", self.success);
        if let Some(status) = self.response_status {
            w.u64("response_status", u64::from(status))
                .str("response_body", &self.response_body);
        }
        if let Some(error) = &self.error_message {
            w.str("error_message", error);
        }
        if let Some(at) = self.next_retry_at {
            w.u64("next_retry_at", at);
        }
        self.extras(&mut w);
        w.finish()
    }

    /// The `webhooks:delivery_log` entry (the original's shape, plus `response_time_ms`,
    /// `outcome` and the `payload` the monitor UI shows). The body is JSON this service wrote,
    /// so it is copied in rather than parsed and written again.
    pub(crate) fn log_text(&self) -> Vec<u8> {
        let logged = self.payload.len() <= MAX_LOGGED_PAYLOAD;
        let payload = if logged { self.payload.len() } else { 0 };
        let mut w = ObjectWriter::new(384 + self.response_body.len() + payload);
        w.str("webhook_id", &self.webhook_id)
            .str("event_id", &self.event_id)
            .str("event_type", &self.event_type)
            .bool("success", self.success)
            .u64("timestamp", self.timestamp)
            .u64("attempt_number", u64::from(self.attempt_number));
        match self.response_status {
            Some(status) => w.u64("response_status", u64::from(status)),
            None => w.raw("response_status", b"null"),
        };
        w.opt_str("error_message", self.error_message.as_deref())
            .str("response_body", &self.response_body)
            .str("url", &self.url);
        self.extras(&mut w);
        if logged {
            w.raw("payload", &self.payload);
        } else {
            w.bool("payload_truncated", true);
        }
        w.finish()
    }

    fn extras(&self, w: &mut ObjectWriter) {
        w.f64("response_time_ms", self.response_time_ms)
            .str("outcome", self.outcome);
        if self.test {
            w.bool("test", true);
        }
    }
}

/// Where delivery threads send records.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    tx: Sender<AttemptRecord>,
    counters: Arc<Counters>,
}

impl Recorder {
    /// Queues a record; when the recorder is far behind the record is counted as dropped (the
    /// delivery itself is unaffected).
    pub(crate) fn record(&self, record: AttemptRecord) {
        // An unbounded (list) channel with a length check, not a bounded (array) one: an array
        // channel allocates and touches every slot up front, megabytes of idle memory.
        if self.tx.len() >= QUEUE || self.tx.send(record).is_err() {
            bump(&self.counters.records_dropped);
        }
    }
}

/// The recorder's channel.
pub(crate) fn channel(counters: Arc<Counters>) -> (Recorder, Receiver<AttemptRecord>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (Recorder { tx, counters }, rx)
}

/// Starts the `monitor-recorder` thread.
pub(crate) fn spawn(
    rx: Receiver<AttemptRecord>,
    redis: Arc<RedisPool>,
    counters: Arc<Counters>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor-recorder".into())
        .spawn(move || {
            let mut backoff = Backoff::default();
            let mut outage = Outage::default();
            let mut batch: Vec<AttemptRecord> = Vec::with_capacity(BATCH);
            loop {
                if batch.is_empty() {
                    match rx.recv_timeout(Duration::from_millis(500)) {
                        Ok(record) => batch.push(record),
                        Err(RecvTimeoutError::Timeout) if shutdown.is_set() => return,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    // Let a batch gather: while this thread sleeps, delivery threads queue
                    // records without waking it (a wake-up per record cost more than the record).
                    std::thread::sleep(LINGER);
                }
                batch.extend(rx.try_iter().take(BATCH - batch.len()));
                match write(&redis, &batch) {
                    Ok(()) => {
                        if outage.recovered() {
                            info!("delivery history is being recorded again");
                        }
                        backoff.reset();
                        batch.clear();
                    }
                    Err(e) => {
                        if outage.failed() {
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

/// One webhook's share of a batch.
#[derive(Default)]
struct Tally<'a> {
    records: Vec<&'a AttemptRecord>,
    succeeded: u64,
    delivered: u64,
    given_up: u64,
    last_success: Option<u64>,
    last_failure: Option<u64>,
    response_ms_sum: f64,
    responses: u64,
}

/// Writes a batch in one atomic round trip: the delivery log and each webhook's attempts and
/// response times by one `LPUSH` of many values (oldest first, so the newest ends up at the
/// head, as one push per attempt would leave it) and one `LTRIM`; each webhook's counters by one
/// small script with the batch's sums.
fn write(redis: &RedisPool, batch: &[AttemptRecord]) -> redis::RedisResult<()> {
    let mut order: Vec<&Arc<str>> = Vec::new();
    let mut tallies: HashMap<&Arc<str>, Tally> = HashMap::new();
    for record in batch {
        let tally = tallies.entry(&record.webhook_id).or_insert_with(|| {
            order.push(&record.webhook_id);
            Tally::default()
        });
        tally.records.push(record);
        if record.success {
            tally.succeeded += 1;
            tally.last_success = tally.last_success.max(Some(record.timestamp));
        } else {
            tally.last_failure = tally.last_failure.max(Some(record.timestamp));
        }
        match record.state {
            Final::Pending => {}
            Final::Delivered => tally.delivered += 1,
            Final::Failed => tally.given_up += 1,
        }
        if let Some(ms) = record.response_time_ms {
            tally.response_ms_sum += ms;
            tally.responses += 1;
        }
    }

    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("LPUSH").arg(keys::DELIVERY_LOG);
    for record in batch {
        pipe.arg(record.log_text());
    }
    pipe.ignore()
        .ltrim(keys::DELIVERY_LOG, 0, keys::LOG_KEPT - 1)
        .ignore();
    for id in &order {
        let Some(tally) = tallies.get(id) else {
            continue;
        };
        // Only what the trim keeps is written.
        let kept = tally.records.len().min(keys::ATTEMPTS_KEPT as usize);
        pipe.cmd("LPUSH").arg(keys::attempts(id));
        for record in &tally.records[tally.records.len() - kept..] {
            pipe.arg(record.attempt_text());
        }
        pipe.ignore()
            .ltrim(keys::attempts(id), 0, keys::ATTEMPTS_KEPT - 1)
            .ignore();
        if tally.responses > 0 {
            pipe.cmd("LPUSH").arg(keys::latencies(id));
            for ms in tally.records.iter().filter_map(|r| r.response_time_ms) {
                pipe.arg(format!("{ms:.3}"));
            }
            pipe.ignore()
                .ltrim(keys::latencies(id), 0, keys::LATENCIES_KEPT - 1)
                .ignore();
        }
        let last = tally.records.iter().map(|r| r.timestamp).max().unwrap_or(0);
        let at = |t: Option<u64>| t.map(|t| t.to_string()).unwrap_or_default();
        pipe.cmd("EVAL")
            .arg(STATS_SCRIPT)
            .arg(1)
            .arg(keys::stats(id))
            .arg(tally.records.len())
            .arg(tally.succeeded)
            .arg(tally.records.len() as u64 - tally.succeeded)
            .arg(tally.delivered)
            .arg(tally.given_up)
            .arg(last)
            .arg(at(tally.last_success))
            .arg(at(tally.last_failure))
            .arg(format!("{:.3}", tally.response_ms_sum))
            .arg(tally.responses)
            .ignore();
    }
    redis.with(|conn| pipe.query::<()>(conn))
}

/// The newest `limit` attempts of a webhook, newest first.
pub(crate) fn attempts(
    redis: &RedisPool,
    id: &str,
    limit: usize,
) -> redis::RedisResult<Vec<Value>> {
    let raw: Vec<String> =
        redis.with(|conn| conn.lrange(keys::attempts(id), 0, limit as isize - 1))?;
    Ok(parse_all(raw))
}

/// Number of attempts kept for a webhook.
pub(crate) fn attempts_len(redis: &RedisPool, id: &str) -> redis::RedisResult<usize> {
    redis.with(|conn| conn.llen(keys::attempts(id)))
}

/// The newest `limit` delivery log entries, newest first.
pub(crate) fn recent(redis: &RedisPool, limit: usize) -> redis::RedisResult<Vec<Value>> {
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
/// The p95 is computed now from the newest response times, so it includes every attempt
/// recorded so far.
pub(crate) fn stats(redis: &RedisPool, id: &str) -> redis::RedisResult<Map<String, Value>> {
    let (raw, times): (HashMap<String, String>, Vec<f64>) = redis.with(|conn| {
        redis::pipe()
            .hgetall(keys::stats(id))
            .lrange(keys::latencies(id), 0, -1)
            .query(conn)
    })?;
    Ok(stats_object(&raw, Some(p95(times))))
}

/// Stats of many webhooks in one round trip, without the p95.
pub(crate) fn stats_many(
    redis: &RedisPool,
    ids: &[String],
) -> redis::RedisResult<Vec<Map<String, Value>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<HashMap<String, String>> = redis.with(|conn| {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(keys::stats(id));
        }
        pipe.query(conn)
    })?;
    Ok(raw.iter().map(|raw| stats_object(raw, None)).collect())
}

/// The 95th percentile (nearest rank) of `times`, 0 for none.
fn p95(mut times: Vec<f64>) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let rank = (times.len() as f64 * 0.95).ceil() as usize;
    times[rank.clamp(1, times.len()) - 1]
}

fn stats_object(raw: &HashMap<String, String>, p95_ms: Option<f64>) -> Map<String, Value> {
    let mut m = Map::new();
    let number = |value: Option<f64>| -> Value {
        value
            .and_then(|f| {
                if f.fract() == 0.0 {
                    Some(Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }
            })
            .unwrap_or(Value::from(0))
    };
    let field = |name: &str| raw.get(name).and_then(|v| v.parse::<f64>().ok());
    for name in STAT_FIELDS {
        m.insert(name.into(), number(field(name)));
    }
    m.insert(
        "average_response_time_ms".into(),
        number(field("average_response_time_ms")),
    );
    if let Some(ms) = p95_ms {
        // Rounded to the microsecond, as response times are stored.
        m.insert(
            "p95_response_time_ms".into(),
            number(Some((ms * 1000.0).round() / 1000.0)),
        );
    }
    for name in ["last_delivery_at", "last_success_at", "last_failure_at"] {
        if let Some(at) = raw.get(name).and_then(|v| v.parse::<u64>().ok()) {
            m.insert(name.into(), Value::from(at));
        }
    }
    m
}

/// A summary of attempts in the delivery log since `since_ms`: (total, succeeded, failed).
pub(crate) fn log_counts_since(
    redis: &RedisPool,
    since_ms: u64,
) -> redis::RedisResult<(u64, u64, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_nearest_rank() {
        assert_eq!(p95(Vec::new()), 0.0);
        assert_eq!(p95(vec![5.0, 200.0, 5.0]), 200.0);
        assert_eq!(p95((1..=100).map(f64::from).collect()), 95.0);
        assert_eq!(p95((1..=20).map(f64::from).collect()), 19.0);
    }
}
