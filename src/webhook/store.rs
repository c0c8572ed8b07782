//! Writes to one webhook's stored JSON, made by the delivery path: disable on 410, count final
//! failures, reconnect on success.
//!
//! Each write is a read-modify-write of one field of `webhooks:registry` under WATCH, retried a
//! bounded number of times, so concurrent writers (API, other instances) lose nothing (reference
//! B17). Keys the service does not know are kept as they are, in their order. After a write the
//! change is announced on `webhooks:changed` so every instance reloads at once.

use std::fmt;

use log::warn;
use redis::Commands;
use serde_json::{Map, Value};

use super::model::{self, EventNames, ValidationError, Webhook};
use crate::keys;
use crate::redis_conn::RedisPool;
use crate::time::now_ms;

/// Attempts at a contended read-modify-write before giving up.
const MAX_TRIES: usize = 10;

/// A failed webhook write.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// Redis failed.
    Redis(redis::RedisError),
    /// The stored value is not a JSON object.
    Corrupt(String),
    /// Other writers kept changing the registry.
    Contended,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Redis(e) => write!(f, "redis: {e}"),
            StoreError::Corrupt(why) => write!(f, "stored webhook is not valid JSON: {why}"),
            StoreError::Contended => write!(f, "gave up after {MAX_TRIES} contended updates"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(e)
    }
}

/// What an [`update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Updated {
    /// There is no webhook with that id.
    Missing,
    /// The change asked for no write.
    Unchanged,
    /// Written and announced.
    Written,
}

/// Applies `change` to the stored webhook `id` atomically. `change` returns `Ok(false)` to write
/// nothing, or an error of its own, which is returned as it is and writes nothing.
pub(crate) fn update<E>(
    redis: &RedisPool,
    id: &str,
    change: impl Fn(&mut Map<String, Value>) -> Result<bool, E>,
) -> Result<Result<Updated, E>, StoreError> {
    for _ in 0..MAX_TRIES {
        let outcome = redis.with(
            |conn| -> redis::RedisResult<Result<Option<Result<Updated, E>>, StoreError>> {
                redis::cmd("WATCH").arg(keys::REGISTRY).exec(conn)?;
                let raw: Option<String> = conn.hget(keys::REGISTRY, id)?;
                let unwatch = |conn: &mut redis::Connection| redis::cmd("UNWATCH").exec(conn);
                let Some(raw) = raw else {
                    unwatch(conn)?;
                    return Ok(Ok(Some(Ok(Updated::Missing))));
                };
                let mut map = match serde_json::from_str::<Value>(&raw) {
                    Ok(Value::Object(map)) => map,
                    Ok(_) => {
                        unwatch(conn)?;
                        return Ok(Err(StoreError::Corrupt("not an object".into())));
                    }
                    Err(e) => {
                        unwatch(conn)?;
                        return Ok(Err(StoreError::Corrupt(e.to_string())));
                    }
                };
                match change(&mut map) {
                    Ok(true) => {}
                    Ok(false) => {
                        unwatch(conn)?;
                        return Ok(Ok(Some(Ok(Updated::Unchanged))));
                    }
                    Err(e) => {
                        unwatch(conn)?;
                        return Ok(Ok(Some(Err(e))));
                    }
                }
                let mut pipe = redis::pipe();
                store_into(pipe.atomic(), id, &map);
                let committed: Option<()> = pipe.query(conn)?;
                if committed.is_none() {
                    return Ok(Ok(None));
                }
                conn.publish::<_, _, ()>(keys::CHANGED_CHANNEL, id)?;
                Ok(Ok(Some(Ok(Updated::Written))))
            },
        )??;
        if let Some(result) = outcome {
            return Ok(result);
        }
    }
    Err(StoreError::Contended)
}

/// [`update`] for changes that cannot fail.
fn apply(
    redis: &RedisPool,
    id: &str,
    change: impl Fn(&mut Map<String, Value>) -> bool,
) -> Result<(), StoreError> {
    update(redis, id, |w| {
        Ok::<bool, std::convert::Infallible>(change(w))
    })
    .map(|_| ())
}

/// A client's update of webhook `id` at `now`: its writable fields of `input` over the stored
/// ones, validated as a whole (an invalid result writes nothing and is returned).
pub(crate) fn update_fields(
    redis: &RedisPool,
    id: &str,
    input: &Map<String, Value>,
    now: u64,
) -> Result<Result<Updated, ValidationError>, StoreError> {
    update(redis, id, |stored| -> Result<bool, ValidationError> {
        model::merge_writable(stored, input, now)?;
        Webhook::from_json(id, &Value::Object(stored.clone()), EventNames::Strict)?;
        Ok(true)
    })
}

/// Clears `disconnected` and the failure count of webhook `id`.
pub(crate) fn reconnect(redis: &RedisPool, id: &str) -> Result<Updated, StoreError> {
    infallible(update(redis, id, |w| {
        model::stored::reconnect(w, now_ms());
        Ok(true)
    }))
}

