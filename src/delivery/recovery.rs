//! The threads that keep durable deliveries moving:
//! - `delivery-poller` leases what is due in `webhooks:due` (retries, handed-back and taken-over
//!   deliveries) and queues it: first attempts to the delivery pool, the rest to the retry pool;
//!   it also trims dead letters, a bounded batch at a time;
//! - `delivery-heartbeat` keeps this instance's heartbeat alive and moves the leases of instances
//!   whose heartbeat stopped back to due.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};
use log::{info, warn};

use super::Delivery;
use super::durable::Durable;
use crate::app::Shutdown;
use crate::time::now_ms;

/// Deliveries leased per poll.
const BATCH: usize = 256;
/// Longest sleep between polls.
const MAX_POLL: Duration = Duration::from_millis(250);
/// How often dead letters are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Retention of dead letters.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most kept.
    pub max_count: u64,
    /// Oldest kept.
    pub max_age: Duration,
}

/// Starts `delivery-poller`.
pub fn spawn_poller(
    durable: Durable,
    first_tx: Sender<Delivery>,
    retry_tx: Sender<Delivery>,
    retention: Retention,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("delivery-poller".into())
        .spawn(move || {
            // A previous run under the same instance id may have left leases: they are due now.
            let mut backoff = crate::redis_conn::Backoff::default();
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
            let mut failing = false;
            let mut last_trim = Instant::now();
            while !shutdown.is_set() {
                let wait = match poll(&durable, &first_tx, &retry_tx, &shutdown) {
                    Ok(wait) => {
                        if failing {
                            info!("durable deliveries are readable again");
                            failing = false;
                        }
                        wait
                    }
                    Err(e) => {
                        if !failing {
                            warn!("{e}; retrying");
                            failing = true;
                        }
                        Duration::from_secs(1)
                    }
                };
                if last_trim.elapsed() >= TRIM_EVERY {
                    last_trim = Instant::now();
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
                shutdown.sleep(wait);
            }
        })
}

/// Leases and queues what is due; returns how long to wait before the next poll.
fn poll(
    durable: &Durable,
    first_tx: &Sender<Delivery>,
    retry_tx: &Sender<Delivery>,
    shutdown: &Shutdown,
) -> Result<Duration, super::durable::DurableError> {
    let taken = durable.take_due(now_ms(), BATCH)?;
    let full_batch = taken.len() == BATCH;
    for delivery in taken {
        let tx = if delivery.attempts == 0 {
            first_tx
        } else {
            retry_tx
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
pub fn spawn_heartbeat(
    durable: Durable,
    ttl: Duration,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("delivery-heartbeat".into())
        .spawn(move || {
            let every = ttl / 4;
            let mut failing = false;
            while !shutdown.is_set() {
                let result = durable
                    .heartbeat(ttl.as_millis() as u64)
                    .and_then(|()| take_over(&durable));
                match result {
                    Ok(()) if failing => {
                        info!("instance heartbeat restored");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        warn!("{e}; retrying");
                        failing = true;
                    }
                    Err(_) => {}
                }
                shutdown.sleep(every);
            }
        })
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

/// Where delivery threads report successes; the `delivery-completer` thread forgets them in
/// batches, one Redis round trip for many deliveries. A crash before a batch is written means
/// those deliveries are made again (at least once), never lost.
#[derive(Debug, Clone)]
pub struct Completer {
    tx: Sender<String>,
    /// Ids reported and not yet written.
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Completer {
    /// Reports a delivered id; with the completer gone, forgets it directly.
    pub fn done(&self, durable: &Durable, id: String) -> Result<(), super::durable::DurableError> {
        // Unbounded (list) channel with a length check: see the recorder's channel.
        if self.tx.len() >= MAX_PENDING_COMPLETIONS {
            return durable.complete(&id);
        }
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match self.tx.send(id) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                durable.complete(&e.into_inner())
            }
        }
    }

    /// Waits (up to `limit`) until every reported id is written.
    pub fn flush(&self, limit: Duration) -> bool {
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

/// Completions waiting to be written before delivery threads write their own.
const MAX_PENDING_COMPLETIONS: usize = 65_536;

/// Starts `delivery-completer`.
pub fn spawn_completer(
    durable: Durable,
    shutdown: Shutdown,
) -> std::io::Result<(Completer, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = pending.clone();
    let handle = std::thread::Builder::new()
        .name("delivery-completer".into())
        .spawn(move || {
            let mut batch: Vec<String> = Vec::with_capacity(1024);
            let mut failing = false;
            loop {
                if batch.is_empty() {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(id) => batch.push(id),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            if shutdown.is_set() {
                                return;
                            }
                            continue;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                    }
                }
                batch.extend(rx.try_iter().take(1024 - batch.len()));
                match durable.complete_many(&batch) {
                    Ok(()) => {
                        written.fetch_sub(batch.len(), std::sync::atomic::Ordering::AcqRel);
                        if failing {
                            info!("completed deliveries are recorded again");
                            failing = false;
                        }
                        batch.clear();
                    }
                    Err(e) => {
                        if !failing {
                            warn!("{e}; keeping {} completions to retry", batch.len());
                            failing = true;
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
