//! The threads that keep durable deliveries moving:
//! - `delivery-poller` leases what is due in `webhooks:due` (retries, handed-back and taken-over
//!   deliveries) and queues it: first attempts (through their job's line, which may keep them
//!   until the event before them has had its first attempt) to the first-attempt queue, the rest
//!   to the retry queue; it also trims dead letters, a bounded batch at a time;
//! - `delivery-heartbeat` keeps this instance's heartbeat alive and moves the leases of instances
//!   whose heartbeat stopped back to due.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};
use log::{info, warn};

use super::Delivery;
use super::durable::Durable;
use super::lines::{Entered, Lines};
use super::scheduler::{SchedulerHandle, Timed};
use crate::shutdown::{Backoff, Outage, Shutdown, spawn_loop};
use crate::time::now_ms;

/// Deliveries leased per poll.
const BATCH: usize = 256;
/// Longest sleep between polls.
const MAX_POLL: Duration = Duration::from_millis(250);
/// How often dead letters are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Retention of dead letters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Most kept.
    pub(crate) max_count: u64,
    /// Oldest kept.
    pub(crate) max_age: Duration,
}

/// Starts `delivery-poller`.
pub(crate) fn spawn_poller(
    durable: Durable,
    lines: std::sync::Arc<Lines>,
    first_tx: Sender<Delivery>,
    retry_tx: Sender<Delivery>,
    retention: Retention,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    let mut resumed = false;
    let mut last_trim = Instant::now();
    let stop = shutdown.clone();
    spawn_loop(
        "delivery-poller",
        shutdown,
        Backoff::fixed(Duration::from_secs(1)),
        "durable deliveries are readable again",
        move || {
            if !resumed {
                resume(&durable, &stop);
                resumed = true;
                if stop.is_set() {
                    return Ok(Duration::ZERO);
                }
            }
            let polled = poll(&durable, &lines, &first_tx, &retry_tx, &stop);
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = Instant::now();
                trim(&durable, retention);
            }
            polled
        },
    )
}

/// A previous run under the same instance id may have left leases: they are due now. Tries
/// until it succeeds or the process stops.
fn resume(durable: &Durable, shutdown: &Shutdown) {
    let mut backoff = Backoff::default();
    while !shutdown.is_set() {
        match durable.release_all(durable.instance(), now_ms()) {
            Ok(0) => break,
            Ok(n) => {
                info!("resuming {n} deliveries this instance held before it stopped");
                break;
            }
            Err(e) => {
                if backoff.failures() == 0 {
                    warn!("{e}; retrying");
                }
                shutdown.sleep(backoff.next_delay());
            }
        }
    }
}

/// Drops the dead letters past their retention.
fn trim(durable: &Durable, retention: Retention) {
    match durable.trim_dead_letters(
        now_ms(),
        retention.max_age.as_millis() as u64,
        retention.max_count,
        1000,
    ) {
        Ok(0) => {}
        Ok(n) => info!("dropped {n} dead letters past their retention"),
        Err(e) => warn!("{e}"),
    }
}

/// Leases and queues what is due; returns how long to wait before the next poll.
fn poll(
    durable: &Durable,
    lines: &Lines,
    first_tx: &Sender<Delivery>,
    retry_tx: &Sender<Delivery>,
    shutdown: &Shutdown,
) -> Result<Duration, super::durable::DurableError> {
    let taken = durable.take_due(now_ms(), BATCH)?;
    let full_batch = taken.len() == BATCH;
    for delivery in taken {
        let (tx, delivery) = if delivery.attempts > 0 {
            (retry_tx, delivery)
        } else {
            match lines.enter(delivery) {
                Entered::Go(delivery) => (first_tx, delivery),
                Entered::Held | Entered::Kept => continue,
            }
        };
        let mut pending = delivery;
        loop {
            match tx.send_timeout(pending, Duration::from_millis(200)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(d)) if !shutdown.is_set() => pending = d,
                // Stopping: what is leased and not queued is handed back on the way out.
                Err(_) => return Ok(Duration::ZERO),
            }
        }
    }
    if full_batch {
        return Ok(Duration::ZERO);
    }
    Ok(match durable.next_due()? {
        Some(due) => Duration::from_millis(due.saturating_sub(now_ms())).min(MAX_POLL),
        None => MAX_POLL,
    })
}

/// Starts `delivery-heartbeat`.
pub(crate) fn spawn_heartbeat(
    durable: Durable,
    ttl: Duration,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    let every = ttl / 4;
    spawn_loop(
        "delivery-heartbeat",
        shutdown,
        Backoff::fixed(every),
        "instance heartbeat restored",
        move || {
            durable
                .heartbeat(ttl.as_millis() as u64)
                .and_then(|()| take_over(&durable))
                .map(|()| every)
        },
    )
}

fn take_over(durable: &Durable) -> Result<(), super::durable::DurableError> {
    for dead in durable.dead_instances()? {
        let moved = durable.release_all(&dead, now_ms())?;
        durable.forget_instance(&dead)?;
        if moved > 0 {
            warn!("instance {dead} stopped; took over its {moved} deliveries");
        } else {
            info!("instance {dead} stopped with nothing in hand");
        }
    }
    Ok(())
}