/// Rotates the secret of webhook `id` to `new_secret` at `now`; the old one keeps signing for
/// `grace_ms`.
pub(crate) fn rotate_secret(
    redis: &RedisPool,
    id: &str,
    new_secret: &str,
    grace_ms: u64,
    now: u64,
) -> Result<Updated, StoreError> {
    infallible(update(redis, id, |w| {
        model::stored::rotate(w, new_secret, grace_ms, now);
        Ok(true)
    }))
}

/// The outcome of an [`update`] whose change cannot fail.
fn infallible(
    result: Result<Result<Updated, std::convert::Infallible>, StoreError>,
) -> Result<Updated, StoreError> {
    match result? {
        Ok(updated) => Ok(updated),
        Err(never) => match never {},
    }
}

/// 410 Gone: the webhook becomes `active: false`, `disabled_reason: "gone"` (CONTRACT section 6).
pub(crate) fn disable_gone(redis: &RedisPool, id: &str) -> Result<(), StoreError> {
    apply(redis, id, |w| {
        model::stored::disable_gone(w, now_ms());
        true
    })
}

/// A delivery used up its attempts: count it, and disconnect a non-static webhook at the threshold.
pub(crate) fn record_final_failure(
    redis: &RedisPool,
    id: &str,
    is_static: bool,
    disconnect_after: u64,
) -> Result<(), StoreError> {
    apply(redis, id, |w| {
        let failures =
            model::stored::record_final_failure(w, is_static, disconnect_after, now_ms());
        if let Some(failures) = failures {
            warn!("webhook {id} is disconnected after {failures} failed deliveries in a row");
        }
        true
    })
}

/// A delivery succeeded: reset the failure count and reconnect.
pub(crate) fn record_success(redis: &RedisPool, id: &str) -> Result<(), StoreError> {
    apply(redis, id, |w| model::stored::record_success(w, now_ms()))
}

/// Reads one stored webhook as JSON (`None`: no such id).
pub(crate) fn get(redis: &RedisPool, id: &str) -> Result<Option<Map<String, Value>>, StoreError> {
    let raw: Option<String> = redis.with(|conn| conn.hget(keys::REGISTRY, id))?;
    match raw {
        None => Ok(None),
        Some(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Err(StoreError::Corrupt(format!(
                "webhook {id} is not an object"
            ))),
            Err(e) => Err(StoreError::Corrupt(format!("webhook {id}: {e}"))),
        },
    }
}

/// Every stored webhook that parses as a JSON object, newest `created_at` first.
pub(crate) fn list(redis: &RedisPool) -> Result<Vec<Map<String, Value>>, StoreError> {
    let all: std::collections::HashMap<String, String> =
        redis.with(|conn| conn.hgetall(keys::REGISTRY))?;
    let mut webhooks: Vec<Map<String, Value>> = all
        .into_values()
        .filter_map(|text| match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        })
        .collect();
    webhooks.sort_by_key(|w| {
        std::cmp::Reverse((
            w.get("created_at").and_then(Value::as_u64).unwrap_or(0),
            w.get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ))
    });
    Ok(webhooks)
}

/// Adds the commands that store a webhook as the original does: its JSON in the registry hash,
/// its id in or out of the active set.
fn store_into(pipe: &mut redis::Pipeline, id: &str, webhook: &Map<String, Value>) {
    let text = String::from_utf8_lossy(&crate::json::object_to_vec(webhook)).into_owned();
    pipe.hset(keys::REGISTRY, id, text).ignore();
    if webhook
        .get("active")
        .and_then(Value::as_bool)
        .unwrap_or(true)
    {
        pipe.sadd(keys::ACTIVE, id).ignore();
    } else {
        pipe.srem(keys::ACTIVE, id).ignore();
    }
}

/// Stores a new webhook (and zeroed stats, as the original does) and announces it.
pub(crate) fn insert(
    redis: &RedisPool,
    id: &str,
    webhook: &Map<String, Value>,
) -> Result<(), StoreError> {
    redis.with(|conn| {
        let mut pipe = redis::pipe();
        store_into(pipe.atomic(), id, webhook);
        let stats = keys::stats(id);
        for field in [
            "total_deliveries",
            "successful_deliveries",
            "failed_deliveries",
        ] {
            pipe.hset_nx(&stats, field, 0).ignore();
        }
        pipe.publish(keys::CHANGED_CHANNEL, id).ignore();
        pipe.query::<()>(conn)
    })?;
    Ok(())
}

/// Deletes a webhook with its stats and history; false if there was none.
pub(crate) fn delete(redis: &RedisPool, id: &str) -> Result<bool, StoreError> {
    let removed: (i64,) = redis.with(|conn| {
        redis::pipe()
            .atomic()
            .hdel(keys::REGISTRY, id)
            .srem(keys::ACTIVE, id)
            .ignore()
            .del(keys::stats(id))
            .ignore()
            .del(keys::attempts(id))
            .ignore()
            .del(keys::latencies(id))
            .ignore()
            .publish(keys::CHANGED_CHANNEL, id)
            .ignore()
            .query(conn)
    })?;
    Ok(removed.0 > 0)
}
