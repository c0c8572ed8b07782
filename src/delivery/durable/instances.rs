//! Instances and their leases: the heartbeat that keeps an instance's leases, finding instances
//! whose heartbeat stopped and moving their leases back to due, and the event claims that tell
//! instances apart.

use redis::Commands;

use super::codec::RELEASE_ALL;
use super::{Durable, DurableError, err};
use crate::keys::{DELIVERIES, DUE, INSTANCES, deferring, heartbeat, leased};

impl Durable {
    /// Moves every lease of `instance` back to due now, and spreads what it recorded for the
    /// due set there; returns how many deliveries in all.
    pub(crate) fn release_all(&self, instance: &str, now_ms: u64) -> Result<u64, DurableError> {
        self.redis
            .with(|conn| {
                redis::Script::new(RELEASE_ALL)
                    .key(leased(instance))
                    .key(DUE)
                    .key(deferring(instance))
                    .key(DELIVERIES)
                    .arg(now_ms)
                    .invoke(conn)
            })
            .map_err(err("release leases"))
    }

    /// Refreshes this instance's heartbeat for `ttl_ms`.
    pub(crate) fn heartbeat(&self, ttl_ms: u64) -> Result<(), DurableError> {
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
    pub(crate) fn leave(&self) -> Result<(), DurableError> {
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
    pub(crate) fn dead_instances(&self) -> Result<Vec<String>, DurableError> {
        Ok(self
            .other_instances()?
            .into_iter()
            .filter(|(_, alive)| !alive)
            .map(|(id, _)| id)
            .collect())
    }

    /// Every other instance, with whether its heartbeat is alive.
    pub(crate) fn other_instances(&self) -> Result<Vec<(String, bool)>, DurableError> {
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
    pub(crate) fn claimed(&self, keys: &[String]) -> Result<Vec<bool>, DurableError> {
        self.exist(keys, "read event claims")
    }

    /// Whether each instance's heartbeat is alive (one pipelined round trip).
    pub(crate) fn alive(&self, instances: &[String]) -> Result<Vec<bool>, DurableError> {
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
    pub(crate) fn forget_instance(&self, instance: &str) -> Result<(), DurableError> {
        self.redis
            .with(|conn| conn.srem::<_, _, ()>(INSTANCES, instance))
            .map_err(err("forget an instance"))
    }
}
