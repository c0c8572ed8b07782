//! The `intake-record` thread: records pub/sub events' deliveries in Redis in batches.
//!
//! Recording (claim + record script) costs a Redis round trip; done inline it limits intake to
//! one event per round trip. The subscriber thread parses, deduplicates, matches and builds
//! bodies, and hands each event here; this thread takes whatever has queued up (up to 256
//! events or about 2,048 deliveries), records them all in one round trip, and queues their
//! deliveries, in order. Deliveries to backed-up endpoints, recorded for the due set as one
//! value per event, are spread into it once intake has been idle for [`SPREAD_IDLE`] (at the
//! latest [`SPREAD_MAX_DELAY`] later, or after [`SPREAD_AFTER`] events): this thread spreads
//! them only after the events' other deliveries are queued.
//!
//! What waits here is bounded in deliveries, not only in events: one event fanned out to many
//! webhooks is many bodies. Past [`MAX_WAITING_DELIVERIES`] the subscriber waits, and the
//! burst waits as raw messages in Redis' output buffer for this client, far smaller than the
//! deliveries they become.
//!
//! With several instances on one Redis, an event another instance owns (see [`super::share`])
//! is handed over unbuilt and waits here for [`GRACE`]; then, unless its owner has claimed it
//! meanwhile (one `EXISTS` per event, pipelined), it is built and recorded here after all.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, error};

use super::share::{GRACE, Share};
use crate::delivery::dispatcher::{Dispatcher, Prepared};
use crate::event::Event;
use crate::monitor::bump;
use crate::shutdown::Shutdown;

/// Events waiting for the stage before the subscriber waits.
const CAPACITY: usize = 1024;
/// Deliveries waiting for the stage before the subscriber waits.
pub(crate) const MAX_WAITING_DELIVERIES: usize = 16_384;
/// Most events recorded in one round trip.
const BATCH: usize = 256;
/// Deliveries after which a batch is closed (a batch holds at least one event).
const BATCH_DELIVERIES: usize = 2048;
/// Events whose deliveries to backed-up endpoints are spread into the due set at the latest
/// together, while events keep coming ([`Dispatcher::spread`]).
const SPREAD_AFTER: u64 = 64;
/// How long intake is idle before they are spread (the events' other deliveries are made
/// meanwhile, without Redis and the CPU busy spreading beside them).
const SPREAD_IDLE: Duration = Duration::from_millis(2);
/// Longest they wait to be spread while events keep coming.
const SPREAD_MAX_DELAY: Duration = Duration::from_millis(20);
/// Longest the subscriber waits for room before handing an event over regardless.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Events of other instances held for their grace; past this the oldest are taken on early
/// (bounded memory in a burst beyond what the owners keep up with).
const MAX_DEFERRED: usize = 20_000;

/// What the subscriber hands over.
#[derive(Debug)]
pub(crate) enum Staged {
    /// An event this instance owns, with its deliveries built.
    Ready(Event, Prepared),
    /// An event another instance owns: built and recorded here only if its owner has not
    /// claimed it within the grace.
    Deferred(Event),
}

/// The subscriber's end.
#[derive(Debug, Clone)]
pub(crate) struct StageSender {
    tx: Sender<Staged>,
    waiting: Waiting,
    share: Arc<Share>,
}

impl StageSender {
    /// Whether this instance claims `event` first (else hand it over with [`StageSender::defer`],
    /// unbuilt).
    pub(crate) fn owns(&self, event: &Event) -> bool {
        self.share.owns(event)
    }

    /// Hands an event over (waits while the stage is full: backpressure on the subscriber).
    pub(crate) fn send(&self, event: Event, prepared: Prepared) {
        let started = Instant::now();
        while self.waiting.deliveries.load(Ordering::Acquire) >= MAX_WAITING_DELIVERIES
            && started.elapsed() < MAX_WAIT
        {
            std::thread::sleep(Duration::from_micros(500));
        }
        self.hand_over(Staged::Ready(event, prepared));
    }

    /// Hands over an event another instance owns.
    pub(crate) fn defer(&self, event: Event) {
        self.hand_over(Staged::Deferred(event));
    }