/// Where delivery threads settle deliveries: a success is forgotten, a retry or a hand-back is
/// put back as due. The `delivery-completer` thread writes them in batches, one Redis round trip
/// for many deliveries. A crash before a batch is written means those deliveries are made again
/// (at least once), never lost: they are still leased, and a lease outlives its holder only
/// until the heartbeat stops.
#[derive(Debug, Clone)]
pub(crate) struct Completer {
    tx: Sender<Settle>,
    /// Deliveries reported and not yet written.
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// What became of a leased delivery.
#[derive(Debug)]
enum Settle {
    /// Delivered (or dropped): forget it.
    Done(String),
    /// Due again at this time (ms since the epoch), with its attempt count as it now stands.
    Due(Delivery, u64),
}

impl Completer {
    /// Reports a delivered id; with the completer gone, forgets it directly.
    pub(crate) fn done(
        &self,
        durable: &Durable,
        id: String,
    ) -> Result<(), super::durable::DurableError> {
        match self.send(Settle::Done(id)) {
            Some(Settle::Done(id)) => durable.complete(&id),
            _ => Ok(()),
        }
    }

    /// Puts a leased delivery back as due at `due_ms`; with the completer gone or far behind,
    /// writes it directly. An error means it is in neither place: the caller keeps it.
    pub(crate) fn defer(
        &self,
        durable: &Durable,
        delivery: Delivery,
        due_ms: u64,
    ) -> Result<(), Box<(Delivery, super::durable::DurableError)>> {
        match self.send(Settle::Due(delivery, due_ms)) {
            Some(Settle::Due(delivery, due_ms)) => durable
                .defer(&delivery, due_ms)
                .map_err(|e| Box::new((delivery, e))),
            _ => Ok(()),
        }
    }

    /// Queues `item`, or gives it back when the queue is full or closed.
    fn send(&self, item: Settle) -> Option<Settle> {
        // Unbounded (list) channel with a length check: see the recorder's channel.
        if self.tx.len() >= MAX_PENDING_COMPLETIONS {
            return Some(item);
        }
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match self.tx.send(item) {
            Ok(()) => None,
            Err(e) => {
                self.pending
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                Some(e.into_inner())
            }
        }
    }

    /// Waits (up to `limit`) until every reported delivery is written.
    pub(crate) fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.pending.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// Settlements waiting to be written before delivery threads write their own.
const MAX_PENDING_COMPLETIONS: usize = 65_536;
/// How long settlements gather after the first of a batch arrives.
const SETTLE_LINGER: Duration = Duration::from_millis(2);
/// Most settlements written in one round trip.
const SETTLE_BATCH: usize = 1024;

/// Starts `delivery-completer`. While Redis is away, successes wait to be written (they are
/// retried); deliveries to put back go to `fallback`, the in-memory scheduler, so they are still
/// made.
pub(crate) fn spawn_completer(
    durable: Durable,
    fallback: SchedulerHandle,
    shutdown: Shutdown,
) -> std::io::Result<(Completer, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<Settle>();
    let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = pending.clone();
    let handle = std::thread::Builder::new()
        .name("delivery-completer".into())
        .spawn(move || {
            let mut done: Vec<String> = Vec::with_capacity(SETTLE_BATCH);
            let mut due: Vec<(Delivery, u64)> = Vec::new();
            let mut outage = Outage::default();
            loop {
                if done.is_empty() && due.is_empty() {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(Settle::Done(id)) => done.push(id),
                        Ok(Settle::Due(d, at)) => due.push((d, at)),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            if shutdown.is_set() {
                                return;
                            }
                            continue;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                    }
                    // Let a batch gather without a wake-up per delivery.
                    std::thread::sleep(SETTLE_LINGER);
                }
                let room = SETTLE_BATCH.saturating_sub(done.len() + due.len());
                for item in rx.try_iter().take(room) {
                    match item {
                        Settle::Done(id) => done.push(id),
                        Settle::Due(d, at) => due.push((d, at)),
                    }
                }
                let n = done.len() + due.len();
                let due_refs: Vec<(&Delivery, u64)> = due.iter().map(|(d, at)| (d, *at)).collect();
                match durable.settle_many(&done, &due_refs) {
                    Ok(()) => {
                        written.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
                        if outage.recovered() {
                            info!("settled deliveries are recorded again");
                        }
                        done.clear();
                        due.clear();
                    }
                    Err(e) => {
                        if outage.failed() {
                            warn!(
                                "{e}; completions kept to write later: {}; deliveries made from memory instead of put back as due: {}",
                                done.len(),
                                due.len()
                            );
                        }
                        let now_ms = now_ms();
                        written.fetch_sub(due.len(), std::sync::atomic::Ordering::AcqRel);
                        for (delivery, at) in due.drain(..) {
                            let wait = Duration::from_millis(at.saturating_sub(now_ms));
                            if let Err(Timed::Retry(d)) =
                                fallback.schedule(Instant::now() + wait, Timed::Retry(delivery))
                            {
                                log::error!(
                                    "event {} to webhook {} could not be scheduled (the scheduler has stopped); it stays leased in Redis and is made again once the lease is released or taken over",
                                    d.event_id,
                                    d.webhook_id
                                );
                            }
                        }
                        shutdown.sleep(Duration::from_millis(500));
                        if shutdown.is_set() {
                            return;
                        }
                    }
                }
            }
        })?;
    Ok((Completer { tx, pending }, handle))
}
