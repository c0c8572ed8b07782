//! Durable delivery state in Redis: nothing matched is lost to a crash, a restart, an outage or
//! a scale-out (CONTRACT section 3; the original kept everything in memory, reference B12).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `webhooks:deliveries` | hash | delivery id (its `event_id`) → record (webhook, event, body, attempts) |
//! | `webhooks:due` | sorted set | ids waiting for a thread, scored by the time they are due (ms) |
//! | `webhooks:leased:<instance>` | set | ids an instance holds in memory (queued, parked or in flight) |
//! | `webhooks:instances` | set | instance ids; `webhooks:instance:<id>` is each one's heartbeat |
//! | `webhooks:claim:<identity>` | string | the first instance to see a pub/sub event claims it |
//! | `webhooks:sequence` | string | the last event sequence number given out (`X-Event-Sequence`) |
//! | `webhooks:dead_letters` | hash | delivery id → the record with its last error |
//! | `webhooks:dead_letters:by_time` | sorted set | dead-letter ids by failure time |
//!
//! Every id is in exactly one place: leased by one instance, due, or dead. A delivery is recorded
//! and leased (with the event's claim, in one script) before it is queued; an outcome moves it
//! (done: removed; retry: due at its time; given up: dead). The poller leases what is due; a
//! living instance's heartbeat keeps its leases; the leases of an instance whose heartbeat
//! stopped are moved back to due by whichever instance notices.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::Commands;
use serde_json::{Map, Value};

use super::Delivery;
use crate::event::EventKind;
use crate::json::ObjectWriter;
use crate::keys::{
    DEAD_LETTERS, DEAD_LETTERS_BY_TIME, DELIVERIES, DUE, INSTANCES, SEQUENCE, heartbeat, leased,
};
use crate::redis_conn::RedisPool;

/// Claims and records a batch of events. KEYS: the deliveries hash, this instance's lease set, the
/// sequence counter, then one claim key per event. ARGV, per event: the claim's TTL in ms ('0': no
/// claim), the number of deliveries n, then n (id, record without its closing `}`) pairs. Returns,
/// per event, its sequence number if it was recorded here, 0 if another instance had claimed it.
/// An event found claimed whose first delivery this instance still leases was recorded here by an
/// earlier try whose answer was lost with the connection (Redis went away just after running the
/// script): it is recorded again, the same ids and records (with a new sequence number, still in
/// source order), rather than counted as claimed elsewhere and left leased and never queued.
///
/// The batch takes one sequence number per event, in order, with one INCRBY: every instance
/// handles events in source order and claims them in one script, so an event claimed later has a
/// higher number, whichever instance claims it. The number closes each record (one concatenation
/// per record), so every attempt and redelivery sends the same one. Fields and ids are written in
/// chunks, many per command (Lua's `unpack` takes at most a few thousand values).
const RECORD: &str = r#"
local claimed, fields, ids = {}, {}, {}
local function flush()
  if #ids > 0 then
    redis.call('HSET', KEYS[1], unpack(fields))
    redis.call('SADD', KEYS[2], unpack(ids))
    fields, ids = {}, {}
  end
