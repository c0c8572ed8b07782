//! Dead letters: deliveries that used up their attempts (or met a 410), kept with their last
//! error, listed, redelivered (same `event_id`, same body) and trimmed to their retention.

use redis::Commands;
use serde_json::Value;

use super::codec::{REDELIVER, decode, encode, record_map};
use super::{Durable, DurableError, err};
use crate::delivery::Delivery;
use crate::keys::{DEAD_LETTERS, DEAD_LETTERS_BY_TIME, DELIVERIES, DUE};

impl Durable {
    /// A delivery used up its attempts (or its endpoint is gone): keep it as a dead letter.
    pub(crate) fn dead_letter(
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

    /// Dead letters, newest first, optionally of one webhook.
    pub(crate) fn dead_letters(
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
    pub(crate) fn redeliver(&self, id: &str, now_ms: u64) -> Result<Option<Value>, DurableError> {
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
    pub(crate) fn recover(
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
    pub(crate) fn trim_dead_letters(
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
