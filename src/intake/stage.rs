//! The `intake-record` thread: records pub/sub events' deliveries in Redis in batches.
//!
//! Recording (claim + record script) costs a Redis round trip; done inline it limits intake to
//! one event per round trip. The subscriber thread parses, deduplicates, matches and builds
//! bodies, and hands each event here; this thread takes whatever has queued up (up to 256
//! events), records them all in one pipelined round trip, and queues their deliveries, in order.

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
/// Most events recorded in one round trip.
const BATCH: usize = 256;

/// The subscriber's end.
#[derive(Debug, Clone)]
pub struct StageSender {
    tx: Sender<(Event, Prepared)>,
    /// Events handed over and not yet queued for delivery.
    pending: Arc<AtomicUsize>,
}

impl StageSender {
    /// Hands an event over (waits while the stage is full: backpressure on the subscriber).
    pub fn send(&self, event: Event, prepared: Prepared) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send((event, prepared)).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            error!("the record stage has stopped; a pub/sub event is dropped");
        }
    }

    /// Waits (up to `limit`) until every event handed over is queued.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// The stage's channel.
pub fn channel() -> (StageSender, Receiver<(Event, Prepared)>, Arc<AtomicUsize>) {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    let pending = Arc::new(AtomicUsize::new(0));
    (
        StageSender {
            tx,
            pending: pending.clone(),
        },
        rx,
        pending,
    )
}

/// Starts `intake-record`.
pub fn spawn(
    rx: Receiver<(Event, Prepared)>,
    pending: Arc<AtomicUsize>,
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
                let mut batch = Vec::with_capacity(BATCH);
                batch.push(first);
                batch.extend(rx.try_iter().take(BATCH - 1));
                let n = batch.len();
                dispatcher.dispatch_batch(batch);
                pending.fetch_sub(n, Ordering::AcqRel);
            }
        })
}