end
local seq = redis.call('INCRBY', KEYS[3], #KEYS - 3) - (#KEYS - 3)
local a = 1
for k = 4, #KEYS do
  local ttl, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  seq = seq + 1
  if ttl == '0' or redis.call('SET', KEYS[k], '1', 'NX', 'PX', ttl)
      or redis.call('SISMEMBER', KEYS[2], ARGV[a]) == 1 then
    local tail = string.format(',"sequence":%d}', seq)
    for _ = 1, n do
      fields[#fields + 1] = ARGV[a]
      fields[#fields + 1] = ARGV[a + 1] .. tail
      ids[#ids + 1] = ARGV[a]
      a = a + 2
      if #ids >= 1000 then flush() end
    end
    claimed[#claimed + 1] = seq
  else
    a = a + 2 * n
    claimed[#claimed + 1] = 0
  end
end
flush()
return claimed
"#;

const TAKE_DUE: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('SADD', KEYS[3], id)
    table.insert(out, record)
  end
end
return out
"#;

const RELEASE_ALL: &str = r#"
local moved = 0
while true do
  local ids = redis.call('SPOP', KEYS[1], 1000)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    redis.call('ZADD', KEYS[2], ARGV[1], id)
  end
  moved = moved + #ids
end
return moved
"#;

const REDELIVER: &str = r#"
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"#;

/// A failed durable-state operation.
#[derive(Debug)]
pub struct DurableError {
    op: &'static str,
    source: redis::RedisError,
}

impl fmt::Display for DurableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not {} in Redis: {}", self.op, self.source)
    }
}

impl std::error::Error for DurableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn err(op: &'static str) -> impl FnOnce(redis::RedisError) -> DurableError {
    move |source| DurableError { op, source }
}

/// The durable store of one instance.
#[derive(Debug, Clone)]
pub struct Durable {
    redis: Arc<RedisPool>,
    instance: Arc<str>,
    leased: Arc<str>,
    /// Deliveries this process has put back as due (see [`Durable::requeued`]).
    requeued: Arc<AtomicU64>,
}

/// What the due set and the dead letters hold, read in one round trip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueFigures {
    /// Deliveries in `webhooks:due`.
    pub due: u64,
    /// When the earliest of them is due (ms since the epoch).
    pub next_due_ms: Option<u64>,
    /// Dead letters kept.
    pub dead_letters: u64,
}

impl Durable {
    /// The store of `instance`.
    pub fn new(redis: Arc<RedisPool>, instance: &str) -> Durable {
        Durable {
            leased: Arc::from(leased(instance)),
            instance: Arc::from(instance),
            redis,
            requeued: Arc::new(AtomicU64::new(0)),
        }
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Records and leases `deliveries`, claiming the event first when `claim_ttl_ms` > 0.
    /// Returns the event's sequence number, or `None` (recording nothing) if another instance
    /// had already claimed it.
    pub fn record(
        &self,
        claim_key: &str,
        claim_ttl_ms: u64,
        deliveries: &[Delivery],
    ) -> Result<Option<u64>, DurableError> {
        let claimed = self.record_many(&[(claim_key.to_string(), claim_ttl_ms, deliveries)])?;
        Ok(claimed.first().copied().flatten())
    }

    /// [`Durable::record`] for several events in one round trip and one script: each event's
    /// claim is taken (or found taken), its sequence number given and its deliveries recorded
    /// atomically. Returns, per event, its sequence number if it was claimed here.
    pub fn record_many(
        &self,
        events: &[(String, u64, &[Delivery])],
    ) -> Result<Vec<Option<u64>>, DurableError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let script = redis::Script::new(RECORD);
        let mut invocation = script.prepare_invoke();
        invocation.key(DELIVERIES).key(&*self.leased).key(SEQUENCE);
        for (claim_key, ttl, deliveries) in events {
            invocation.key(claim_key).arg(*ttl).arg(deliveries.len());
            for d in deliveries.iter() {
                let mut record = encode(d);
                // The script closes it, with the sequence.
                record.pop();
                invocation.arg(&d.event_id).arg(record);
            }
        }
        let claimed: Vec<u64> = self
            .redis
            .with(|conn| invocation.invoke(conn))
            .map_err(err("record deliveries"))?;
        if claimed.len() != events.len() {
            return Err(DurableError {
                op: "record deliveries",
                source: redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "the record script answered for a different number of events",
                )),
            });
        }
        Ok(claimed.into_iter().map(|c| (c > 0).then_some(c)).collect())
    }

    /// A delivery succeeded: forget it.
    pub fn complete(&self, id: &str) -> Result<(), DurableError> {
        self.settle_many(&[id.to_string()], &[])
    }

    /// Settles many leased deliveries in one atomic round trip: `done` are forgotten, `due` are
    /// put back as due at their time with their attempt counts saved.
    pub fn settle_many(
        &self,
        done: &[String],
        due: &[(&Delivery, u64)],
    ) -> Result<(), DurableError> {
        if done.is_empty() && due.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !done.is_empty() {
            pipe.hdel(DELIVERIES, done)
                .ignore()
                .srem(&*self.leased, done)
                .ignore();
        }
        if !due.is_empty() {
            pipe.cmd("HSET").arg(DELIVERIES);
            for (delivery, _) in due {
                pipe.arg(&delivery.event_id).arg(encode(delivery));
            }
            pipe.ignore();
            pipe.cmd("SREM").arg(&*self.leased);
            for (delivery, _) in due {
                pipe.arg(&delivery.event_id);
            }
            pipe.ignore();
            pipe.cmd("ZADD").arg(DUE);
            for (delivery, at) in due {
                pipe.arg(*at).arg(&delivery.event_id);
            }
            pipe.ignore();
        }
        self.redis
            .with(|conn| pipe.query::<()>(conn))
            .map_err(err("settle deliveries"))?;
        self.requeued.fetch_add(due.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Deliveries this process has put back in `webhooks:due` (retries, hand-backs, spills),
    /// counted when written. Every path that puts a leased delivery back as due goes through
    /// [`Durable::settle_many`]; [`Durable::release_all`] reports its own count.
    pub fn requeued(&self) -> u64 {
        self.requeued.load(Ordering::Relaxed)
    }

    /// Puts a leased delivery back as due at `due_ms` (a retry, or a hand-back), saving its
    /// attempt count.
    pub fn defer(&self, delivery: &Delivery, due_ms: u64) -> Result<(), DurableError> {
        self.settle_many(&[], &[(delivery, due_ms)])
    }

    /// The record of delivery `id` (one this instance holds), or `None` if there is none.
    pub fn load(&self, id: &str) -> Result<Option<Delivery>, DurableError> {
        let record: Option<String> = self
            .redis
            .with(|conn| conn.hget(DELIVERIES, id))
            .map_err(err("read a delivery"))?;
        Ok(record.as_deref().and_then(decode))
    }

    /// A delivery used up its attempts (or its endpoint is gone): keep it as a dead letter.
    pub fn dead_letter(
        &self,
        delivery: &Delivery,
        failed_at: u64,
        last_status: Option<u16>,
        last_error: &str,
    ) -> Result<(), DurableError> {
        let id = delivery.event_id.as_str();
        let mut letter = record_map(delivery);
        letter.insert("id".into(), Value::from(id));
        letter.insert("failed_at".into(), Value::from(failed_at));
        letter.insert(
            "last_status".into(),
            last_status.map(Value::from).unwrap_or(Value::Null),
        );
        letter.insert("last_error".into(), Value::from(last_error));
        let letter = Value::Object(letter).to_string();
        self.redis
            .with(|conn| {
                redis::pipe()
                    .atomic()
                    .hdel(DELIVERIES, id)
                    .ignore()
                    .srem(&*self.leased, id)
                    .ignore()
                    .hset(DEAD_LETTERS, id, letter)
                    .ignore()
                    .zadd(DEAD_LETTERS_BY_TIME, id, failed_at)
                    .ignore()
                    .query::<()>(conn)
            })
            .map_err(err("store a dead letter"))
    }

    /// Leases up to `limit` deliveries due by `now_ms`.
    pub fn take_due(&self, now_ms: u64, limit: usize) -> Result<Vec<Delivery>, DurableError> {
        let records: Vec<String> = self
            .redis
            .with(|conn| {
                redis::Script::new(TAKE_DUE)
                    .key(DUE)
                    .key(DELIVERIES)
                    .key(&*self.leased)
                    .arg(now_ms)
                    .arg(limit)
                    .invoke(conn)
            })
            .map_err(err("take due deliveries"))?;
        Ok(records.iter().filter_map(|r| decode(r)).collect())
    }

    /// When the earliest due delivery is due, if any.
    pub fn next_due(&self) -> Result<Option<u64>, DurableError> {
        let first: Vec<(String, f64)> = self
            .redis
            .with(|conn| conn.zrange_withscores(DUE, 0, 0))
            .map_err(err("read the due set"))?;
        Ok(first.first().map(|(_, score)| *score as u64))
    }

    /// The size and head of the due set and the number of dead letters, in one round trip.
    pub fn figures(&self) -> Result<DueFigures, DurableError> {
        let (due, first, dead_letters): (u64, Vec<(String, f64)>, u64) = self
            .redis
            .with(|conn| {
                redis::pipe()
                    .zcard(DUE)
                    .zrange_withscores(DUE, 0, 0)
                    .zcard(DEAD_LETTERS_BY_TIME)
                    .query(conn)
            })
            .map_err(err("read the due set"))?;
        Ok(DueFigures {
            due,
            next_due_ms: first.first().map(|(_, score)| *score as u64),
            dead_letters,
        })
    }

    /// Moves every lease of `instance` back to due now; returns how many.
    pub fn release_all(&self, instance: &str, now_ms: u64) -> Result<u64, DurableError> {
        self.redis
            .with(|conn| {
                redis::Script::new(RELEASE_ALL)
                    .key(leased(instance))
                    .key(DUE)
                    .arg(now_ms)
                    .invoke(conn)
            })
            .map_err(err("release leases"))
    }

    /// Refreshes this instance's heartbeat for `ttl_ms`.
    pub fn heartbeat(&self, ttl_ms: u64) -> Result<(), DurableError> {
        self.redis
            .with(|conn| {
                redis::pipe()
                    .set_options(
                        heartbeat(&self.instance),
                        crate::time::now_ms(),
                        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms)),
                    )
                    .ignore()
                    .sadd(INSTANCES, &*self.instance)
                    .ignore()
                    .query::<()>(conn)
            })
            .map_err(err("refresh the heartbeat"))
    }

    /// Removes this instance's heartbeat and membership (a clean exit, leases released).
    pub fn leave(&self) -> Result<(), DurableError> {
        self.redis
            .with(|conn| {
                redis::pipe()
                    .del(heartbeat(&self.instance))
                    .ignore()
                    .srem(INSTANCES, &*self.instance)
                    .ignore()
                    .query::<()>(conn)
            })
            .map_err(err("leave"))
    }

    /// Instances whose heartbeat has stopped, other than this one.
    pub fn dead_instances(&self) -> Result<Vec<String>, DurableError> {
        Ok(self
            .other_instances()?
            .into_iter()
            .filter(|(_, alive)| !alive)
            .map(|(id, _)| id)
            .collect())
    }

    /// Every other instance, with whether its heartbeat is alive.
    pub fn other_instances(&self) -> Result<Vec<(String, bool)>, DurableError> {
        let all: Vec<String> = self
            .redis
            .with(|conn| conn.smembers(INSTANCES))
            .map_err(err("list instances"))?;
        let others: Vec<String> = all.into_iter().filter(|i| **i != *self.instance).collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let alive = self.alive(&others)?;
        Ok(others.into_iter().zip(alive).collect())
    }

    /// Whether each claim key is taken (one pipelined round trip).
    pub fn claimed(&self, keys: &[String]) -> Result<Vec<bool>, DurableError> {
        self.exist(keys, "read event claims")
    }

    /// Whether each instance's heartbeat is alive (one pipelined round trip).
    pub fn alive(&self, instances: &[String]) -> Result<Vec<bool>, DurableError> {
        let keys: Vec<String> = instances.iter().map(|i| heartbeat(i)).collect();
        self.exist(&keys, "read heartbeats")
    }

    fn exist(&self, keys: &[String], op: &'static str) -> Result<Vec<bool>, DurableError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.redis
            .with(|conn| {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.exists(key);
                }
                pipe.query(conn)
            })
            .map_err(err(op))
    }

    /// Forgets a dead instance (after its leases were released).
    pub fn forget_instance(&self, instance: &str) -> Result<(), DurableError> {
        self.redis
            .with(|conn| conn.srem::<_, _, ()>(INSTANCES, instance))
            .map_err(err("forget an instance"))
    }

    /// Dead letters, newest first, optionally of one webhook.
    pub fn dead_letters(
        &self,
        webhook_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, DurableError> {
        let ids: Vec<String> = self
            .redis
            .with(|conn| conn.zrevrange(DEAD_LETTERS_BY_TIME, 0, -1))
            .map_err(err("list dead letters"))?;
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let records: Vec<Option<String>> = self
                .redis
                .with(|conn| redis::cmd("HMGET").arg(DEAD_LETTERS).arg(chunk).query(conn))
                .map_err(err("read dead letters"))?;
            for record in records.into_iter().flatten() {
                let Ok(Value::Object(mut letter)) = serde_json::from_str::<Value>(&record) else {
                    continue;
                };
                if webhook_id
                    .is_some_and(|w| letter.get("webhook_id").and_then(Value::as_str) != Some(w))
                {
                    continue;
                }
                letter.shift_remove("body");
                out.push(Value::Object(letter));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Puts a dead letter back as due now, with its attempts reset (same `event_id`, same body).
    /// Returns the letter, or `None` if there is no such dead letter.
    pub fn redeliver(&self, id: &str, now_ms: u64) -> Result<Option<Value>, DurableError> {
        let letter: Option<String> = self
            .redis
            .with(|conn| conn.hget(DEAD_LETTERS, id))
            .map_err(err("read a dead letter"))?;
        let Some(letter) = letter else {
            return Ok(None);
        };
        let Some(mut delivery) = decode(&letter) else {
            return Ok(None);
        };
        delivery.attempts = 0;
        let moved: i64 = self
            .redis
            .with(|conn| {
                redis::Script::new(REDELIVER)
                    .key(DEAD_LETTERS)
                    .key(DEAD_LETTERS_BY_TIME)
                    .key(DELIVERIES)
                    .key(DUE)
                    .arg(id)
                    .arg(encode(&delivery))
                    .arg(now_ms)
                    .invoke(conn)
            })
            .map_err(err("redeliver a dead letter"))?;
        if moved == 0 {
            return Ok(None);
        }
        let mut view: Value = serde_json::from_str(&letter).unwrap_or(Value::Null);
        if let Some(map) = view.as_object_mut() {
            map.shift_remove("body");
        }
        Ok(Some(view))
    }

    /// Redelivers every dead letter of `webhook_id` that failed at or after `since_ms`.
    pub fn recover(
        &self,
        webhook_id: &str,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<u64, DurableError> {
        let ids: Vec<String> = self
            .redis
            .with(|conn| conn.zrangebyscore(DEAD_LETTERS_BY_TIME, since_ms, "+inf"))
            .map_err(err("list dead letters"))?;
        let mut requeued = 0;
        for chunk in ids.chunks(500) {
            let records: Vec<Option<String>> = self
                .redis
                .with(|conn| redis::cmd("HMGET").arg(DEAD_LETTERS).arg(chunk).query(conn))
                .map_err(err("read dead letters"))?;
            for (id, record) in chunk.iter().zip(records) {
                let belongs = record
                    .as_deref()
                    .and_then(decode)
                    .is_some_and(|d| &*d.webhook_id == webhook_id);
                if belongs && self.redeliver(id, now_ms)?.is_some() {
                    requeued += 1;
                }
            }
        }
        Ok(requeued)
    }

    /// Drops dead letters older than `max_age_ms` and beyond the newest `max_count`, at most
    /// `batch` per call so a cleanup never holds Redis for long.
    pub fn trim_dead_letters(
        &self,
        now_ms: u64,
        max_age_ms: u64,
        max_count: u64,
        batch: usize,
    ) -> Result<u64, DurableError> {
        let cutoff = now_ms.saturating_sub(max_age_ms);
        let mut old: Vec<String> = self
            .redis
            .with(|conn| {
                conn.zrangebyscore_limit(
                    DEAD_LETTERS_BY_TIME,
                    "-inf",
                    format!("({cutoff}"),
                    0,
                    batch as isize,
                )
            })
            .map_err(err("list old dead letters"))?;
        let total: u64 = self
            .redis
            .with(|conn| conn.zcard(DEAD_LETTERS_BY_TIME))
            .map_err(err("count dead letters"))?;
        let excess = total
            .saturating_sub(old.len() as u64)
            .saturating_sub(max_count);
        if excess > 0 && old.len() < batch {
            let more: Vec<String> = self
                .redis
                .with(|conn| {
                    conn.zrange(
                        DEAD_LETTERS_BY_TIME,
                        old.len() as isize,
                        (old.len() as u64 + excess.min((batch - old.len()) as u64)) as isize - 1,
                    )
                })
                .map_err(err("list surplus dead letters"))?;
            old.extend(more);
        }
        if old.is_empty() {
            return Ok(0);
        }
        self.redis
            .with(|conn| {
                redis::pipe()
                    .atomic()
                    .hdel(DEAD_LETTERS, &old)
                    .ignore()
                    .zrem(DEAD_LETTERS_BY_TIME, &old)
                    .ignore()
                    .query::<()>(conn)
            })
            .map_err(err("drop old dead letters"))?;
        Ok(old.len() as u64)
    }
}

fn record_map(d: &Delivery) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("webhook_id".into(), Value::from(&*d.webhook_id));
    m.insert("event_id".into(), Value::from(d.event_id.as_str()));
    m.insert("event_type".into(), Value::from(&*d.event_type));
    m.insert("kind".into(), Value::from(d.kind.name()));
    m.insert("attempts".into(), Value::from(d.attempts));
    m.insert("created_ms".into(), Value::from(d.created_ms));
    if let Some(job) = &d.job {
        m.insert("job_id".into(), Value::from(&**job));
    }
    m.insert(
        "body".into(),
        Value::from(String::from_utf8_lossy(&d.body).into_owned()),
    );
    if let Some(sequence) = d.sequence {
        m.insert("sequence".into(), Value::from(sequence));
    }
    m
}

/// The stored form of a delivery: the fields of `record_map`, written straight to text (this runs
/// once per delivery on the intake path). It ends with `}`, and with the sequence last when there
/// is one: the record script appends the sequence to records that have none yet.
pub fn encode(d: &Delivery) -> Vec<u8> {
    // Bodies are JSON this service wrote, so valid UTF-8 and borrowed here, not copied.
    let body = String::from_utf8_lossy(&d.body);
    let mut w = ObjectWriter::new(224 + body.len() + body.len() / 4);
    w.str("webhook_id", &d.webhook_id)
        .str("event_id", &d.event_id)
        .str("event_type", &d.event_type)
        .str("kind", d.kind.name())
        .u64("attempts", u64::from(d.attempts))
        .u64("created_ms", d.created_ms);
    if let Some(job) = &d.job {
        w.str("job_id", job);
    }
    w.str("body", &body);
    if let Some(sequence) = d.sequence {
        w.u64("sequence", sequence);
    }
    w.finish()
}

/// A delivery from its stored form (`None` if it is not one).
pub fn decode(text: &str) -> Option<Delivery> {
    let v: Value = serde_json::from_str(text).ok()?;
    Some(Delivery {
        webhook_id: Arc::from(v["webhook_id"].as_str()?),
        event_id: v["event_id"].as_str()?.to_string(),
        event_type: Arc::from(v["event_type"].as_str()?),
        kind: EventKind::from_name(v["kind"].as_str()?).unwrap_or(EventKind::JobCompleted),
        body: Arc::from(v["body"].as_str()?.as_bytes()),
        attempts: v["attempts"].as_u64().unwrap_or(0) as u32,
        created_ms: v["created_ms"].as_u64().unwrap_or(0),
        job: v["job_id"].as_str().map(Arc::from),
        sequence: v["sequence"].as_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(job: Option<&str>, sequence: Option<u64>) -> Delivery {
        Delivery {
            webhook_id: Arc::from("wh_1_a"),
            event_id: "wh_2_abcdefghi".into(),
            event_type: Arc::from("complete_job"),
            kind: EventKind::JobCompleted,
            body: Arc::from(br#"{"a":"\u00e9\n"}"#.to_vec()),
            attempts: 3,
            created_ms: 7,
            job: job.map(Arc::from),
            sequence,
        }
    }

    #[test]
    fn records_round_trip() {
        for d in [
            delivery(None, None),
            delivery(Some("job-1"), None),
            delivery(Some("job-1"), Some(42)),
        ] {
            // The same text the record's map serialises to (what earlier versions stored).
            assert_eq!(
                encode(&d),
                Value::Object(record_map(&d)).to_string().into_bytes()
            );
            let back = decode(&String::from_utf8(encode(&d)).unwrap_or_default());
            let fields = |b: Delivery| {
                (
                    b.webhook_id,
                    b.event_id,
                    b.event_type,
                    b.kind,
                    b.body,
                    b.attempts,
                    b.created_ms,
                    b.job,
                    b.sequence,
                )
            };
            assert_eq!(back.map(fields), Some(fields(d)));
        }
    }

    #[test]
    fn the_record_script_appends_the_sequence_as_encode_writes_it() {
        // What RECORD does to a record without a sequence and its closing brace: append.
        let without = String::from_utf8(encode(&delivery(Some("j"), None))).unwrap_or_default();
        let appended = format!("{},\"sequence\":42}}", &without[..without.len() - 1]);
        let with = String::from_utf8(encode(&delivery(Some("j"), Some(42)))).unwrap_or_default();
        assert_eq!(appended, with);
    }
}
