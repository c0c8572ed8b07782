//! The `intake-pubsub` thread: SUBSCRIBE to the event channels and `webhooks:changed`,
//! PSUBSCRIBE to the patterns (handling `pmessage`, which the original ignored, reference B1),
//! and reconnect with backoff whenever Redis goes away, without a busy loop or a log storm. After
//! a Sentinel failover the subscription moves to the new master and subscribes again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, info, warn};

use super::Intake;
use crate::event::parse::{CHANNELS, PATTERNS};
use crate::keys;
use crate::monitor::Counters;
use crate::redis_conn::RedisPool;
use crate::shutdown::Shutdown;
use crate::shutdown::{Backoff, Outage};
use crate::webhook::registry::Registry;

/// How long one read waits before checking for shutdown.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// After unsubscribing, how long a read waits for more of what Redis sent before (all of it
/// came before the last unsubscribe's answer; this only ends the reading).
const LAST_READ: Duration = Duration::from_millis(20);
/// Silence after which the connection is checked with a PING.
const PING_AFTER: Duration = Duration::from_secs(10);

/// Starts the subscriber thread.
pub(crate) fn spawn(
    redis: Arc<RedisPool>,
    registry: Arc<Registry>,
    intake: Arc<Intake>,
    registry_notify: Sender<()>,
    counters: Arc<Counters>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("intake-pubsub".into())
        .spawn(move || {
            let mut backoff = Backoff::default();
            let mut outage = Outage::default();
            let mut was_connected = false;
            while !shutdown.is_set() {
                // Match nothing against an empty registry: load it before the first event.
                let result = match registry.is_loaded() {
                    true => Ok(()),
                    false => registry.reload(&redis),
                }
                .and_then(|()| {
                    subscribe_and_read(
                        &redis,
                        &intake,
                        &registry_notify,
                        &counters,
                        &shutdown,
                        (&mut backoff, &mut outage),
                    )
                });
                counters.redis_connected.store(false, Ordering::Relaxed);
                if shutdown.is_set() {
                    break;
                }
                // The subscription ended, with or without an error: the outage starts here.
                let first_failure = outage.failed();
                let delay = backoff.next_delay();
                match result {
                    Err(e) if first_failure => {
                        if was_connected {
                            warn!("lost the Redis subscription: {e}; reconnecting with backoff");
                        } else {
                            warn!("cannot subscribe to Redis: {e}; retrying with backoff");
                        }
                    }
                    Err(e) => debug!(
                        "Redis subscription attempt {} failed: {e}",
                        backoff.failures()
                    ),
                    Ok(()) => {}
                }
                was_connected = true;
                redis.sleep(&shutdown, delay);
            }
        })
}

fn subscribe_and_read(
    redis: &RedisPool,
    intake: &Intake,
    registry_notify: &Sender<()>,
    counters: &Counters,
    shutdown: &Shutdown,
    (backoff, outage): (&mut Backoff, &mut Outage),
) -> redis::RedisResult<()> {
    let mut dedicated = redis.dedicated(READ_TIMEOUT)?;
    let generation = dedicated.generation();
    let result = (|| {
        let mut pubsub = dedicated.conn.as_pubsub();
        pubsub.set_read_timeout(Some(READ_TIMEOUT))?;
        for channel in CHANNELS.iter().chain([&keys::CHANGED_CHANNEL]) {
            pubsub.subscribe(*channel)?;
        }
        for pattern in PATTERNS {
            pubsub.psubscribe(pattern)?;
        }
        if outage.recovered() {
            info!("subscribed to Redis again");
        } else {
            info!(
                "subscribed to {} channels and {} patterns",
                CHANNELS.len(),
                PATTERNS.len()
            );
        }
        backoff.reset();
        counters.redis_connected.store(true, Ordering::Relaxed);
        // The registry may have changed while we were away.
        let _ = registry_notify.try_send(());
        let mut last_traffic = Instant::now();
        let take = |msg: redis::Msg| {
            let channel = msg.get_channel_name();
            if channel == keys::CHANGED_CHANNEL {
                let _ = registry_notify.try_send(());
                return;
            }
            let pattern: Option<String> = msg.get_pattern().ok().flatten();
            let source = pattern.as_deref().unwrap_or(channel);
            // Pub/sub has nothing to acknowledge: what could not be recorded was still queued.
            let _ = intake.process(source, channel, msg.get_payload_bytes(), false);
        };
        while !shutdown.is_set() {
            if !redis.is_current(generation) {
                info!("the Redis master moved; subscribing on the new one");
                return Ok(());
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    last_traffic = Instant::now();
                    take(msg);
                }
                Err(e) if e.is_timeout() => {
                    if last_traffic.elapsed() >= PING_AFTER {
                        // A half-open TCP connection looks like silence: ask.
                        pubsub.ping::<redis::Value>()?;
                        last_traffic = Instant::now();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Stopping. Redis counts a message as delivered once it is on its way to this
        // connection: unsubscribe, then take what it sent before the unsubscribe took effect
        // (kept by the client while it waits for each answer, or still in the socket).
        for channel in CHANNELS.iter().chain([&keys::CHANGED_CHANNEL]) {
            pubsub.unsubscribe(*channel)?;
        }
        for pattern in PATTERNS {
            pubsub.punsubscribe(pattern)?;
        }
        pubsub.set_read_timeout(Some(LAST_READ))?;
        let mut taken = 0u64;
        loop {
            match pubsub.get_message() {
                Ok(msg) => {
                    take(msg);
                    taken += 1;
                }
                Err(e) if e.is_timeout() => break,
                Err(e) => return Err(e),
            }
        }
        if taken > 0 {
            info!("took the {taken} events Redis had sent before intake unsubscribed");
        }
        Ok(())
    })();
    if let Err(e) = &result {
        redis.failed(e, generation);
    }
    result
}
