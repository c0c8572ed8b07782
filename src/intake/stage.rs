//! The `intake-record` thread: records pub/sub events' deliveries in Redis in batches.
//!
//! Recording (claim + record script) costs a Redis round trip; done inline it limits intake to
//! one event per round trip. The subscriber thread parses, deduplicates, matches and builds
//! bodies, and hands each event here; this thread takes whatever has queued up (up to 256
//! events or about 2,048 deliveries), records them all in one round trip, and queues their
//! deliveries, in order.
//!
//! What waits here is bounded in deliveries, not only in events: one event fanned out to many
//! webhooks is many bodies. Past [`MAX_WAITING_DELIVERIES`] the subscriber waits, and the
//! burst waits as raw messages in Redis' output buffer for this client, far smaller than the
//! deliveries they become.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::error;

use crate::app::Shutdown;
use crate::delivery::dispatcher::{Dispatcher, Prepared};
use crate::event::Event;

/// Events waiting for the stage before the subscriber waits.
const CAPACITY: usize = 1024;
/// Deliveries waiting for the stage before the subscriber waits.
pub const MAX_WAITING_DELIVERIES: usize = 16_384;
/// Most events recorded in one round trip.
const BATCH: usize = 256;
/// Deliveries after which a batch is closed (a batch holds at least one event).
const BATCH_DELIVERIES: usize = 2048;
/// Longest the subscriber waits for room before handing an event over regardless.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// The subscriber's end.
#[derive(Debug, Clone)]
pub struct StageSender {
    tx: Sender<(Event, Prepared)>,
    waiting: Waiting,
}

impl StageSender {
    /// Hands an event over (waits while the stage is full: backpressure on the subscriber).
    pub fn send(&self, event: Event, prepared: Prepared) {
        let started = Instant::now();
        while self.waiting.deliveries.load(Ordering::Acquire) >= MAX_WAITING_DELIVERIES
            && started.elapsed() < MAX_WAIT
        {
            std::thread::sleep(Duration::from_micros(500));
        }
        let n = prepared.len();
        self.waiting.events.fetch_add(1, Ordering::AcqRel);
        self.waiting.deliveries.fetch_add(n, Ordering::AcqRel);
        if self.tx.send((event, prepared)).is_err() {
            self.waiting.events.fetch_sub(1, Ordering::AcqRel);
            self.waiting.deliveries.fetch_sub(n, Ordering::AcqRel);
            error!("the record stage has stopped; a pub/sub event is dropped");
        }
    }

    /// Waits (up to `limit`) until every event handed over is queued.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.waiting.events.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// What waits for the stage, shared by the subscriber's end and the stage.
#[derive(Debug, Clone, Default)]
pub struct Waiting {
    /// Events handed over and not yet queued for delivery.
    events: Arc<AtomicUsize>,
    /// Their deliveries.
    deliveries: Arc<AtomicUsize>,
}

/// The stage's channel.
pub fn channel() -> (StageSender, Receiver<(Event, Prepared)>, Waiting) {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    let waiting = Waiting::default();
    (
        StageSender {
            tx,
            waiting: waiting.clone(),
        },
        rx,
        waiting,
    )
}

/// Starts `intake-record`.
pub fn spawn(
    rx: Receiver<(Event, Prepared)>,
    waiting: Waiting,
    dispatcher: Arc<Dispatcher>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("intake-record".into())
        .spawn(move || {
            loop {
                let first = match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(item) => item,
                    Err(RecvTimeoutError::Timeout) if shutdown.is_set() => return,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let mut deliveries = first.1.len();
                let mut batch = Vec::with_capacity(BATCH);
                batch.push(first);
                while batch.len() < BATCH && deliveries < BATCH_DELIVERIES {
                    let Ok(item) = rx.try_recv() else { break };
                    deliveries += item.1.len();
                    batch.push(item);
                }
                let n = batch.len();
                dispatcher.dispatch_batch(batch);
                waiting.deliveries.fetch_sub(deliveries, Ordering::AcqRel);
                waiting.events.fetch_sub(n, Ordering::AcqRel);
            }
        })
}
