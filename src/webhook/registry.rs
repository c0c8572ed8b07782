//! The webhooks in memory: loaded from `webhooks:registry`, swapped in whole as a [`Snapshot`].
//!
//! A refresher thread re-reads the hash periodically (writers that are not us, such as the
//! original service, announce nothing) and at once when `webhooks:changed` is published; the API
//! re-reads it itself after a write, before it answers, so this instance matches the next event
//! against the change ([`Registry::reload_after_write`]). A stored
//! webhook that does not validate is skipped, logged once per stored value, and never stops the
//! others (reference B8). Unknown event names written by the original are ignored, not fatal.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{info, warn};
use parking_lot::{Mutex, RwLock};
use redis::Commands;
use serde_json::Value;

use super::matching::Snapshot;
use super::model::{EventNames, Webhook};
use crate::keys;
use crate::redis_conn::RedisPool;
use crate::shutdown::Shutdown;
use crate::shutdown::{Backoff, Outage};

/// A stored webhook's text and what it validated to (`None`: invalid).
type Known = (String, Option<Arc<Webhook>>);

/// The current snapshot, and what it was built from.
#[derive(Debug)]
pub(crate) struct Registry {
    current: RwLock<Arc<Snapshot>>,
    /// What the snapshot was built from, and which read it came from.
    loaded: Mutex<Loaded>,
    /// Numbers the reads of `webhooks:registry` in the order they start. Several threads read
    /// (the refresher, delivery threads, API writers): a read that started earlier may finish
    /// later, and must not replace what a later one found.
    next_read: AtomicU64,
    /// When the read the snapshot comes from started (ms since the epoch; 0: never).
    reloaded_ms: AtomicU64,
    half_open_after_ms: u64,
}

#[derive(Debug, Default)]
struct Loaded {
    /// Stored text of each webhook and what it validated to (`None`: invalid), so unchanged
    /// entries are not validated again and an invalid one is reported once.
    known: HashMap<String, Known>,
    /// The number of the read the snapshot comes from (0: none yet).
    read: u64,
}

/// Shortest time between two reloads asked for by [`Registry::refresh_for`].
const REFRESH_FOR_EVERY_MS: u64 = 500;

impl Registry {
    /// An empty registry; disconnected webhooks are tried again after `half_open_after_ms`.
    pub(crate) fn new(half_open_after_ms: u64) -> Registry {
        Registry {
            current: RwLock::new(Arc::new(Snapshot::new(Vec::new(), half_open_after_ms))),
            loaded: Mutex::new(Loaded::default()),
            next_read: AtomicU64::new(0),
            reloaded_ms: AtomicU64::new(0),
            half_open_after_ms,
        }
    }

    /// The current webhooks.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().clone()
    }

    /// Whether the registry has been read from Redis at least once.
    pub(crate) fn is_loaded(&self) -> bool {
        self.reloaded_ms.load(Ordering::Acquire) != 0
    }

    /// Re-reads `webhooks:registry` and swaps in a new snapshot if anything changed. When it
    /// returns `Ok`, the snapshot is at least as new as the hash was when it was called: a read
    /// that started later and finished first is kept rather than replaced by this one's older
    /// view (what it missed was written after it started, and its writer reads again).
    pub(crate) fn reload(&self, redis: &RedisPool) -> redis::RedisResult<()> {
        let read = self.next_read.fetch_add(1, Ordering::AcqRel) + 1;
        let started_ms = crate::time::now_ms().max(1);
        let stored: HashMap<String, String> = redis.with(|conn| conn.hgetall(keys::REGISTRY))?;
        self.apply(read, started_ms, stored);
        Ok(())
    }

    /// Installs what read number `read`, started at `started_ms`, found in the hash, unless a
    /// later read is installed already.
    fn apply(&self, read: u64, started_ms: u64, stored: HashMap<String, String>) {
        let mut loaded = self.loaded.lock();
        if read < loaded.read {
            return;
        }
        let first = loaded.read == 0;
        loaded.read = read;
        let known = &mut loaded.known;
        let changed = stored.len() != known.len()
            || stored
                .iter()
                .any(|(id, text)| known.get(id).is_none_or(|(old, _)| old != text));
        if changed || first {
            let mut next = HashMap::with_capacity(stored.len());
            for (id, text) in stored {
                let parsed = match known.remove(&id) {
                    Some((old, parsed)) if old == text => parsed,
                    _ => validate(&id, &text),
                };
                next.insert(id, (text, parsed));
            }
            for id in known.keys().filter(|id| !next.contains_key(*id)) {
                info!("webhook {id} was removed from the registry");
            }
            *known = next;
            let mut webhooks: Vec<Arc<Webhook>> =
                known.values().filter_map(|(_, w)| w.clone()).collect();
            webhooks.sort_by(|a, b| a.id.cmp(&b.id));
            // Swapped while `loaded` is held, so snapshots are installed in the order of reads.
            *self.current.write() = Arc::new(Snapshot::new(webhooks, self.half_open_after_ms));
        }
        self.reloaded_ms.store(started_ms, Ordering::Release);
    }

    /// Brings this instance up to date after the API changed webhook `id` in Redis, before the
    /// API answers: an event published once the answer is out is matched against the change
    /// (read-your-writes). Other instances follow through `webhooks:changed`. If Redis fails
    /// now, the change reaches this instance with the next periodic reload.
    pub(crate) fn reload_after_write(&self, redis: &RedisPool, id: &str) {
        if let Err(e) = self.reload(redis) {
            warn!(
                "webhook {id} is changed in {} but this instance could not read it back ({e}); it follows within the refresh period",
                keys::REGISTRY
            );
        }
    }

    /// Makes sure the snapshot can say whether webhook `id`, which existed at `existed_ms`, still
    /// does: a webhook missing from it may be newer than this copy (created on another instance,
    /// or the registry not read yet at start-up). The registry is read again unless the copy is
    /// from after `existed_ms`, and at most every 500 ms otherwise. An error means it cannot
    /// tell.
    pub(crate) fn refresh_for(
        &self,
        redis: &RedisPool,
        id: &str,
        existed_ms: u64,
    ) -> redis::RedisResult<()> {
        let reloaded = self.reloaded_ms.load(Ordering::Acquire);
        let since = crate::time::now_ms().saturating_sub(reloaded);
        // Never read (0) counts as read before `existed_ms`.
        if self.snapshot().get(id).is_none()
            && (reloaded <= existed_ms || since >= REFRESH_FOR_EVERY_MS)
        {
            self.reload(redis)?;
        }
        Ok(())
    }
}