    fn hand_over(&self, item: Staged) {
        let n = item.deliveries();
        self.waiting.events.fetch_add(1, Ordering::AcqRel);
        self.waiting.deliveries.fetch_add(n, Ordering::AcqRel);
        if self.tx.send(item).is_err() {
            self.waiting.events.fetch_sub(1, Ordering::AcqRel);
            self.waiting.deliveries.fetch_sub(n, Ordering::AcqRel);
            error!("the record stage has stopped; a pub/sub event is dropped");
        }
    }
}

impl Staged {
    /// Deliveries built (and counted as waiting).
    fn deliveries(&self) -> usize {
        match self {
            Staged::Ready(_, prepared) => prepared.len(),
            Staged::Deferred(_) => 0,
        }
    }
}

/// What waits for the stage, shared by the subscriber's end and the stage.
#[derive(Debug, Clone, Default)]
pub(crate) struct Waiting {
    /// Events handed over and not yet queued for delivery (or found claimed elsewhere).
    events: Arc<AtomicUsize>,
    /// Their deliveries built so far.
    deliveries: Arc<AtomicUsize>,
    /// Which events this instance claims first (shared with the subscriber's end).
    share: Arc<Share>,
}

/// The stage's channel.
pub(crate) fn channel() -> (StageSender, Receiver<Staged>, Waiting) {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    let waiting = Waiting::default();
    (
        StageSender {
            tx,
            waiting: waiting.clone(),
            share: waiting.share.clone(),
        },
        rx,
        waiting,
    )
}

/// Starts `intake-record`.
pub(crate) fn spawn(
    rx: Receiver<Staged>,
    waiting: Waiting,
    dispatcher: Arc<Dispatcher>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    // Without claims (no dedupe window) every instance delivers every event: nothing to share.
    let claims = dispatcher.claim_ttl_ms > 0;
    waiting.share.start(dispatcher.durable.instance(), claims);
    std::thread::Builder::new()
        .name("intake-record".into())
        .spawn(move || {
            let mut stage = Stage {
                deferred: VecDeque::new(),
            };
            let mut spreading = Spreading::default();
            loop {
                if claims {
                    waiting.share.refresh(&dispatcher.durable);
                }
                let mut batch = Batch::default();
                // Deliveries to backed-up endpoints wait to be spread until intake has been
                // idle a moment: not while the last events' deliveries are being made.
                let wait = match spreading.due(&dispatcher) {
                    Some(at) => stage
                        .wait()
                        .min(at.saturating_duration_since(Instant::now())),
                    None => stage.wait(),
                };
                match rx.recv_timeout(wait) {
                    Ok(item) => stage.take(item, &mut batch),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        dispatcher.spread();
                        return;
                    }
                }
                while batch.items.len() < BATCH && batch.deliveries < BATCH_DELIVERIES {
                    let Ok(item) = rx.try_recv() else { break };
                    stage.take(item, &mut batch);
                }
                // Stopping: nothing waits for its grace any more.
                let stopping = shutdown.is_set();
                stage.release_due(&dispatcher, &mut batch, stopping);
                if batch.events > 0 {
                    let counted = batch.deliveries;
                    let events = batch.events;
                    if !batch.items.is_empty() {
                        dispatcher.dispatch_batch(batch.items);
                    }
                    waiting.deliveries.fetch_sub(counted, Ordering::AcqRel);
                    waiting.events.fetch_sub(events, Ordering::AcqRel);
                    spreading.recorded(&dispatcher);
                }
                spreading.spread_if_due(&dispatcher);
                if batch.events == 0 && stopping && stage.deferred.is_empty() {
                    dispatcher.spread();
                    return;
                }
            }
        })
}

/// When the deliveries recorded for the due set are spread there ([`Dispatcher::spread`]):
/// once intake has been idle for [`SPREAD_IDLE`], and at the latest [`SPREAD_MAX_DELAY`] after
/// the first of them was recorded, or once [`SPREAD_AFTER`] events' are waiting; a second after
/// a failure.
#[derive(Default)]
struct Spreading {
    /// When the oldest unspread event was recorded.
    since: Option<Instant>,
    /// When the latest events were recorded.
    last: Option<Instant>,
    /// Not before this (after a failure).
    not_before: Option<Instant>,
}