fn validate(id: &str, text: &str) -> Option<Arc<Webhook>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            warn!(
                "webhook {id} in {} is not valid JSON and is skipped: {e}",
                keys::REGISTRY
            );
            return None;
        }
    };
    match Webhook::from_json(id, &value, EventNames::Lenient) {
        Ok(webhook) => {
            let ignored: Vec<&String> = webhook
                .events
                .iter()
                .filter(|e| super::model::Subscription::parse(e).is_none())
                .collect();
            if !ignored.is_empty() {
                warn!(
                    "webhook {id} subscribes to unknown event types {ignored:?}, which are ignored"
                );
            }
            info!(
                "webhook {id} loaded: {} for {:?}",
                webhook.url, webhook.events
            );
            Some(Arc::new(webhook))
        }
        Err(e) => {
            warn!(
                "webhook {id} in {} is invalid and is skipped: {e}",
                keys::REGISTRY
            );
            None
        }
    }
}

/// Starts the `webhook-registry` thread: reloads every `period`, and at once on a notification.
pub(crate) fn spawn_refresher(
    registry: Arc<Registry>,
    redis: Arc<RedisPool>,
    notify: Receiver<()>,
    period: Duration,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("webhook-registry".into())
        .spawn(move || {
            let mut backoff = Backoff::default();
            let mut outage = Outage::default();
            while !shutdown.is_set() {
                let wait = match registry.reload(&redis) {
                    Ok(()) => {
                        if outage.recovered() {
                            info!("webhook registry is readable again");
                        }
                        backoff.reset();
                        period
                    }
                    Err(e) => {
                        if outage.failed() {
                            warn!("cannot read {}: {e}; retrying with backoff", keys::REGISTRY);
                        }
                        backoff.next_delay()
                    }
                };
                let deadline = Instant::now() + wait;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || shutdown.is_set() {
                        break;
                    }
                    match notify.recv_timeout(left.min(Duration::from_millis(500))) {
                        Ok(()) => {
                            // Coalesce a burst of notifications into one reload.
                            while notify.try_recv().is_ok() {}
                            break;
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(webhooks: &[(&str, bool)]) -> HashMap<String, String> {
        webhooks
            .iter()
            .map(|(id, active)| {
                let text = serde_json::json!({"id": id, "url": "https://example.com/h",
                    "events": ["complete_job"], "active": active});
                (id.to_string(), text.to_string())
            })
            .collect()
    }

    fn active(registry: &Registry, id: &str) -> Option<bool> {
        registry.snapshot().get(id).map(|w| w.active)
    }

    #[test]
    fn a_read_that_started_earlier_never_replaces_a_later_one() {
        let registry = Registry::new(1000);
        // Read 1 started before a pause was written, read 2 after; read 2 finishes first.
        registry.apply(2, 20, stored(&[("wh_a", false), ("wh_b", true)]));
        registry.apply(1, 10, stored(&[("wh_a", true)]));
        assert_eq!(active(&registry, "wh_a"), Some(false));
        assert_eq!(active(&registry, "wh_b"), Some(true));
        assert_eq!(registry.reloaded_ms.load(Ordering::Acquire), 20);
        // A later read is installed as usual, removals included.
        registry.apply(3, 30, stored(&[("wh_a", true)]));
        assert_eq!(active(&registry, "wh_a"), Some(true));
        assert_eq!(active(&registry, "wh_b"), None);
    }
}