impl Spreading {
    /// Events were recorded just now.
    fn recorded(&mut self, dispatcher: &Dispatcher) {
        if dispatcher.unspread() > 0 {
            let now = Instant::now();
            self.since.get_or_insert(now);
            self.last = Some(now);
        }
    }

    /// When the next spread is due, if anything waits to be spread.
    fn due(&mut self, dispatcher: &Dispatcher) -> Option<Instant> {
        if dispatcher.unspread() == 0 {
            self.since = None;
            self.last = None;
            return None;
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let last = self.last.unwrap_or(since);
        let mut at = (last + SPREAD_IDLE).min(since + SPREAD_MAX_DELAY);
        if dispatcher.unspread() >= SPREAD_AFTER {
            at = now;
        }
        Some(self.not_before.map_or(at, |not_before| at.max(not_before)))
    }

    fn spread_if_due(&mut self, dispatcher: &Dispatcher) {
        let Some(at) = self.due(dispatcher) else {
            return;
        };
        if Instant::now() < at {
            return;
        }
        if dispatcher.spread() {
            self.not_before = None;
            self.since = None;
            self.last = None;
        } else {
            self.not_before = Some(Instant::now() + Duration::from_secs(1));
        }
    }
}

/// Events to record in one round trip.
#[derive(Default)]
struct Batch {
    items: Vec<(Event, Prepared)>,
    /// Events handed over that this batch settles (recorded, or found claimed elsewhere).
    events: usize,
    /// Deliveries of these that were counted as waiting.
    deliveries: usize,
}

/// The stage thread's state.
struct Stage {
    /// Events another instance owns, until their grace has passed (in arrival order).
    deferred: VecDeque<(Instant, Event)>,
}

impl Stage {
    /// How long to wait for the next event: until the first deferred one is due, at most 500 ms.
    fn wait(&self) -> Duration {
        let most = Duration::from_millis(500);
        self.deferred.front().map_or(most, |(due, _)| {
            due.saturating_duration_since(Instant::now()).min(most)
        })
    }

    fn take(&mut self, item: Staged, batch: &mut Batch) {
        match item {
            Staged::Ready(event, prepared) => {
                batch.deliveries += prepared.len();
                batch.events += 1;
                batch.items.push((event, prepared));
            }
            Staged::Deferred(event) => self.deferred.push_back((Instant::now() + GRACE, event)),
        }
    }

    /// Takes on the deferred events whose grace has passed (all of them when `stopping`, the
    /// oldest beyond [`MAX_DEFERRED`]) that their owners have not claimed: built and added to
    /// `batch`, whose record script claims them (or finds them claimed after all).
    fn release_due(&mut self, dispatcher: &Dispatcher, batch: &mut Batch, stopping: bool) {
        let now = Instant::now();
        let mut due = Vec::new();
        while due.len() < BATCH
            && self
                .deferred
                .front()
                .is_some_and(|(at, _)| *at <= now || stopping || self.deferred.len() > MAX_DEFERRED)
        {
            if let Some((_, event)) = self.deferred.pop_front() {
                due.push(event);
            }
        }
        if due.is_empty() {
            return;
        }
        batch.events += due.len();
        let keys: Vec<String> = due
            .iter()
            .map(|e| crate::keys::claim(&e.identity))
            .collect();
        // Redis away: build them all; recording decides (or they go on from memory).
        let claimed = dispatcher.durable.claimed(&keys).unwrap_or_else(|e| {
            debug!("{e}; taking on other instances' events unchecked");
            vec![false; keys.len()]
        });
        for (event, claimed) in due.into_iter().zip(claimed) {
            if claimed {
                bump(&dispatcher.counters.events_claimed_elsewhere);
            } else if let Some(prepared) = dispatcher.prepare(&event) {
                batch.items.push((event, prepared));
            }
        }
    }
}
